"""
The single-process bringup: the whole node suite in one process.

For machines without ``ros2 launch``: every node of the suite (and, for a
simulation, the simulated vehicle) is created in this process and spun by one
multi-threaded executor, with the parameters of the same file the launch files
pass (``config/sim_suite.yaml``: one ``/**/<node>`` section per node), then
overrides. The lifecycle manager brings the suite up in dependency order.

Run it as ``python -m tspace_ros.suite`` (or ``ros2 run tspace_ros suite``): it
starts the simulated vehicle, brings the suite up, and runs until SIGINT or
SIGTERM; then it deactivates the chain (the bridge flashes the default map
back while the vehicle still answers), closes the storage (files complete on
disk) and exits. ``Suite`` is the same thing as a library, for the main job
and the tests.
"""

import argparse
import datetime
import faulthandler
import pathlib
import signal
import sys
import threading
from typing import Any, Dict, Mapping, Optional, Sequence

from lifecycle_msgs.msg import Transition
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from tspace_ros.bounded_yaml import load_bounded, read_bounded, YamlBoundsError
from tspace_ros.nodes.agent import Agent
from tspace_ros.nodes.can_bridge import CanBridge
from tspace_ros.nodes.cruncher import CruncherNode
from tspace_ros.nodes.lifecycle_manager import LifecycleManager
from tspace_ros.nodes.recorder import RecorderNode
from tspace_ros.nodes.storage import StorageNode
from tspace_ros.nodes.trainer import TrainerNode
from tspace_ros.nodes.vehicle_sim import VehicleSim

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = PACKAGE_ROOT / 'config' / 'sim_suite.yaml'
SHUTDOWN_STACKS_AFTER_S = 20.0
SUITE_NODES = ('storage', 'trainer', 'can_bridge', 'cruncher', 'agent')
LINKS = {'can': 'can_bridge', 'cloud': 'cloud_bridge'}   # link -> its bridge node


class SuiteConfigError(ValueError):
    """A parameter file or override that cannot configure the suite."""


def params_file_path() -> pathlib.Path:
    """Return the suite's parameter file (source tree or installed share directory)."""
    if DEFAULT_PARAMS.is_file():
        return DEFAULT_PARAMS
    from ament_index_python.packages import get_package_share_directory
    return pathlib.Path(get_package_share_directory('tspace_ros')) / 'config' / \
        'sim_suite.yaml'


def config_path(*parts: str) -> pathlib.Path:
    """Return a file under the package's config/ (source tree or installed share)."""
    return params_file_path().parent.joinpath(*parts)


def resolve_params_file(path) -> pathlib.Path:
    """
    Return a parameter file given on the command line: as given, or under the config dir.

    A relative path that does not exist from the working directory is looked up
    in the package's config/ (``config/agents/rdpg.yaml`` or ``agents/rdpg.yaml``
    from the repository root or anywhere else). SuiteConfigError names where it
    looked.
    """
    given = pathlib.Path(path).expanduser()
    if given.is_file() or given.is_absolute():
        return given
    parts = given.parts[1:] if given.parts[:1] == ('config',) else given.parts
    shipped = config_path(*parts) if parts else None
    if shipped is not None and shipped.is_file():
        return shipped
    raise SuiteConfigError(f'parameter file {path}: not found in {pathlib.Path.cwd()} nor in '
                           f'{params_file_path().parent}')


def link_params_path(link: str) -> pathlib.Path:
    """Return the link's parameter layer, config/links/<link>.yaml (see LINKS)."""
    if link not in LINKS:
        raise SuiteConfigError(f'link must be one of {sorted(LINKS)}, got {link!r}')
    return config_path('links', f'{link}.yaml')


def load_parameter_files(paths: Sequence[pathlib.Path]) -> Dict[str, Dict[str, Any]]:
    """Read several parameter files in order (later ones win); see load_node_parameters."""
    nodes: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        for name, values in load_node_parameters(path).items():
            nodes.setdefault(name, {}).update(values)
    return nodes


