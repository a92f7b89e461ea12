"""
The learning loop of the main job without ROS: the same cores, stepped as fast as they go.

``python -m tspace_ros.bringup`` runs the node suite (``tspace_ros.suite``) in
one process on the simulated van, about 24x real time. ``LearningLoop`` runs
the same loop in plain Python, through the cores those nodes wrap, with the
parameters the suite would give them (``config/sim_suite.yaml``, the CAN link's
layer ``config/links/can.yaml`` and ``config/agents/<algorithm>.yaml``,
layered as the suite layers them, over the nodes' declared defaults, then the
main job's settings and the caller's overrides):

- vehicle_sim: ``VehicleSimulation`` in a ``CanVehicle`` (the van on its CAN
  bus, its VCU's transfer receiver and bounds check), stepped ``step_s`` per
  tick as the node's timer steps it: the frames that reached the van first (its
  acks), then the step's frames;
- can_bridge: ``CanBridgeCore`` built as ``CanBridge._build`` builds it (the DBC,
  the default signal mapping and ``WindowBuilder``, the ``transfer`` link, the
  task's ``SafetyGate``); frames in, windows, episode events and flash results
  out. Every map reaches the van through ``core.flash``, that is the gate's
  ``admit`` (counted here: ``gate_checks``, ``flashed_maps``);
- agent: what ``nodes.agent.Agent`` does with a window, in ``_AgentSide``: the
  task's ``StateBuilder`` and ``ActionMapper`` (``agents.vehicle_policy``), the
  LiteRT actor of the trainer's ``PolicyBlob``, the noise of ``make_noise``, a
  goal that travels as float32 (as the ROS message does), windows skipped while
  a flash settles, the decision with the bridge's answer for the cruncher;
- cruncher: ``Cruncher`` with ``CruncherConfig.for_task`` and the node's
  ``RewardConfig``;
- storage: an in-memory source the trainer samples, filled with the transitions
  the pool would hold once the episode is stored: ``InMemoryReplay`` (DDPG; the
  ones the trainer wants, as ``records_source(include_timed_out=...)`` gives
  them) or ``EpisodeBuffer`` (RDPG: every step of the episode);
- trainer: ``TrainerCore`` in episode mode, its agent config built from the
  parameters as ``nodes.trainer.TrainerNode._build_core`` builds it (the shared
  ``agents.registry.config_from_options``); each policy
  it publishes is installed in the agent at once (the suite's job waits for
  that before the next lap).

No clock is read for the cores: the node clock is the van's UTC time (the
suite's ``/clock``) and the wall clock a virtual one, the simulated time over
the real-time factor the main job asks of the van (40), so the bridge's wall
time-outs and heartbeats behave as at exactly that factor, and a seed gives the
same run every time. Flashes take one van tick (the van reads the bus once per
step, as the node does): no flash times out here, unlike the suite on a loaded
machine.

Each lap is one episode, started and ended through the bridge's episode
control as the main job does (start 0.5 s into the lap, end valid
``episode_countdown_s`` + 2 s before its end); its figures are the van's over
the whole lap (``VehicleSimulation.odometer``/``between``), the same span as
the default map's lap (``baseline``).
"""

import datetime
import math
import pathlib
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from tspace_ros.agents import registry

ALGORITHMS = registry.names()
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CONFIG_DIR = PACKAGE_ROOT / 'config'
MAIN_JOB_REAL_TIME_FACTOR = 40.0   # bringup.REAL_TIME_FACTOR: what the main job asks of the van
START_UTC = '2026-11-21T18:00:00Z'  # fixed, so that episode ids (and runs) repeat
START_OFFSET_S = 0.5               # the main job starts an episode this far into its lap
END_MARGIN_S = 2.0                 # ... and ends it this long + the countdown before the end

