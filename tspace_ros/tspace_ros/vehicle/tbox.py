"""
The telematics cloud, simulated: the simulated van and its TBox behind RemoteCAN.

``TelematicsVan`` drives ``vehicle.VehicleSimulation`` on the wall clock
(times ``real_time_factor``), cuts its 50 Hz samples into one-second batches
the way tspace's TBox uploaded them (local-time ``YYMMDDhhmmssXX`` stamps,
lists of numeric strings, voltage at 25 Hz, lists sometimes short, a clock
that may be skewed), and answers the contract's two calls:

- ``get_signal(body)``: the last ``signal_duration`` seconds;
- ``set_torque(body)``: rows from ``start_line`` written to the B page and,
  with ``abswitch``, switched to; checked as a VCU would (shape 2003, range
  2004: no value below the default minus the VCU's own budget, none above the
  default), and applied only after the flash latency.

Its own safety: when no request came for ``tbox_timeout_s``, the TBox
switches the VCU back to its default map (page A), as a vehicle must when its
remote partner goes silent. Failures are injected from the configuration
(success rates, each error code, AI mode off); the HTTP layer
(``tspace_ros.cloud_sim``) adds the latencies. ROS-free, driven by explicit
wall times so that it is tested without a server.

Durations (latencies, ``tbox_timeout_s``) are wall seconds, or the van's own
seconds with ``durations_in_vehicle_time`` (divided by ``real_time_factor`` on
the wall). ``pause``/``resume`` park the van (its clock stops, as the main job
does between laps while the trainer works), ``mark`` reads its odometer when its
clock reaches a time (a lap's end, exactly); ``true_time_s`` is the van's
clock without the TBox's skew (the simulated world's time, the job's /clock).
"""

from collections import deque
from dataclasses import dataclass, field
import datetime
import math
import random
import threading
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple
import zoneinfo

import numpy as np

from tspace_ros.cloud.remote_can import RemoteCode
from tspace_ros.task.contract import load_task
from tspace_ros.torque_map.map import TorqueMap
from tspace_ros.vehicle.simulation import VehicleSimulation

LISTS = (('list_speed_1s', 'speed_kph', 1.0), ('list_pedal_1s', 'pedal', 100.0),
         ('list_brake_pressure_1s', 'brake_bar', 1.0), ('list_current_1s', 'current_a', 1.0),
         ('list_voltage_1s', 'voltage_v', 1.0))


@dataclass
class CloudSimConfig:
    """What the simulated cloud does (every field a command-line option of cloud_sim)."""

    vin: str = ''                       # '' = the task's vehicle id
    cycle: str = 'wltc3b'
    time_zone: str = 'UTC'              # the site's: the stamps are local time
    real_time_factor: float = 1.0
    clock_skew_s: float = 0.0           # the TBox clock minus the true time
    start_utc: Optional[datetime.datetime] = None
    voltage_rate_hz: int = 25           # tspace's voltage list came at 25 Hz
    short_list_probability: float = 0.05  # a list one to three samples short
    history_s: int = 120
    ai_mode: bool = True
    read_success: float = 1.0           # tspace measured 0.9 for uploads
    flash_success: float = 1.0          # tspace measured 0.75
    read_failure_codes: Tuple[int, ...] = (int(RemoteCode.CAR_OFFLINE),
                                           int(RemoteCode.TBOX_ERROR))
    flash_failure_codes: Tuple[int, ...] = (int(RemoteCode.AB_SWITCH_FAILED),
                                            int(RemoteCode.EXECUTE_ERROR))
    read_latency_s: Tuple[float, float, float] = (0.05, 0.3, 2.5)   # median, sigma, max
    flash_latency_s: Tuple[float, float, float] = (0.2, 0.3, 30.0)  # tspace: 3.2 s median
    vcu_budget_nm: float = field(default_factory=lambda: load_task().torque_budget_nm)
    tbox_timeout_s: float = 30.0
    # False: latencies and tbox_timeout_s are wall seconds. True: they are the van's
    # seconds, so a van run at real_time_factor N answers N times sooner on the wall, as
    # its world would (the main job's cloud link: tspace's 3.2 s flash is 3.2 s of driving).
    durations_in_vehicle_time: bool = False
    seed: int = 0


CLOUD_PROFILES = 'profiles.yaml'   # config/cloud/profiles.yaml


