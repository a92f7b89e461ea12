"""
vehicle_sim and can_bridge as two processes exchanging raw CAN frames over ROS topics.

This is how ``ros2 launch`` runs them: each node its own process, the bus
carried by CanFrameBatch topics in one vehicle namespace, the bridge on the
simulator's /clock. The test only drives lifecycles, listens to windows and
sends a flash goal, like the agent will.
"""

from lifecycle_msgs.msg import Transition
import numpy as np
from rclpy.action import ActionClient
from ros_test_support import NodeProcess, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import ObservationWindow

from tspace_ros.nodes.messages import time_to_ns, torque_map_to_msg, window_from_msg
from tspace_ros.nodes.vehicle_sim import parse_utc_ns
from tspace_ros.torque_map import action_rows, apply_action
from tspace_ros.vehicle import drive_cycle, load_vehicle_parameters

NAMESPACE = 'van_two_process'
START = '2030-06-01T08:00:00Z'
TIMEOUT_S = 30.0
DEFAULT = load_vehicle_parameters().load_default_map()


def test_simulated_van_and_bridge_in_separate_processes(tmp_path):
    common = ['-r', f'__ns:=/{NAMESPACE}']
    sim = NodeProcess('tspace_ros.nodes.vehicle_sim', tmp_path / 'sim.log', common + [
        '-p', 'real_time_factor:=5.0', '-p', f'start_utc:={START}',
        '-p', 'vehicle_id:=VIN-TWO'])
    bridge = NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / 'bridge.log', common + [
        '-p', 'use_sim_time:=true', '-p', 'vehicle_id:=VIN-TWO'])
    with sim, bridge, RosContext() as ros:
        windows = []
        probe = ros.node('two_process_probe')
        probe.create_subscription(ObservationWindow, f'/{NAMESPACE}/observation/window',
                                  windows.append, 100)
        flash = ActionClient(probe, FlashTorqueMap, f'/{NAMESPACE}/flash_torque_map')
        sim_node = LifecycleDriver(ros, f'{NAMESPACE}/vehicle_sim')
        bridge_node = LifecycleDriver(ros, f'{NAMESPACE}/can_bridge')
        for node in (bridge_node, sim_node):
            assert node.transition(Transition.TRANSITION_CONFIGURE)
            assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: len(windows) >= 3, TIMEOUT_S), \
            sim.output() + bridge.output()

        # Windows are stamped in simulated UTC and follow the drive cycle's speed.
        cycle = drive_cycle('wltc3b')
        for msg in windows[:3]:
            window = window_from_msg(msg)
            assert window.vehicle_id == 'VIN-TWO' and window.samples.shape == (5, 30)
            t_end = (window.end_ns - parse_utc_ns(START)) / 1e9
            assert 0.0 < t_end < 120.0
            target = np.interp(t_end, cycle.time_s, cycle.speed_kph)
            assert abs(window.signal('speed')[-1] - target) < 3.0
        assert time_to_ns(windows[1].window_start) > time_to_ns(windows[0].window_end)

        # A flash through the bridge reaches the simulated VCU and is acknowledged.
        top_speed = float(window_from_msg(windows[-1]).signal('speed').max())
        rows = action_rows(top_speed, DEFAULT.shape[0])
        action = np.full((len(rows), DEFAULT.shape[1]), -0.5)
        proposed = apply_action(DEFAULT, DEFAULT, action, rows.start, policy_version=21)
        assert spin_until(ros.executor, flash.server_is_ready, TIMEOUT_S)
        goal = flash.send_goal_async(FlashTorqueMap.Goal(
            map=torque_map_to_msg(proposed, 0, rows.start, len(rows))))
        assert spin_until(ros.executor, goal.done, TIMEOUT_S)
        result = goal.result().get_result_async()
        assert spin_until(ros.executor, result.done, TIMEOUT_S)
        outcome = result.result().result
        assert outcome.success, outcome.message + bridge.output()
        assert outcome.active_map.policy_version == 21

        # The bridge restores the default map while the van still answers.
        for node in (bridge_node, sim_node):
            assert node.transition(Transition.TRANSITION_DEACTIVATE)
    assert 'active map version 21' in outcome.message
    assert 'deactivating: default map restored' in bridge.output()
