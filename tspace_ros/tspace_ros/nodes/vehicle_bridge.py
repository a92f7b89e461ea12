"""
What every vehicle bridge node shares: ROS around a ``BridgeCore`` (``bridge.core``).

The CAN bridge (``can_bridge``) and the cloud bridge (``cloud_bridge``) differ in
their link to the vehicle only; this base adapts the rest the same way for
both: parameters to objects, callbacks and timers to core calls with the
time, the core's outputs to publications. A subclass builds the core
(``_build``), reads its vehicle each poll cycle (``_read``), waits for an
answer while stopping (``_pump_answer``) and releases its transport
(``_release_transport``).

Topics and services (relative, so they follow the node's namespace, one per VIN):

- publishes ``observation/window`` (ObservationWindow), ``torque_map/active``
  (TorqueMap, transient local: the map the vehicle applies), ``episode/event``
  (EpisodeEvent: started, ending, stored, discarded, exited), ``/diagnostics``;
- subscribes ``heartbeat`` (std_msgs/Header) to feed the agent watchdog;
- serves the action ``flash_torque_map`` and the service ``episode_control``.

Safety (in the core): every map passes the gate before it reaches the link,
and only the action's rows of a goal are used. On deactivate, shutdown, error,
a watchdog expiry or a vehicle whose map is in doubt, the vehicle is reverted
to its default map, and the log and diagnostics say so. A configure failure
names its cause in the log and on ``/diagnostics`` until a configure succeeds.
"""

import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Header
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import EpisodeEvent, ObservationWindow, TorqueMap as TorqueMapMsg
from tspace_interfaces.srv import EpisodeControl as EpisodeControlSrv

from tspace_ros.bridge.core import (BridgeCore, BridgeSettings, FlashError, FlashResult,
                                    LEVEL_ERROR, LEVEL_WARN, Now, Outputs)
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN
from tspace_ros.nodes.lifecycle import TspaceLifecycleNode
from tspace_ros.nodes.messages import (time_from_ns, torque_map_from_msg, torque_map_to_msg,
                                       window_to_msg)
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, EVENT_QOS, WINDOW_QOS
from tspace_ros.torque_map.map import TorqueMapError

STAGES = FlashTorqueMap.Feedback
# How often the watchdog is checked, s (wall clock).
WATCHDOG_CHECK_S = 0.05
# While stopping: how long one wait for the vehicle's answer to a restore lasts, s.
RESTORE_STEP_S = 0.02
LEVELS = {LEVEL_ERROR: ERROR, LEVEL_WARN: WARN}
EVENTS = {'started': EpisodeEvent.STARTED, 'ending': EpisodeEvent.ENDING,
          'stored': EpisodeEvent.STORED, 'discarded': EpisodeEvent.DISCARDED,
          'exited': EpisodeEvent.EXITED}


class ConfigureFailure(Exception):
    """A configure failure whose cause is already the text to report."""


