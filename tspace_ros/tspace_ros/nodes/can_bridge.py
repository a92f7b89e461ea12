"""
The CAN bridge lifecycle node: ROS around ``CanBridgeCore`` (``bridge.core``).

The core holds the logic (the safety gate, the active and last good map, flash
time-outs on both clocks, offline detection, the agent watchdog, episodes,
VCU following, counters); this node adapts: parameters to objects, callbacks
and timers to core calls with the time, the core's outputs to publications.

Topics (relative, so they follow the node's namespace, e.g. one per VIN):

- publishes ``observation/window`` (ObservationWindow), ``torque_map/active``
  (TorqueMap, transient local: the map the VCU applies), ``can/frames``
  (CanFrameBatch, the raw received frames, when ``republish_raw``),
  ``episode/event`` (EpisodeEvent: started, ending, stored, discarded, exited),
  ``/diagnostics``;
- subscribes ``heartbeat`` (std_msgs/Header) to feed the watchdog;
- serves the action ``flash_torque_map`` and the service ``episode_control``;
- with ``can_interface: ros_topic`` it talks to the vehicle over
  ``from_can_bus``/``to_can_bus`` (see TopicCanBus).

Safety: every map passes the gate (``SafetyGate.admit``, inside the core)
before it is encoded, and only the action's rows of a goal are used. On
deactivate, shutdown, error, a watchdog expiry (no map and no agent heartbeat
for ``watchdog_timeout_s``, on by default) or a VCU whose map checksum is not
the expected one, the VCU is reverted to its default map, and the log and
diagnostics say so. While active, the bridge sends the VCU a heartbeat every
100 ms; when it stops (the process dies), the VCU returns to its default map
by itself.
"""

import functools
import sys
import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Header
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import (CanFrameBatch, EpisodeEvent, ObservationWindow,
                                   TorqueMap as TorqueMapMsg)
from tspace_interfaces.srv import EpisodeControl as EpisodeControlSrv

from tspace_ros.bounded_yaml import read_bounded
from tspace_ros.bridge.core import (BridgeSettings, FlashError, FlashResult, LEVEL_ERROR,
                                    LEVEL_WARN, Now, Outputs)
from tspace_ros.can.a2l import map_layout
from tspace_ros.can.bridge import CanBridgeCore
from tspace_ros.can.dbc import dbc_dir, load_dbc_with_warnings
from tspace_ros.can.links import make_link
from tspace_ros.can.windowing import SignalMapping, WindowBuilder
from tspace_ros.can.xcp_link import (KEY_ALGORITHMS, SIM_VAN_A2L, SIM_VAN_MASTER_ID,
                                     SIM_VAN_SLAVE_ID, xcp_master_factory, XcpLink)
from tspace_ros.episodes.hmi_udp import HmiUdpListener
from tspace_ros.nodes.can_bus import CanBusUnavailable, open_can_bus
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import (frame_to_msg, time_from_ns, torque_map_from_msg,
                                       torque_map_to_msg, window_to_msg)
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, EVENT_QOS, WINDOW_QOS
from tspace_ros.nodes.topic_bus import TopicCanBus
from tspace_ros.torque_map.map import TorqueMap, TorqueMapError

STAGES = FlashTorqueMap.Feedback
# Most frames read in one poll cycle (a flood waits for the next cycle).
MAX_FRAMES_PER_POLL = 5000
# How often the watchdog is checked, s (wall clock).
WATCHDOG_CHECK_S = 0.05
LEVELS = {LEVEL_ERROR: ERROR, LEVEL_WARN: WARN}
EVENTS = {'started': EpisodeEvent.STARTED, 'ending': EpisodeEvent.ENDING,
          'stored': EpisodeEvent.STORED, 'discarded': EpisodeEvent.DISCARDED,
          'exited': EpisodeEvent.EXITED}