def cloud_profile(name: str, path=None) -> Dict[str, Any]:
    """
    Return a profile of config/cloud/profiles.yaml as CloudSimConfig keyword arguments.

    ValueError naming the file for an unknown profile, an unknown field or a value of
    the wrong kind (the config is checked again by TelematicsVan).
    """
    from dataclasses import fields
    from tspace_ros.task.files import config_path, read_yaml, VehicleConfigError
    try:
        path = path or config_path('cloud', CLOUD_PROFILES)
        data = read_yaml(path, 'cloud profiles file')
    except VehicleConfigError as error:
        raise ValueError(str(error)) from None
    if not isinstance(data, dict) or name not in data or not isinstance(data[name], dict):
        known = sorted(data) if isinstance(data, dict) else []
        raise ValueError(f'{path}: no cloud profile {name!r} (known: {known})')
    kinds = {f.name: f.type for f in fields(CloudSimConfig)}
    values: Dict[str, Any] = {}
    for key, value in data[name].items():
        if key not in kinds or key in ('vin', 'start_utc'):
            raise ValueError(f'{path}: profile {name}: unknown field {key!r}')
        if isinstance(value, list):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise ValueError(f'{path}: profile {name}: {key} must be numbers, got {value!r}')
            value = tuple(value)
        elif not isinstance(value, (int, float, str, bool)):
            raise ValueError(f'{path}: profile {name}: {key} has a value of the wrong kind')
        values[key] = value
    if 'read_latency_s' in values and len(values['read_latency_s']) != 3 or \
            'flash_latency_s' in values and len(values['flash_latency_s']) != 3:
        raise ValueError(f'{path}: profile {name}: latencies are [median, sigma, max]')
    return values


def _code_of(refusal: Mapping) -> str:
    return str(refusal.get('reason', {}).get('why', {}).get('code', 'ai_mode_off'))


def _stamp(t: datetime.datetime) -> str:
    return t.strftime('%y%m%d%H%M%S') + f'{t.microsecond // 10000:02d}'


