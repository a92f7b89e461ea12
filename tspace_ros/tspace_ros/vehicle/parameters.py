"""
Parameters of the simulated vehicle, read from a YAML file and checked key by key.

A vehicle file (``config/vehicles/sim_van.yaml``) has the top-level keys
``vehicle_id``, ``default_map`` (a torque map file, relative to the vehicle file)
and one mapping per component: ``body``, ``driveline``, ``motor``, ``battery``,
``brakes``, ``driver`` and ``simulation``. Every value is a plain number in SI
units or the unit its name ends with (except ``driver.model``, a name: 'pi' or
'dyno'). A missing, unknown, non-numeric or
out-of-range value raises a VehicleConfigError that names the file, the key
(``section.key``) and what was expected. Files are read with safe types only and
within bounds (size, nesting, no aliases: ``tspace_ros.bounded_yaml``).
"""

from dataclasses import dataclass, field, fields, MISSING
import math
import pathlib
from typing import Optional, Tuple, Union

from tspace_ros.task.files import (load_torque_map, read_yaml, vehicle_config_path,  # noqa: F401
                                   VehicleConfigError)
from tspace_ros.torque_map import TorqueMap

GRAVITY_M_S2 = 9.80665
"""Standard gravity, m/s^2."""


def _number(low: Optional[float] = None, high: Optional[float] = None, *,
            low_open: bool = False, integer: bool = False, default=MISSING):
    """Declare a numeric parameter with its allowed range (closed unless low_open)."""
    return field(default=default, metadata={'low': low, 'high': high, 'low_open': low_open,
                                            'integer': integer})


def _choice(choices: Tuple[str, ...], default=MISSING):
    """Declare a parameter that is one of a few names."""
    return field(default=default, metadata={'choices': tuple(choices)})


def _table(default=MISSING):
    """Declare a parameter that is a list of numbers (checked by the section)."""
    return field(default=default, metadata={'table': True})


@dataclass(frozen=True)
class BodyParameters:
    """
    The body and wheels: what resists motion.

    Road load F = m g (c_r cos(a) + sin(a)) + 0.5 rho c_d A v^2, with a the
    road angle; the inertia of the wheels and of the motor (through the
    reduction) adds to the test mass (see LongitudinalVehicle).
    """

    test_mass_kg: float = _number(0.0, 60000.0, low_open=True)
    rolling_resistance_coefficient: float = _number(0.0, 0.1)
    drag_coefficient: float = _number(0.0, 2.0, low_open=True)
    frontal_area_m2: float = _number(0.0, 30.0, low_open=True)
    air_density_kg_m3: float = _number(0.0, 2.0, low_open=True)
    wheel_radius_m: float = _number(0.0, 2.0, low_open=True)
    wheel_inertia_kg_m2: float = _number(0.0, 200.0)


@dataclass(frozen=True)
class DrivelineParameters:
    """
    A single fixed reduction between motor and driven axle.

    Traction: wheel torque = motor torque x ratio x efficiency; regeneration:
    wheel torque = motor torque x ratio / efficiency (the gear loses energy
    in both directions).
    """

    reduction_ratio: float = _number(0.0, 50.0, low_open=True)
    gear_efficiency: float = _number(0.0, 1.0, low_open=True)
    motor_inertia_kg_m2: float = _number(0.0, 10.0)


@dataclass(frozen=True)
class MotorParameters:
    """
    Traction motor with inverter: torque/power envelope and loss model.

    Envelope: |T| <= peak torque below base speed, |T| w <= peak power above
    it (separate limits for regeneration); no traction above max speed.
    Losses (motor + inverter), W: copper k_c T^2 + iron k_i |w| + windage
    k_w |w|^3 + constant (only while the motor turns or makes torque).
    """

    peak_torque_nm: float = _number(0.0, 10000.0, low_open=True)
    peak_power_w: float = _number(0.0, 2.0e6, low_open=True)
    max_speed_rpm: float = _number(0.0, 50000.0, low_open=True)
    regen_peak_torque_nm: float = _number(0.0, 10000.0)
    regen_peak_power_w: float = _number(0.0, 2.0e6)
    copper_loss_w_per_nm2: float = _number(0.0, 10.0)
    iron_loss_w_s_per_rad: float = _number(0.0, 1000.0)
    windage_loss_w_s3_per_rad3: float = _number(0.0, 1.0e-2)
    constant_loss_w: float = _number(0.0, 1.0e5)