def load_node_parameters(path: pathlib.Path) -> Dict[str, Dict[str, Any]]:
    """
    Read a ROS 2 parameter file; return node name -> parameters ('/**' applies to all).

    SuiteConfigError names the file and the key for anything that is not a
    parameter file of the form ``<pattern>: {ros__parameters: {...}}``.
    """
    try:
        data = read_bounded(path, 'parameter file')
    except (OSError, YamlBoundsError) as error:
        raise SuiteConfigError(f'{path}: cannot read the parameter file: {error}') from None
    if not isinstance(data, dict):
        raise SuiteConfigError(f'{path}: expected a mapping of node patterns, got '
                               f'{type(data).__name__}')
    nodes: Dict[str, Dict[str, Any]] = {}
    for pattern, section in data.items():
        if not isinstance(section, dict) or not isinstance(section.get('ros__parameters'),
                                                           dict):
            raise SuiteConfigError(f'{path}: {pattern}: expected a mapping with '
                                   f'ros__parameters')
        name = str(pattern).rsplit('/', 1)[-1] if pattern != '/**' else '*'
        nodes.setdefault(name, {}).update(section['ros__parameters'])
    return nodes


def _parameters(values: Mapping[str, Any]):
    return [Parameter(name, value=value) for name, value in values.items()]


