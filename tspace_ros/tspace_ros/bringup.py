"""
Bringup: the main job of ``scripts/run``.

Starts the node suite that exists so far, each node in a process of its own in
the vehicle's namespace (as ``ros2 launch`` does), drives their lifecycles over
the standard services like the lifecycle manager will, and writes the results
to disk:

- ``vehicle_sim`` drives the simulated van through a drive cycle, 20 times
  faster than real time by default, its CAN traffic on the ROS-topic bus;
- ``can_bridge`` (on the simulator's /clock) decodes it into observation windows;
- halfway through, one torque map goes through the bridge's flash action: more
  lift-off regeneration on the rows around the current speed, as an agent may
  propose, through the safety gate to the simulated VCU;
- ``windows.parquet`` gets every window (ids, UTC stamps, one list column per
  signal; the observation specification in the metadata) and ``summary.json``
  the drive's figures (energy, Wh/km, tracking error, real-time factor) and
  the flash outcome.

The agents, trainer and storage join this job as they are built, and it becomes
the learning loop.
"""

import argparse
import datetime
import json
import pathlib
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import ObservationWindow

from tspace_ros.node_process import NodeProcess
from tspace_ros.nodes.messages import torque_map_to_msg, window_from_msg
from tspace_ros.nodes.qos import WINDOW_QOS
from tspace_ros.torque_map import action_rows, apply_action
from tspace_ros.vehicle import CYCLE_NAMES, drive_cycle, load_vehicle_parameters
from tspace_ros.vehicle.default_map import COAST_PEDAL

# The vehicle's namespace.
NAMESPACE = 'SIMVAN00000000001'


def parse_args(argv):
    """Parse the command line of the main job."""
    parser = argparse.ArgumentParser(prog='tspace_ros.bringup',
                                     description='Run the simulated van and the CAN bridge '
                                     'through a drive cycle; write windows and figures.')
    parser.add_argument('--cycle', choices=CYCLE_NAMES, default='wltc3b',
                        help='drive cycle (default wltc3b)')
    parser.add_argument('--duration-s', type=float, default=0.0,
                        help='simulated seconds to drive (default: the whole cycle)')
    parser.add_argument('--out', type=pathlib.Path, default=pathlib.Path('runs'),
                        help='directory under which a run directory is created')
    parser.add_argument('--no-flash', action='store_true',
                        help='do not flash a torque map halfway')
    parser.add_argument('--real-time-factor', type=float, default=20.0,
                        help='simulated seconds per wall second (default 20; 0: as fast as '
                        'possible). The CAN frames travel as ROS messages, which the bridge '
                        'decodes at about 20-40x real time on this hardware; beyond that '
                        'frames queue up and maps are answered late')
    parser.add_argument('--timeout-s', type=float, default=600.0,
                        help='give up after this much wall time')
    args = parser.parse_args(argv)
    if args.duration_s < 0 or args.timeout_s <= 0 or args.real_time_factor < 0:
        parser.error('--duration-s and --real-time-factor must be >= 0, --timeout-s positive')
    return args


def write_windows(path: pathlib.Path, windows) -> dict:
    """Write the windows as Parquet; return the observation specification."""
    first = windows[0]
    columns = {
        'vehicle_id': [w.vehicle_id for w in windows],
        'driver_id': [w.driver_id for w in windows],
        'episode_id': [w.episode_id for w in windows],
        'step_index': pa.array([w.step_index for w in windows], pa.uint64()),
        'window_start': pa.array([w.start_ns for w in windows], pa.timestamp('ns', 'UTC')),
        'window_end': pa.array([w.end_ns for w in windows], pa.timestamp('ns', 'UTC')),
    }
    for name in first.signal_names:
        columns[name] = pa.array([w.signal(name) for w in windows], pa.list_(pa.float32()))
    spec = {'signals': list(first.signal_names), 'units': list(first.units),
            'sample_rate_hz': first.sample_rate_hz, 'samples_per_window': first.n_samples}
    table = pa.table(columns).replace_schema_metadata(
        {'tspace_ros.observation_spec': json.dumps(spec)})
    pq.write_table(table, path)
    return spec


