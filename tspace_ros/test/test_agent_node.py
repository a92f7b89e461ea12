"""
The agent node in its own process: windows in, gated flash goals out, policies swapped.

The test plays the CAN bridge (a flash_torque_map action server that records
goals, and the active map) and the trainer (PolicyUpdate messages built from a
small Keras actor exported to LiteRT). The agent process must never import
TensorFlow.
"""

import os
import time

from lifecycle_msgs.msg import Transition
import numpy as np
import pytest
from rclpy.action import ActionServer
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_test_support import NodeProcess, RosContext, spin_until
from std_msgs.msg import Float64, Header, UInt64
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import (AgentAction, ObservationWindow, PolicyUpdate,
                                   TorqueMap as TorqueMapMsg)

from tspace_ros.agents.vehicle_policy import ActionMapper, StateBuilder
from tspace_ros.nodes.messages import (time_from_ns, time_to_ns, torque_map_from_msg,
                                       torque_map_to_msg, window_to_msg)
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, POLICY_UPDATE_QOS, RECORD_QOS
from tspace_ros.signals.synthetic import SyntheticDrive
from tspace_ros.signals.window import NS_PER_S
from tspace_ros.torque_map import SafetyGate
from tspace_ros.vehicle import load_vehicle_parameters

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
TIMEOUT_S = 20.0
NAMESPACE = 'agent_test'
DEFAULT = load_vehicle_parameters().load_default_map()
MAPPER = ActionMapper(DEFAULT)
STATES = StateBuilder()


@pytest.fixture(scope='module')
def policy():
    """Return (keras actor, PolicyBlob version 1 with its LiteRT model)."""
    import keras

    from tspace_ros.agents.export import weights_to_blob
    keras.utils.set_random_seed(3)
    actor = keras.Sequential([keras.Input((STATES.state_dim,)),
                              keras.layers.Dense(32, activation='relu'),
                              keras.layers.Dense(MAPPER.action_dim, activation='tanh')])
    blob = weights_to_blob(actor, 'ddpg', 1, STATES.state_dim, MAPPER.action_dim,
                           inference_model=actor)
    return actor, blob


