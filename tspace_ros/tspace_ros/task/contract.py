"""
The task contract: what every stage agrees on, loaded once from the vehicle's task file.

One ``TaskContract`` holds the signals and their units, the window shape, the
map (the default map's breakpoints), the rows per action and the gate's limits.
Everything else derives from it: the bridge's windows and gate, the agent's
state builder and action mapping, the cruncher's sizes, the trainer's
dimensions and the observation specification stored with the data. A node
reads it from its ``task_file`` parameter ('' = the shipped simulated van's,
``config/vehicles/sim_van_task.yaml``); nothing types a dimension or a limit a
second time.

The file (YAML, bounded, safe types)::

    vehicle_id: SIMVAN00000000001
    default_map: sim_van_default_map.yaml      # relative to the task file
    signals:                                   # in window order
      - {name: speed, unit: km/h, role: state, scale: 120.0}
      - {name: current, unit: A, role: reward}
    window: {sample_rate_hz: 20.0, samples_per_window: 30}
    action: {rows_per_action: 4, recent_actions: 0}
    gate: {torque_budget_nm: 250.0, upper_bound: 1.0}

Every problem is a ``TaskContractError`` naming the file and the key.
"""

from dataclasses import dataclass, replace
import functools
import math
import pathlib
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from tspace_ros.task.files import config_path, load_torque_map, read_yaml, VehicleConfigError
from tspace_ros.torque_map.map import TorqueMap

SIM_VAN_TASK = 'sim_van_task.yaml'
ROLES = ('state', 'reward')
# What the stages read by name, and in which unit: the action's rows follow the speed
# (km/h), the reward is the battery's energy (A x V), and the episode's distance.
REQUIRED_SIGNALS = {'speed': 'km/h', 'current': 'A', 'voltage': 'V'}
MAX_RECENT_ACTIONS = 16
_SECTIONS = {'vehicle_id', 'default_map', 'signals', 'window', 'action', 'gate'}


class TaskContractError(VehicleConfigError):
    """A task file or contract that cannot work (names the file and the key)."""


@dataclass(frozen=True)
class TaskSignal:
    """One signal of every window: our name, its unit, its role and (state) its scale."""

    name: str
    unit: str
    role: str = 'state'
    scale: float = 1.0


