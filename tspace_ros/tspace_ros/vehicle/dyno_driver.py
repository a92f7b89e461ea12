"""
The dyno driver: drives a cycle like a test driver on a chassis dynamometer.

Unlike ``Driver`` (model 'pi'), which inverts the CURRENT torque map and so
meets the trace whatever the map's traction side, this driver presses the
pedal by the FEEL it learned on the DEFAULT map and corrects only what it
perceives. A map that gives more torque for the same pedal therefore gives
more acceleration, until the driver notices. Every physics step it

1. perceives the van's speed ``reaction_time_s`` late (v_p) and its
   acceleration a_p as the low-passed derivative of v_p (time constant
   ``dyno_acceleration_filter_s``);
2. takes the mean target acceleration over the ``preview_s`` ahead as
   feed-forward, a_ff (the driver's aid shows the trace ahead);
3. perceives the speed error e = v_target - v_p only above a threshold: a
   correction starts when |e| > ``dyno_speed_threshold_kph`` and stops when
   |e| < ``dyno_speed_release_kph`` (a dead band with hysteresis); while it
   acts, a_fb = k_v (e - sign(e) e_release);
4. corrects harder near the edge of the tolerance band ``ToleranceBand``
   (the cycle rules' band: from min - dv to max + dv of the trace over
   [t - dt, t + dt]): within ``dyno_band_margin_kph`` of an edge it adds
   k_b (margin - distance to the edge), away from that edge;
5. compares the perceived acceleration with the one it expected (what it
   wanted, delayed and filtered like the perception) and corrects only a
   difference beyond the just-noticeable difference JND = max(
   ``dyno_acceleration_jnd_m_s2``, ``dyno_weber_fraction`` x |a_expected|)
   (Weber's law): a_c = -k_a (mismatch -/+ JND), limited; it does not
   learn the new map (the correction lasts as long as the mismatch);
6. turns the demand a_ff + a_fb + a_c into an axle torque with the van's
   nominal inertia and level-road load, and into a pedal through its
   internal model: a VCU of its own that holds the default map, inverted
   along the pedal axis (built once at construction, never updated with the
   active map); below the default map's lift-off torque it brakes;
7. moves the pedal smoothly: a first-order lag (``dyno_pedal_time_constant_s``,
   the neuromuscular lag) and the pedal rate limit; the brake at its rate.

At standstill with the trace at 0 it holds the brake, like ``Driver``. After
each ``update`` it exposes the band status: ``band_limits_m_s`` (the band at
that step's time) and ``in_band`` (whether the van's true speed is inside).
The published models behind it are cited in ``config/vehicles/sim_van.yaml``.
"""

import bisect
import math
from typing import Tuple

from tspace_ros.vehicle.cycles import SpeedTrace
from tspace_ros.vehicle.driver import DemandToPedals
from tspace_ros.vehicle.longitudinal import LongitudinalVehicle
from tspace_ros.vehicle.parameters import BrakeParameters, DriverParameters
from tspace_ros.vehicle.vcu import Vcu