def flash_goal(default_map, top_speed_kph: float, version: int):
    """Return a flash goal: more lift-off regeneration on the rows around top_speed_kph."""
    rows = action_rows(top_speed_kph, default_map.shape[0])
    pedals = np.asarray(default_map.pedal_breakpoints)
    action = np.where(pedals <= COAST_PEDAL, -1.0, 0.0)[None, :].repeat(len(rows), 0)
    proposed = apply_action(default_map, default_map, action, rows.start, policy_version=version)
    return FlashTorqueMap.Goal(map=torque_map_to_msg(proposed, 0, rows.start, len(rows))), rows


class Bringup:
    """The launcher's ROS side: lifecycle clients, window and diagnostics listeners."""

    def __init__(self, namespace: str):
        """Create the node and its clients in namespace (the vehicle's)."""
        self.node = rclpy.create_node('bringup', namespace=namespace)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.windows, self.sim_status = [], {}
        self.node.create_subscription(ObservationWindow, 'observation/window',
                                      lambda msg: self.windows.append(window_from_msg(msg)),
                                      WINDOW_QOS)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 100)
        self.flash = ActionClient(self.node, FlashTorqueMap, 'flash_torque_map')
        self.lifecycle = {name: self.node.create_client(ChangeState, f'{name}/change_state')
                          for name in ('vehicle_sim', 'can_bridge')}

    def _on_diagnostics(self, array):
        for status in array.status:
            if status.name.startswith(self.node.get_namespace() + '/vehicle_sim'):
                self.sim_status = {v.key: v.value for v in status.values}

    def spin_until(self, predicate, timeout_s: float) -> bool:
        """Spin until predicate() holds or timeout_s passes; return predicate()."""
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def transition(self, name: str, transition_id: int, timeout_s: float = 30.0) -> bool:
        """Ask a node for a lifecycle transition; return whether it succeeded."""
        client = self.lifecycle[name]
        if not self.spin_until(client.service_is_ready, timeout_s):
            return False
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        return self.spin_until(future.done, timeout_s) and future.result().success

    def send_flash(self, goal, timeout_s: float = 60.0) -> dict:
        """Send a flash goal and wait for its result; return the outcome as a dict."""
        if not self.spin_until(self.flash.server_is_ready, timeout_s):
            return {'success': False, 'message': 'no flash_torque_map server'}
        sent = self.flash.send_goal_async(goal)
        if not self.spin_until(sent.done, timeout_s) or not sent.result().accepted:
            return {'success': False, 'message': 'goal not accepted'}
        result = sent.result().get_result_async()
        if not self.spin_until(result.done, timeout_s):
            return {'success': False, 'message': 'no result'}
        r = result.result().result
        return {'success': r.success, 'error_code': r.error_code, 'message': r.message,
                'policy_version': r.active_map.policy_version}