# The parameters the loop reads, with the defaults each node declares (nodes/*.py).
# test_learning_loop checks them against the nodes' declarations.
NODE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'vehicle_sim': {
        'vehicle_config': '', 'cycle': 'wltc3b', 'cycle_end_s': 0.0, 'repeat_cycle': False,
        'real_time_factor': 1.0, 'step_s': 0.1, 'start_utc': '', 'torque_budget_nm': 250.0,
        'vehicle_id': '', 'heartbeat_timeout_s': 0.0, 'driver_model': ''},
    'can_bridge': {
        'vehicle_id': '', 'task_file': '', 'driver_id': 'driver0', 'signal_mapping_file': '',
        'max_gap_s': 0.5, 'stale_after_s': 0.2, 'flash_timeout_s': 3.0,
        'watchdog_timeout_s': 5.0, 'vehicle_offline_s': 2.0, 'episode_countdown_s': 3.0,
        'dbc_file': '', 'dbc_strict': True, 'flash_protocol': 'transfer', 'can_bitrate': 0},
    'agent': {
        'algorithm': 'ddpg', 'mode': 'infer', 'noise': 'gaussian', 'noise_sigma': 0.1,
        'noise_theta': 0.15, 'seed': 0, 'task_file': '', 'policy_file': ''},
    'cruncher': {
        'task_file': '', 'max_step_windows': 3, 'keep_timed_out': True,
        'kinetic_energy_mass_kg': 0.0, 'shaping_gamma': 0.99, 'speed_tracking_weight': 0.0,
        'action_weight': 0.0},
    'storage': {'task_file': ''},
    'trainer': {
        'algorithm': 'ddpg', 'mode': 'episode', 'updates_per_episode': 0,
        'max_update_ratio': 1.0, 'min_samples': 0, 'publish_every': 200,
        'checkpoint_every': 2000, 'buffer_capacity': 1_000_000, 'task_file': '',
        'rdpg_max_length': 0, 'seed': 0},
}
# The trainer's agent options (TrainerNode.declare_agent_options): every field of every
# registered algorithm's config, declared unset (None: the algorithm's default).
NODE_DEFAULTS['trainer'].update(
    {name: None for name in registry.option_fields() if name != 'seed'})


class LoopConfigError(ValueError):
    """Parameters the loop cannot run with (names the parameter)."""


# ---- parameters ------------------------------------------------------------------------------

def _read_parameter_file(path: pathlib.Path) -> Dict[str, Dict[str, Any]]:
    """Return node name -> parameters of a ROS 2 parameter file ('/**' is '*'), as the suite."""
    from tspace_ros.bounded_yaml import read_bounded
    data = read_bounded(path, 'parameter file')
    if not isinstance(data, dict):
        raise LoopConfigError(f'{path}: expected a mapping of node patterns')
    nodes: Dict[str, Dict[str, Any]] = {}
    for pattern, section in data.items():
        if not isinstance(section, dict) or not isinstance(section.get('ros__parameters'),
                                                           dict):
            raise LoopConfigError(f'{path}: {pattern}: expected a mapping with ros__parameters')
        name = str(pattern).rsplit('/', 1)[-1] if pattern != '/**' else '*'
        nodes.setdefault(name, {}).update(section['ros__parameters'])
    return nodes


def parameter_files(algorithm: str) -> List[pathlib.Path]:
    """Return the files the main job layers: sim_suite.yaml, links/can.yaml, agents/<alg>.yaml."""
    return [CONFIG_DIR / 'sim_suite.yaml', CONFIG_DIR / 'links' / 'can.yaml',
            CONFIG_DIR / 'agents' / f'{algorithm}.yaml']


def load_parameter_files(paths: Sequence[pathlib.Path]) -> Dict[str, Dict[str, Any]]:
    """Read parameter files in order, later ones winning (``suite.load_parameter_files``)."""
    nodes: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        for name, values in _read_parameter_file(pathlib.Path(path)).items():
            nodes.setdefault(name, {}).update(values)
    return nodes


