"""
The lifecycle manager: brings the suite up in dependency order and watches it.

It manages lifecycle nodes by name (relative names resolve in this node's
namespace, e.g. the vehicle's), in the order of ``node_names``: startup
configures every node in that order, then activates them in that order;
shutdown deactivates in reverse order, then cleans up in reverse order (the
CAN bridge restores the default map when it deactivates, while the vehicle
still answers, so the bridge must come after the vehicle in the list).

Watching: every ``check_period_s`` it asks each node for its state
(``get_state``). A node that does not answer within ``response_timeout_s``
``max_missed`` times in a row, or that has left ``active`` while the suite is
active (an error, a crash, someone else's transition), is a failure: the
manager deactivates every other active node in reverse order, so the bridge
returns the vehicle to its default map and nothing acts on a broken chain,
then reports it (log, ``/diagnostics``, ``~/status``).

Respawn (as nav2's lifecycle manager does after a broken bond): a node that
stopped answering or came back unconfigured lost its process (``kill -9``, a
crash) or its state. Launch respawns the process (``respawn``); with
``respawn_recovery`` (default on) the manager waits up to ``respawn_wait_s``
for every lost node to answer again, then runs startup once more: the new
process is configured and activated, and the rest of the chain activated
again. In between the chain stays deactivated, so the vehicle is on its
default map (the bridge restored it, or the VCU fell back on its own when the
bridge itself was the one lost). Recoveries are counted in ``/diagnostics``.

Services (std_srvs/Trigger): ``~/startup``, ``~/shutdown`` (deactivate and
clean up), ``~/reset`` (shutdown, then startup). ``autostart`` starts up as
soon as every node answers.

It also aggregates ``/diagnostics``: every ``check_period_s`` it publishes on
``/diagnostics_agg`` one status per vehicle namespace (the worst level of its
nodes, naming those in WARN, ERROR or STALE) and one for the whole suite, the
topic rqt_robot_monitor shows (``tspace_ros.monitoring.diagnostics``).
"""

import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import Trigger

from tspace_ros.monitoring.diagnostics import aggregated_array, DiagnosticsAggregator
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN

STARTUP_STEPS = (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE)
SHUTDOWN_STEPS = (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP)
# The state each transition starts from (a node already past it is skipped).
_FROM_STATE = {
    Transition.TRANSITION_CONFIGURE: State.PRIMARY_STATE_UNCONFIGURED,
    Transition.TRANSITION_ACTIVATE: State.PRIMARY_STATE_INACTIVE,
    Transition.TRANSITION_DEACTIVATE: State.PRIMARY_STATE_ACTIVE,
    Transition.TRANSITION_CLEANUP: State.PRIMARY_STATE_INACTIVE,
}
_TRANSITION_NAMES = {Transition.TRANSITION_CONFIGURE: 'configure',
                     Transition.TRANSITION_ACTIVATE: 'activate',
                     Transition.TRANSITION_DEACTIVATE: 'deactivate',
                     Transition.TRANSITION_CLEANUP: 'cleanup'}


