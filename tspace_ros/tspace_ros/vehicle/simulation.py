"""
The simulated vehicle: driver, VCU, motor, battery and body on a drive cycle.

``VehicleSimulation`` integrates the van with a fixed physics step (default
0.01 s) and samples its signals at a fixed rate (default 50 Hz) as
``VehicleSample`` records, the way a CAN logger would see them. It can be
advanced in chunks (``advance(duration_s)`` returns the samples produced),
which is how a ROS node drives it from a timer, or run to the end of the cycle
as fast as possible (``run()``). It accumulates the episode's metrics:
battery energy, regenerated energy, friction-brake energy, distance, Wh/km and
speed-tracking error. It is deterministic: the only randomness is optional
measurement noise on the samples, from a seeded generator.
"""

from dataclasses import dataclass
import math
import pathlib
import random
import time
from typing import Dict, List, NamedTuple, Optional, Union

from tspace_ros.torque_map import TorqueMap
from tspace_ros.vehicle.cycles import drive_cycle, DriveCycle, SpeedTrace
from tspace_ros.vehicle.driver import Driver
from tspace_ros.vehicle.dyno_driver import DynoDriver, ToleranceBand
from tspace_ros.vehicle.longitudinal import GradeProfile, LongitudinalVehicle
from tspace_ros.vehicle.parameters import (check_driver_model, load_vehicle_parameters,
                                           VehicleConfigError, VehicleParameters)
from tspace_ros.vehicle.powertrain import Battery, Driveline, Motor, RPM_PER_RAD_S
from tspace_ros.vehicle.vcu import Vcu


DRIVER_CLASSES = {'pi': Driver, 'dyno': DynoDriver}
"""The driver class of each ``driver.model`` (see DriverParameters)."""


class VehicleSample(NamedTuple):
    """
    One sample of the vehicle's signals (units in SAMPLE_UNITS).

    ``current_a`` is the battery current (+ discharge), ``voltage_v`` the
    pack's terminal voltage; ``motor_torque_nm`` the motor (not axle) torque.
    """

    t_s: float
    speed_kph: float
    pedal: float
    brake_bar: float
    current_a: float
    voltage_v: float
    soc: float
    motor_torque_nm: float
    motor_speed_rpm: float
    target_speed_kph: float


SAMPLE_UNITS = {'t_s': 's', 'speed_kph': 'km/h', 'pedal': '1', 'brake_bar': 'bar',
                'current_a': 'A', 'voltage_v': 'V', 'soc': '1', 'motor_torque_nm': 'Nm',
                'motor_speed_rpm': 'rpm', 'target_speed_kph': 'km/h'}
"""Unit of every VehicleSample field."""


@dataclass(frozen=True)
class DriveMetrics:
    """
    What a simulation has accumulated so far.

    Energies in Wh at the battery terminals (``battery_energy_wh`` is the
    net integral of U x I, regeneration counted negative;
    ``regenerated_wh`` the energy that flowed into the battery);
    ``friction_brake_wh`` the kinetic energy the friction brakes turned into
    heat. Tracking errors compare the speed with the trace's target at the
    same instant, every physics step within the cycle. ``outside_band_s``
    is the time the speed was outside the cycle's tolerance band (the dyno
    driver's ToleranceBand, 2 km/h and 1 s by default), checked at every
    signal sample within the cycle. ``real_time_factor`` is simulated time /
    wall time spent in ``advance``.
    """

    duration_s: float
    distance_km: float
    battery_energy_wh: float
    regenerated_wh: float
    friction_brake_wh: float
    energy_per_km_wh: float
    rms_speed_error_kph: float
    max_speed_error_kph: float
    mean_pedal: float
    soc_start: float
    soc_end: float
    wall_time_s: float
    real_time_factor: float
    outside_band_s: float = 0.0