@dataclass(frozen=True, eq=False)
class TaskContract:
    """
    The task every stage shares (see the module docstring).

    Attributes
    ----------
    vehicle_id:
        The vehicle the task is for (a bridge's ``vehicle_id`` parameter may name
        another of the same kind, e.g. in a fleet).
    signals:
        The windows' signals in order (``TaskSignal``).
    sample_rate_hz, samples_per_window:
        The window grid.
    rows_per_action, recent_actions:
        Speed rows one action changes; past actions appended to the state.
    torque_budget_nm, upper_bound:
        The gate: no value below default - budget, none above upper_bound x |default|.
    default_map:
        The map the vehicle starts with and falls back on; its breakpoints are the
        map's shape.
    source:
        The file it came from ('' when built in code).

    """

    vehicle_id: str
    signals: Tuple[TaskSignal, ...]
    sample_rate_hz: float
    samples_per_window: int
    rows_per_action: int
    recent_actions: int
    torque_budget_nm: float
    upper_bound: float
    default_map: TorqueMap
    source: str = ''
    action_scaling: str = 'budget'

    def __post_init__(self):
        """Check that the contract can work; TaskContractError naming what cannot."""
        where = self.source or 'task contract'
        problems = []
        names = [s.name for s in self.signals]
        if len(set(names)) != len(names):
            problems.append(f'signals: duplicate names in {names}')
        for s in self.signals:
            if not (isinstance(s.name, str) and s.name and isinstance(s.unit, str)):
                problems.append(f'signals: {s!r} needs a name and a unit')
            if s.role not in ROLES:
                problems.append(f'signals: {s.name!r} role must be one of {ROLES}, got '
                                f'{s.role!r}')
            if s.role == 'state' and not (_real(s.scale) and s.scale > 0):
                problems.append(f'signals: {s.name!r} scale must be > 0, got {s.scale!r}')
        if not any(s.role == 'state' for s in self.signals):
            problems.append('signals: no signal with role state (the agent needs one)')
        units = {s.name: s.unit for s in self.signals}
        for name, unit in REQUIRED_SIGNALS.items():
            if units.get(name) != unit:
                problems.append(f"signals: needs '{name}' in {unit!r}"
                                + (f', has {units[name]!r}' if name in units else ''))
        if not (_real(self.sample_rate_hz) and 0 < self.sample_rate_hz <= 1000):
            problems.append(f'window.sample_rate_hz must be in (0, 1000], got '
                            f'{self.sample_rate_hz!r}')
        for key, value, low, high in (
                ('window.samples_per_window', self.samples_per_window, 1, 100000),
                ('action.recent_actions', self.recent_actions, 0, MAX_RECENT_ACTIONS),
                ('action.rows_per_action', self.rows_per_action, 1,
                 self.default_map.shape[0])):
            if not (_integer(value) and low <= value <= high):
                problems.append(f'{key} must be an integer in {low}..{high}, got {value!r}')
        if not (_real(self.torque_budget_nm) and self.torque_budget_nm > 0):
            problems.append(f'gate.torque_budget_nm must be > 0, got {self.torque_budget_nm!r}')
        if not (_real(self.upper_bound) and 1.0 <= self.upper_bound <= 10.0):
            problems.append(f'gate.upper_bound must be in 1..10, got {self.upper_bound!r}')
        from tspace_ros.torque_map.action import ACTION_SCALINGS
        if self.action_scaling not in ACTION_SCALINGS:
            problems.append(f'action.scaling must be one of {list(ACTION_SCALINGS)}, got '
                            f'{self.action_scaling!r}')
        if problems:
            raise TaskContractError(f'{where}: ' + '; '.join(problems))

    # ---- what derives from it ------------------------------------------------------------

    @property
    def signal_names(self) -> Tuple[str, ...]:
        """Return the windows' signal names, in order."""
        return tuple(s.name for s in self.signals)

    @property
    def state_signals(self) -> Dict[str, Tuple[str, float]]:
        """Return the state's signals: name -> (unit, scale), in order."""
        return {s.name: (s.unit, float(s.scale)) for s in self.signals if s.role == 'state'}

    @property
    def required_signals(self) -> Tuple[Tuple[str, str, str], ...]:
        """Return (name, unit, role) of every signal a vehicle's mapping must provide."""
        return tuple((s.name, s.unit, s.role) for s in self.signals)

    @property
    def action_shape(self) -> Tuple[int, int]:
        """Return (rows, columns) of one action: rows_per_action x the map's pedal columns."""
        return int(self.rows_per_action), int(self.default_map.shape[1])

    @property
    def action_dim(self) -> int:
        """Return the length of one action."""
        rows, columns = self.action_shape
        return rows * columns

    @property
    def state_dim(self) -> int:
        """Return the length of one state: state signals x samples + past actions."""
        return len(self.state_signals) * int(self.samples_per_window) + \
            int(self.recent_actions) * self.action_dim

    @property
    def window_duration_s(self) -> float:
        """Return the span of one window, s."""
        return self.samples_per_window / self.sample_rate_hz

    def for_vehicle(self, vehicle_id: str) -> 'TaskContract':
        """Return the contract for another vehicle of the same kind ('' = this one)."""
        if not vehicle_id or vehicle_id == self.vehicle_id:
            return self
        return replace(self, vehicle_id=vehicle_id)

    def vehicle_default_map(self) -> TorqueMap:
        """Return the default map stamped with this vehicle and origin 0 (as the VCU holds it)."""
        return TorqueMap.from_dict({**self.default_map.to_dict(),
                                    'vehicle_id': self.vehicle_id, 'origin': 0})

    def safety_gate(self, resolution_nm: float = 0.0):
        """Return the safety gate of these limits around the vehicle's default map."""
        from tspace_ros.torque_map.safety_gate import SafetyGate
        return SafetyGate(self.vehicle_default_map(), self.torque_budget_nm, self.upper_bound,
                          self.rows_per_action, resolution_nm=resolution_nm)

    def state_builder(self):
        """Return a fresh StateBuilder of this state layout."""
        from tspace_ros.agents.vehicle_policy import StateBuilder
        return StateBuilder(self.samples_per_window, self.action_dim, self.recent_actions,
                            self.state_signals)

    def action_mapper(self):
        """Return the ActionMapper of this map and these limits."""
        from tspace_ros.agents.vehicle_policy import ActionMapper
        return ActionMapper(self.default_map, self.torque_budget_nm, self.upper_bound,
                            self.rows_per_action, self.action_scaling)

    def observation_spec(self, site: str = '', time_zone: str = 'UTC') -> Dict[str, Any]:
        """Return the observation specification stored with the data (JSON types)."""
        from tspace_ros.task.spec import observation_spec
        return observation_spec(self, site=site, time_zone=time_zone)

    def to_dict(self) -> Dict[str, Any]:
        """Return the contract as the task file holds it, the default map inline (JSON types)."""
        return {
            'vehicle_id': self.vehicle_id,
            'signals': [{'name': s.name, 'unit': s.unit, 'role': s.role,
                         **({'scale': float(s.scale)} if s.role == 'state' else {})}
                        for s in self.signals],
            'window': {'sample_rate_hz': float(self.sample_rate_hz),
                       'samples_per_window': int(self.samples_per_window)},
            'action': {'rows_per_action': int(self.rows_per_action),
                       'recent_actions': int(self.recent_actions),
                       'scaling': self.action_scaling},
            'gate': {'torque_budget_nm': float(self.torque_budget_nm),
                     'upper_bound': float(self.upper_bound)},
            'default_map': self.default_map.to_dict(),
        }

    # ---- reading it ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, base_dir: Optional[pathlib.Path] = None,
                  source: str = '') -> 'TaskContract':
        """
        Build the contract from a task file's content; TaskContractError if wrong.

        ``default_map`` is a file name (relative to base_dir) or an inline map
        (``TorqueMap.to_dict()``).
        """
        where = source or 'task contract'
        if not isinstance(data, Mapping):
            raise TaskContractError(f'{where}: expected a mapping, got {type(data).__name__}')
        unknown = sorted(set(map(str, data)) - _SECTIONS)
        missing = sorted(_SECTIONS - set(data))
        if unknown or missing:
            raise TaskContractError(
                f'{where}: ' + '; '.join(
                    ([f'unknown keys {unknown} (known: {sorted(_SECTIONS)})'] if unknown else [])
                    + ([f'missing keys {missing}'] if missing else [])))
        window = _section(data, 'window', ('sample_rate_hz', 'samples_per_window'), where)
        action = _section(data, 'action', ('rows_per_action', 'recent_actions'), where,
                          optional={'scaling': 'budget'})
        gate = _section(data, 'gate', ('torque_budget_nm', 'upper_bound'), where)
        vehicle_id = data['vehicle_id']
        if not isinstance(vehicle_id, str) or not vehicle_id:
            raise TaskContractError(f'{where}: vehicle_id must be a non-empty string, got '
                                    f'{vehicle_id!r}')
        return cls(vehicle_id=vehicle_id, signals=_signals(data['signals'], where),
                   sample_rate_hz=window['sample_rate_hz'],
                   samples_per_window=window['samples_per_window'],
                   rows_per_action=action['rows_per_action'],
                   recent_actions=action['recent_actions'],
                   torque_budget_nm=gate['torque_budget_nm'], upper_bound=gate['upper_bound'],
                   default_map=_default_map(data['default_map'], base_dir, where),
                   source=source, action_scaling=action['scaling'])

    @classmethod
    def load(cls, path: Union[str, pathlib.Path, None] = None) -> 'TaskContract':
        """Read a task file ('' / None: the shipped simulated van's); TaskContractError."""
        path = pathlib.Path(path) if path else config_path('vehicles', SIM_VAN_TASK)
        try:
            data = read_yaml(path, 'task file')
        except VehicleConfigError as error:
            raise TaskContractError(str(error)) from None
        return cls.from_dict(data, path.parent, str(path))


