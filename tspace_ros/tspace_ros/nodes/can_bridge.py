"""
The CAN bridge lifecycle node: CAN frames in, windows out, gated torque maps back.

It reads the vehicle's CAN bus, publishes observation windows, and flashes
torque maps through the safety gate to the VCU.

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

Safety: every map passes the gate (``SafetyGate.admit``) before it is encoded,
and only the action's rows of a goal are used; the bridge sets the map's
origin. On deactivate, shutdown, error, a watchdog expiry (no map and no
agent heartbeat for ``watchdog_timeout_s``, on by default) or a VCU whose map
checksum is not the expected one, the VCU is reverted to its default map, and
the log and diagnostics say so. While active, the bridge sends the VCU a
heartbeat every 100 ms; when it stops (the process dies), the VCU returns to
its default map by itself.
"""

from collections import Counter
import functools
import sys
import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Header
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import (CanFrameBatch, EpisodeEvent, ObservationWindow,
                                   TorqueMap as TorqueMapMsg)
from tspace_interfaces.srv import EpisodeControl as EpisodeControlSrv

from tspace_ros.bounded_yaml import read_bounded
from tspace_ros.can.a2l import map_layout
from tspace_ros.can.bridge import CanBridgeCore, FlashError, FlashResult, Watchdog
from tspace_ros.can.dbc import dbc_dir, load_dbc_with_warnings
from tspace_ros.can.links import make_link
from tspace_ros.can.windowing import SignalMapping, WindowBuilder
from tspace_ros.can.xcp_link import (KEY_ALGORITHMS, SIM_VAN_A2L, SIM_VAN_MASTER_ID,
                                     SIM_VAN_SLAVE_ID, xcp_master_factory, XcpLink)
from tspace_ros.episodes.control import (CONFIGURE as EPISODE_CONFIGURE, ENDING as EPISODE_ENDING,
                                         EpisodeControl, EXITED as EPISODE_EXITED)
from tspace_ros.episodes.hmi_udp import HmiUdpListener
from tspace_ros.nodes.can_bus import CanBusUnavailable, open_can_bus
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import (frame_to_msg, time_from_ns, torque_map_from_msg,
                                       torque_map_to_msg, window_to_msg)
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, EVENT_QOS, WINDOW_QOS
from tspace_ros.nodes.topic_bus import TopicCanBus
from tspace_ros.task.files import load_default_map
from tspace_ros.torque_map.map import TorqueMap, TorqueMapError
from tspace_ros.torque_map.safety_gate import SafetyGate

STAGES = FlashTorqueMap.Feedback
# Most frames read in one poll cycle (a flood waits for the next cycle).
MAX_FRAMES_PER_POLL = 5000
# How often the watchdog is checked, s (wall clock).
WATCHDOG_CHECK_S = 0.05
# Bits on the wire of a classic 8-byte frame with an 11-bit id, without stuffing.
BITS_PER_FRAME = 111