class VehicleSimulation:
    """
    A van with a driver following a drive cycle, stepped at a fixed rate.

    Parameters
    ----------
    params:
        The vehicle (see load_vehicle_parameters).
    cycle:
        A drive cycle name ('wltc3b', 'wltc3a', 'nedc') or a DriveCycle.
    torque_map:
        The map active at the start (default: the default map).
    default_map:
        The VCU's default map (default: ``params.load_default_map()``).
    grade:
        Road grade, rise / run: a constant or a GradeProfile over distance.
    physics_step_s, signal_rate_hz, seed:
        Override the parameters' simulation section.
    repeat_cycle:
        Start the cycle again at its end (for endless operation); otherwise
        the last target speed holds and ``finished`` turns true.
    driver_model:
        The driver model, 'pi' or 'dyno' (see DriverParameters); None: the
        parameters' ``driver.model``.

    """

    def __init__(self, params: VehicleParameters, cycle: Union[str, DriveCycle] = 'wltc3b',
                 torque_map: Optional[TorqueMap] = None, grade=0.0, *,
                 default_map: Optional[TorqueMap] = None,
                 physics_step_s: Optional[float] = None,
                 signal_rate_hz: Optional[float] = None, seed: Optional[int] = None,
                 repeat_cycle: bool = False, driver_model: Optional[str] = None):
        """Assemble the components; nothing is simulated yet (t = 0, van at rest)."""
        sim = params.simulation
        self.params = params
        self.physics_step_s = float(physics_step_s if physics_step_s is not None
                                    else sim.physics_step_s)
        self.signal_rate_hz = float(signal_rate_hz if signal_rate_hz is not None
                                    else sim.signal_rate_hz)
        if not (0.0 < self.physics_step_s <= 0.1):
            raise VehicleConfigError(f'physics_step_s: expected a number in (0, 0.1], got '
                                     f'{self.physics_step_s}')
        if not (0.0 < self.signal_rate_hz <= 1000.0):
            raise VehicleConfigError(f'signal_rate_hz: expected a number in (0, 1000], got '
                                     f'{self.signal_rate_hz}')
        steps = 1.0 / (self.signal_rate_hz * self.physics_step_s)
        self.steps_per_sample = int(round(steps))
        if self.steps_per_sample < 1 or abs(steps - self.steps_per_sample) > 1e-6 * steps:
            raise VehicleConfigError(
                f'signal_rate_hz: the signal period 1/{self.signal_rate_hz} s must be a whole '
                f'number of physics steps of {self.physics_step_s} s')
        self.cycle = drive_cycle(cycle) if isinstance(cycle, str) else cycle
        if not isinstance(self.cycle, DriveCycle):
            raise TypeError(f'cycle must be a name or a DriveCycle, got {type(cycle).__name__}')
        self.trace = SpeedTrace(self.cycle, repeat=repeat_cycle)
        self.repeat_cycle = repeat_cycle
        self.motor = Motor(params.motor)
        self.driveline = Driveline(params.driveline)
        self.battery = Battery(params.battery)
        self.vehicle = LongitudinalVehicle(params.body, params.driveline)
        default_map = default_map if default_map is not None else params.load_default_map()
        self.vcu = Vcu(default_map, self.motor, self.driveline)
        if torque_map is not None:
            self.vcu.set_map(torque_map)
        self.driver_model = check_driver_model(
            params.driver.model if driver_model is None else driver_model)
        self.driver = DRIVER_CLASSES[self.driver_model](
            params.driver, self.trace, self.vehicle, self.vcu, params.brakes,
            self.physics_step_s)
        self.band = ToleranceBand(self.trace, params.driver.dyno_band_speed_kph,
                                  params.driver.dyno_band_time_s)
        if isinstance(grade, GradeProfile):
            self.grade_profile = grade
        else:
            grade = float(grade)
            if not math.isfinite(grade) or abs(grade) > 1.0:
                raise ValueError(f'grade must be a rise/run value within [-1, 1] or a '
                                 f'GradeProfile, got {grade}')
            self.grade_profile = None
            self.vehicle.set_grade(grade)
        self._rng = random.Random(sim.seed if seed is None else seed)
        self._noise = (sim.speed_noise_kph, sim.current_noise_a, sim.voltage_noise_v)
        self._step_index = 0
        self._pending_s = 0.0
        self._soc_start = self.battery.soc
        self._energy_j = self._regen_j = self._friction_j = 0.0
        self._pedal_s = 0.0
        self._error_sq_sum = 0.0
        self._error_max = 0.0
        self._error_count = 0
        self._outside_band_samples = 0
        self._wall_s = 0.0

    @classmethod
    def from_file(cls, path: Union[str, pathlib.Path, None] = None,
                  cycle: Union[str, DriveCycle] = 'wltc3b', **kwargs) -> 'VehicleSimulation':
        """Build a simulation from a vehicle file (default: the shipped sim_van.yaml)."""
        return cls(load_vehicle_parameters(path), cycle, **kwargs)

    @property
    def t_s(self) -> float:
        """Return the simulated time, s."""
        return self._step_index * self.physics_step_s

    @property
    def speed_kph(self) -> float:
        """Return the van's present speed, km/h."""
        return self.vehicle.speed_m_s * 3.6

    @property
    def finished(self) -> bool:
        """Return whether the drive cycle has ended (never with repeat_cycle)."""
        return not self.repeat_cycle and self.t_s >= self.trace.duration_s - 1e-9

    def advance(self, duration_s: float) -> List[VehicleSample]:
        """
        Simulate duration_s seconds; return the samples produced, oldest first.

        Time advances in whole physics steps; a remainder is carried to the
        next call, so many short calls equal one long one.
        """
        if not duration_s >= 0.0:
            raise ValueError(f'duration_s must be >= 0, got {duration_s}')
        dt = self.physics_step_s
        total = self._pending_s + duration_s
        n_steps = int(total / dt + 1e-9)
        self._pending_s = max(0.0, total - n_steps * dt)
        wall_start = time.perf_counter()
        samples = []
        append = samples.append
        trace, driver, vcu, motor = self.trace, self.driver, self.vcu, self.motor
        battery, vehicle, profile = self.battery, self.vehicle, self.grade_profile
        ratio, efficiency = self.driveline.ratio, self.driveline.efficiency
        motor_per_speed = ratio / self.params.body.wheel_radius_m
        auxiliary_w = self.params.battery.auxiliary_power_w
        force_per_bar = self.params.brakes.force_per_bar_n
        tracking_end = math.inf if self.repeat_cycle else trace.duration_s + 1e-9
        per_sample = self.steps_per_sample
        noisy = any(self._noise)
        energy_j, regen_j, friction_j, pedal_s = (self._energy_j, self._regen_j,
                                                  self._friction_j, self._pedal_s)
        error_sq, error_max, error_count = (self._error_sq_sum, self._error_max,
                                            self._error_count)
        outside_band = self._outside_band_samples
        band_limits = self.band.limits_m_s
        k = self._step_index
        try:
            for _ in range(n_steps):
                t = k * dt
                v = vehicle.speed_m_s
                if t <= tracking_end:
                    error = (v - trace.speed_m_s(t)) * 3.6
                    error_sq += error * error
                    error_count += 1
                    if error > error_max:
                        error_max = error
                    elif -error > error_max:
                        error_max = -error
                pedal, brake_bar = driver.update(t, v, dt)
                motor_rad_s = v * motor_per_speed
                torque = vcu.motor_torque_nm(pedal, v * 3.6, motor_rad_s)
                if torque >= 0.0:
                    wheel = torque * ratio * efficiency
                else:
                    wheel = torque * ratio / efficiency
                current, voltage = battery.step(
                    motor.electrical_power_w(torque, motor_rad_s) + auxiliary_w, dt)
                power_w = current * voltage
                energy_j += power_w * dt
                if power_w < 0.0:
                    regen_j -= power_w * dt
                pedal_s += pedal * dt
                if profile is not None:
                    vehicle.set_grade(profile.at(vehicle.distance_m))
                brake_n = brake_bar * force_per_bar
                v_new = vehicle.step(wheel, brake_n, dt)
                if brake_n > 0.0:
                    friction_j += brake_n * 0.5 * (v + v_new) * dt
                k += 1
                if k % per_sample == 0:
                    if k * dt <= tracking_end:
                        low, high = band_limits(k * dt)
                        if not low <= v_new <= high:
                            outside_band += 1
                    sample = VehicleSample(
                        k * dt, v_new * 3.6, pedal, brake_bar, current, voltage, battery.soc,
                        torque, motor_rad_s * RPM_PER_RAD_S, trace.speed_m_s(k * dt) * 3.6)
                    append(self._add_noise(sample) if noisy else sample)
        finally:
            # Keep the state consistent even if the battery runs empty mid-way.
            self._step_index = k
            self._energy_j, self._regen_j, self._friction_j = energy_j, regen_j, friction_j
            self._pedal_s = pedal_s
            self._error_sq_sum, self._error_max = error_sq, error_max
            self._error_count = error_count
            self._outside_band_samples = outside_band
            self._wall_s += time.perf_counter() - wall_start
        return samples

    def _add_noise(self, sample: VehicleSample) -> VehicleSample:
        speed_std, current_std, voltage_std = self._noise
        gauss = self._rng.gauss
        return sample._replace(
            speed_kph=max(0.0, sample.speed_kph + gauss(0.0, speed_std)) if speed_std
            else sample.speed_kph,
            current_a=sample.current_a + gauss(0.0, current_std) if current_std
            else sample.current_a,
            voltage_v=sample.voltage_v + gauss(0.0, voltage_std) if voltage_std
            else sample.voltage_v)

    def run(self, until_s: Optional[float] = None) -> DriveMetrics:
        """
        Simulate as fast as possible until until_s (default: the cycle's end).

        Returns the metrics; the samples are produced but not kept.
        """
        end = self.trace.duration_s if until_s is None else float(until_s)
        if until_s is None and self.repeat_cycle:
            raise ValueError('a repeating cycle has no end: give until_s')
        remaining = end - self.t_s
        if remaining > 0.0:
            self.advance(remaining + 1e-9)
        return self.metrics

    def odometer(self) -> Dict[str, float]:
        """
        Return the running totals, to compare two moments (see ``between``).

        Keys: t_s, energy_wh (net battery energy), distance_km, error_sq_sum
        and error_count (squared speed errors, (km/h)^2, and how many).
        """
        return {'t_s': self.t_s, 'energy_wh': self._energy_j / 3600.0,
                'distance_km': self.vehicle.distance_m / 1000.0,
                'error_sq_sum': self._error_sq_sum, 'error_count': float(self._error_count)}

    @staticmethod
    def between(start: Dict[str, float], end: Dict[str, float]) -> Dict[str, float]:
        """Return the figures of the drive between two odometer readings (one lap, say)."""
        energy = end['energy_wh'] - start['energy_wh']
        distance = end['distance_km'] - start['distance_km']
        count = end['error_count'] - start['error_count']
        return {'duration_s': end['t_s'] - start['t_s'], 'battery_energy_wh': energy,
                'distance_km': distance,
                'energy_per_km_wh': energy / distance if distance > 0 else math.nan,
                'speed_error_rms_kph': math.sqrt(
                    max(end['error_sq_sum'] - start['error_sq_sum'], 0.0) / count)
                if count > 0 else 0.0}

    @property
    def metrics(self) -> DriveMetrics:
        """Return the metrics accumulated since the start."""
        duration = self.t_s
        distance_km = self.vehicle.distance_m / 1000.0
        energy_wh = self._energy_j / 3600.0
        count = self._error_count
        return DriveMetrics(
            duration_s=duration, distance_km=distance_km, battery_energy_wh=energy_wh,
            regenerated_wh=self._regen_j / 3600.0, friction_brake_wh=self._friction_j / 3600.0,
            energy_per_km_wh=energy_wh / distance_km if distance_km > 0.0 else math.nan,
            rms_speed_error_kph=math.sqrt(self._error_sq_sum / count) if count else 0.0,
            max_speed_error_kph=self._error_max,
            mean_pedal=self._pedal_s / duration if duration > 0.0 else 0.0,
            soc_start=self._soc_start, soc_end=self.battery.soc, wall_time_s=self._wall_s,
            real_time_factor=duration / self._wall_s if self._wall_s > 0.0 else math.inf,
            outside_band_s=self._outside_band_samples / self.signal_rate_hz)