@dataclass(frozen=True)
class BatteryParameters:
    """
    Traction battery: open-circuit voltage over state of charge and internal resistance.

    Pack OCV = cells_in_series x cell OCV(SOC), linear between the table's
    points (``soc_breakpoints`` 0..1 strictly increasing from 0 to 1,
    ``cell_ocv_v`` the same length, non-decreasing). SOC is the usable
    capacity fraction. ``auxiliary_power_w`` is the constant low-voltage load
    (DC/DC converter) drawn from the pack.
    """

    cells_in_series: int = _number(1, 2000, integer=True)
    capacity_ah: float = _number(0.0, 10000.0, low_open=True)
    internal_resistance_ohm: float = _number(0.0, 10.0, low_open=True)
    initial_soc: float = _number(0.0, 1.0)
    auxiliary_power_w: float = _number(0.0, 1.0e5)
    soc_breakpoints: Tuple[float, ...] = _table()
    cell_ocv_v: Tuple[float, ...] = _table()


@dataclass(frozen=True)
class BrakeParameters:
    """Hydraulic friction brakes: total braking force per bar of brake pressure."""

    force_per_bar_n: float = _number(0.0, 1.0e5, low_open=True)
    max_pressure_bar: float = _number(0.0, 500.0, low_open=True)


DRIVER_MODELS = ('pi', 'dyno')
"""The driver models: 'pi' (tracks the trace through the inverted map), 'dyno' (test driver)."""


@dataclass(frozen=True)
class DriverParameters:
    """
    The driver model that follows the drive cycle (see Driver and DynoDriver).

    ``model`` picks it: 'pi' (default) tracks the trace with PI feedback
    through the inverted CURRENT map; 'dyno' drives like a test driver on a
    chassis dynamometer, within the cycle's tolerance band, with a pedal
    response learned on the default map. ``reaction_time_s`` is the delay
    with which the driver perceives the van's speed; ``preview_s`` how far
    ahead the driver reads the speed trace. The gains act on the speed error
    (m/s) and give an acceleration demand (m/s^2). The ``dyno_`` keys are
    optional and used by the dyno model only (see DynoDriver).
    """

    reaction_time_s: float = _number(0.0, 2.0)
    preview_s: float = _number(0.0, 5.0)
    speed_gain_per_s: float = _number(0.0, 50.0)
    integral_gain_per_s2: float = _number(0.0, 50.0)
    integral_limit_m_s2: float = _number(0.0, 10.0)
    pedal_rate_per_s: float = _number(0.0, 100.0, low_open=True)
    brake_rate_bar_per_s: float = _number(0.0, 10000.0, low_open=True)
    standstill_brake_bar: float = _number(0.0, 500.0)
    standstill_speed_kph: float = _number(0.0, 10.0)
    model: str = _choice(DRIVER_MODELS, default='pi')
    dyno_band_speed_kph: float = _number(0.0, 20.0, low_open=True, default=2.0)
    dyno_band_time_s: float = _number(0.0, 5.0, default=1.0)
    dyno_speed_threshold_kph: float = _number(0.0, 10.0, default=1.0)
    dyno_speed_release_kph: float = _number(0.0, 10.0, default=0.3)
    dyno_speed_gain_per_s: float = _number(0.0, 50.0, default=0.5)
    dyno_band_margin_kph: float = _number(0.0, 10.0, default=0.8)
    dyno_band_gain_per_s: float = _number(0.0, 100.0, default=4.0)
    dyno_acceleration_jnd_m_s2: float = _number(0.0, 2.0, default=0.08)
    dyno_weber_fraction: float = _number(0.0, 1.0, default=0.1)
    dyno_acceleration_filter_s: float = _number(0.0, 5.0, low_open=True, default=0.3)
    dyno_acceleration_gain: float = _number(0.0, 10.0, default=0.5)
    dyno_acceleration_limit_m_s2: float = _number(0.0, 5.0, default=0.5)
    dyno_pedal_time_constant_s: float = _number(0.0, 2.0, default=0.15)

    def __post_init__(self):
        """Check the model and the dyno model's thresholds: VehicleConfigError naming the key."""
        check_driver_model(self.model, 'driver.model')
        if self.dyno_speed_release_kph > self.dyno_speed_threshold_kph:
            raise VehicleConfigError(
                f'driver.dyno_speed_release_kph: expected at most dyno_speed_threshold_kph '
                f'({self.dyno_speed_threshold_kph}), got {self.dyno_speed_release_kph}')
        if self.dyno_speed_threshold_kph >= self.dyno_band_speed_kph:
            raise VehicleConfigError(
                f'driver.dyno_speed_threshold_kph: expected less than dyno_band_speed_kph '
                f'({self.dyno_band_speed_kph}), got {self.dyno_speed_threshold_kph}')