def suite_parameters(algorithm: str = 'ddpg', cycle: str = 'wltc3b', lap_s: float = 0.0,
                     seed: int = 0,
                     overrides: Optional[Mapping[str, Mapping[str, Any]]] = None
                     ) -> Dict[str, Dict[str, Any]]:
    """
    Return node -> parameters as the main job's suite gives them to its nodes.

    Declared defaults, then the parameter files' '/**' and node sections, then
    the main job's own settings (bringup: cycle, lap, real-time factor, mode
    train, seeds), then ``overrides`` ({node: {name: value}}, as ``-p``).
    """
    if algorithm not in ALGORITHMS:
        raise LoopConfigError(f'algorithm must be one of {ALGORITHMS}, got {algorithm!r}')
    overrides = {node: dict(values) for node, values in (overrides or {}).items()}
    unknown = set(overrides) - set(NODE_DEFAULTS)
    if unknown:
        raise LoopConfigError(f'overrides for unknown nodes: {sorted(unknown)} (known: '
                              f'{", ".join(sorted(NODE_DEFAULTS))})')
    files = load_parameter_files(parameter_files(algorithm))
    job = {
        'vehicle_sim': {'cycle': cycle, 'cycle_end_s': float(lap_s or 0.0),
                        'real_time_factor': MAIN_JOB_REAL_TIME_FACTOR,
                        'start_utc': START_UTC, 'repeat_cycle': True},
        'agent': {'algorithm': algorithm, 'mode': 'train', 'seed': int(seed)},
        'trainer': {'algorithm': algorithm, 'seed': int(seed)},
    }
    params = {}
    for node, defaults in NODE_DEFAULTS.items():
        values = dict(defaults)
        values.update({k: v for k, v in files.get('*', {}).items() if k in defaults})
        values.update(files.get(node, {}))
        values.update(job.get(node, {}))
        values.update(overrides.get(node, {}))
        for name, value in overrides.get(node, {}).items():
            if name not in defaults:
                raise LoopConfigError(f'{node}.{name}: not a parameter the loop reads (known: '
                                      f'{", ".join(sorted(defaults))})')
            default = defaults[name]
            if default is None:   # an agent option: the registry checks it
                continue
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, (int, float)) and not isinstance(value, (int, float))) \
                    or (isinstance(default, str) and not isinstance(value, str)):
                raise LoopConfigError(f'{node}.{name}: expected a value like {default!r}, got '
                                      f'{value!r}')
            if isinstance(default, float) and not isinstance(value, bool):
                values[name] = float(value)
        params[node] = values
    return params


def _build_trainer(p: Mapping[str, Any], task, publish):
    """Return the TrainerCore that nodes/trainer.py ``TrainerNode._build_core`` builds from p."""
    from tspace_ros.training.trainer import TrainerConfig, TrainerCore
    algorithm = registry.get(p['algorithm'])
    agent_config = registry.config_from_options(
        algorithm, lambda name: p['seed'] if name == 'seed' else p.get(name))
    config = TrainerConfig(
        algorithm=p['algorithm'], mode=p['mode'], updates_per_episode=p['updates_per_episode'],
        max_update_ratio=p['max_update_ratio'], min_samples=p['min_samples'] or None,
        publish_every=p['publish_every'], checkpoint_every=p['checkpoint_every'],
        rdpg_max_length=p['rdpg_max_length'] or None, seed=p['seed'])
    return TrainerCore(config, task.state_dim, task.action_dim, agent_config,
                       checkpoint_dir=None, log_dir=None, publish=publish)


def _utc_ns(text: str) -> int:
    moment = datetime.datetime.fromisoformat(text.strip().replace('Z', '+00:00'))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    delta = moment - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _vcu_heartbeat_timeout_s(p: Mapping[str, Any]) -> float:
    """Return the VCU's heartbeat time-out as nodes/vehicle_sim.vcu_heartbeat_timeout_s does."""
    if p['heartbeat_timeout_s'] > 0:
        return float(p['heartbeat_timeout_s'])
    factor = p['real_time_factor'] if p['real_time_factor'] > 0 else p['step_s'] / 0.001
    return max(0.5 * max(factor, 1.0), 4 * p['step_s'])


def _as_message_map(torque_map, reference):
    """Return the map as it arrives from a ROS TorqueMap message (float32 torques)."""
    from tspace_ros.torque_map.map import TorqueMap
    table = np.asarray(torque_map.torque_nm, np.float32).astype(np.float64)
    return TorqueMap(reference.speed_breakpoints_kph, reference.pedal_breakpoints, table,
                     torque_map.vehicle_id, torque_map.policy_version, torque_map.origin)


# ---- the agent node's logic --------------------------------------------------------------------