class CanBridge(TspaceLifecycleNode):
    """Lifecycle adapter around CanBridgeCore."""

    def __init__(self, node_name: str = 'can_bridge', **kwargs):
        """Declare the parameters; nothing is opened before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('vehicle_id', 'SIMVAN00000000001', 'Vehicle id (VIN) stamped on windows.')
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
        d('default_map_file', '', "Default torque map YAML ('' = the shipped sim van's).")
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
        d('sample_rate_hz', 20.0, 'Window sampling rate, Hz.', (0.1, 1000.0))
        d('samples_per_window', 30, 'Samples per signal and window.', (1, 100000))
        d('max_gap_s', 0.5, 'A silence longer than this restarts the window grid, s.',
          (0.001, 60.0))
        d('stale_after_s', 0.2, 'Hold a signal stale after this long without a sample, s.',
          (0.001, 60.0))
        d('torque_budget_nm', 250.0, 'Largest change from the default map, Nm.', (0.0, 10000.0))
        d('upper_bound', 1.0, 'Upper limit as a factor on the default map (>= 1).', (1.0, 10.0))
        d('rows_per_action', 4, 'Speed rows one action may change.', (1, 64))
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
        # Reading the bus and reporting run on the wall clock, also under use_sim_time:
        # simulated time may run far faster than real time (or stop).
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._reset_members()

    def _reset_members(self):
        self.core: Optional[CanBridgeCore] = None
        self.bus = None
        self._hmi: Optional[HmiUdpListener] = None
        self._episodes: Optional[EpisodeControl] = None
        self._watchdog: Optional[Watchdog] = None
        self._entities = []
        self._timers = []
        self._poll_timer = None
        self._commit_wall = 0.0
        self._flash_done: Optional[FlashResult] = None
        self._flash_event = threading.Event()
        self._last_frame_wall = None
        self._raw = []
        self._published_checksum = None
        self._restoring = ''
        self._counts = Counter()
        self._dbc_warnings: list = []
        self._failure = ''                 # why the last configure failed
        self._failure_timer = self._failure_pub = None
        self._window_latency_ms = []
        self._period_start = time.monotonic()

    # ---- configuration -------------------------------------------------------------------

    def _param(self, name):
        return self.get_parameter(name).value

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the DBC, default map and mapping, open the bus, create the interfaces."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = self._param
        try:
            db, self._dbc_warnings = load_dbc_with_warnings(p('dbc_file') or None,
                                                            p('dbc_strict'))
            for warning in self._dbc_warnings[:5]:
                self.get_logger().warn(f'DBC: {warning}')
            default_map = load_default_map(p('default_map_file'))
            default_map = TorqueMap.from_dict({**default_map.to_dict(),
                                               'vehicle_id': p('vehicle_id'), 'origin': 0})
            mapping = SignalMapping.default()
            if p('signal_mapping_file'):
                mapping = SignalMapping.from_dicts(read_bounded(p('signal_mapping_file'),
                                                                'signal mapping file'))
            mapping.check_against(db)
            mapping.check_task()  # the task's signals, in its units: a missing one is named
            # The link to the vehicle (flash_protocol); maps travel in its torque steps
            # (0.5 Nm on the transfer protocol): the gate quantizes inside the limits.
            link = make_link(db, p('flash_protocol'), p('flash_timeout_s'),
                             xcp=self._xcp_link(default_map)
                             if p('flash_protocol') == 'xcp' else None)
            gate = SafetyGate(default_map, p('torque_budget_nm'), p('upper_bound'),
                              p('rows_per_action'), resolution_nm=link.resolution_nm)
            windows = WindowBuilder(mapping, p('sample_rate_hz'), p('samples_per_window'),
                                    p('vehicle_id'), p('driver_id'), '', 0, p('max_gap_s'),
                                    p('stale_after_s'))
            core = CanBridgeCore(db, default_map, gate, windows, link=link)
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._configure_failed(f'{type(error).__name__}: {error}')
            return TransitionCallbackReturn.FAILURE
        bus_group = MutuallyExclusiveCallbackGroup()
        try:
            bus = open_can_bus(self, p('can_interface'), str(p('can_channel')),
                               p('can_bitrate') or None, p('can_fd'), callback_group=bus_group,
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
        with self._lock:
            self.core, self.bus, self._hmi = core, bus, hmi
            self._episodes = EpisodeControl(p('episode_countdown_s'))
            # The bridge knows its vehicle and driver: ready for START at once, as tspace's
            # local HMI (begin/end/exit) has no configure command.
            self._episodes.command(EPISODE_CONFIGURE, self.get_clock().now().nanoseconds,
                                   p('vehicle_id'), p('driver_id'))
            self._watchdog = Watchdog(p('watchdog_timeout_s'))
        self._window_pub = self.create_lifecycle_publisher(
            ObservationWindow, 'observation/window', WINDOW_QOS)
        self._map_pub = self.create_publisher(TorqueMapMsg, 'torque_map/active', ACTIVE_MAP_QOS)
        self._event_pub = self.create_publisher(EpisodeEvent, 'episode/event', EVENT_QOS)
        self._episode_seen = ('', self._episodes.state)
        self._raw_pub = self.create_lifecycle_publisher(CanFrameBatch, 'can/frames', 100) \
            if p('republish_raw') else None
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        action_group = ReentrantCallbackGroup()
        self._action = ActionServer(
            self, FlashTorqueMap, 'flash_torque_map', self._execute_flash,
            goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=action_group)
        self._entities = [
            self.create_service(EpisodeControlSrv, 'episode_control', self._on_episode_control),
            self.create_subscription(Header, 'heartbeat', self._on_heartbeat, 10),
        ]
        self._publish_active_map()
        # Diagnostics and the watchdog on timers of their own: nothing the poll loop meets
        # (a flood, a stuck driver) delays them beyond one bounded poll cycle.
        self._timers = [
            self.create_timer(p('diagnostics_period_s'), self._publish_diagnostics,
                              clock=self._steady, callback_group=MutuallyExclusiveCallbackGroup()),
            self.create_timer(WATCHDOG_CHECK_S, self._check_watchdog, clock=self._steady,
                              callback_group=MutuallyExclusiveCallbackGroup())]
        self._clear_failure()
        self.get_logger().info(
            f'configured: {p("can_interface")} {str(p("can_channel"))!r}, windows '
            f'{p("samples_per_window")} x {p("sample_rate_hz")} Hz for {p("vehicle_id")}')
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
            self._failure_timer = self.create_timer(1.0, self._publish_failure,
                                                    clock=self._steady)
        self._publish_failure()

    def _publish_failure(self) -> None:
        if not self._failure or self._failure_pub is None:
            return
        self._failure_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f'{self.get_name()}: CAN bridge',
            self._param('vehicle_id'), ERROR, f'configure failed: {self._failure}',
            {'state': 'unconfigured', 'configure_failure': self._failure}))

    def _clear_failure(self) -> None:
        self._failure = ''
        if self._failure_timer is not None:
            self.destroy_timer(self._failure_timer)
            self.destroy_publisher(self._failure_pub)
            self._failure_timer = self._failure_pub = None

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Start reading the bus."""
        result = super().on_activate(state)
        self._last_frame_wall = time.monotonic()
        self._poll_timer = self.create_timer(self._param('poll_period_s'), self._poll,
                                             clock=self._steady)
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop reading the bus and restore the default map."""
        self._stop_polling()
        self._restore_default('deactivating')
        return super().on_deactivate(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """Restore the default map if still connected (bounded wait), release, finalize."""
        self._stop_polling()
        if self.core is not None:
            self._restore_default('shutting down', self._param('shutdown_wait_s'))
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        """Restore the default map if possible, then release and go unconfigured."""
        self._stop_polling()
        if self.core is not None:
            self._restore_default('after an error', self._param('shutdown_wait_s'))
        return super().on_error(state)

    def _stop_polling(self):
        if self._poll_timer is not None:
            self.destroy_timer(self._poll_timer)
            self._poll_timer = None

    def release(self):
        """Close the bus and release everything configure created."""
        for timer in self._timers:
            self.destroy_timer(timer)
        if self.core is None:
            return
        self._action.destroy()
        for entity in self._entities:
            if hasattr(entity, 'srv_type'):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        self.destroy_lifecycle_publisher(self._window_pub)
        if self._raw_pub is not None:
            self.destroy_lifecycle_publisher(self._raw_pub)
        self.destroy_publisher(self._map_pub)
        self.destroy_publisher(self._diag_pub)
        if self._hmi is not None:
            self._hmi.close()
        close = getattr(self.core.link, 'close', None)
        if close is not None:
            close()  # XCP: disconnect the master (the ECU keeps the page it uses)
        self.bus.shutdown()
        self._reset_members()

    # ---- the bus ---------------------------------------------------------------------------

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _bus_now_s(self) -> float:
        """
        Return the bus time: the capture time of the newest frame read, s (UTC).

        A flash times out only when flash_timeout_s has passed both on the bus
        (the VCU lives on the bus's time; a bridge lagging a fast simulation must
        not time out what the VCU answered in time) and on the wall clock (a
        simulation faster than real time must not shorten the VCU's time to
        answer). On a vehicle the two agree. A silent bus is caught by
        vehicle_offline_s on the wall clock.
        """
        ns = self.core.last_frame_ns
        return ns / 1e9 if ns is not None else self._now_s()

    def _poll(self):
        """Read the bus; a failure is logged and counted, the bridge keeps running."""
        try:
            self._poll_once()
        except Exception as error:  # noqa: B902 - never let one bad cycle kill the bridge
            self._counts['poll_errors'] += 1
            self.get_logger().error(f'poll failed: {type(error).__name__}: {error}',
                                    throttle_duration_sec=5.0)

    def _poll_once(self):
        """Read every waiting frame; publish windows; settle flashes, episodes, watchdog."""
        published = []
        with self._lock:
            core = self.core
            if core is None:
                return
            # A bounded batch per cycle: a flood of frames cannot hold the lock (and starve
            # the watchdog, heartbeat and diagnostics) for ever; the rest waits a cycle.
            for _ in range(MAX_FRAMES_PER_POLL):
                try:
                    frame = self.bus.recv(timeout=0)
                except Exception as error:  # noqa: B902 - a driver may raise anything
                    self._counts['bus_errors'] += 1
                    self.get_logger().error(f'CAN receive failed: {error}',
                                            throttle_duration_sec=5.0)
                    break
                if frame is None:
                    break
                self._last_frame_wall = time.monotonic()
                self._counts['frames'] += 1
                self._counts['frames_period'] += 1
                if self._raw_pub is not None:
                    self._raw.append(frame)
                windows, result = core.on_frame(frame)
                published += windows
                if result is not None:
                    self._settle(result)
            now_s = self._now_s()
            done = core.link_result()  # a link that writes by itself (XCP): its result
            if done is not None:
                self._settle(done)
            timed_out = None
            if time.monotonic() - self._commit_wall >= self._param('flash_timeout_s'):
                timed_out = core.poll(self._bus_now_s())
            if timed_out is not None:
                self._settle(timed_out)
            if core.flash_pending and time.monotonic() - self._last_frame_wall > \
                    self._param('vehicle_offline_s'):
                self._settle(core.abandon(
                    FlashError.VEHICLE_OFFLINE, f'no frame from the vehicle for '
                    f'{self._param("vehicle_offline_s"):g} s'))
            self._poll_episodes(now_s)
            self._follow_vcu()
        for result in published:
            self._publish_window(result)
        if self._raw:
            batch = CanFrameBatch(frames=[frame_to_msg(f) for f in self._raw])
            batch.header.stamp = self.get_clock().now().to_msg()
            self._raw_pub.publish(batch)
            self._raw = []

    def _follow_vcu(self):
        """Send the heartbeat; follow what the VCU reports of its map (lock held)."""
        core = self.core
        heartbeat = core.heartbeat_frame(self._bus_now_s(), time.monotonic())
        if heartbeat is not None:
            try:
                self._send_frames([heartbeat])
                self._counts['heartbeats_sent'] += 1
            except Exception as error:  # noqa: B902 - a driver may raise anything
                self._counts['heartbeat_errors'] += 1
                self.get_logger().error(f'sending the heartbeat failed: {error}',
                                        throttle_duration_sec=5.0)
        for event in core.take_vcu_events():
            self._counts['vcu_events'] += 1
            self.get_logger().warning(f'VCU: {event}')
        if core.active_checksum != self._published_checksum:
            self._publish_active_map()
        if core.map_in_doubt and not core.flash_pending and \
                time.monotonic() - self._commit_wall >= self._param('flash_timeout_s'):
            self._counts['mismatch_reverts'] += 1
            self._send_restore('map checksum mismatch')

    def _check_watchdog(self):
        """On its own timer: revert to the default map once the agent went silent."""
        with self._lock:
            if self.core is None or self._watchdog is None or self._poll_timer is None:
                return
            try:
                if self._watchdog.expired(self._now_s()) and not self.core.active_is_default:
                    self.get_logger().warning(
                        f'watchdog: no map or agent heartbeat for {self._watchdog.timeout_s:g} '
                        's, restoring the default map')
                    self._counts['watchdog_restores'] += 1
                    if self.core.flash_pending:
                        self._settle(self.core.abandon(
                            FlashError.CANCELED, 'superseded by the watchdog restore'))
                    self._send_restore('watchdog')
            except Exception as error:  # noqa: B902 - the watchdog must outlive any fault
                self._counts['watchdog_errors'] += 1
                self.get_logger().error(f'watchdog: {type(error).__name__}: {error}',
                                        throttle_duration_sec=5.0)

    def _publish_window(self, result):
        if result.flagged_signals:
            self._counts['flagged_windows'] += 1
        self._counts['windows'] += 1
        self._window_pub.publish(window_to_msg(result.window,
                                               flagged_signals=result.flagged_signals))
        latency_ms = (self.get_clock().now().nanoseconds - result.completed_ns) / 1e6
        self._window_latency_ms.append(latency_ms)

    def _send_frames(self, frames):
        if isinstance(self.bus, TopicCanBus):
            self.bus.send_batch(frames)
        else:
            for frame in frames:
                self.bus.send(frame, timeout=0.1)

    # ---- flashing --------------------------------------------------------------------------

    def _settle(self, result: FlashResult):
        """Record a finished flash (called with the lock held)."""
        if self._restoring:
            self.get_logger().info(f'{self._restoring}: default map restored ({result.message})'
                                   if result.success else f'{self._restoring}: restoring the '
                                   f'default map failed: {result.message}')
            self._restoring = ''
        if result.success:
            self._watchdog.feed(self._now_s())
            self._publish_active_map()
        self._flash_done = result
        self._flash_event.set()

    def _publish_active_map(self):
        self._published_checksum = self.core.active_checksum
        self._map_pub.publish(torque_map_to_msg(self.core.active_map,
                                                self.get_clock().now().nanoseconds))

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
                return self._finish(goal_handle, FlashResult(
                    FlashError.REJECTED_BY_SAFETY_GATE, f'malformed map: {error}',
                    core.active_map))
            # Only the rows the goal names, 1..rows_per_action of them; never the whole map.
            started = core.begin_flash(proposed, goal.map.changed_row_start,
                                       goal.map.changed_row_count)
            if isinstance(started, FlashResult):
                self.get_logger().warning(f'flash rejected by the safety gate: '
                                          f'{started.message}')
                return self._finish(goal_handle, started)
            feedback.stage, feedback.segments_total = STAGES.STAGE_TRANSFERRING, \
                started.n_segments
            self._flash_event.clear()
            self._flash_done = None
            try:
                self._send_frames(started.frames)
            except Exception as error:  # noqa: B902 - a driver may raise anything
                return self._finish(goal_handle, core.abandon(
                    FlashError.TRANSPORT, f'sending the map failed: {error}'))
            core.commit_sent(self._bus_now_s())
            self._commit_wall = time.monotonic()
        feedback.segments_sent = started.n_segments
        goal_handle.publish_feedback(feedback)
        feedback.stage = STAGES.STAGE_AWAITING_ACK
        goal_handle.publish_feedback(feedback)
        wall_limit = time.monotonic() + max(goal.timeout_s, self._param('flash_timeout_s')) + \
            self._param('vehicle_offline_s') + 5.0
        while not self._flash_event.wait(0.01):
            if goal_handle.is_cancel_requested:
                with self._lock:
                    result = core.abandon(FlashError.CANCELED, 'canceled by the client; the '
                                          'VCU drops the unfinished transfer')
                goal_handle.canceled()
                return self._result(result)
            if time.monotonic() > wall_limit:  # the clock (sim time) stopped
                with self._lock:
                    result = core.abandon(FlashError.TIMEOUT, 'no acknowledgement and the '
                                          'clock stopped')
                return self._finish(goal_handle, result)
        return self._finish(goal_handle, self._flash_done)

    def _finish(self, goal_handle, result: FlashResult):
        self._counts[f'flash_{result.error.name.lower()}'] += 1
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

    def _send_restore(self, why: str):
        """Begin reverting the VCU to its default map (lock held); return the transfer."""
        started = self.core.begin_restore_default()
        if started is None:  # flash_protocol none: the vehicle never left its own map
            return None
        self._restoring = why
        self._flash_event.clear()
        self._send_frames(started.frames)
        self.core.commit_sent(self._bus_now_s())
        self._commit_wall = time.monotonic()
        return started

    def _restore_default(self, why: str, wait_s: Optional[float] = None):
        """
        Revert the VCU to its default map and wait (bounded) for its answer.

        wait_s: longest wait (default flash_timeout_s). No wait when the vehicle
        sent nothing for vehicle_offline_s: nobody would answer, and the VCU
        falls back by itself once the heartbeat stops.
        """
        with self._lock:
            if self.core.active_is_default and not self.core.flash_pending:
                return
            try:
                self._send_restore(why)
            except Exception as error:  # noqa: B902 - a driver may raise anything
                self.get_logger().error(f'{why}: restoring the default map failed: {error}')
                return
            offline = self._last_frame_wall is None or time.monotonic() - \
                self._last_frame_wall > self._param('vehicle_offline_s')
        if offline:
            self.get_logger().warning(f'{why}: default map requested; the vehicle is silent, '
                                      'so its VCU falls back on its own')
            return
        wait_s = self._param('flash_timeout_s') if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                frame = self.bus.recv(timeout=0.02)
            except Exception as error:  # noqa: B902 - a driver may raise anything
                self.get_logger().error(f'{why}: reading the bus failed: {error}')
                return
            if frame is None:
                continue
            with self._lock:
                _, result = self.core.on_frame(frame)
                if result is not None:
                    self._settle(result)  # logs '<why>: default map restored'
                    return
        self.get_logger().error(f'{why}: default map requested, no acknowledgement within '
                                f'{wait_s:g} s (the VCU falls back on its own once the '
                                'heartbeat stops)')

    # ---- episodes, heartbeat, diagnostics ----------------------------------------------------

    def _on_heartbeat(self, msg):
        with self._lock:
            if self._watchdog is not None:
                self._watchdog.feed(self._now_s())

    def _apply_episode_command(self, code, vehicle_id='', driver_id=''):
        answer = self._episodes.command(code, self.get_clock().now().nanoseconds, vehicle_id,
                                        driver_id)
        self._sync_episode()
        return answer

    def _sync_episode(self):
        """Follow the episode state machine: window ids, and an EpisodeEvent per change."""
        episodes, windows = self._episodes, self.core.windows
        now_ns = self.get_clock().now().nanoseconds
        # Finished first: an episode that ended (and perhaps a new one that started) since.
        for episode in episodes.collect_finished():
            self.get_logger().info(f'episode {episode.episode_id} {episode.outcome}')
            self._publish_episode_event(
                EpisodeEvent.STORED if episode.outcome == 'stored' else EpisodeEvent.DISCARDED,
                episode, now_ns)
        current = episodes.episode
        if current is not None and current.episode_id != self._episode_seen[0]:
            self._publish_episode_event(EpisodeEvent.STARTED, current, now_ns)
        if current is not None and episodes.state == EPISODE_ENDING and \
                self._episode_seen[1] != EPISODE_ENDING:
            self._publish_episode_event(EpisodeEvent.ENDING, current, now_ns)
        if episodes.state == EPISODE_EXITED and self._episode_seen[1] != EPISODE_EXITED:
            event = EpisodeEvent(event=EpisodeEvent.EXITED, vehicle_id=episodes.vehicle_id,
                                 driver_id=episodes.driver_id)
            event.header.stamp = time_from_ns(now_ns)
            self._event_pub.publish(event)
        self._episode_seen = (current.episode_id if current else '', episodes.state)
        if episodes.episode_id != windows.episode_id:
            windows.set_episode(episodes.episode_id, 0)

    def _publish_episode_event(self, code, episode, now_ns):
        event = EpisodeEvent(event=code, vehicle_id=episode.vehicle_id,
                             driver_id=episode.driver_id, episode_id=episode.episode_id)
        event.header.stamp = time_from_ns(now_ns)
        event.episode_start = time_from_ns(episode.start_ns)
        if episode.end_ns is not None:
            event.episode_end = time_from_ns(episode.end_ns)
        self._event_pub.publish(event)

    def _poll_episodes(self, now_s):
        self._episodes.tick(round(now_s * 1e9))
        if self._hmi is not None:
            try:
                codes = self._hmi.poll()  # never raises; bounded per poll, rate-limited
            except Exception as error:  # noqa: B902 - the HMI never stops the bridge
                self._counts['hmi_errors'] += 1
                self.get_logger().error(f'HMI poll failed: {error!r}',
                                        throttle_duration_sec=5.0)
                codes = []
            for code in codes:
                answer = self._episodes.command(code, round(now_s * 1e9))
                self.get_logger().info(f'HMI command {code}: {answer.message}')
        self._sync_episode()

    def _on_episode_control(self, request, response):
        with self._lock:
            if self.core is None:
                response.accepted, response.message = False, 'the bridge is not configured'
                return response
            answer = self._apply_episode_command(request.command, request.vehicle_id,
                                                 request.driver_id)
        response.accepted, response.state = answer.accepted, answer.state
        response.message, response.episode_id = answer.message, answer.episode_id
        return response

    def _publish_diagnostics(self):
        with self._lock:
            if self.core is None:
                return
            elapsed = max(time.monotonic() - self._period_start, 1e-6)
            decoder, windows = self.core.decoder.stats, self.core.windows.stats
            frames_per_s = self._counts.pop('frames_period', 0) / elapsed
            bitrate = self._param('can_bitrate') or 500_000
            latencies = sorted(self._window_latency_ms)
            values = {
                'frames': decoder.frames, 'unknown_ids': decoder.unknown,
                'wrong_length': decoder.wrong_length, 'decode_errors': decoder.decode_errors,
                'error_frames': decoder.error_frames, 'windows': windows.windows,
                'dropped_windows': windows.dropped_windows, 'gaps': windows.gaps,
                'flagged_windows': self._counts['flagged_windows'],
                'window_latency_ms_median':
                    latencies[len(latencies) // 2] if latencies else 0.0,
                'frames_per_s': frames_per_s,
                'bus_load_percent': 100.0 * frames_per_s * BITS_PER_FRAME / bitrate,
                'active_map_version': self.core.active_map.policy_version,
                'active_map_is_default': self.core.active_is_default,
                'episode': self._episodes.episode_id or '-',
                **{f'flash_{name.lower()}': count
                   for name, count in self.core.flash_counts.items()},
                'watchdog_restores': self._counts['watchdog_restores'],
                'watchdog_timeout_s': self._watchdog.timeout_s,
                'heartbeats_sent': self._counts['heartbeats_sent'],
                'heartbeat_errors': self._counts['heartbeat_errors'],
                'vcu_status_frames': self.core.vcu_counts['status'],
                'vcu_bad_status': self.core.vcu_counts['bad_status'],
                'vcu_fallbacks': self.core.vcu_counts['fallbacks'],
                'vcu_map_mismatches': self.core.vcu_counts['map_mismatches'],
                'vcu_map_checksum_expected': self.core.active_checksum,
                'map_in_doubt': self.core.map_in_doubt,
                'mismatch_reverts': self._counts['mismatch_reverts'],
                'poll_errors': self._counts['poll_errors'],
                'bus_errors': self._counts['bus_errors'],
                'hmi_errors': self._counts['hmi_errors'],
                'flash_protocol': self.core.flash_protocol,
                'dbc_warnings': len(self._dbc_warnings),
                'dbc_last_warning': self._dbc_warnings[-1][:200] if self._dbc_warnings else '-',
                **(self._hmi.diagnostics() if self._hmi is not None else {}),
            }
            offline = time.monotonic() - (self._last_frame_wall or 0.0) > \
                self._param('vehicle_offline_s')
            if offline:
                level, message = ERROR, 'no frames from the vehicle'
            elif decoder.rejected or windows.dropped_windows:
                level, message = WARN, (f'{decoder.rejected} frames rejected '
                                        f'({decoder.last_rejection or "-"}), '
                                        f'{windows.dropped_windows} windows dropped')
            else:
                level, message = OK, 'ok'
            self._window_latency_ms = []
            self._period_start = time.monotonic()
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f'{self.get_name()}: CAN bridge',
            self._param('vehicle_id'), level, message, values))


def main(args=None) -> int:
    """Run the can_bridge node until it is shut down."""
    # Threads: the bus subscription, the poll timer and waiting flash goals run side by side.
    return run_lifecycle_node(CanBridge, args,
                              executor_class=functools.partial(MultiThreadedExecutor, 4))


if __name__ == '__main__':
    sys.exit(main())