class LifecycleManager(Node):
    """Start, stop and watch a chain of lifecycle nodes (see the module docstring)."""

    def __init__(self, node_name: str = 'lifecycle_manager', **kwargs):
        """Declare parameters, create clients, services and the watch timer."""
        super().__init__(node_name, **kwargs)
        self.declare_parameter('node_names', Parameter.Type.STRING_ARRAY)
        self.declare_parameter('autostart', False)
        self.declare_parameter('check_period_s', 1.0)
        self.declare_parameter('response_timeout_s', 2.0)
        self.declare_parameter('transition_timeout_s', 30.0)
        self.declare_parameter('max_missed', 3)
        self.declare_parameter('stale_after_s', 5.0)
        self.declare_parameter('respawn_recovery', True)
        self.declare_parameter('respawn_wait_s', 30.0)
        try:
            names = self.get_parameter('node_names').value
        except ParameterUninitializedException:
            names = None
        if not names or any(not isinstance(n, str) or not n for n in names):
            raise ValueError('parameter node_names: expected a non-empty list of lifecycle '
                             f'node names in dependency order, got {names!r}')
        self.node_names: List[str] = list(names)
        self._client_group = ReentrantCallbackGroup()
        self._get: Dict[str, object] = {}
        self._change: Dict[str, object] = {}
        for name in self.node_names:
            self._get[name] = self.create_client(GetState, f'{name}/get_state',
                                                 callback_group=self._client_group)
            self._change[name] = self.create_client(ChangeState, f'{name}/change_state',
                                                    callback_group=self._client_group)
        self.states: Dict[str, str] = dict.fromkeys(self.node_names, 'unknown')
        self._missed: Dict[str, int] = dict.fromkeys(self.node_names, 0)
        self.suite_active = False
        self.failure = ''
        self.recoveries = 0
        self._lost: List[str] = []          # nodes that lost their process or state
        self._recover_by = 0.0              # monotonic deadline for them to come back
        self._busy = threading.Lock()
        services = MutuallyExclusiveCallbackGroup()
        for service, handler in (('~/startup', self.startup), ('~/shutdown', self.shutdown),
                                 ('~/reset', self.reset)):
            self.create_service(Trigger, service, self._trigger(handler),
                                callback_group=services)
        self._status_pub = self.create_publisher(String, '~/status', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._agg_pub = self.create_publisher(DiagnosticArray, '/diagnostics_agg', 10)
        self.aggregator = DiagnosticsAggregator(self._p('stale_after_s'))
        self._agg_lock = threading.Lock()
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 100,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(self._p('check_period_s'), self._check,
                          callback_group=MutuallyExclusiveCallbackGroup())
        if self.get_parameter('autostart').value:
            threading.Thread(target=self._autostart, daemon=True).start()

    def _p(self, name):
        return self.get_parameter(name).value

    # ---- talking to the managed nodes (blocking: call from a thread, not a callback of
    # ---- a single-threaded executor) -------------------------------------------------------

    def _wait(self, future, timeout_s: float):
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            future.cancel()
            return None
        return future.result()

    def get_state(self, name: str, timeout_s: Optional[float] = None) -> Optional[str]:
        """Return the node's state label ('active', ...) or None when it does not answer."""
        timeout_s = self._p('response_timeout_s') if timeout_s is None else timeout_s
        client = self._get[name]
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        answer = self._wait(client.call_async(GetState.Request()), timeout_s)
        return answer.current_state.label if answer is not None else None

    def change(self, name: str, transition: int) -> Tuple[bool, str]:
        """Ask a node for a transition; return (success, message)."""
        timeout_s = self._p('transition_timeout_s')
        client = self._change[name]
        if not client.wait_for_service(timeout_sec=timeout_s):
            return False, f'{name} does not answer (no change_state service)'
        answer = self._wait(client.call_async(
            ChangeState.Request(transition=Transition(id=transition))), timeout_s)
        what = _TRANSITION_NAMES[transition]
        if answer is None:
            return False, f'{name}: no answer to {what} within {timeout_s:g} s'
        if not answer.success:
            return False, f'{name}: {what} failed (see its log)'
        return True, f'{name}: {what} done'

    def _step(self, names, transition) -> Tuple[bool, str]:
        for name in names:
            label = self.get_state(name, self._p('transition_timeout_s'))
            if label is None:
                return False, f'{name} does not answer'
            if _label_id(label) != _FROM_STATE[transition]:
                continue  # already past this step (or not there yet: the next step says so)
            ok, message = self.change(name, transition)
            self.get_logger().info(message)
            if not ok:
                return False, message
        return True, ''

    # ---- the chain ---------------------------------------------------------------------------

    def startup(self) -> Tuple[bool, str]:
        """Configure every node in order, then activate them in order."""
        with self._busy:
            self.failure = ''
            for transition in STARTUP_STEPS:
                ok, message = self._step(self.node_names, transition)
                if not ok:
                    self.get_logger().error(f'startup failed: {message}; stopping the chain')
                    self._stop_chain()
                    self.failure = message
                    return False, f'startup failed: {message}'
            self.suite_active = True
            self._missed = dict.fromkeys(self.node_names, 0)
            self._publish_status('active')
            return True, f'{len(self.node_names)} nodes active'

    def shutdown(self) -> Tuple[bool, str]:
        """Deactivate in reverse order, then clean up in reverse order."""
        with self._busy:
            self.suite_active = False
            messages = self._stop_chain(cleanup=True)
            self._publish_status('inactive')
            return not messages, '; '.join(messages) or 'all nodes cleaned up'

    def reset(self) -> Tuple[bool, str]:
        """Shut the chain down, then start it up again."""
        ok, message = self.shutdown()
        if not ok:
            return False, f'reset: shutdown failed: {message}'
        return self.startup()

    def _stop_chain(self, cleanup: bool = False) -> List[str]:
        """Deactivate (and clean up) every node that is there, in reverse order."""
        problems = []
        for transition in SHUTDOWN_STEPS if cleanup else SHUTDOWN_STEPS[:1]:
            for name in reversed(self.node_names):
                label = self.get_state(name)
                if label is None or _label_id(label) != _FROM_STATE[transition]:
                    continue
                ok, message = self.change(name, transition)
                self.get_logger().info(message)
                if not ok:
                    problems.append(message)
        return problems

    # ---- watching ----------------------------------------------------------------------------

    def _check(self):
        if not self._busy.acquire(blocking=False):
            return  # a startup/shutdown is under way
        recover = False
        try:
            for name in self.node_names:
                label = self.get_state(name)
                self.states[name] = label or 'no answer'
                self._missed[name] = 0 if label is not None else self._missed[name] + 1
            if self.suite_active:
                broken = [name for name in self.node_names
                          if self._missed[name] >= self._p('max_missed') or
                          (self.states[name] not in ('active', 'no answer'))]
                if broken:
                    self.failure = ', '.join(f'{n} is {self.states[n]}' for n in broken)
                    self.get_logger().error(f'failure: {self.failure}; deactivating the chain '
                                            f'(the bridge restores the default map)')
                    self.suite_active = False
                    self._stop_chain()
                    self._publish_status('failed')
                    lost = [n for n in broken if self.states[n] in ('no answer', 'unconfigured')]
                    if lost and self._p('respawn_recovery'):
                        self._lost = lost
                        self._recover_by = time.monotonic() + self._p('respawn_wait_s')
                        self.get_logger().warn(
                            f'waiting up to {self._p("respawn_wait_s"):g} s for '
                            f'{", ".join(lost)} to be respawned')
            elif self._lost:
                back = all(self.states[n] != 'no answer' for n in self.node_names)
                if back:
                    recover = True
                elif time.monotonic() > self._recover_by:
                    self.get_logger().error(
                        f'{", ".join(self._lost)} not back within '
                        f'{self._p("respawn_wait_s"):g} s: the chain stays down')
                    self._lost = []
            self._publish_diagnostics()
        finally:
            self._busy.release()
        if recover:
            self._recover()
        with self._agg_lock:
            summary = self.aggregator.summary(time.monotonic())
        self._agg_pub.publish(aggregated_array(summary, self.get_clock().now().to_msg()))

    def _recover(self):
        lost, self._lost = self._lost, []
        self.get_logger().info(f'{", ".join(lost)} answering again (respawned): starting '
                               'the chain again')
        ok, message = self.startup()
        if ok:
            self.recoveries += 1
            self.get_logger().info(f'recovered: {message}')
        else:
            self.get_logger().error(f'recovery failed: {message}')

    def _on_diagnostics(self, msg: DiagnosticArray):
        with self._agg_lock:
            self.aggregator.update(msg.status, time.monotonic())

    def _publish_status(self, state: str):
        self._status_pub.publish(String(data=state if not self.failure else
                                        f'{state}: {self.failure}'))

    def _publish_diagnostics(self):
        if self.failure:
            level, message = ERROR, f'failed: {self.failure}'
        elif self.suite_active:
            level, message = OK, 'all nodes active'
        else:
            level, message = WARN, 'suite not active'
        values = {f'state/{name}': self.states[name] for name in self.node_names}
        values['suite_active'] = self.suite_active
        values['recoveries'] = self.recoveries
        values['waiting_for_respawn'] = ', '.join(self._lost) or '-'
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), self.get_fully_qualified_name(), 'tspace_ros',
            level, message, values))

    def _autostart(self):
        deadline = time.monotonic() + self._p('transition_timeout_s')
        while time.monotonic() < deadline:
            if all(self._get[n].service_is_ready() for n in self.node_names):
                break
            time.sleep(0.05)
        ok, message = self.startup()
        (self.get_logger().info if ok else self.get_logger().error)(f'autostart: {message}')

    def _trigger(self, handler):
        def serve(request, response):
            response.success, response.message = handler()
            return response
        return serve


def _label_id(label: str) -> int:
    return {'unconfigured': State.PRIMARY_STATE_UNCONFIGURED,
            'inactive': State.PRIMARY_STATE_INACTIVE, 'active': State.PRIMARY_STATE_ACTIVE,
            'finalized': State.PRIMARY_STATE_FINALIZED}.get(label, State.PRIMARY_STATE_UNKNOWN)


def main(args=None) -> int:
    """
    Run the manager until SIGINT/SIGTERM.

    Under ros2 launch every managed node gets the signal too and takes itself down
    (the bridge restoring the default map), so the manager only stops watching.
    """
    import signal

    import rclpy
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        manager = LifecycleManager()
    except ValueError as error:
        print(f'lifecycle_manager: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(manager)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    stop.wait()
    manager.get_logger().info('signal received: stopping')
    # It holds nothing to clean up, and its watcher may be waiting on nodes that are going
    # away: leave without waiting for the executor (its thread is a daemon). A second
    # signal (the terminal's and launch's) must not kill the exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