def check_driver_model(model, where: str = 'driver_model') -> str:
    """Return a known driver model name; VehicleConfigError naming ``where`` otherwise."""
    if not isinstance(model, str) or model not in DRIVER_MODELS:
        raise VehicleConfigError(f'{where}: expected one of {list(DRIVER_MODELS)}, got {model!r}')
    return model


@dataclass(frozen=True)
class SimulationParameters:
    """
    The simulation's time steps, signal rate and measurement noise.

    The signal period (1 / signal_rate_hz) must be a whole number of physics
    steps. Noise (standard deviations, seeded) is added to the sampled
    signals only, never to the physics or the metrics.
    """

    physics_step_s: float = _number(0.0, 0.1, low_open=True)
    signal_rate_hz: float = _number(0.0, 1000.0, low_open=True)
    seed: int = _number(0, 2**63 - 1, integer=True, default=0)
    speed_noise_kph: float = _number(0.0, 10.0, default=0.0)
    current_noise_a: float = _number(0.0, 100.0, default=0.0)
    voltage_noise_v: float = _number(0.0, 100.0, default=0.0)


SECTIONS = {'body': BodyParameters, 'driveline': DrivelineParameters,
            'motor': MotorParameters, 'battery': BatteryParameters,
            'brakes': BrakeParameters, 'driver': DriverParameters,
            'simulation': SimulationParameters}


@dataclass(frozen=True)
class VehicleParameters:
    """
    Everything that describes one simulated vehicle.

    ``default_map_path`` is the torque map file the VCU starts with and
    returns to on reset (None: the caller supplies a map); ``source`` names
    where the parameters came from, for messages.
    """

    vehicle_id: str
    body: BodyParameters
    driveline: DrivelineParameters
    motor: MotorParameters
    battery: BatteryParameters
    brakes: BrakeParameters
    driver: DriverParameters
    simulation: SimulationParameters
    default_map_path: Optional[pathlib.Path] = None
    source: str = '<dict>'

    def load_default_map(self) -> TorqueMap:
        """Read the default torque map file; VehicleConfigError if it is missing or wrong."""
        if self.default_map_path is None:
            raise VehicleConfigError(f'{self.source}: default_map: no torque map file given')
        return load_torque_map(self.default_map_path)


def _expected(meta) -> str:
    kind = 'an integer' if meta['integer'] else 'a number'
    low, high = meta['low'], meta['high']
    if low is not None and high is not None:
        return f'{kind} in {"(" if meta["low_open"] else "["}{low}, {high}]'
    if low is not None:
        return f'{kind} {">" if meta["low_open"] else ">="} {low}'
    return kind


def _check_number(where: str, value, meta):
    expected = _expected(meta)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VehicleConfigError(f'{where}: expected {expected}, got {value!r}')
    if meta['integer']:
        if isinstance(value, float) and not value.is_integer():
            raise VehicleConfigError(f'{where}: expected {expected}, got {value!r}')
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise VehicleConfigError(f'{where}: expected {expected}, got {value!r}')
    low, high = meta['low'], meta['high']
    too_low = low is not None and (value <= low if meta['low_open'] else value < low)
    if too_low or (high is not None and value > high):
        raise VehicleConfigError(f'{where}: expected {expected}, got {value!r}')
    return value


def _check_table(where: str, value) -> Tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) < 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            for v in value):
        raise VehicleConfigError(f'{where}: expected a list of at least 2 finite numbers, '
                                 f'got {value!r}')
    return tuple(float(v) for v in value)