def main(argv=None) -> int:
    """Run the main job; return the process exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cycle = drive_cycle(args.cycle)
    duration_s = min(args.duration_s or cycle.duration_s, cycle.duration_s)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    run_dir = args.out / stamp.strftime('%Y%m%dT%H%M%SZ')
    run_dir.mkdir(parents=True, exist_ok=True)
    start_ns = int(stamp.timestamp()) * 1_000_000_000
    start_utc = datetime.datetime.fromtimestamp(start_ns / 1e9, datetime.timezone.utc)
    ros_args = ['-r', f'__ns:=/{NAMESPACE}']
    # Each node in a process of its own, as ros2 launch starts them.
    sim = NodeProcess('tspace_ros.nodes.vehicle_sim', run_dir / 'vehicle_sim.log', ros_args + [
        '-p', f'cycle:={args.cycle}', '-p', f'real_time_factor:={args.real_time_factor}',
        '-p', 'step_s:=0.5', '-p', f'start_utc:={start_utc.isoformat()}'])
    bridge = NodeProcess('tspace_ros.nodes.can_bridge', run_dir / 'can_bridge.log',
                         ros_args + ['-p', 'use_sim_time:=true'])
    rclpy.init(args=[])
    started, outcome, failure = time.monotonic(), None, ''
    try:
        ros = Bringup(NAMESPACE)
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            for name in ('can_bridge', 'vehicle_sim'):
                if not ros.transition(name, transition):
                    raise RuntimeError(f'{name}: transition {transition} failed')

        def sim_time():
            return float(ros.sim_status.get('sim_time_s', 0.0))
        deadline = started + args.timeout_s
        if not args.no_flash:
            ros.spin_until(lambda: sim_time() >= duration_s / 2 and ros.windows,
                           deadline - time.monotonic())
            goal, rows = flash_goal(load_vehicle_parameters().load_default_map(),
                                    float(ros.windows[-1].signal('speed').max()), version=1)
            outcome = ros.send_flash(goal)
            outcome['rows'] = [rows.start, rows.stop - 1]
        ros.spin_until(lambda: sim_time() >= duration_s - 1e-6 or
                       ros.sim_status.get('finished') == 'True', deadline - time.monotonic())
        metrics, simulated_s = dict(ros.sim_status), sim_time()
        elapsed = time.monotonic() - started
        end_ns = start_ns + round(simulated_s * 1e9)
        window_ns = 1_500_000_000
        ros.spin_until(lambda: ros.windows and ros.windows[-1].end_ns >= end_ns - window_ns,
                       max(5.0, deadline - time.monotonic()))
        # The bridge restores the default map while the van still answers; then the van.
        for name in ('can_bridge', 'vehicle_sim'):
            ros.transition(name, Transition.TRANSITION_DEACTIVATE)
            ros.transition(name, Transition.TRANSITION_CLEANUP)
            ros.transition(name, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        windows = [w for w in ros.windows if w.end_ns <= end_ns]
    except (RuntimeError, IndexError) as error:
        failure = str(error)
    finally:
        rclpy.try_shutdown()
        for process in (bridge, sim):
            process.stop()
    if failure or not windows:
        print(f'tspace_ros run failed: {failure or "no observation window arrived"}; logs: '
              f'{run_dir}/vehicle_sim.log, {run_dir}/can_bridge.log', file=sys.stderr)
        return 1
    spec = write_windows(run_dir / 'windows.parquet', windows)
    figures = {key: float(metrics[key]) for key in (
        'distance_km', 'battery_energy_wh', 'energy_per_km_wh', 'regenerated_wh',
        'friction_brake_wh', 'speed_error_rms_kph', 'speed_error_max_kph') if key in metrics}
    summary = {
        'cycle': args.cycle, 'simulated_s': round(simulated_s, 3), 'wall_s': round(elapsed, 3),
        'real_time_factor': round(simulated_s / elapsed, 1), 'windows': len(windows),
        'observation_spec': spec, **figures, 'flash': outcome}
    (run_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(f'tspace_ros run: {args.cycle} {simulated_s:.0f} s simulated in {elapsed:.1f} s '
          f'({summary["real_time_factor"]}x real time), {len(windows)} windows '
          f'({len(spec["signals"])} signals x {spec["samples_per_window"]} at '
          f'{spec["sample_rate_hz"]:g} Hz)')
    print(f'  {figures["distance_km"]:.2f} km, {figures["battery_energy_wh"]:.0f} Wh = '
          f'{figures["energy_per_km_wh"]:.1f} Wh/km, speed error RMS '
          f'{figures["speed_error_rms_kph"]:.2f} km/h')
    if outcome is not None:
        verdict = 'accepted' if outcome['success'] else 'FAILED'
        print(f'  flash: {verdict}: {outcome["message"]}')
    print(f'  results: {run_dir}/windows.parquet, {run_dir}/summary.json (node logs beside them)')
    return 0 if outcome is None or outcome['success'] else 1


if __name__ == '__main__':
    sys.exit(main())