class ToleranceBand:
    """
    The speeds a drive cycle's rules allow around its trace (WLTP: 2 km/h, 1 s).

    At time t the allowed speed lies between min(trace over [t - time_s,
    t + time_s]) - speed_kph and max(trace over the same interval) + speed_kph
    (UN GTR 15 / Regulation (EU) 2017/1151). The trace is linear between its
    samples, so the extremes lie at the interval's ends or at samples inside.
    """

    def __init__(self, trace: SpeedTrace, speed_kph: float = 2.0, time_s: float = 1.0):
        """Band around ``trace``: +-``speed_kph`` and +-``time_s``."""
        if not (speed_kph >= 0.0 and time_s >= 0.0):
            raise ValueError(f'a tolerance band needs speed_kph >= 0 and time_s >= 0, got '
                             f'{speed_kph!r} and {time_s!r}')
        self.trace = trace
        self.speed_m_s = float(speed_kph) / 3.6
        self.time_s = float(time_s)
        self._times = [float(t) for t in trace.cycle.time_s]

    def limits_m_s(self, t_s: float) -> Tuple[float, float]:
        """Return (lowest, highest) allowed speed at t_s, m/s (the lowest may be < 0)."""
        speed = self.trace.speed_m_s
        start, end = t_s - self.time_s, t_s + self.time_s
        low = high = speed(start)
        value = speed(end)
        if value < low:
            low = value
        elif value > high:
            high = value
        if end > start:
            times = self._times
            duration = self.trace.duration_s
            if self.trace.repeat and duration > 0.0:
                laps = {max(0, math.floor(start / duration)), max(0, math.floor(end / duration))}
            else:
                laps = (0,)
            for lap in laps:
                offset = lap * duration
                for k in range(bisect.bisect_right(times, start - offset),
                               bisect.bisect_left(times, end - offset)):
                    value = speed(times[k] + offset)
                    if value < low:
                        low = value
                    elif value > high:
                        high = value
        return low - self.speed_m_s, high + self.speed_m_s

    def limits_kph(self, t_s: float) -> Tuple[float, float]:
        """Return (lowest, highest) allowed speed at t_s, km/h."""
        low, high = self.limits_m_s(t_s)
        return low * 3.6, high * 3.6

    def contains(self, t_s: float, speed_m_s: float) -> bool:
        """Return whether speed_m_s is within the band at t_s."""
        low, high = self.limits_m_s(t_s)
        return low <= speed_m_s <= high