class _AgentSide:
    """What nodes.agent.Agent does with windows, policies and flash results (no ROS)."""

    def __init__(self, p: Mapping[str, Any], task):
        from tspace_ros.agents.noise import make_noise, NOISE_KINDS
        if p['noise'] not in NOISE_KINDS or p['mode'] not in ('train', 'infer'):
            noise, mode = p['noise'], p['mode']
            raise LoopConfigError(f'agent: noise must be one of {NOISE_KINDS} and mode train '
                                  f'or infer, got {noise!r}, {mode!r}')
        self.algorithm = p['algorithm']
        self.mode = p['mode']
        self.mapper, self.states = task.action_mapper(), task.state_builder()
        self.current_map = task.default_map
        self.noise = make_noise(p['noise'], self.mapper.action_dim, p['noise_sigma'],
                                p['noise_theta'], seed=p['seed'])
        self.actor = None
        self.actor_version: Optional[int] = None
        self.settled_ns = 0
        self.episode_id: Optional[str] = None
        self.last_action = None
        self.decision: Optional[dict] = None
        self.counts = {'windows': 0, 'goals': 0, 'flashed': 0, 'refused': 0,
                       'skipped_busy': 0, 'skipped_settling': 0, 'skipped_no_policy': 0,
                       'bad_windows': 0, 'inference_errors': 0, 'policy_updates': 0}

    def install(self, blob) -> None:
        """Verify a policy blob and swap its LiteRT actor in (Agent._install)."""
        from tspace_ros.agents.litert import LiteRtActor, LiteRtRecurrentActor
        from tspace_ros.agents.policy_exchange import PolicyError
        blob.verify(algorithm=self.algorithm, state_dim=self.states.state_dim,
                    action_dim=self.mapper.action_dim)
        if blob.model_format != 'tflite' or not blob.model:
            raise PolicyError('the policy carries no LiteRT (tflite) model for the vehicle')
        if self.actor_version is not None and blob.version <= self.actor_version:
            return  # Agent._on_policy: not newer than the installed one
        recurrent = registry.get(self.algorithm).actor == 'recurrent'
        kind = LiteRtRecurrentActor if recurrent else LiteRtActor
        self.actor = kind(blob.model, state_dim=blob.state_dim, action_dim=blob.action_dim)
        self.actor_version = blob.version
        self.counts['policy_updates'] += 1

    def on_window(self, window):
        """Return (proposed map, row_start, row_count) to flash, or None (Agent._on_window)."""
        from tspace_ros.agents.litert import LiteRtRecurrentActor
        from tspace_ros.agents.vehicle_policy import StateError
        self.counts['windows'] += 1
        if self.decision is not None:   # a goal is pending
            self.counts['skipped_busy'] += 1
            return None
        try:
            state = self.states.state(window)
        except StateError:
            self.counts['bad_windows'] += 1
            return None
        if window.start_ns < self.settled_ns and window.episode_id == self.episode_id:
            self.counts['skipped_settling'] += 1
            return None
        if window.episode_id != self.episode_id:
            self.episode_id = window.episode_id
            self.states.reset()
            self.last_action = np.zeros(self.mapper.action_dim, np.float32)
            if isinstance(self.actor, LiteRtRecurrentActor):
                self.actor.reset()
        actor, version = self.actor, self.actor_version
        if actor is None:
            self.counts['skipped_no_policy'] += 1
            return None
        try:
            if isinstance(actor, LiteRtRecurrentActor):
                action = actor.step(state, self.last_action)
            else:
                action = actor.infer(state)
            if self.mode == 'train':
                action = np.clip(action + self.noise.sample(), -1.0, 1.0)
            proposed, row_start, row_count = self.mapper.to_map(
                action, float(window.signal('speed').max()), self.current_map, version)
        except (ValueError, RuntimeError):
            self.counts['inference_errors'] += 1
            return None
        self.last_action = np.asarray(action, np.float32)
        self.decision = {'vehicle_id': window.vehicle_id, 'episode_id': window.episode_id,
                         'observation_step_index': window.step_index,
                         'observation_end_ns': window.end_ns,
                         'action': np.asarray(action, np.float32).reshape(-1),
                         'row_start': row_start, 'row_count': row_count,
                         'policy_version': version}
        self.counts['goals'] += 1
        return _as_message_map(proposed, self.mapper.default_map), row_start, row_count

    def on_result(self, result, now_ns: int):
        """Take the bridge's answer to the pending goal; return the decision record (or None)."""
        from tspace_ros.cruncher import AgentActionRecord
        decision, self.decision = self.decision, None
        if decision is None:
            return None
        active_since = now_ns if result.success else 0
        record = AgentActionRecord(**decision, flashed=result.success,
                                   active_since_ns=active_since,
                                   error_code=int(result.error), message=result.message)
        if result.success:
            self.settled_ns = active_since
            self.states.remember(self.last_action)
            self.counts['flashed'] += 1
        else:
            self.counts['refused'] += 1
        return record

    def on_active_map(self, torque_map) -> None:
        """Follow the map the VCU applies (the torque_map/active topic)."""
        self.current_map = _as_message_map(torque_map, self.mapper.default_map)


# ---- the loop ----------------------------------------------------------------------------------