class TelematicsVan:
    """One simulated van and its TBox (see the module docstring); thread-safe."""

    def __init__(self, config: CloudSimConfig, now_s: float, simulation=None, upload=None,
                 parked: bool = False):
        """
        Start the van at wall time now_s; ValueError for a bad configuration.

        upload: called with (UTC ns of the second, the second as the TBox uploads it:
        ``timestamp`` and its lists) for every second, e.g. to put it in object storage;
        it must not block (queue it).
        """
        task = load_task()
        self.config = config
        self.vin = config.vin or task.vehicle_id
        try:
            self.zone = zoneinfo.ZoneInfo(config.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f'unknown time zone {config.time_zone!r}: {error}') from None
        if not 0 < config.real_time_factor <= 1000:
            raise ValueError(f'real_time_factor must be in (0, 1000], got '
                             f'{config.real_time_factor}')
        for name in ('read_success', 'flash_success', 'short_list_probability'):
            value = getattr(config, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f'{name} must be in [0, 1], got {value!r}')
        for name in ('read_latency_s', 'flash_latency_s'):
            value = tuple(getattr(config, name))
            if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                          and v >= 0 for v in value):
                raise ValueError(f'{name} must be (median, sigma, max) >= 0, got {value!r}')
        if not (isinstance(config.tbox_timeout_s, (int, float)) and config.tbox_timeout_s > 0):
            raise ValueError(f'tbox_timeout_s must be > 0, got {config.tbox_timeout_s!r}')
        self.sim = simulation or VehicleSimulation.from_file(cycle=config.cycle,
                                                             repeat_cycle=True)
        self.default = self.sim.vcu.default_map
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._start_wall = now_s
        start = config.start_utc or datetime.datetime.fromtimestamp(now_s, datetime.timezone.utc)
        self._start_utc = start.replace(microsecond=0)
        self._history: Deque[Dict[str, Any]] = deque(maxlen=config.history_s)
        self._second: List = []
        self._second_index = 0
        self.page_b: Optional[np.ndarray] = None
        self.last_request_s = now_s
        self.counts: Dict[str, int] = {}
        self.pending_flash: Optional[Tuple[float, TorqueMap]] = None
        self._upload = upload
        self._paused_at: Optional[float] = now_s if parked else None
        self._marks: Dict[float, Optional[Dict[str, float]]] = {
            float(self.sim.t_s): self.sim.odometer()}
        self._scale = config.real_time_factor if config.durations_in_vehicle_time else 1.0

    # ---- parking ---------------------------------------------------------------------------
    def pause(self, now_s: float) -> None:
        """Park the van at wall time now_s: its clock stops until resume (idempotent)."""
        self.advance(now_s)
        with self._lock:
            if self._paused_at is None:
                self._paused_at = now_s

    def resume(self, now_s: float) -> None:
        """Drive on from where the van was parked (idempotent)."""
        with self._lock:
            if self._paused_at is not None:
                parked = max(0.0, now_s - self._paused_at)
                self._start_wall += parked
                self.last_request_s = max(self.last_request_s, now_s)
                if self.pending_flash is not None:
                    self.pending_flash = (self.pending_flash[0] + parked,
                                          self.pending_flash[1])
                self._paused_at = None

    def mark(self, t_s: float) -> None:
        """Read the odometer when the van's clock reaches t_s (s since its start)."""
        with self._lock:
            if t_s <= self.sim.t_s:
                raise ValueError(f'the van is at {self.sim.t_s:.1f} s, past the mark {t_s} s')
            self._marks.setdefault(float(t_s), None)

    def odometer_at(self, t_s: float) -> Optional[Dict[str, float]]:
        """Return the odometer read at mark t_s (None before the van got there)."""
        with self._lock:
            return self._marks.get(float(t_s))

    def _drive_to(self, t_s: float) -> None:
        if t_s > self.sim.t_s:
            for sample in self.sim.advance(t_s - self.sim.t_s):
                self._take(sample)

    @property
    def paused(self) -> bool:
        """Return whether the van is parked."""
        return self._paused_at is not None

    # ---- the van on the wall clock -----------------------------------------------------
    def advance(self, now_s: float) -> None:
        """Drive the van up to now_s; apply a flash whose latency passed; the TBox watchdog."""
        with self._lock:
            if self._paused_at is not None:
                return
            target = (now_s - self._start_wall) * self.config.real_time_factor
            for mark in sorted(t for t, reading in self._marks.items() if reading is None):
                if mark > target:
                    break
                self._drive_to(mark)     # exactly to the mark: the odometer there
                self._marks[mark] = self.sim.odometer()
            self._drive_to(target)
            if self.pending_flash is not None and now_s >= self.pending_flash[0]:
                self.sim.vcu.set_map(self.pending_flash[1])
                self.pending_flash = None
            if now_s - self.last_request_s > self.config.tbox_timeout_s / self._scale and \
                    not self._on_default():
                self.sim.vcu.reset_to_default()
                self._count('tbox_fallback')

    def _on_default(self) -> bool:
        return np.array_equal(self.sim.vcu.active_map.torque_nm, self.default.torque_nm)

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _take(self, sample) -> None:
        index = int(math.floor(sample.t_s + 1e-9))
        if index != self._second_index and self._second:
            self._close_second()
        self._second_index = index
        self._second.append(sample)

    def _close_second(self) -> None:
        samples, self._second = self._second, []
        true = self._start_utc + datetime.timedelta(seconds=self._second_index)
        local = (true + datetime.timedelta(seconds=self.config.clock_skew_s)).astimezone(
            self.zone)
        batch: Dict[str, Any] = {'stamp': _stamp(local)}
        for key, attribute, factor in LISTS:
            values = [getattr(s, attribute) * factor for s in samples]
            if key == 'list_voltage_1s' and self.config.voltage_rate_hz < len(values):
                step = len(values) / self.config.voltage_rate_hz
                values = [values[int(i * step)] for i in range(self.config.voltage_rate_hz)]
            if values and self._rng.random() < self.config.short_list_probability:
                values = values[:-self._rng.randint(1, min(3, len(values)))]
            batch[key] = [f'{v:.3f}' for v in values]
        batch['list_gears'] = [4, 4]
        self._history.append(batch)
        if self._upload is not None:
            second = {'timestamp': batch['stamp'],
                      **{k: v for k, v in batch.items() if k != 'stamp'}}
            self._upload(int(true.timestamp()) * 10 ** 9, second)

    # ---- the contract ------------------------------------------------------------------
    def _failure(self, success: float, codes) -> Optional[Dict[str, Any]]:
        if not self.config.ai_mode:
            return {'success': False, 'AIMode': False}
        if self._rng.random() >= success and codes:
            return {'success': False, 'reason': {'why': {'code': self._rng.choice(codes)}}}
        return None

    def _check_vin(self, body) -> Optional[Dict[str, Any]]:
        if not isinstance(body, Mapping) or body.get('vin') != self.vin:
            return {'success': False, 'reason': {'why': {'code': int(
                RemoteCode.CAR_NOT_REGISTERED if isinstance(body, Mapping)
                else RemoteCode.BAD_PARAMETER)}}}
        return None

    def get_signal(self, body: Any, now_s: float) -> Dict[str, Any]:
        """Answer get_signal {vin, signal_duration}."""
        self.advance(now_s)
        with self._lock:
            self.last_request_s = now_s
            refused = self._check_vin(body) or self._failure(self.config.read_success,
                                                             self.config.read_failure_codes)
            duration = body.get('signal_duration') if isinstance(body, Mapping) else None
            if refused is None and (not isinstance(duration, int) or isinstance(duration, bool)
                                    or not 1 <= duration <= self.config.history_s):
                refused = {'success': False, 'reason': {'why': {
                    'code': int(RemoteCode.BAD_PARAMETER)}}}
            if refused is None and not self._history:
                refused = {'success': False, 'reason': {'why': {
                    'code': int(RemoteCode.NOT_ENOUGH_DATA)}}}
            if refused is not None:
                self._count(f'get_signal_{_code_of(refused)}')
                return refused
            seconds = list(self._history)[-duration:]
            result = {'timestamps': [s['stamp'] for s in seconds]}
            for key, _, _ in LISTS:
                result[key] = [s[key] for s in seconds]
            result['list_gears'] = [s['list_gears'] for s in seconds]
            self._count('get_signal_ok')
            return {'success': True, 'result': result}

    def set_torque(self, body: Any, now_s: float, latency_s: float = 0.0) -> Dict[str, Any]:
        """Answer set_torque {vin, torque, start_line, abswitch}; the map applies after latency."""
        self.advance(now_s)
        with self._lock:
            self.last_request_s = now_s
            refused = self._check_vin(body) or self._failure(self.config.flash_success,
                                                             self.config.flash_failure_codes)
            if refused is None:
                refused = self._check_rows(body)
            if refused is not None:
                self._count(f'set_torque_{_code_of(refused)}')
                return refused
            rows = np.asarray(body['torque'], dtype=np.float64)
            start = body['start_line']
            base = self.sim.vcu.active_map
            table = np.array(base.torque_nm if self.pending_flash is None
                             else self.pending_flash[1].torque_nm)
            table[start:start + rows.shape[0]] = rows
            self.page_b = table
            if body.get('abswitch', True):
                flashed = base.with_torque(table, policy_version=base.policy_version + 1)
                self.pending_flash = (now_s + latency_s, flashed)
            self._count('set_torque_ok')
            return {'success': True, 'result': {'start_line': start, 'rows': int(rows.shape[0])}}

    def _check_rows(self, body: Mapping) -> Optional[Dict[str, Any]]:
        def code(c):
            return {'success': False, 'reason': {'why': {'code': int(c)}}}
        torque, start = body.get('torque'), body.get('start_line')
        n_rows, n_columns = self.default.shape
        if not isinstance(torque, list) or not torque or len(torque) > n_rows or \
                not all(isinstance(r, list) and len(r) == n_columns for r in torque):
            return code(RemoteCode.TORQUE_SHAPE)
        if not isinstance(start, int) or isinstance(start, bool) or \
                not 0 <= start <= n_rows - len(torque):
            return code(RemoteCode.BAD_PARAMETER)
        try:
            rows = np.asarray(torque, dtype=np.float64)
        except (TypeError, ValueError):
            return code(RemoteCode.UNKNOWN_FORMAT)
        default = self.default.torque_nm[start:start + len(torque)]
        if not np.all(np.isfinite(rows)) or np.any(rows < default - self.config.vcu_budget_nm
                                                   - 1e-6) or np.any(rows > default + 1e-6):
            return code(RemoteCode.TORQUE_RANGE)
        return None

    def latency(self, kind: str) -> float:
        """Return a latency draw for 'read' or 'flash' (log-normal, capped), wall s."""
        median, sigma, cap = self.config.read_latency_s if kind == 'read' else \
            self.config.flash_latency_s
        with self._lock:
            draw = min(cap, median * math.exp(self._rng.gauss(0.0, sigma))) if median > 0 \
                else 0.0
        return draw / self._scale

    def true_time_s(self) -> float:
        """Return the van's clock without the TBox's skew (UTC s)."""
        with self._lock:
            return self._start_utc.timestamp() + self.sim.t_s

    def vehicle_time_s(self) -> float:
        """Return the van's own clock (UTC s): it runs real_time_factor times the wall's."""
        return self.true_time_s() + self.config.clock_skew_s

    def state(self) -> Dict[str, Any]:
        """Return what the van does now (for the status endpoint and tests)."""
        with self._lock:
            return {'vin': self.vin, 't_s': round(self.sim.t_s, 3),
                    'speed_kph': round(self.sim.speed_kph, 3),
                    'on_default_map': self._on_default(), 'seconds': len(self._history),
                    'map_version': self.sim.vcu.active_map.policy_version,
                    'counts': dict(self.counts)}
