"""
The lifecycle manager in its own process, managing two lifecycle nodes in theirs.

Startup configures and activates them in the listed order; when one dies (its
process killed by PID) the manager notices and deactivates the rest of the chain,
and brings the chain back to active once the node is respawned;
shutdown and reset work through its services; a bad node list stops it with a
message.
"""

import signal

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State
from ros_test_support import call, NodeProcess, RosContext, spin_until
from std_msgs.msg import String
from std_srvs.srv import Trigger
from test_window_source_lifecycle import LifecycleDriver

NS = 'manager_test'
TIMEOUT_S = 30.0


def _node(tmp_path, name):
    return NodeProcess('tspace_ros.nodes.window_source', tmp_path / f'{name}.log',
                       ['-r', f'__ns:=/{NS}', '-r', f'__node:={name}'])


def _trigger(ros, client):
    assert spin_until(ros.executor, client.service_is_ready, TIMEOUT_S)
    return call(ros.executor, client, Trigger.Request(), TIMEOUT_S)


def test_startup_order_failure_chain_and_services(tmp_path):
    with _node(tmp_path, 'first'), _node(tmp_path, 'second') as second, \
            NodeProcess('tspace_ros.nodes.lifecycle_manager', tmp_path / 'manager.log', [
                '-r', f'__ns:=/{NS}', '-p', 'node_names:=[first, second]',
                '-p', 'check_period_s:=0.2', '-p', 'max_missed:=2',
                '-p', 'response_timeout_s:=0.5']) as manager, RosContext() as ros:
        probe = ros.node('manager_probe')
        statuses = []
        probe.create_subscription(String, f'/{NS}/lifecycle_manager/status',
                                  lambda m: statuses.append(m.data), 10)
        aggregated = []
        probe.create_subscription(DiagnosticArray, '/diagnostics_agg', aggregated.append, 10)
        startup = probe.create_client(Trigger, f'/{NS}/lifecycle_manager/startup')
        shutdown = probe.create_client(Trigger, f'/{NS}/lifecycle_manager/shutdown')
        reset = probe.create_client(Trigger, f'/{NS}/lifecycle_manager/reset')
        a, b = LifecycleDriver(ros, f'{NS}/first'), LifecycleDriver(ros, f'{NS}/second')

        answer = _trigger(ros, startup)
        assert answer.success, manager.output()
        assert a.state() == b.state() == State.PRIMARY_STATE_ACTIVE
        log = manager.output()
        order = [log.index(f'{name}: {what} done') for what in ('configure', 'activate')
                 for name in ('first', 'second')]
        assert order == sorted(order), log

        # Shutdown: reverse order, back to unconfigured; reset brings them up again.
        assert _trigger(ros, shutdown).success
        assert a.state() == b.state() == State.PRIMARY_STATE_UNCONFIGURED
        log = manager.output()
        assert log.rindex('second: deactivate done') < log.rindex('first: deactivate done')
        assert _trigger(ros, reset).success
        assert a.state() == b.state() == State.PRIMARY_STATE_ACTIVE

        # 'second' dies: the manager deactivates the rest of the chain and says why.
        second.process.send_signal(signal.SIGKILL)
        second.wait(10.0)
        assert spin_until(ros.executor, lambda: a.state() == State.PRIMARY_STATE_INACTIVE,
                          TIMEOUT_S), manager.output()
        assert spin_until(ros.executor, lambda: any(s.startswith('failed') for s in statuses),
                          TIMEOUT_S)

        # /diagnostics_agg: the vehicle's group (its namespace) turns ERROR and names why.
        def group_error():
            for array in aggregated[-3:]:
                for status in array.status:
                    if status.name == f'/tspace/{NS}' and status.level == DiagnosticStatus.ERROR:
                        return f'/{NS}/lifecycle_manager' in status.message
            return False
        assert spin_until(ros.executor, group_error, TIMEOUT_S), aggregated[-1:]
        assert a.state() == State.PRIMARY_STATE_INACTIVE  # down while 'second' is missing

        # Respawned (as launch's respawn does): the manager brings the new process and the
        # rest of the chain back to active, like nav2's bond.
        with _node(tmp_path, 'second'):
            assert spin_until(ros.executor, lambda: statuses[-1] == 'active', TIMEOUT_S), \
                manager.output()
            # (The manager configured and activated the new process; its own view.)
            assert a.state() == State.PRIMARY_STATE_ACTIVE
    log = manager.output()
    assert 'failure: second is no answer; deactivating the chain' in log
    assert 'waiting up to 30 s for second to be respawned' in log
    assert 'recovered: 2 nodes active' in log


def test_a_missing_node_list_stops_the_manager_with_a_message(tmp_path):
    with NodeProcess('tspace_ros.nodes.lifecycle_manager', tmp_path / 'bad.log',
                     ['-r', '__ns:=/manager_bad']) as manager:
        assert manager.wait(TIMEOUT_S) == 2
    assert 'parameter node_names: expected a non-empty list' in manager.output()