def load_task(path: Union[str, pathlib.Path, None] = None,
              vehicle_id: str = '') -> TaskContract:
    """Return the task of ``path`` ('' = the shipped sim van's), for ``vehicle_id`` if given."""
    return TaskContract.load(path).for_vehicle(vehicle_id)


@functools.lru_cache(maxsize=1)
def shipped_task() -> TaskContract:
    """
    Return the shipped simulated van's task (read once per process).

    The defaults of the ROS-free cores (StateBuilder, ActionMapper, SafetyGate,
    CruncherConfig, apply_action, action_rows) come from it, so that no size or
    limit is typed in code a second time.
    """
    return TaskContract.load()


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _section(data: Mapping, name: str, keys: Tuple[str, ...], where: str,
             optional: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    section = data[name]
    optional = dict(optional or {})
    if not isinstance(section, Mapping) or not set(keys) <= set(section) or \
            not set(section) <= set(keys) | set(optional):
        extra = f' (and optionally {list(optional)})' if optional else ''
        raise TaskContractError(f'{where}: {name} must be a mapping of exactly {list(keys)}'
                                f'{extra}, got {section!r:.200}')
    return {**optional, **section}


def _signals(items: Any, where: str) -> Tuple[TaskSignal, ...]:
    if not isinstance(items, list) or not items:
        raise TaskContractError(f'{where}: signals must be a non-empty list, got {items!r:.200}')
    signals = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not {'name', 'unit', 'role'} <= set(item) or \
                not set(item) <= {'name', 'unit', 'role', 'scale'}:
            raise TaskContractError(f'{where}: signals[{index}] must be a mapping of name, unit, '
                                    f'role (and scale for state), got {item!r:.200}')
        if item['role'] == 'state' and 'scale' not in item:
            raise TaskContractError(f'{where}: signals[{index}] ({item.get("name")!r}) is a '
                                    'state signal without a scale')
        signals.append(TaskSignal(item['name'], item['unit'], item['role'],
                                  item.get('scale', 1.0)))
    return tuple(signals)


def _default_map(value: Any, base_dir: Optional[pathlib.Path], where: str) -> TorqueMap:
    try:
        if isinstance(value, str) and value:
            path = pathlib.Path(value)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            return load_torque_map(path)
        if isinstance(value, Mapping):
            return TorqueMap.from_dict(dict(value))
    except (VehicleConfigError, TypeError, ValueError) as error:
        raise TaskContractError(f'{where}: default_map: {error}') from None
    raise TaskContractError(f'{where}: default_map must be a file name or a map, got '
                            f'{value!r:.200}')