class PlayedBridge:
    """A flash_torque_map server that records goals (and accepts or refuses them)."""

    def __init__(self, ros):
        self.node = ros.node('played_bridge', NAMESPACE)
        self.goals, self.heartbeats, self.refuse = [], [], False
        ActionServer(self.node, FlashTorqueMap, 'flash_torque_map', self._execute)
        self.node.create_subscription(Header, 'heartbeat', self.heartbeats.append, 10)
        self.decisions, self.latencies, self.versions = [], [], []
        self.node.create_subscription(AgentAction, 'agent/action', self.decisions.append,
                                      RECORD_QOS)
        self.node.create_subscription(Float64, 'agent/step_latency_ms',
                                      lambda m: self.latencies.append(m.data), 10)
        self.node.create_subscription(UInt64, 'agent/policy_version',
                                      lambda m: self.versions.append(m.data), 10)
        self.windows = self.node.create_publisher(
            ObservationWindow, 'observation/window',
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.active = self.node.create_publisher(TorqueMapMsg, 'torque_map/active',
                                                 ACTIVE_MAP_QOS)
        self.policies = self.node.create_publisher(PolicyUpdate, 'policy/update',
                                                   POLICY_UPDATE_QOS)
        self.active.publish(torque_map_to_msg(DEFAULT))
        self.drive = SyntheticDrive(vehicle_id='VIN-AGENT', seed=5)
        self.sent = []

    def _execute(self, goal_handle):
        self.goals.append(goal_handle.request)
        result = FlashTorqueMap.Result(active_map=goal_handle.request.map)
        # The map takes effect 1 s after the latest window's end (vehicle time).
        result.active_map.header.stamp = time_from_ns(self.sent[-1].end_ns + NS_PER_S)
        if self.refuse:
            goal_handle.abort()
            result.error_code = FlashTorqueMap.Result.ERROR_REJECTED_BY_SAFETY_GATE
            result.message = 'played refusal'
        else:
            goal_handle.succeed()
            result.success = True
        return result

    def send_window(self, speed_offset=0.0):
        window = self.drive.window((1_790_000_000 + 2 * len(self.sent)) * NS_PER_S)
        self.sent.append(window)
        self.windows.publish(window_to_msg(window))
        return window


def stream_until(ros, bridge, predicate, timeout_s=TIMEOUT_S):
    """Send a window every 0.2 s (a vehicle's stream) until predicate() holds."""
    state = {'next': 0.0}

    def check():
        if predicate():
            return True
        now = time.monotonic()
        if now >= state['next']:
            bridge.send_window()
            state['next'] = now + 0.2
        return False
    return spin_until(ros.executor, check, timeout_s)


def expected_map(actor, window, version):
    state = STATES.state(window)
    action = actor(state[None, :]).numpy()[0]
    proposed, start, count = MAPPER.to_map(action, float(window.signal('speed').max()),
                                           DEFAULT, version)
    return proposed, start, count


def test_agent_acts_with_verified_policies_and_never_loads_tensorflow(tmp_path, policy):
    actor, blob = policy
    with NodeProcess('tspace_ros.nodes.agent', tmp_path / 'agent.log', [
            '-r', f'__ns:=/{NAMESPACE}', '-p', 'mode:=infer']) as process, \
            RosContext() as ros:
        bridge = PlayedBridge(ros)
        node = LifecycleDriver(ros, f'{NAMESPACE}/agent')
        assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: bridge.windows.get_subscription_count(),
                          TIMEOUT_S)

        # No policy yet: windows are taken (heartbeat) but nothing is flashed.
        bridge.send_window()
        assert spin_until(ros.executor, lambda: bridge.heartbeats, TIMEOUT_S)
        assert bridge.goals == []

        bridge.policies.publish(blob.to_msg())
        assert spin_until(ros.executor, lambda: 'version 1 installed' in process.output(),
                          TIMEOUT_S), process.output()
        window = bridge.send_window()
        assert spin_until(ros.executor, lambda: bridge.goals, TIMEOUT_S), process.output()
        goal = bridge.goals[0].map
        got = torque_map_from_msg(goal, reference=DEFAULT)
        want, start, count = expected_map(actor, window, 1)
        assert (goal.changed_row_start, goal.changed_row_count) == (start, count)
        assert goal.policy_version == 1
        np.testing.assert_allclose(got.torque_nm, want.torque_nm, atol=0.02)
        assert SafetyGate(DEFAULT).check(got, DEFAULT, start, count).ok
        # The decision, for the cruncher: which window it answers, the action, the outcome.
        assert spin_until(ros.executor, lambda: bridge.decisions, TIMEOUT_S)
        decision = bridge.decisions[0]
        assert decision.flashed and decision.error_code == 0
        assert decision.observation_step_index == window.step_index
        assert time_to_ns(decision.observation_end) == window.end_ns
        assert (decision.row_start, decision.row_count, decision.policy_version) == \
            (start, count, 1)
        np.testing.assert_allclose(decision.action, actor(STATES.state(window)[None, :])[0],
                                   atol=1e-4)
        assert time_to_ns(decision.active_since) == window.end_ns + NS_PER_S
        assert decision.flash_ms >= 0 and decision.inference_ms > 0
        # rqt_plot topics: the step latency of that decision, the policy version in use.
        assert spin_until(ros.executor, lambda: bridge.latencies and bridge.versions, TIMEOUT_S)
        assert bridge.latencies[0] == pytest.approx(decision.inference_ms + decision.flash_ms)
        assert bridge.versions == [1]
        # The next window began before the map took effect: skipped; the one after is
        # answered (that is where the cruncher's step ends).
        early, settled = bridge.send_window(), None
        assert early.start_ns < window.end_ns + NS_PER_S
        assert spin_until(ros.executor, lambda: len(bridge.heartbeats) >= 3, TIMEOUT_S)
        settled = bridge.send_window()
        assert spin_until(ros.executor, lambda: len(bridge.decisions) >= 2, TIMEOUT_S)
        assert bridge.decisions[1].observation_step_index == settled.step_index
        assert len(bridge.goals) == 2

        # A corrupted update is rejected; the agent keeps acting with version 1.
        fields = blob.to_update_fields()
        bad = PolicyUpdate(algorithm='ddpg', version=2, format='npz',
                           weights=bytes(fields['weights']), sha256='0' * 64,
                           model_format='tflite', model=bytes(fields['model']),
                           model_sha256=fields['model_sha256'], state_dim=90, action_dim=68)
        bridge.policies.publish(bad)
        assert spin_until(ros.executor, lambda: 'policy update rejected' in process.output(),
                          TIMEOUT_S), process.output()
        # The agent sends one goal at a time; windows meanwhile are skipped (counted).
        bridge.refuse = True  # the bridge refuses: reported, the agent goes on
        count_before = len(bridge.goals)
        assert stream_until(ros, bridge, lambda: len(bridge.goals) > count_before)
        bridge.refuse = False
        assert stream_until(ros, bridge, lambda: len(bridge.goals) > count_before + 1), \
            process.output()
        assert all(g.map.policy_version == 1 for g in bridge.goals)
        assert spin_until(ros.executor, lambda: len(bridge.decisions) >= len(bridge.goals),
                          TIMEOUT_S)
        refused = [d for d in bridge.decisions if not d.flashed]
        assert len(refused) == 1 and refused[0].message == 'played refusal'
        assert refused[0].error_code == FlashTorqueMap.Result.ERROR_REJECTED_BY_SAFETY_GATE

        # The vehicle side stays small: no TensorFlow in the agent's process.
        maps = open(f'/proc/{process.pid}/maps').read()
        assert 'libtensorflow' not in maps and '_pywrap_tensorflow' not in maps
        peak_kb = int([line.split()[1] for line in open(f'/proc/{process.pid}/status')
                       if line.startswith('VmHWM')][0])
        assert peak_kb < 300 * 1024, f'agent peak RSS {peak_kb / 1024:.0f} MB'
        assert node.transition(Transition.TRANSITION_DEACTIVATE)
    assert 'flash refused' in process.output()