def _check_choice(where: str, value, choices: Tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise VehicleConfigError(f'{where}: expected one of {list(choices)}, got {value!r}')
    return value


def _section(cls, data, name: str, source: str):
    where = f'{source}: {name}'
    if not isinstance(data, dict):
        raise VehicleConfigError(f'{where}: expected a mapping of parameters, got {data!r}')
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise VehicleConfigError(f'{where}: unknown key(s) {unknown}; expected keys {names}')
    values = {}
    for spec in fields(cls):
        key = f'{where}.{spec.name}'
        if spec.name not in data:
            if spec.default is not MISSING:
                continue
            expected = 'a list of numbers' if spec.metadata.get('table') else \
                _expected(spec.metadata)
            raise VehicleConfigError(f'{key}: missing; expected {expected}')
        if spec.metadata.get('table'):
            values[spec.name] = _check_table(key, data[spec.name])
        elif spec.metadata.get('choices'):
            values[spec.name] = _check_choice(key, data[spec.name], spec.metadata['choices'])
        else:
            values[spec.name] = _check_number(key, data[spec.name], spec.metadata)
    try:
        return cls(**values)
    except VehicleConfigError as error:
        raise VehicleConfigError(f'{source}: {error}') from None


def _check_battery_tables(battery: BatteryParameters, source: str) -> None:
    socs, ocvs = battery.soc_breakpoints, battery.cell_ocv_v
    where = f'{source}: battery'
    if len(socs) != len(ocvs):
        raise VehicleConfigError(f'{where}.cell_ocv_v: expected one voltage per SOC breakpoint '
                                 f'({len(socs)}), got {len(ocvs)}')
    if socs[0] != 0.0 or socs[-1] != 1.0 or any(b <= a for a, b in zip(socs, socs[1:])):
        raise VehicleConfigError(f'{where}.soc_breakpoints: expected strictly increasing values '
                                 f'from 0 to 1, got {list(socs)}')
    if ocvs[0] <= 0.0 or any(b < a for a, b in zip(ocvs, ocvs[1:])):
        raise VehicleConfigError(f'{where}.cell_ocv_v: expected positive, non-decreasing '
                                 f'voltages, got {list(ocvs)}')


def vehicle_parameters_from_dict(data, source: str = '<dict>',
                                 base_dir: Optional[pathlib.Path] = None) -> VehicleParameters:
    """
    Build and check VehicleParameters from a mapping (a parsed vehicle file).

    ``base_dir`` is the directory relative ``default_map`` paths are resolved
    against (default: the current directory). Raises VehicleConfigError
    naming the key and what was expected.
    """
    if not isinstance(data, dict):
        raise VehicleConfigError(f'{source}: expected a mapping with keys '
                                 f'{["vehicle_id", "default_map", *SECTIONS]}, got {data!r}')
    allowed = {'vehicle_id', 'default_map', *SECTIONS}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise VehicleConfigError(f'{source}: unknown key(s) {unknown}; expected keys '
                                 f'{sorted(allowed)}')
    vehicle_id = data.get('vehicle_id', '')
    if not isinstance(vehicle_id, str):
        raise VehicleConfigError(f'{source}: vehicle_id: expected a string, got {vehicle_id!r}')
    map_path = None
    if 'default_map' in data:
        name = data['default_map']
        if not isinstance(name, str) or not name:
            raise VehicleConfigError(f'{source}: default_map: expected a file name, got {name!r}')
        map_path = pathlib.Path(name)
        if not map_path.is_absolute():
            map_path = (base_dir or pathlib.Path.cwd()) / map_path
    sections = {}
    for name, cls in SECTIONS.items():
        if name not in data:
            raise VehicleConfigError(f'{source}: {name}: missing; expected a mapping with keys '
                                     f'{[f.name for f in fields(cls)]}')
        sections[name] = _section(cls, data[name], name, source)
    _check_battery_tables(sections['battery'], source)
    return VehicleParameters(vehicle_id=vehicle_id, default_map_path=map_path, source=source,
                             **sections)


def load_vehicle_parameters(path: Union[str, pathlib.Path, None] = None) -> VehicleParameters:
    """Read and check a vehicle file (default: the shipped ``sim_van.yaml``)."""
    path = pathlib.Path(path) if path is not None else vehicle_config_path('sim_van')
    return vehicle_parameters_from_dict(read_yaml(path, 'vehicle file'), source=str(path),
                                        base_dir=path.parent)
