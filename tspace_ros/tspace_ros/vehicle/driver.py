"""
The driver model: follows a drive cycle's speed trace with the pedal and the brake.

Every physics step the driver

1. perceives the van's speed ``reaction_time_s`` late (everything below uses
   this perceived speed);
2. reads the trace now and ``preview_s`` ahead and takes the mean target
   acceleration over that preview as feed-forward;
3. adds PI feedback on the present speed error (anti-windup: the integral
   stops while the pedal or brake is saturated in the error's direction,
   and is limited);
4. turns the acceleration demand into an axle torque with the van's nominal
   inertia, rolling resistance and drag (the driver does not know the grade:
   the integral finds it);
5. inverts the CURRENT torque map at the present speed to find the pedal that
   gives that torque; below the map's lift-off torque it releases the pedal
   and brakes for the rest (brake force / force per bar);
6. moves pedal and brake towards these commands at limited rates, within
   their ranges.

At standstill with the trace at 0 the driver holds the brake. A different map
therefore changes how far the pedal is pressed for the same demand, and how
much deceleration regeneration gives before the friction brakes take over.
"""

from typing import Tuple

from tspace_ros.vehicle.cycles import SpeedTrace
from tspace_ros.vehicle.longitudinal import LongitudinalVehicle
from tspace_ros.vehicle.parameters import BrakeParameters, DriverParameters, GRAVITY_M_S2
from tspace_ros.vehicle.vcu import Vcu


class DemandToPedals:
    """
    Steps 4 and 5 of the module doc: an acceleration demand to pedal and brake commands.

    The demand becomes an axle torque with the van's nominal inertia, rolling
    resistance and drag (no grade); ``vcu.pedal_for_torque`` of the VCU given
    (the current map for the PI driver, the default map's feel for the dyno
    driver) finds the pedal, and below its lift-off torque the brakes take the
    rest. Shared by both drivers.
    """

    def __init__(self, vehicle: LongitudinalVehicle, brakes: BrakeParameters):
        """Take the van's nominal road load and its brakes."""
        body = vehicle.body
        self._mass_kg = vehicle.equivalent_mass_kg
        self._radius_m = body.wheel_radius_m
        self._rolling_n = body.rolling_resistance_coefficient * body.test_mass_kg * GRAVITY_M_S2
        self._aero = vehicle.aero_n_per_m2_s2
        self._force_per_bar = brakes.force_per_bar_n
        self._max_bar = brakes.max_pressure_bar

    def commands(self, acceleration_m_s2: float, speed_m_s: float,
                 vcu: Vcu) -> Tuple[float, float]:
        """Return (pedal 0..1, brake bar) that ask for this acceleration at this speed."""
        force = self._mass_kg * acceleration_m_s2 + self._aero * speed_m_s * speed_m_s
        if speed_m_s > 0.0 or force > 0.0:
            force += self._rolling_n
        torque = force * self._radius_m
        pedal_command, lift_off_nm = vcu.pedal_for_torque(speed_m_s * 3.6, torque)
        if pedal_command > 0.0:
            return pedal_command, 0.0
        brake_command = (lift_off_nm - torque) / (self._radius_m * self._force_per_bar)
        return pedal_command, self._max_bar if brake_command > self._max_bar else brake_command


class Driver:
    """
    A PI driver with preview feed-forward through the inverted torque map.

    ``pedal`` (0..1) and ``brake_bar`` (0..max pressure) are the present
    commands; ``update`` advances them by one step.
    """

    def __init__(self, params: DriverParameters, trace: SpeedTrace,
                 vehicle: LongitudinalVehicle, vcu: Vcu, brakes: BrakeParameters,
                 step_s: float):
        """
        Set up a driver for ``trace`` who knows the van's nominal (level-road) road load.

        ``step_s`` is the physics step at which ``update`` will be called (s);
        it sets the length of the reaction-time delay line.
        """
        self.params = params
        self.trace = trace
        self.vcu = vcu
        self.demand = DemandToPedals(vehicle, brakes)
        self._max_bar = brakes.max_pressure_bar
        self._standstill_m_s = params.standstill_speed_kph / 3.6
        self._delay_steps = int(round(params.reaction_time_s / step_s))
        self.reset()

    def reset(self) -> None:
        """Release pedal and brake and forget the integral."""
        self.pedal = 0.0
        self.brake_bar = 0.0
        self.integral_m = 0.0
        self._perceived = [0.0] * (self._delay_steps + 1)
        self._slot = 0

    def update(self, t_s: float, speed_m_s: float, dt_s: float) -> Tuple[float, float]:
        """
        Return (pedal 0..1, brake_bar) for the step starting at t_s.

        ``speed_m_s`` is the van's present speed; ``dt_s`` the step length
        (the physics step given at construction).
        """
        p = self.params
        if self._delay_steps:
            # A ring of the last delay_steps + 1 speeds: the oldest is perceived now.
            slot = self._slot
            self._perceived[slot] = speed_m_s
            slot = slot + 1 if slot < self._delay_steps else 0
            self._slot = slot
            speed_m_s = self._perceived[slot]
        target = self.trace.speed_m_s(t_s)
        if p.preview_s > 0.0:
            ahead = self.trace.speed_m_s(t_s + p.preview_s)
            feed_forward = (ahead - target) / p.preview_s
        else:
            ahead, feed_forward = target, 0.0
        if target <= 0.0 and ahead <= 0.0 and speed_m_s <= self._standstill_m_s:
            pedal_command, brake_command = 0.0, p.standstill_brake_bar
            self.integral_m = 0.0
        else:
            error = target - speed_m_s
            integral_term = p.integral_gain_per_s2 * self.integral_m
            if integral_term > p.integral_limit_m_s2:
                integral_term = p.integral_limit_m_s2
            elif integral_term < -p.integral_limit_m_s2:
                integral_term = -p.integral_limit_m_s2
            acceleration = feed_forward + p.speed_gain_per_s * error + integral_term
            pedal_command, brake_command = self.demand.commands(acceleration, speed_m_s,
                                                                self.vcu)
            saturated = (pedal_command >= 1.0 and error > 0.0) or \
                (brake_command >= self._max_bar and error < 0.0)
            if not saturated:
                self.integral_m += error * dt_s
        step = p.pedal_rate_per_s * dt_s
        change = pedal_command - self.pedal
        self.pedal += step if change > step else -step if change < -step else change
        step = p.brake_rate_bar_per_s * dt_s
        change = brake_command - self.brake_bar
        self.brake_bar += step if change > step else -step if change < -step else change
        return self.pedal, self.brake_bar