class DynoDriver:
    """
    A test driver on the dyno: band-keeping, perception-limited, default-map pedal feel.

    Same interface as ``Driver``: ``pedal`` (0..1) and ``brake_bar`` are the
    present commands; ``update`` advances them by one step.
    """

    def __init__(self, params: DriverParameters, trace: SpeedTrace,
                 vehicle: LongitudinalVehicle, vcu: Vcu, brakes: BrakeParameters,
                 step_s: float):
        """
        Set up the driver; it learns the pedal feel from ``vcu.default_map`` now, once.

        ``step_s`` is the physics step at which ``update`` will be called (s).
        """
        p = params
        self.params = params
        self.trace = trace
        self.vcu = vcu
        # The internal model: a VCU that holds the default map for good. The active map
        # of ``vcu`` is never read here (the van's response to it is what is perceived).
        self.feel = Vcu(vcu.default_map, vcu.motor, vcu.driveline)
        self.band = ToleranceBand(trace, p.dyno_band_speed_kph, p.dyno_band_time_s)
        self.demand = DemandToPedals(vehicle, brakes)
        self._standstill_m_s = p.standstill_speed_kph / 3.6
        self._threshold_m_s = p.dyno_speed_threshold_kph / 3.6
        self._release_m_s = p.dyno_speed_release_kph / 3.6
        self._margin_m_s = p.dyno_band_margin_kph / 3.6
        self._delay_steps = int(round(p.reaction_time_s / step_s))
        self._accel_alpha = step_s / (p.dyno_acceleration_filter_s + step_s)
        tau = p.dyno_pedal_time_constant_s
        self._pedal_alpha = 1.0 if tau <= 0.0 else step_s / (tau + step_s)
        self.reset()

    def reset(self) -> None:
        """Release pedal and brake, forget the perception history."""
        n = self._delay_steps + 1
        self.pedal = 0.0
        self.brake_bar = 0.0
        self._speeds = [0.0] * n
        self._wanted = [0.0] * n
        self._slot = 0
        self._started = False
        self._last_perceived = 0.0
        self._expected = 0.0
        self._pedal_command = 0.0
        self.perceived_acceleration_m_s2 = 0.0
        self.wanted_acceleration_m_s2 = 0.0
        self.correcting = False
        self.acceleration_correction_m_s2 = 0.0
        self.band_limits_m_s = (0.0, 0.0)
        self.in_band = True

    def update(self, t_s: float, speed_m_s: float, dt_s: float) -> Tuple[float, float]:
        """
        Return (pedal 0..1, brake_bar) for the step starting at t_s.

        ``speed_m_s`` is the van's present speed; ``dt_s`` the step length
        (the physics step given at construction).
        """
        p = self.params
        # 1. Perception, reaction_time_s late: the speed, and the acceleration (filtered).
        if not self._started:  # the first speed seen is what it remembers of before
            self._speeds = [speed_m_s] * len(self._speeds)
            self._last_perceived = speed_m_s
            self._started = True
        slot = self._slot
        self._speeds[slot] = speed_m_s
        oldest = slot + 1 if slot < self._delay_steps else 0
        self._slot = oldest
        perceived = self._speeds[oldest]
        alpha = self._accel_alpha
        self.perceived_acceleration_m_s2 += alpha * (
            (perceived - self._last_perceived) / dt_s - self.perceived_acceleration_m_s2)
        self._last_perceived = perceived
        # What it expected to feel now: what it wanted then, filtered like the perception.
        self._expected += alpha * (self._wanted[oldest] - self._expected)
        band = self.band_limits_m_s = self.band.limits_m_s(t_s)
        self.in_band = band[0] <= speed_m_s <= band[1]
        # 2. The trace now and ahead.
        target = self.trace.speed_m_s(t_s)
        if p.preview_s > 0.0:
            ahead = self.trace.speed_m_s(t_s + p.preview_s)
            feed_forward = (ahead - target) / p.preview_s
        else:
            ahead, feed_forward = target, 0.0
        if target <= 0.0 and ahead <= 0.0 and perceived <= self._standstill_m_s:
            pedal_command, brake_command = 0.0, p.standstill_brake_bar
            wanted = 0.0
            self.correcting = False
            self.acceleration_correction_m_s2 = 0.0
        else:
            # 3. The speed error, acted on only once perceived (dead band, hysteresis).
            error = target - perceived
            if self.correcting:
                self.correcting = abs(error) >= self._release_m_s
            else:
                self.correcting = abs(error) > self._threshold_m_s
            feedback = p.dyno_speed_gain_per_s * (error - math.copysign(
                self._release_m_s, error)) if self.correcting else 0.0
            # 4. Harder near the band's edges.
            margin = self._margin_m_s
            to_low, to_high = perceived - band[0], band[1] - perceived
            if to_low < margin:
                feedback += p.dyno_band_gain_per_s * (margin - to_low)
            if to_high < margin:
                feedback -= p.dyno_band_gain_per_s * (margin - to_high)
            wanted = feed_forward + feedback
            # 5. Acceleration felt against expected: corrected beyond the JND only.
            mismatch = self.perceived_acceleration_m_s2 - self._expected
            jnd = max(p.dyno_acceleration_jnd_m_s2, p.dyno_weber_fraction * abs(self._expected))
            if mismatch > jnd:
                correction = -p.dyno_acceleration_gain * (mismatch - jnd)
            elif mismatch < -jnd:
                correction = -p.dyno_acceleration_gain * (mismatch + jnd)
            else:
                correction = 0.0
            limit = p.dyno_acceleration_limit_m_s2
            correction = limit if correction > limit else \
                -limit if correction < -limit else correction
            self.acceleration_correction_m_s2 = correction
            # 6. Demand -> axle torque -> pedal by the default map's feel (or brake).
            pedal_command, brake_command = self.demand.commands(wanted + correction,
                                                                perceived, self.feel)
        self._wanted[slot] = wanted
        self.wanted_acceleration_m_s2 = wanted
        # 7. A smooth foot: first-order lag, then the rate limits.
        self._pedal_command += self._pedal_alpha * (pedal_command - self._pedal_command)
        if pedal_command == 0.0 and self._pedal_command < 1e-4:
            self._pedal_command = 0.0  # the foot is off the pedal, not nearly off
        step = p.pedal_rate_per_s * dt_s
        change = self._pedal_command - self.pedal
        self.pedal += step if change > step else -step if change < -step else change
        step = p.brake_rate_bar_per_s * dt_s
        change = brake_command - self.brake_bar
        self.brake_bar += step if change > step else -step if change < -step else change
        return self.pedal, self.brake_bar
