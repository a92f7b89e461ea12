"""
The window_source lifecycle node, driven from another process over lifecycle services.

Windows must flow exactly while the node is active: none when unconfigured or
inactive, none after deactivate, again after re-activation; shutdown ends the
process.
"""

import time

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_test_support import call, NodeProcess, RosContext, spin_for, spin_until
from tspace_interfaces.msg import ObservationWindow

from tspace_ros.nodes.messages import time_to_ns, window_from_msg

NODE = 'window_source_under_test'
PERIOD_S = 0.1
QUIET_S = 5 * PERIOD_S  # long enough for several windows, were any published
TIMEOUT_S = 15.0


class LifecycleDriver:
    """Lifecycle service clients of one remote node."""

    def __init__(self, ros, node_name):
        probe = ros.node('lifecycle_driver')
        self.ros = ros
        self.change = probe.create_client(ChangeState, f'/{node_name}/change_state')
        self.get = probe.create_client(GetState, f'/{node_name}/get_state')
        assert spin_until(ros.executor, lambda: self.change.service_is_ready() and
                          self.get.service_is_ready(), TIMEOUT_S), 'lifecycle services missing'

    def state(self) -> int:
        return call(self.ros.executor, self.get, GetState.Request()).current_state.id

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return call(self.ros.executor, self.change, request).success


@pytest.fixture
def node_process(tmp_path):
    with NodeProcess('tspace_ros.nodes.window_source', tmp_path / 'window_source.log', [
            '-r', f'__node:={NODE}',
            '-p', 'vehicle_id:=VIN-LIFECYCLE', '-p', 'driver_id:=driver-7',
            '-p', 'sample_rate_hz:=50.0', '-p', 'samples_per_window:=200',
            '-p', f'publish_period_s:={PERIOD_S}']) as process:
        yield process


def test_windows_flow_only_while_active(node_process):
    received = []
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    with RosContext() as ros:
        subscriber = ros.node('window_listener').create_subscription(
            ObservationWindow, 'observation/window', received.append, qos)
        node = LifecycleDriver(ros, NODE)
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED

        assert node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.state() == State.PRIMARY_STATE_INACTIVE
        assert spin_until(ros.executor, lambda: subscriber.get_publisher_count() > 0,
                          TIMEOUT_S), 'the configured node has no publisher'
        spin_for(ros.executor, QUIET_S)
        assert received == [], 'an inactive node published windows'

        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert node.state() == State.PRIMARY_STATE_ACTIVE
        assert spin_until(ros.executor, lambda: len(received) >= 3, TIMEOUT_S)
        window = window_from_msg(received[0])
        assert (window.vehicle_id, window.driver_id) == ('VIN-LIFECYCLE', 'driver-7')
        assert (window.sample_rate_hz, window.samples.shape) == (50.0, (5, 200))
        assert [m.step_index for m in received[:3]] == [0, 1, 2]

        assert node.transition(Transition.TRANSITION_DEACTIVATE)
        deactivated_ns = time.time_ns()
        assert node.state() == State.PRIMARY_STATE_INACTIVE
        spin_for(ros.executor, QUIET_S)
        late = [m for m in received if time_to_ns(m.header.stamp) > deactivated_ns]
        assert late == [], f'{len(late)} windows stamped after deactivation'
        count_inactive = len(received)
        spin_for(ros.executor, QUIET_S)
        assert len(received) == count_inactive

        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: len(received) > count_inactive, TIMEOUT_S)
        assert received[count_inactive].step_index == received[count_inactive - 1].step_index + 1
        assert node.transition(Transition.TRANSITION_DEACTIVATE)

        assert node.transition(Transition.TRANSITION_CLEANUP)
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert spin_until(ros.executor, lambda: subscriber.get_publisher_count() == 0,
                          TIMEOUT_S), 'cleanup left the publisher in place'

        assert node.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert node_process.wait(TIMEOUT_S) == 0, node_process.output()


def test_sigterm_while_active_goes_through_shutdown_and_exits_cleanly(tmp_path):
    with NodeProcess('tspace_ros.nodes.window_source', tmp_path / 'term.log', [
            '-r', '__node:=window_source_sigterm', '-p', 'publish_period_s:=0.05']) as process, \
            RosContext() as ros:
        node = LifecycleDriver(ros, 'window_source_sigterm')
        assert node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        process.process.terminate()  # SIGTERM to this PID
        assert process.wait(TIMEOUT_S) == 0, process.output()
    assert 'signal received: shutting down' in process.output()


def test_invalid_transition_is_refused_and_bad_parameters_fail_configure(tmp_path):
    with NodeProcess('tspace_ros.nodes.window_source', tmp_path / 'bad.log', [
            '-r', '__node:=window_source_bad_params',
            '-p', 'samples_per_window:=0', '-p', 'sample_rate_hz:=fast']) as process, \
            RosContext() as ros:
        node = LifecycleDriver(ros, 'window_source_bad_params')
        assert not node.transition(Transition.TRANSITION_ACTIVATE)  # not configured yet
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert process.wait(0.0) is None, 'a bad parameter crashed the node'
        assert node.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert process.wait(TIMEOUT_S) == 0
    output = process.output()
    assert "parameter 'samples_per_window'" in output and 'out of range' in output, output
    assert "parameter 'sample_rate_hz'" in output and "expecting type 'DOUBLE'" in output, output