class Suite:
    """The suite's nodes in one process, on one executor (see the module docstring)."""

    def __init__(self, namespace: str, params_file=None,
                 overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 simulate: bool = True, context=None, vehicles: Sequence[str] = (),
                 record: bool = False, link: str = 'can'):
        """
        Create the nodes (nothing is configured yet) and spin them in a thread.

        params_file: a parameter file or a list of them, layered in order (later
        ones win; default: config/sim_suite.yaml).

        vehicles: for a fleet, the vehicles' namespaces (VINs). Each gets its own van
        (when simulating, on a CAN channel of its own), bridge, cruncher and agent; one
        storage, one trainer and the lifecycle manager serve them all from
        ``namespace``, and policy updates reach every agent. Without it, everything
        runs in ``namespace`` (one vehicle). record: a recorder per vehicle writes
        its topics to a rosbag2 bag (the recorder's ``output_dir``) while active.

        link: how the bridge reaches the vehicle: ``can`` (``can_bridge``; with
        simulate, the simulated van on its bus) or ``cloud`` (``cloud_bridge``, its
        ``cloud_url`` from the parameters; the van, if simulated, is the telematics
        cloud's, outside the suite: simulate must be False).
        """
        link_file = link_params_path(link)   # SuiteConfigError for an unknown link
        if link == 'cloud' and simulate:
            raise SuiteConfigError("link cloud: the van is the telematics cloud's "
                                   '(simulate=False)')
        self.bridge_name = bridge_name = LINKS[link]
        files = [params_file] if isinstance(params_file, (str, pathlib.Path)) else \
            list(params_file or [])
        files = files or [params_file_path()]
        # The link's layer (config/links/<link>.yaml) right after the suite's own file.
        files = files[:1] + [link_file] + files[1:]
        params = load_parameter_files(files)
        overrides = overrides or {}
        known = set(SUITE_NODES) | {'vehicle_sim', 'lifecycle_manager', 'recorder',
                                    'cloud_bridge'}
        unknown = set(overrides) - known
        if unknown:
            raise SuiteConfigError(f'overrides for unknown nodes: {sorted(unknown)}')
        fleet = [str(v).strip('/') for v in vehicles]
        if len(set(fleet)) != len(fleet) or any(not v for v in fleet):
            raise SuiteConfigError(f'vehicles must be distinct, non-empty namespaces: {fleet}')

        def settings(name, **extra):
            values = dict(params.get('*', {}))
            values.update(params.get(name, {}))
            values.update(overrides.get(name, {}))
            values.update(extra)
            return _parameters(values)
        shared = {'namespace': namespace, 'context': context}
        start_utc = str(dict(params.get('vehicle_sim', {}), **overrides.get(
            'vehicle_sim', {})).get('start_utc', '')) or datetime.datetime.now(
            datetime.timezone.utc).replace(microsecond=0).isoformat()
        self.vehicles = fleet or [namespace.strip('/')]
        self.nodes: Dict[str, Any] = {}
        self._sims: Dict[str, Any] = {}
        storage = StorageNode(parameter_overrides=settings(
            'storage', **({'vehicles': fleet} if fleet else {})), **shared)
        self.nodes['storage'] = storage
        self.nodes['trainer'] = TrainerNode(local_storage=storage,
                                            parameter_overrides=settings('trainer'), **shared)
        managed = ['storage', 'trainer']
        for vehicle in fleet or [None]:
            own = {'namespace': f'/{vehicle}', 'context': context} if vehicle else shared
            prefix = f'{vehicle}/' if vehicle else ''
            bus, agent = {}, {}
            clock = {}
            if vehicle:
                bus = {'can_channel': f'tspace_sim_{vehicle}', 'vehicle_id': vehicle}
                agent = {'policy_topic': f'/{namespace.strip("/")}/policy/update'}
                # One /clock for all: the first van's; the others start at the same UTC
                # time and run at the same rate, so their stamps agree with it.
                clock = {'publish_clock': vehicle == fleet[0], 'start_utc': start_utc}
            if simulate:
                sim = VehicleSim(parameter_overrides=settings('vehicle_sim', **bus, **clock),
                                 **own)
                self.nodes[prefix + 'vehicle_sim'] = self._sims[vehicle or ''] = sim
            if link == 'cloud':
                from tspace_ros.nodes.cloud_bridge import CloudBridge
                bridge = CloudBridge(parameter_overrides=settings(
                    'cloud_bridge', **({'vehicle_id': vehicle} if vehicle else {})), **own)
            else:
                bridge = CanBridge(parameter_overrides=settings('can_bridge', **bus), **own)
            self.nodes[prefix + bridge_name] = bridge
            self.nodes[prefix + 'cruncher'] = CruncherNode(
                parameter_overrides=settings('cruncher'), **own)
            self.nodes[prefix + 'agent'] = Agent(
                parameter_overrides=settings('agent', **agent), **own)
            chain = [bridge_name, 'cruncher', 'agent']
            if record:
                self.nodes[prefix + 'recorder'] = RecorderNode(
                    parameter_overrides=settings('recorder'), **own)
                chain.append('recorder')
            managed += [f'/{vehicle}/{n}' if vehicle else n for n in chain]
        manager_settings = [p for p in settings('lifecycle_manager')
                            if p.name != 'use_sim_time']
        if fleet or record or link != 'can':
            manager_settings = [p for p in manager_settings if p.name != 'node_names'] + [
                Parameter('node_names', value=managed)]
        self.manager = LifecycleManager(parameter_overrides=manager_settings, **shared)
        self.executor = MultiThreadedExecutor(num_threads=8 + 2 * len(fleet), context=context)
        for node in (*self.nodes.values(), self.manager):
            self.executor.add_node(node)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: B902 - the executor stops on context shutdown
            pass

    def __getitem__(self, name: str):
        """Return a node by name ('vehicle_sim', 'can_bridge', ...)."""
        return self.nodes[name]

    def vehicle_transition(self, transition: int, vehicle: str = '') -> str:
        """
        Change a simulated van's state (the vans are not in the managed chain); return it.

        vehicle: the van's namespace in a fleet ('' for the single vehicle).
        """
        node = self._sims[vehicle]
        start, trigger = {
            Transition.TRANSITION_CONFIGURE: ('unconfigured', node.trigger_configure),
            Transition.TRANSITION_ACTIVATE: ('inactive', node.trigger_activate),
            Transition.TRANSITION_DEACTIVATE: ('active', node.trigger_deactivate),
            Transition.TRANSITION_CLEANUP: ('inactive', node.trigger_cleanup)}[transition]
        if node._state_machine.current_state[1] == start:
            trigger()
        return node._state_machine.current_state[1]

    def startup(self):
        """Configure the simulated vans, bring the suite up, then start the vans."""
        for vehicle in self._sims:
            if self.vehicle_transition(Transition.TRANSITION_CONFIGURE, vehicle) != 'inactive':
                return False, (f'vehicle_sim{" " * bool(vehicle)}{vehicle} could not be '
                               f'configured: '
                               f'{self._sims[vehicle].last_error or "see its log"}')
        ok, message = self.manager.startup()
        if not ok:   # the causes, as the nodes logged them (the manager only saw the state)
            causes = [f'{name}: {node.last_error}' for name, node in self.nodes.items()
                      if getattr(node, 'last_error', '')]
            message += f' ({"; ".join(causes)})' if causes else ''
        for vehicle in self._sims if ok else ():
            if self.vehicle_transition(Transition.TRANSITION_ACTIVATE, vehicle) != 'active':
                return False, (f'vehicle_sim{" " * bool(vehicle)}{vehicle} could not be '
                               f'activated: '
                               f'{self._sims[vehicle].last_error or "see its log"}')
        return ok, message

    def shutdown(self):
        """Deactivate and clean up the suite (default maps restored), then the vans."""
        ok, message = self.manager.shutdown()
        for vehicle in self._sims:
            for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
                self.vehicle_transition(transition, vehicle)
        return ok, message

    def close(self):
        """Stop spinning and destroy every node."""
        self.executor.shutdown(timeout_sec=5.0)
        self._spinner.join(timeout=5.0)
        for node in (*self.nodes.values(), self.manager):
            node.destroy_node()