class CanBridge(TspaceLifecycleNode):
    """Lifecycle adapter around CanBridgeCore."""

    def __init__(self, node_name: str = 'can_bridge', **kwargs):
        """Declare the parameters; nothing is opened before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('vehicle_id', '', "Vehicle id (VIN) stamped on windows ('' = the task's).")
        self.declare_task_file()  # signals, window grid, default map, rows per action, gate
        d('driver_id', 'driver0', 'Driver id stamped on windows.')
        d('dbc_file', '', "Vehicle DBC file ('' = the shipped tspace_sim_van.dbc).")
        d('dbc_strict', True, 'Load the DBC strictly (overlapping signals are an error); '
          "production DBCs often need false (cantools' warnings go to the log and "
          '/diagnostics).')
        d('flash_protocol', 'transfer', 'How maps reach the VCU: transfer (the simulated '
          "van's MapSegment/MapCommit/MapAck), xcp (XCP calibration of the map's working page "
          'through pyxcp on can_interface/can_channel) or none (read-only: goals are gated, '
          'then refused with ERROR_NO_FLASH_PROTOCOL).')
        d('xcp_master_id', SIM_VAN_MASTER_ID, 'XCP: CAN id master -> slave (bit 31: extended).',
          (0, 2 ** 32 - 1))
        d('xcp_slave_id', SIM_VAN_SLAVE_ID, 'XCP: CAN id slave -> master (bit 31: extended).',
          (0, 2 ** 32 - 1))
        d('xcp_a2l_file', '', "XCP: the ECU's A2L, where the map characteristic lives "
          "('' = the shipped tspace_sim_van.a2l).")
        d('xcp_characteristic', 'TorqueMap', 'XCP: the name of the map characteristic in the '
          'A2L.')
        d('xcp_key_algorithm', 'sim_van_xor', 'XCP seed and key: sim_van_xor or none.')
        d('xcp_timeout_s', 0.5, 'XCP response time-out, s.', (0.01, 30.0))
        d('signal_mapping_file', '',
          'YAML list of {name, unit, message, signal, factor, offset, minimum, maximum}; '
          'empty: the default mapping of the shipped DBC.')
        d('can_interface', 'ros_topic',
          'python-can interface (socketcan, kvaser, pcan, vector, virtual, ...) or ros_topic.')
        d('can_channel', '', 'Channel of the interface (e.g. can0, 0, PCAN_USBBUS1).',
          any_type=True)
        d('can_bitrate', 0, 'Bit rate, bit/s (0 = the driver default).', (0, 8_000_000))
        d('can_fd', False, 'Open the bus in CAN FD mode.')
        d('log_rate', 1.0, 'can_interface log: play the log (can_channel) at this multiple of '
          'log speed; 0 = as fast as possible.', (0.0, 1000.0))
        d('max_gap_s', 0.5, 'A silence longer than this restarts the window grid, s.',
          (0.001, 60.0))
        d('stale_after_s', 0.2, 'Hold a signal stale after this long without a sample, s.',
          (0.001, 60.0))
        d('flash_timeout_s', 3.0, 'Time for the VCU to acknowledge a map, s.', (0.01, 600.0))
        d('watchdog_timeout_s', 5.0,
          'Restore the default map after this long without a map or an agent heartbeat '
          '(the agent sends one per window), s on the node clock (0: off).', (0.0, 86400.0))
        d('shutdown_wait_s', 1.5,
          'On shutdown, wait this long at most for the VCU to confirm the default map, s '
          '(it falls back by itself once the heartbeat stops).', (0.0, 3.5))
        d('vehicle_offline_s', 2.0,
          'No frame for this long (wall clock) means the vehicle is offline, s.', (0.01, 600.0))
        d('republish_raw', False, 'Republish received frames on can/frames for recording.')
        d('hmi_udp_port', 0, "tspace's local HMI JSON on this loopback UDP port (0: off).",
          (0, 65535))
        d('episode_countdown_s', 3.0, 'Countdown after "end valid" before storing, s.',
          (0.0, 600.0))
        d('poll_period_s', 0.01, 'How often the bus is read, s (wall clock).', (0.001, 1.0))
        d('diagnostics_period_s', 1.0, 'How often /diagnostics is published, s.', (0.1, 60.0))
        self._lock = threading.RLock()
        self._reset_members()
        self._failure = ''                 # why the last configure failed
        self._failure_timer = self._failure_pub = None
        self._vehicle_id = ''              # the task's, or the vehicle_id parameter

    def _reset_members(self):
        self.core: Optional[CanBridgeCore] = None
        self.bus = self._raw_pub = self._poll_timer = None
        self._entities = []
        self._flash_done: Optional[FlashResult] = None
        self._flash_event = threading.Event()

    def _param(self, name):
        return self.get_parameter(name).value

    def _now(self) -> Now:
        """Return the node clock (maybe simulated) and the wall clock, for the core."""
        return Now(self.get_clock().now().nanoseconds, time.monotonic())

    # ---- configuration ----------------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the DBC, default map and mapping, open the bus, create the interfaces."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = self._param
        try:
            db, dbc_warnings = load_dbc_with_warnings(p('dbc_file') or None, p('dbc_strict'))
            for warning in dbc_warnings[:5]:
                self.get_logger().warn(f'DBC: {warning}')
            # -- the task contract: the default map (as the VCU holds it), windows, gate --
            task = self.load_task(p('vehicle_id'))
            self._vehicle_id = task.vehicle_id
            default_map = task.vehicle_default_map()
            # -- the signal mapping and the windows --
            mapping = SignalMapping.default()
            if p('signal_mapping_file'):
                mapping = SignalMapping.from_dicts(read_bounded(p('signal_mapping_file'),
                                                                'signal mapping file'))
            mapping.check_against(db)
            mapping.check_task(task.required_signals)  # a missing one is named
            windows = WindowBuilder(mapping, task.sample_rate_hz, task.samples_per_window,
                                    task.vehicle_id, p('driver_id'), '', 0, p('max_gap_s'),
                                    p('stale_after_s'))
            # -- the link to the vehicle (flash_protocol); maps travel in its torque steps
            # (0.5 Nm on the transfer protocol): the gate quantizes inside the limits --
            link = make_link(db, p('flash_protocol'), p('flash_timeout_s'),
                             xcp=self._xcp_link(default_map)
                             if p('flash_protocol') == 'xcp' else None)
            # -- the safety gate --
            gate = task.safety_gate(resolution_nm=link.resolution_nm)
            # -- the core --
            settings = BridgeSettings(
                task.vehicle_id, p('driver_id'), p('flash_timeout_s'), p('vehicle_offline_s'),
                p('watchdog_timeout_s'), p('episode_countdown_s'), p('can_bitrate') or 500_000)
            core = CanBridgeCore(db, default_map, gate, windows, link=link, settings=settings,
                                 send=self._send_frames, config_values={
                                     'dbc_warnings': len(dbc_warnings),
                                     'dbc_last_warning': dbc_warnings[-1][:200]
                                     if dbc_warnings else '-'})
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._configure_failed(f'{type(error).__name__}: {error}')
            return TransitionCallbackReturn.FAILURE
        try:
            bus = open_can_bus(self, p('can_interface'), str(p('can_channel')),
                               p('can_bitrate') or None, p('can_fd'),
                               callback_group=MutuallyExclusiveCallbackGroup(),
                               log_rate=p('log_rate'))
        except CanBusUnavailable as error:
            self._configure_failed(str(error))
            return TransitionCallbackReturn.FAILURE
        try:
            hmi = HmiUdpListener(p('hmi_udp_port')) if p('hmi_udp_port') else None
        except (OSError, ValueError) as error:
            bus.shutdown()
            self._configure_failed(f'hmi_udp_port {p("hmi_udp_port")}: {error}')
            return TransitionCallbackReturn.FAILURE
        core.command_sources = (hmi,) if hmi is not None else ()
        self._window_pub = self.create_lifecycle_publisher(
            ObservationWindow, 'observation/window', WINDOW_QOS)
        self._map_pub = self.create_publisher(TorqueMapMsg, 'torque_map/active', ACTIVE_MAP_QOS)
        self._event_pub = self.create_publisher(EpisodeEvent, 'episode/event', EVENT_QOS)
        self._raw_pub = self.create_lifecycle_publisher(CanFrameBatch, 'can/frames', 100) \
            if p('republish_raw') else None
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
            self.wall_timer(p('diagnostics_period_s'), self._publish_diagnostics,
                            callback_group=MutuallyExclusiveCallbackGroup()),
            self.wall_timer(WATCHDOG_CHECK_S, self._check_watchdog,
                            callback_group=MutuallyExclusiveCallbackGroup())]
        with self._lock:
            self.core, self.bus = core, bus
            out = self._take()  # the active map (transient local)
        self._dispatch(out)
        self._clear_failure()
        self.get_logger().info(
            f'configured: {p("can_interface")} {str(p("can_channel"))!r}, windows '
            f'{task.samples_per_window} x {task.sample_rate_hz:g} Hz for {task.vehicle_id}')
        return TransitionCallbackReturn.SUCCESS

    def _xcp_link(self, default_map: TorqueMap) -> XcpLink:
        """Return the XCP link of the parameters; ValueError for what cannot work."""
        p = self._param
        interface = p('can_interface')
        if interface in ('ros_topic', 'log'):
            raise ValueError(f'flash_protocol xcp needs a python-can interface (pyxcp opens '
                             f'its own on the same channel), not can_interface {interface}')
        if p('xcp_key_algorithm') not in KEY_ALGORITHMS:
            raise ValueError(f'xcp_key_algorithm must be one of {", ".join(KEY_ALGORITHMS)}, '
                             f'got {p("xcp_key_algorithm")!r}')
        factory = xcp_master_factory(interface, str(p('can_channel')), p('xcp_master_id'),
                                     p('xcp_slave_id'), p('xcp_timeout_s'),
                                     p('can_bitrate') or None, p('can_fd'))
        a2l = p('xcp_a2l_file') or str(dbc_dir() / SIM_VAN_A2L)
        layout = map_layout(a2l, default_map, p('xcp_characteristic'))
        self.get_logger().info(f'XCP: {p("xcp_characteristic")} at 0x{layout.address:08x} '
                               f'({layout.rows} x {layout.columns} float32) from {a2l}')
        return XcpLink(factory, layout, key_of=KEY_ALGORITHMS[p('xcp_key_algorithm')],
                       ack_timeout_s=p('flash_timeout_s'))

    def _configure_failed(self, cause: str) -> None:
        """
        Say why configure failed: in the log and on /diagnostics (ERROR, every second).

        The status repeats until a configure succeeds, so a monitor that starts
        later (rqt_robot_monitor, the lifecycle manager's aggregator) sees it too.
        """
        self.get_logger().error(f'configure failed: {cause}')
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
        """Start reading the bus."""
        result = super().on_activate(state)
        with self._lock:
            self.core.start(self._now())
        self._poll_timer = self.wall_timer(self._param('poll_period_s'), self._poll)
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop reading the bus and restore the default map."""
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
        """Close the bus and release everything configure created."""
        self.destroy_entities(*self._entities)
        if self.core is None:
            return
        self._action.destroy()
        self.destroy_entities(self._window_pub, self._raw_pub, self._map_pub, self._diag_pub,
                              self._event_pub)
        self.core.close()  # the HMI socket; XCP: disconnect (the ECU keeps the page it uses)
        self.bus.shutdown()
        self._reset_members()

    # ---- the bus and the core's outputs -----------------------------------------------------

    def _poll(self):
        """Read the waiting frames (a bounded batch), let the core do its cycle, publish."""
        frames = []
        with self._lock:
            core = self.core
            if core is None:
                return
            now = self._now()
            try:
                for _ in range(MAX_FRAMES_PER_POLL):  # a flood cannot hold the lock for ever
                    try:
                        frame = self.bus.recv(timeout=0)
                    except Exception as error:  # noqa: B902 - a driver may raise anything
                        core.note_error('bus_errors', f'CAN receive failed: {error}', now)
                        break
                    if frame is None:
                        break
                    frames.append(frame)
                core.receive(frames, now)
                core.tick(now)
            except Exception as error:  # noqa: B902 - never let one bad cycle kill the bridge
                core.note_error('poll_errors', f'poll failed: {type(error).__name__}: {error}',
                                now)
            out = self._take()
        try:
            self._dispatch(out)
            if frames and self._raw_pub is not None:
                batch = CanFrameBatch(frames=[frame_to_msg(f) for f in frames])
                batch.header.stamp = self.get_clock().now().to_msg()
                self._raw_pub.publish(batch)
        except Exception as error:  # noqa: B902 - nor a publication
            with self._lock:
                core.note_error('poll_errors', f'publishing failed: {error!r}', now)

    def _send_frames(self, frames):
        if isinstance(self.bus, TopicCanBus):
            self.bus.send_batch(frames)
        else:
            for frame in frames:
                self.bus.send(frame, timeout=0.1)

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
        if out.active_map is not None:
            self._map_pub.publish(torque_map_to_msg(out.active_map,
                                                    self.get_clock().now().nanoseconds))
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
        if result.active_map is not None:
            out.active_map = torque_map_to_msg(result.active_map,
                                               self.get_clock().now().nanoseconds)
        return out

    def _restore_default(self, why: str, wait_s: Optional[float] = None):
        """
        Revert the VCU to its default map and wait (bounded) for its answer.

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
                frame = self.bus.recv(timeout=0.02)
            except Exception as error:  # noqa: B902 - a driver may raise anything
                self.get_logger().error(f'{why}: reading the bus failed: {error}')
                return
            with self._lock:
                now = self._now()
                self.core.receive([frame] if frame is not None else [], now)
                self.core.check_flash(now)
                wait = self.core.flash_pending
                out = self._take()
            out.windows = []  # not published while the bridge stops
            self._dispatch(out)
        if wait:
            self.get_logger().error(f'{why}: default map requested, no acknowledgement within '
                                    f'{wait_s:g} s (the VCU falls back on its own once the '
                                    'heartbeat stops)')

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
            self.get_clock().now().to_msg(), f'{self.get_name()}: CAN bridge',
            self._vehicle_id or self._param('vehicle_id'), level, message, values))


def main(args=None) -> int:
    """Run the can_bridge node until it is shut down."""
    # Threads: the bus subscription, the poll timer and waiting flash goals run side by side.
    return run_lifecycle_node(CanBridge, args,
                              executor_class=functools.partial(MultiThreadedExecutor, 4))


if __name__ == '__main__':
    sys.exit(main())