def test_wrong_settings_fail_configure_with_their_names(tmp_path):
    with NodeProcess('tspace_ros.nodes.agent', tmp_path / 'bad.log', [
            '-r', '__ns:=/agent_bad', '-p', 'algorithm:=ppo', '-p', 'mode:=explore',
            '-p', 'policy_file:=/nonexistent.npz']) as process, RosContext() as ros:
        node = LifecycleDriver(ros, 'agent_bad/agent')
        assert not node.transition(Transition.TRANSITION_CONFIGURE)
        assert process.wait(0.0) is None
    output = process.output()
    from tspace_ros.agents import registry
    assert f"algorithm must be one of {registry.names()}, got 'ppo'" in output
    assert "mode must be one of ('train', 'infer'), got 'explore'" in output


def test_recurrent_policy_carries_its_state_through_the_node(tmp_path):
    from tspace_ros.agents.export import weights_to_blob
    from tspace_ros.agents.rdpg import RdpgAgent, RdpgConfig

    trainer = RdpgAgent(STATES.state_dim, MAPPER.action_dim, RdpgConfig(
        actor_dense_units=16, actor_lstm_units=(16, 16), critic_dense_units=16,
        critic_lstm_units=(16, 16), critic_head_units=(16, 16), seed=4))
    blob = weights_to_blob(trainer.actor, 'rdpg', 2, STATES.state_dim, MAPPER.action_dim,
                           inference_model=trainer.step_actor)
    with NodeProcess('tspace_ros.nodes.agent', tmp_path / 'agent.log', [
            '-r', f'__ns:=/{NAMESPACE}', '-p', 'algorithm:=rdpg']) as process, \
            RosContext() as ros:
        bridge = PlayedBridge(ros)
        node = LifecycleDriver(ros, f'{NAMESPACE}/agent')
        assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        bridge.policies.publish(blob.to_msg())
        assert spin_until(ros.executor, lambda: 'version 2 installed' in process.output(),
                          TIMEOUT_S), process.output()
        assert stream_until(ros, bridge, lambda: len(bridge.goals) >= 3), process.output()
    # The deployed step actor (LiteRT, fresh LSTM state, zero last action) asks for the
    # map the trainer's Keras actor wants at the start of an episode. Stepping over
    # sequences is checked at the export level (test_litert_export).
    assert all(goal.map.policy_version == 2 for goal in bridge.goals)
    trainer.begin_episode()
    window = bridge.sent[0]
    action = trainer.act(STATES.state(window), explore=False)
    first = bridge.goals[0].map
    want, start, _ = MAPPER.to_map(action, float(window.signal('speed').max()), DEFAULT, 2)
    assert first.changed_row_start == start
    np.testing.assert_allclose(torque_map_from_msg(first, reference=DEFAULT).torque_nm,
                               want.torque_nm, atol=0.02)


def test_an_integer_for_a_number_parameter_is_that_number():
    # YAML writes 1 for 1.0 (-p agent.noise_sigma=1, a parameter file): not a type error.
    import rclpy
    from rclpy.parameter import Parameter

    from tspace_ros.nodes.agent import Agent
    rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
    try:
        node = Agent('agent_int', namespace='int_test', parameter_overrides=[
            Parameter('noise_sigma', value=1), Parameter('goal_timeout_s', value=5)])
        try:
            assert node.parameters_valid()
            assert node.get_parameter('noise_sigma').value == 1.0
            assert isinstance(node.get_parameter('goal_timeout_s').value, float)
        finally:
            node.destroy_node()
        # Out of range stays an error, naming the parameter.
        node = Agent('agent_big', namespace='int_test',
                     parameter_overrides=[Parameter('noise_sigma', value=7)])
        try:
            assert not node.parameters_valid()
            assert any('noise_sigma' in e for e in node._parameter_errors)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