def parse_args(argv):
    """Parse the command line of the single-process bringup."""
    parser = argparse.ArgumentParser(
        prog='tspace_ros.suite', description='Run the tspace_ros node suite (and the '
        'simulated vehicle) in one process until SIGINT/SIGTERM.')
    parser.add_argument('--namespace', default='SIMVAN00000000001',
                        help='namespace of the vehicle (its VIN)')
    parser.add_argument('--params-file', type=pathlib.Path, action='append', default=[],
                        help='a ROS 2 parameter file layered over config/sim_suite.yaml (and '
                        "the link's layer); repeat to layer several, later ones win; a "
                        'relative path not found here is looked up in the config directory '
                        '(e.g. config/agents/rdpg.yaml, config/storage/mongodb.yaml, '
                        'config/sites/example_depot.yaml)')
    parser.add_argument('--vehicles', nargs='+', default=[], metavar='VIN',
                        help='a fleet: one van, bridge, cruncher and agent per VIN, one '
                        'storage and trainer for all (in --namespace)')
    parser.add_argument('--record', action='store_true',
                        help="record the suite's topics to a rosbag2 bag (MCAP) under "
                        'recorder.output_dir (default bags/)')
    parser.add_argument('--no-sim', action='store_true',
                        help='no simulated vehicle: the bridge reads a real bus')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NODE.NAME=VALUE',
                        help='override a parameter, e.g. -p agent.mode=infer (YAML value)')
    return parser.parse_args(argv)


def parse_overrides(items) -> Dict[str, Dict[str, Any]]:
    """Turn 'node.name=value' strings into {node: {name: value}}; SuiteConfigError if bad."""
    overrides: Dict[str, Dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition('=')
        node, dot, name = key.partition('.')
        if not sep or not dot or not node or not name:
            raise SuiteConfigError(f'override {item!r}: expected NODE.NAME=VALUE')
        try:
            overrides.setdefault(node, {})[name] = load_bounded(text, f'override {key}',
                                                                max_bytes=64 << 10)
        except YamlBoundsError as error:
            raise SuiteConfigError(str(error)) from None
    return overrides


def main(argv=None) -> int:
    """Run the suite until SIGINT/SIGTERM; shut it down cleanly."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        files = [params_file_path()] + [resolve_params_file(f) for f in args.params_file]
        overrides = parse_overrides(args.param)
    except SuiteConfigError as error:
        print(f'tspace_ros suite: {error}', file=sys.stderr)
        return 2
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    suite = None
    try:
        suite = Suite(args.namespace, files, overrides,
                      simulate=not args.no_sim, vehicles=args.vehicles, record=args.record)
        ok, message = suite.startup()
        print(f'tspace_ros suite: {message}', flush=True)
        if not ok:
            return 1
        while not stop.wait(0.5):
            if suite.manager.failure:
                print(f'tspace_ros suite: failure: {suite.manager.failure}', flush=True)
                break
        print('tspace_ros suite: shutting down', flush=True)
        # Should a node hang in its transition, show where (the manager gives up on it).
        faulthandler.dump_traceback_later(SHUTDOWN_STACKS_AFTER_S, exit=False)
        ok = suite.shutdown()[0]
        faulthandler.cancel_dump_traceback_later()
        return 0 if ok else 1
    except SuiteConfigError as error:
        print(f'tspace_ros suite: {error}', file=sys.stderr)
        return 2
    finally:
        if suite is not None:
            suite.close()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