class VehicleBridgeNode(TspaceLifecycleNode):
    """The shared lifecycle adapter of a BridgeCore (see the module docstring)."""

    TITLE = 'vehicle bridge'   # the diagnostics' name: '<node>: <TITLE>'
    DEFAULT_FLASH_TIMEOUT_S = 3.0
    DEFAULT_WATCHDOG_TIMEOUT_S = 5.0
    DEFAULT_VEHICLE_OFFLINE_S = 2.0

    def __init__(self, node_name: str, **kwargs):
        """Declare the shared parameters; the subclass declares its link's."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('vehicle_id', '', "Vehicle id (VIN) stamped on windows ('' = the task's).")
        self.declare_task_file()  # signals, window grid, default map, rows per action, gate
        d('driver_id', 'driver0', 'Driver id stamped on windows.')
        d('signal_mapping_file', '',
          'YAML list of {name, unit, message, signal, factor, offset, minimum, maximum}; '
          "empty: the link's default mapping.")
        d('max_gap_s', 0.5, 'A silence longer than this restarts the window grid, s.',
          (0.001, 60.0))
        d('stale_after_s', 0.2, 'Hold a signal stale after this long without a sample, s.',
          (0.001, 60.0))
        d('flash_timeout_s', self.DEFAULT_FLASH_TIMEOUT_S,
          'Time for the vehicle to acknowledge a map, s.', (0.01, 600.0))
        d('watchdog_timeout_s', self.DEFAULT_WATCHDOG_TIMEOUT_S,
          'Restore the default map after this long without a map or an agent heartbeat '
          '(the agent sends one per window), s on the node clock (0: off).', (0.0, 86400.0))
        d('shutdown_wait_s', 1.5,
          'On shutdown, wait this long at most for the vehicle to confirm the default map, s '
          '(it falls back by itself once the bridge goes silent).', (0.0, 3.5))
        d('vehicle_offline_s', self.DEFAULT_VEHICLE_OFFLINE_S,
          'No data for this long (wall clock) means the vehicle is offline, s.',
          (0.01, 600.0))
        d('episode_countdown_s', 3.0, 'Countdown after "end valid" before storing, s.',
          (0.0, 600.0))
        d('poll_period_s', 0.01, 'How often the vehicle is read, s (wall clock).',
          (0.001, 1.0))
        d('diagnostics_period_s', 1.0, 'How often /diagnostics is published, s.', (0.1, 60.0))
        self._lock = threading.RLock()
        self._failure = ''                 # why the last configure failed
        self._failure_timer = self._failure_pub = None
        self._vehicle_id = ''              # the task's, or the vehicle_id parameter
        self._reset_members()

    def _reset_members(self):
        self.core: Optional[BridgeCore] = None
        self._poll_timer = None
        self._entities = []
        self._flash_done: Optional[FlashResult] = None
        self._flash_event = threading.Event()

    def _param(self, name):
        return self.get_parameter(name).value

    def _now(self) -> Now:
        """Return the node clock (maybe simulated) and the wall clock, for the core."""
        return Now(self.get_clock().now().nanoseconds, time.monotonic())

    def settings(self, task, bitrate: int = 500_000) -> BridgeSettings:
        """Return the core's settings of the shared parameters."""
        p = self._param
        return BridgeSettings(task.vehicle_id, p('driver_id'), p('flash_timeout_s'),
                              p('vehicle_offline_s'), p('watchdog_timeout_s'),
                              p('episode_countdown_s'), bitrate)

    # ---- what a subclass provides -----------------------------------------------------------

    def _build(self, task) -> str:
        """Set self.core (its link, its command sources); return what to log. May raise."""
        raise NotImplementedError

    def _read(self, core: BridgeCore, now: Now):
        """Feed the core what the vehicle sent since the last cycle (lock held)."""
        raise NotImplementedError

    def _after_poll(self, inputs) -> None:
        """Publish what the transport has of its own (lock not held)."""

    def _pump_answer(self, timeout_s: float) -> None:
        """While stopping: wait at most timeout_s for the vehicle, feeding the core."""
        time.sleep(timeout_s)

    def _release_transport(self) -> None:
        """Close what _build opened besides the core."""

    # ---- configuration ----------------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Build the core and its link; create the interfaces."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        try:
            task = self.load_task(self._param('vehicle_id'))
            self._vehicle_id = task.vehicle_id
            described = self._build(task)
        except ConfigureFailure as failure:
            self._configure_failed(str(failure))
            return TransitionCallbackReturn.FAILURE
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._configure_failed(f'{type(error).__name__}: {error}')
            return TransitionCallbackReturn.FAILURE
        self._window_pub = self.create_lifecycle_publisher(
            ObservationWindow, 'observation/window', WINDOW_QOS)
        self._map_pub = self.create_publisher(TorqueMapMsg, 'torque_map/active', ACTIVE_MAP_QOS)
        self._event_pub = self.create_publisher(EpisodeEvent, 'episode/event', EVENT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._action = ActionServer(
            self, FlashTorqueMap, 'flash_torque_map', self._execute_flash,
            goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup())
        # Diagnostics and the watchdog on wall timers of their own: nothing the poll loop
        # meets (a flood, a stuck driver) delays them beyond one bounded poll cycle.
        self._entities = [
            self.create_service(EpisodeControlSrv, 'episode_control', self._on_episode_control),
            self.create_subscription(Header, 'heartbeat', self._on_heartbeat, 10),
            self.wall_timer(self._param('diagnostics_period_s'), self._publish_diagnostics,
                            callback_group=MutuallyExclusiveCallbackGroup()),
            self.wall_timer(WATCHDOG_CHECK_S, self._check_watchdog,
                            callback_group=MutuallyExclusiveCallbackGroup())]
        with self._lock:
            out = self._take()  # the active map (transient local)
        self._dispatch(out)
        self._clear_failure()
        self.get_logger().info(f'configured: {described}, windows {task.samples_per_window} '
                               f'x {task.sample_rate_hz:g} Hz for {task.vehicle_id}')
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, cause: str) -> None:
        """
        Say why configure failed: in the log and on /diagnostics (ERROR, every second).

        The status repeats until a configure succeeds, so a monitor that starts
        later (rqt_robot_monitor, the lifecycle manager's aggregator) sees it too.
        """
        self.configure_failed(f'{cause}')
        self._failure = cause[:500]
        if self._failure_timer is None:
            self._failure_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self._failure_timer = self.wall_timer(1.0, self._publish_failure)
        self._publish_failure()

    def _publish_failure(self) -> None:
        if self._failure and self._failure_pub is not None:
            self._publish_status(ERROR, f'configure failed: {self._failure}',
                                 {'state': 'unconfigured', 'configure_failure': self._failure},
                                 self._failure_pub)

    def _clear_failure(self) -> None:
        self._failure = ''
        self.destroy_entities(self._failure_timer, self._failure_pub)
        self._failure_timer = self._failure_pub = None

    # ---- lifecycle --------------------------------------------------------------------------

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Start reading the vehicle."""
        result = super().on_activate(state)
        with self._lock:
            self.core.start(self._now())
        self._poll_timer = self.wall_timer(self._param('poll_period_s'), self._poll)
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop reading the vehicle and restore the default map."""
        self._stop_polling()
        self._restore_default('deactivating')
        return super().on_deactivate(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """Restore the default map if still connected (bounded wait), release, finalize."""
        self._stop_polling()
        self._restore_default('shutting down', self._param('shutdown_wait_s'))
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        """Restore the default map if possible, then release and go unconfigured."""
        self._stop_polling()
        self._restore_default('after an error', self._param('shutdown_wait_s'))
        return super().on_error(state)

    def _stop_polling(self):
        self.destroy_entities(self._poll_timer)
        self._poll_timer = None
        with self._lock:
            if self.core is not None:
                self.core.stop()

    def release(self):
        """Release everything configure created."""
        self.destroy_entities(*self._entities)
        if self.core is None:
            return
        self._action.destroy()
        self.destroy_entities(self._window_pub, self._map_pub, self._diag_pub, self._event_pub)
        self.core.close()  # the HMI sources; XCP: disconnect (the ECU keeps its page)
        self._release_transport()
        self._reset_members()

    # ---- the vehicle and the core's outputs -------------------------------------------------

    def _poll(self):
        """Read what the vehicle sent (a bounded batch), let the core do its cycle, publish."""
        inputs = None
        with self._lock:
            core = self.core
            if core is None:
                return
            now = self._now()
            try:
                inputs = self._read(core, now)
                core.tick(now)
            except Exception as error:  # noqa: B902 - never let one bad cycle kill the bridge
                core.note_error('poll_errors', f'poll failed: {type(error).__name__}: {error}',
                                now)
            out = self._take()
        try:
            self._dispatch(out)
            self._after_poll(inputs)
        except Exception as error:  # noqa: B902 - nor a publication
            with self._lock:
                core.note_error('poll_errors', f'publishing failed: {error!r}', now)

    def _take(self) -> Outputs:
        """Take the core's outputs (lock held); a finished flash wakes the waiting goal."""
        out = self.core.take_outputs()
        if out.flashes:
            self._flash_done = out.flashes[-1]
            self._flash_event.set()
        return out

    def _dispatch(self, out: Outputs) -> None:
        """Log, and publish the windows, episode events and active map of the core's outputs."""
        logger = self.get_logger()
        for level, text in out.log:  # one call per severity: rclpy's logger demands it
            if level == 'error':
                logger.error(text)
            elif level == 'warning':
                logger.warning(text)
            else:
                logger.info(text)
        for note in out.episode_events:
            event = EpisodeEvent(event=EVENTS[note.kind], vehicle_id=note.vehicle_id,
                                 driver_id=note.driver_id, episode_id=note.episode_id)
            event.header.stamp = time_from_ns(note.stamp_ns)
            if note.start_ns is not None:
                event.episode_start = time_from_ns(note.start_ns)
            if note.end_ns is not None:
                event.episode_end = time_from_ns(note.end_ns)
            self._event_pub.publish(event)
        if out.active_map is not None:   # stamped on the windows' clock
            self._map_pub.publish(torque_map_to_msg(out.active_map,
                                                    self.core.active_since_ns(self._now())))
        for result in out.windows:
            self._window_pub.publish(window_to_msg(result.window,
                                                   flagged_signals=result.flagged_signals))

    # ---- flashing ---------------------------------------------------------------------------

    def _on_goal(self, goal_request) -> GoalResponse:
        if self.core is None or self._state_machine.current_state[1] != 'active':
            self.get_logger().warning('flash refused: the bridge is not active')
            return GoalResponse.REJECT
        if self.core.flash_pending:
            self.get_logger().warning('flash refused: another flash is in progress')
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute_flash(self, goal_handle):
        goal = goal_handle.request
        feedback = FlashTorqueMap.Feedback(stage=STAGES.STAGE_VALIDATING)
        goal_handle.publish_feedback(feedback)
        with self._lock:
            core = self.core
            if core is None:
                return self._finish(goal_handle, FlashResult(
                    FlashError.VEHICLE_OFFLINE, 'the bridge is not configured', None))
            try:
                proposed = torque_map_from_msg(goal.map, reference=core.default_map)
            except TorqueMapError as error:
                return self._finish(goal_handle, core.reject_malformed(str(error)))
            self._flash_event.clear()
            self._flash_done = None
            # Only the rows the goal names, 1..rows_per_action of them; never the whole map.
            started = core.flash(proposed, goal.map.changed_row_start,
                                 goal.map.changed_row_count, self._now(), goal.timeout_s)
            out = self._take()
        self._dispatch(out)
        if isinstance(started, FlashResult):
            return self._finish(goal_handle, started)
        feedback.stage = STAGES.STAGE_TRANSFERRING
        feedback.segments_total = feedback.segments_sent = started.n_segments
        goal_handle.publish_feedback(feedback)
        feedback.stage = STAGES.STAGE_AWAITING_ACK
        goal_handle.publish_feedback(feedback)
        while not self._flash_event.wait(0.01):
            with self._lock:
                if goal_handle.is_cancel_requested:
                    result = core.cancel_flash()
                    goal_handle.canceled()
                    return self._result(result)
                core.check_flash(self._now())  # also while polling stopped
                out = self._take()
            self._dispatch(out)
        return self._finish(goal_handle, self._flash_done)

    def _finish(self, goal_handle, result: FlashResult):
        if result.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return self._result(result)

    def _result(self, result: FlashResult):
        out = FlashTorqueMap.Result(success=result.success, error_code=int(result.error),
                                    message=result.message)
        if result.active_map is not None:   # stamped on the windows' clock
            out.active_map = torque_map_to_msg(result.active_map,
                                               self.core.active_since_ns(self._now()))
        return out

    def _restore_default(self, why: str, wait_s: Optional[float] = None):
        """
        Revert the vehicle to its default map and wait (bounded) for its answer.

        wait_s: longest wait (default flash_timeout_s). The core says when not
        to wait (the vehicle is silent, or nothing was sent).
        """
        with self._lock:
            if self.core is None:
                return
            wait = self.core.restore_default(why, self._now())
            out = self._take()
        self._dispatch(out)
        wait_s = self._param('flash_timeout_s') if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while wait and time.monotonic() < deadline:
            try:
                self._pump_answer(RESTORE_STEP_S)
            except Exception as error:  # noqa: B902 - a driver may raise anything
                self.get_logger().error(f'{why}: reading the vehicle failed: {error}')
                return
            with self._lock:
                self.core.check_flash(self._now())
                wait = self.core.flash_pending
                out = self._take()
            out.windows = []  # not published while the bridge stops
            self._dispatch(out)
        if wait:
            self.get_logger().error(f'{why}: default map requested, no acknowledgement within '
                                    f'{wait_s:g} s (the vehicle falls back on its own once the '
                                    'bridge goes silent)')

    # ---- heartbeat, watchdog, episodes, diagnostics -----------------------------------------

    def _on_heartbeat(self, msg):
        with self._lock:
            if self.core is not None:
                self.core.feed_watchdog(self._now())

    def _check_watchdog(self):
        """On its own timer: revert to the default map once the agent went silent."""
        with self._lock:
            if self.core is None:
                return
            self.core.check_watchdog(self._now())
            out = self._take()
        self._dispatch(out)

    def _on_episode_control(self, request, response):
        with self._lock:
            if self.core is None:
                response.accepted, response.message = False, 'the bridge is not configured'
                return response
            answer = self.core.episode_command(request.command, self._now(),
                                               request.vehicle_id, request.driver_id)
            out = self._take()
        self._dispatch(out)
        response.accepted, response.state = answer.accepted, answer.state
        response.message, response.episode_id = answer.message, answer.episode_id
        return response

    def _publish_diagnostics(self):
        with self._lock:
            if self.core is None:
                return
            level, message, values = self.core.diagnostics(self._now())
        self._publish_status(LEVELS.get(level, OK), message, values, self._diag_pub)

    def _publish_status(self, level, message, values, publisher):
        publisher.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f'{self.get_name()}: {self.TITLE}',
            self._vehicle_id or self._param('vehicle_id'), level, message, values))
