"""
Benchmark: observation window in, flash goal out, through the agent node.

Starts the ``agent`` node in its own process with a DDPG-sized policy (state 90
-> 2 x 256 -> 68, LiteRT), plays the CAN bridge in this process (windows out,
a flash_torque_map server that records when each goal arrives and answers at
once), and times publish(window) -> goal received, median and p99. Also reports
the agent's and a CAN bridge process's peak resident memory (VmHWM), the
vehicle-side budget being 600 MB for bridge, cruncher and agent together.

Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/agent_latency.py [--windows N]``.
"""

import argparse
import os
import pathlib
import statistics
import tempfile
import time

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
import rclpy  # noqa: E402
from rclpy.action import ActionServer  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from tspace_interfaces.action import FlashTorqueMap  # noqa: E402
from tspace_interfaces.msg import ObservationWindow, PolicyUpdate  # noqa: E402
from tspace_interfaces.msg import TorqueMap as TorqueMapMsg  # noqa: E402

from tspace_ros.agents.export import weights_to_blob  # noqa: E402
from tspace_ros.node_process import NodeProcess  # noqa: E402
from tspace_ros.nodes.messages import torque_map_to_msg, window_to_msg  # noqa: E402
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, POLICY_UPDATE_QOS, WINDOW_QOS  # noqa: E402
from tspace_ros.signals.synthetic import SyntheticDrive  # noqa: E402
from tspace_ros.signals.window import NS_PER_S  # noqa: E402
from tspace_ros.vehicle import load_vehicle_parameters  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    """Return a process's peak resident memory (VmHWM), MB."""
    for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024
    return float('nan')


def spin_until(executor, predicate, timeout_s):
    """Spin until predicate() holds; return it."""
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    return predicate()


def transition(executor, client, transition_id):
    """Call a lifecycle transition and wait for it."""
    spin_until(executor, client.service_is_ready, 30)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    spin_until(executor, future.done, 30)
    return future.result().success


def main():
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--windows', type=int, default=300, help='windows to time')
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    actor = keras.Sequential([keras.Input((90,)), keras.layers.Dense(256, activation='relu'),
                              keras.layers.Dense(256, activation='relu'),
                              keras.layers.Dense(68, activation='tanh')])
    blob = weights_to_blob(actor, 'ddpg', 1, 90, 68, inference_model=actor)
    logs = pathlib.Path(tempfile.mkdtemp(prefix='agent_latency_'))
    ns = ['-r', '__ns:=/bench_van']
    agent = NodeProcess('tspace_ros.nodes.agent', logs / 'agent.log', ns)
    bridge_proc = NodeProcess('tspace_ros.nodes.can_bridge', logs / 'bridge.log',
                              ['-r', '__ns:=/bench_bridge_only'])
    rclpy.init()
    try:
        node = rclpy.create_node('bench_played_bridge', namespace='bench_van')
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        arrivals = []

        def execute(goal_handle):
            arrivals.append(time.perf_counter())
            goal_handle.succeed()
            return FlashTorqueMap.Result(success=True, active_map=goal_handle.request.map)

        ActionServer(node, FlashTorqueMap, 'flash_torque_map', execute)
        windows = node.create_publisher(ObservationWindow, 'observation/window', WINDOW_QOS)
        node.create_publisher(TorqueMapMsg, 'torque_map/active', ACTIVE_MAP_QOS).publish(
            torque_map_to_msg(load_vehicle_parameters().load_default_map()))
        node.create_publisher(PolicyUpdate, 'policy/update', POLICY_UPDATE_QOS).publish(
            blob.to_msg())
        lifecycle = node.create_client(ChangeState, '/bench_van/agent/change_state')
        bridge_lifecycle = node.create_client(ChangeState,
                                              '/bench_bridge_only/can_bridge/change_state')
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert transition(executor, lifecycle, t), agent.output()
            assert transition(executor, bridge_lifecycle, t), bridge_proc.output()
        spin_until(executor, lambda: 'installed' in agent.output(), 30)
        drive = SyntheticDrive(vehicle_id='BENCH')
        latencies = []
        # Windows on the clock the flashed maps are stamped with (this machine's: the fake
        # bridge answers with the goal's map, stamped by the agent), 2 s apart from now on.
        # A fixed date in the past made every window after the first flash seem to start
        # under the previous map: skipped as settling, and the bench waited for ever.
        first_ns = time.time_ns()
        for k in range(args.windows + 10):
            msg = window_to_msg(drive.window(first_ns + 2 * k * NS_PER_S))
            before = len(arrivals)
            sent = time.perf_counter()
            windows.publish(msg)
            if spin_until(executor, lambda: len(arrivals) > before, 5.0) and k >= 10:
                latencies.append(arrivals[-1] - sent)
            spin_until(executor, lambda: False, 0.02)  # let the result reach the agent
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * (len(ordered) - 1)))]
        print(f'agent node, DDPG 90-256-256-68 on LiteRT: window publish -> flash goal at '
              f'the bridge, {len(latencies)} windows: median '
              f'{statistics.median(latencies) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms')
        agent_mb, bridge_mb = peak_rss_mb(agent.pid), peak_rss_mb(bridge_proc.pid)
        print(f'peak RSS: agent {agent_mb:.0f} MB, can_bridge {bridge_mb:.0f} MB, together '
              f'{agent_mb + bridge_mb:.0f} MB (budget with the cruncher: 600 MB)')
    finally:
        rclpy.try_shutdown()
        agent.stop()
        bridge_proc.stop()


if __name__ == '__main__':
    main()