class LearningLoop:
    """
    The main job's learning loop on the cores, without ROS (see the module docstring).

    params_overrides: {node: {parameter: value}} over the suite's parameters
    (nodes vehicle_sim, can_bridge, agent, cruncher, storage, trainer).
    driver_model: passed to ``VehicleSimulation`` as ``driver_model`` when not None.
    keep_flashed_maps: keep every map the gate admitted (``flashed_maps``).
    recharge_each_lap: set the battery back to its starting state of charge at each
    lap's start (without it 10 + 1 whole WLTC laps empty the battery; Wh/km does not
    depend on the state of charge in this simulator).
    """

    def __init__(self, algorithm: str = 'ddpg', cycle: str = 'wltc3b',
                 lap_s: Optional[float] = None, seed: int = 0,
                 params_overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 driver_model: Optional[str] = None, keep_flashed_maps: bool = False,
                 recharge_each_lap: bool = True):
        from tspace_ros.bridge.core import BridgeSettings
        from tspace_ros.can.bridge import CanBridgeCore
        from tspace_ros.can.dbc import load_dbc_with_warnings
        from tspace_ros.can.links import make_link
        from tspace_ros.can.windowing import SignalMapping, WindowBuilder
        from tspace_ros.cruncher import Cruncher, CruncherConfig, RewardConfig
        from tspace_ros.task.contract import load_task
        from tspace_ros.vehicle import drive_cycle, load_vehicle_parameters

        self.algorithm, self.cycle_name, self.seed = algorithm, cycle, int(seed)
        overrides = {node: dict(values) for node, values in (params_overrides or {}).items()}
        if driver_model is not None:
            overrides.setdefault('vehicle_sim', {})['driver_model'] = driver_model
        self.params = p = suite_parameters(algorithm, cycle, lap_s or 0.0, seed, overrides)
        self.driver_model = p['vehicle_sim']['driver_model'] or None
        if p['trainer']['mode'] != 'episode':
            mode = p['trainer']['mode']
            raise LoopConfigError(f'trainer.mode: the loop trains in episode mode, got {mode!r}')
        if p['can_bridge']['flash_protocol'] != 'transfer':
            raise LoopConfigError('can_bridge.flash_protocol: the loop flashes with the '
                                  f"transfer protocol, got {p['can_bridge']['flash_protocol']!r}")
        if p['agent']['algorithm'] != p['trainer']['algorithm']:
            raise LoopConfigError('agent.algorithm and trainer.algorithm differ')
        vs, br = p['vehicle_sim'], p['can_bridge']
        self.cycle = drive_cycle(vs['cycle'])
        if vs['cycle_end_s'] > 0:
            self.cycle = self.cycle.truncated(vs['cycle_end_s'])
        self.lap_s = float(self.cycle.duration_s)
        self.step_s = float(vs['step_s'])
        self.real_time_factor = float(vs['real_time_factor']) or MAIN_JOB_REAL_TIME_FACTOR
        self.vehicle_params = load_vehicle_parameters(vs['vehicle_config'] or None)
        self.default_map = self.vehicle_params.load_default_map()
        self.start_ns = _utc_ns(vs['start_utc'] or START_UTC)

        # -- vehicle_sim: the van on its bus --
        from tspace_ros.can.dbc import load_dbc
        from tspace_ros.vehicle.can_vehicle import CanVehicle
        sim = self._simulation()
        self.vehicle = CanVehicle(sim, load_dbc(), self.start_ns,
                                  torque_budget_nm=vs['torque_budget_nm'],
                                  heartbeat_timeout_s=_vcu_heartbeat_timeout_s(vs))
        self._to_vehicle: List[Any] = []
        self.recharge_each_lap = bool(recharge_each_lap)
        self._soc_start = sim.battery.soc

        # -- can_bridge: as CanBridge._build --
        self.task = task = load_task(br['task_file'], br['vehicle_id'])
        db, _ = load_dbc_with_warnings(br['dbc_file'] or None, br['dbc_strict'])
        mapping = SignalMapping.default()
        if br['signal_mapping_file']:
            from tspace_ros.bounded_yaml import read_bounded
            mapping = SignalMapping.from_dicts(read_bounded(br['signal_mapping_file'],
                                                            'signal mapping file'))
        mapping.check_against(db)
        mapping.check_task(task.required_signals)
        windows = WindowBuilder(mapping, task.sample_rate_hz, task.samples_per_window,
                                task.vehicle_id, br['driver_id'], '', 0, br['max_gap_s'],
                                br['stale_after_s'])
        link = make_link(db, br['flash_protocol'], br['flash_timeout_s'])
        self.gate = gate = task.safety_gate(resolution_nm=link.resolution_nm)
        self.bridge = CanBridgeCore(
            db, task.vehicle_default_map(), gate, windows, link=link,
            settings=BridgeSettings(task.vehicle_id, br['driver_id'], br['flash_timeout_s'],
                                    br['vehicle_offline_s'], br['watchdog_timeout_s'],
                                    br['episode_countdown_s'], br['can_bitrate'] or 500_000),
            send=self._to_vehicle.extend)
        self.countdown_s = float(br['episode_countdown_s'])
        # Count (and keep) what the gate sees and admits: the one way to the van.
        self.gate_checks = self.gate_rejections = 0
        self.flashed_maps: List[Any] = []
        self._keep_maps = keep_flashed_maps
        admit = gate.admit

        def counted_admit(proposed, current, row_start, row_count):
            verdict, admitted = admit(proposed, current, row_start, row_count)
            self.gate_checks += 1
            if admitted is None:
                self.gate_rejections += 1
            elif self._keep_maps:
                self.flashed_maps.append(admitted)
            return verdict, admitted
        gate.admit = counted_admit

        # -- cruncher --
        c = p['cruncher']
        ctask = load_task(c['task_file'])
        self.cruncher = Cruncher(CruncherConfig.for_task(
            ctask, reward=RewardConfig(kinetic_energy_mass_kg=c['kinetic_energy_mass_kg'],
                                       shaping_gamma=c['shaping_gamma'],
                                       speed_tracking_weight=c['speed_tracking_weight'],
                                       action_weight=c['action_weight']),
            max_step_windows=c['max_step_windows'], keep_timed_out=c['keep_timed_out']))
        self._open: Dict[str, list] = {}

        # -- agent --
        self.agent = _AgentSide(p['agent'], load_task(p['agent']['task_file']))
        if p['agent']['policy_file']:
            from tspace_ros.agents.policy_exchange import PolicyBlob
            self.agent.install(PolicyBlob.load(p['agent']['policy_file']))

        # -- trainer, and the storage's in-memory source --
        t = p['trainer']
        ttask = load_task(t['task_file'])
        self.trainer = _build_trainer(t, ttask, self.agent.install)
        self.records = registry.get(algorithm).samples == 'records'
        if self.records:
            from tspace_ros.agents.replay import InMemoryReplay
            self.source = InMemoryReplay(t['buffer_capacity'], ttask.state_dim,
                                         ttask.action_dim)
        else:
            from tspace_ros.agents.episode_buffer import EpisodeBuffer
            self.source = EpisodeBuffer(ttask.state_dim, ttask.action_dim)
        self.trainer.set_source(self.source)
        # TrainerNode.on_activate: the initial policy goes out, the agent installs it.
        self.agent.install(self.trainer.current_blob())

        self.bridge.start(self._now())
        self.episodes: List[Dict[str, Any]] = []
        self.summaries: List[Any] = []
        self._baseline: Optional[Dict[str, float]] = None
        self.flash_results: Dict[str, int] = {}

    # -- pieces ---------------------------------------------------------------------------

    def _simulation(self):
        from tspace_ros.vehicle import VehicleSimulation
        extra = {} if self.driver_model is None else {'driver_model': self.driver_model}
        try:
            return VehicleSimulation(self.vehicle_params, self.cycle,
                                     default_map=self.default_map, repeat_cycle=True, **extra)
        except TypeError as error:
            if extra:
                raise LoopConfigError(f'driver_model {self.driver_model!r}: this '
                                      f'VehicleSimulation takes no driver model ({error})') \
                    from None
            raise

    @property
    def sim(self):
        """Return the van's VehicleSimulation."""
        return self.vehicle.sim

    def _now(self):
        from tspace_ros.bridge.core import Now
        t = self.vehicle.t_s
        return Now(self.vehicle.utc_ns, t / self.real_time_factor)

    def baseline(self) -> Dict[str, float]:
        """Return the default map's figures on one lap (bringup's reference simulation)."""
        if self._baseline is None:
            reference = self._simulation()
            reading = reference.odometer()
            reference.run(self.lap_s)
            self._baseline = dict(reference.between(reading, reference.odometer()),
                                  kind='baseline')
        return self._baseline

    def _tick(self, duration_s: float) -> None:
        """One vehicle_sim tick and one bridge poll, then the agent and the cruncher."""
        vehicle = self.vehicle
        received, self._to_vehicle[:] = list(self._to_vehicle), []
        acks = vehicle.receive(received) + vehicle.poll()
        frames = acks + vehicle.advance(duration_s)
        now = self._now()
        self.bridge.receive(frames, now)
        self.bridge.tick(now)
        self.bridge.check_watchdog(now)
        self._dispatch(now)

    def _dispatch(self, now) -> None:
        """Hand the bridge's outputs on, as the nodes' topics would."""
        out = self.bridge.take_outputs()
        for result in out.flashes:
            self._flash_done(result, now)
        for note in out.episode_events:
            self._crunch(self.cruncher.on_event(self._event(note)))
        if out.active_map is not None:
            self.agent.on_active_map(out.active_map)
        for result in out.windows:
            window = result.window
            self._crunch(self.cruncher.on_window(window))
            self.bridge.feed_watchdog(now)          # the agent's heartbeat, one per window
            goal = self.agent.on_window(window)
            if goal is not None:
                started = self.bridge.flash(*goal, now)
                from tspace_ros.bridge.core import FlashResult
                if isinstance(started, FlashResult):   # rejected by the gate: final
                    self._flash_done(started, now)
                # the bridge's own outputs of the flash (log, counters) come next tick

    def _flash_done(self, result, now) -> None:
        name = result.error.name
        self.flash_results[name] = self.flash_results.get(name, 0) + 1
        record = self.agent.on_result(result, now.node_ns)
        if record is not None:
            self._crunch(self.cruncher.on_action(record))

    @staticmethod
    def _event(note):
        from tspace_ros.cruncher import EpisodeEventRecord
        codes = {'started': EpisodeEventRecord.STARTED, 'ending': EpisodeEventRecord.ENDING,
                 'stored': EpisodeEventRecord.STORED,
                 'discarded': EpisodeEventRecord.DISCARDED,
                 'exited': EpisodeEventRecord.EXITED}
        return EpisodeEventRecord(
            event=codes[note.kind], vehicle_id=note.vehicle_id, driver_id=note.driver_id,
            episode_id=note.episode_id, stamp_ns=note.stamp_ns,
            episode_start_ns=note.start_ns or 0, episode_end_ns=note.end_ns or 0)

    def _crunch(self, transitions) -> None:
        """Keep the cruncher's transitions; store each finished episode (storage node)."""
        for record in transitions:
            self._open.setdefault(record.episode_id, []).append(record)
        for summary, last in self.cruncher.finished():
            kept = self._open.pop(summary.episode_id, [])
            if summary.valid:
                self._store(kept + list(last))
            self.summaries.append(summary)

    def _store(self, transitions) -> None:
        """Put a stored episode's transitions where the trainer samples them."""
        if not transitions:
            return
        if self.records:
            wanted = [r for r in transitions if self.trainer.wants_transition(r)]
            if wanted:
                self.source.add_batch(np.stack([r.state for r in wanted]),
                                      np.stack([r.action for r in wanted]),
                                      np.array([r.reward for r in wanted], np.float32),
                                      np.stack([r.next_state for r in wanted]),
                                      np.array([r.done for r in wanted], np.float32))
        else:
            self.source.add_episode(np.stack([r.state for r in transitions]),
                                    np.stack([r.action for r in transitions]),
                                    np.array([r.reward for r in transitions], np.float32),
                                    np.stack([r.next_state for r in transitions]),
                                    np.array([r.done for r in transitions], np.float32))

    def _drive_until(self, t_end_s: float) -> None:
        while self.vehicle.t_s < t_end_s - 1e-9:
            self._tick(min(self.step_s, t_end_s - self.vehicle.t_s))

    # -- episodes -------------------------------------------------------------------------

    def run_episode(self, evaluate: bool = False, train: Optional[bool] = None
                    ) -> Dict[str, Any]:
        """
        Drive one lap as an episode (evaluate: no exploration noise), then train on it.

        train: run the trainer on the stored episode (default: unless evaluate;
        the suite's trainer also trains after the evaluation lap, on nothing
        anyone uses). Returns the lap's figures: energy_per_km_wh, distance_km,
        speed_error_rms_kph (the van's, over the whole lap), steps,
        timed_out_steps, total_reward (the cruncher's), updates (this episode),
        update_count, critic_loss (the trainer's latest, after training),
        critic_loss_mean (over this episode's updates), policy_version (acting),
        wall_s, drive_wall_s, train_wall_s, real_time_factor (lap / wall).
        """
        from tspace_ros.episodes import control
        train = (not evaluate) if train is None else bool(train)
        index = len(self.episodes)
        lap_start = round(self.vehicle.t_s / self.lap_s) * self.lap_s
        lap_end = lap_start + self.lap_s
        self.agent.mode = 'infer' if evaluate else self.params['agent']['mode']
        wall_start = time.perf_counter()
        self._drive_until(lap_start)
        if self.recharge_each_lap:
            # Parked between laps: charged to the start's state of charge. A whole WLTC
            # lap takes 8 % of SoC: from 0.9 the van is empty in the 11th lap.
            self.sim.battery.soc = self._soc_start
        odometer_start = self.sim.odometer()
        self._drive_until(lap_start + START_OFFSET_S)
        answer = self.bridge.episode_command(control.START, self._now())
        if not answer.accepted:
            raise RuntimeError(f'episode start refused: {answer.message}')
        episode_id = answer.episode_id
        self._dispatch(self._now())
        version = self.agent.actor_version
        end_at = lap_end - self.countdown_s - END_MARGIN_S
        if end_at <= self.vehicle.t_s + 3 * self.task.window_duration_s:
            raise LoopConfigError(f'lap of {self.lap_s:g} s too short for an episode')
        self._drive_until(end_at)
        answer = self.bridge.episode_command(control.END_VALID, self._now())
        if not answer.accepted:
            raise RuntimeError(f'episode end refused: {answer.message}')
        self._dispatch(self._now())
        self._drive_until(lap_end)
        lap = self.sim.between(odometer_start, self.sim.odometer())
        extra = 0
        while not any(s.episode_id == episode_id for s in self.summaries):
            self._tick(self.step_s)   # the episode's last window (never with a whole lap)
            extra += 1
            if extra > 100:
                raise RuntimeError(f'episode {episode_id} was never summarised')
        summary = next(s for s in self.summaries if s.episode_id == episode_id)
        drive_wall = time.perf_counter() - wall_start
        updates_before = self.trainer.update_count
        metrics = None
        train_start = time.perf_counter()
        if train and summary.valid:
            metrics = self.trainer.on_episode(summary)
        train_wall = time.perf_counter() - train_start
        status = self.trainer.status()
        wall = time.perf_counter() - wall_start
        figures = {
            'index': index, 'kind': 'eval' if evaluate else 'train', 'episode_id': episode_id,
            'steps': int(summary.step_count), 'timed_out_steps': int(summary.timed_out_steps),
            'total_reward': float(summary.total_reward),
            'energy_per_km_wh': lap['energy_per_km_wh'],
            'battery_energy_wh': lap['battery_energy_wh'], 'distance_km': lap['distance_km'],
            'speed_error_rms_kph': lap['speed_error_rms_kph'],
            'windows_energy_per_km_wh': float(summary.energy_per_km_wh),
            'policy_version': version, 'updates': self.trainer.update_count - updates_before,
            'update_count': self.trainer.update_count,
            'critic_loss': status.get('critic_loss'),
            'critic_loss_mean': metrics.get('critic_loss') if metrics else None,
            'actor_loss': status.get('actor_loss'),
            'buffer_size': status.get('buffer_size'),
            'wall_s': wall, 'drive_wall_s': drive_wall, 'train_wall_s': train_wall,
            'real_time_factor': self.lap_s / drive_wall if drive_wall > 0 else math.inf}
        self.episodes.append(figures)
        return figures

    def run(self, episodes: int, progress=None) -> List[Dict[str, Any]]:
        """Run ``episodes`` training laps and one evaluation lap; return their figures."""
        if episodes < 0:
            raise ValueError(f'episodes must be >= 0, got {episodes}')
        out = []
        for index in range(episodes + 1):
            figures = self.run_episode(evaluate=index == episodes)
            out.append(figures)
            if progress is not None:
                progress(figures)
        return out

    def result(self) -> Dict[str, Any]:
        """Return the run's summary: baseline, episodes, the evaluation's saving, counters."""
        baseline = self.baseline()
        final = self.episodes[-1] if self.episodes else None
        saving = None
        if final is not None:
            saving = 1.0 - final['energy_per_km_wh'] / baseline['energy_per_km_wh']
        return {'algorithm': self.algorithm, 'cycle': self.cycle_name, 'lap_s': self.lap_s,
                'seed': self.seed, 'default': baseline, 'episodes': list(self.episodes),
                'learned': final, 'energy_saving': saving,
                'gate': {'checks': self.gate_checks, 'rejections': self.gate_rejections},
                'flashes': dict(self.flash_results), 'agent': dict(self.agent.counts),
                'vcu_fallbacks': int(self.vehicle.receiver.stats['fallbacks'])}

    def close(self) -> None:
        """Close the trainer (no checkpoint directory: nothing is written)."""
        self.trainer.close()
