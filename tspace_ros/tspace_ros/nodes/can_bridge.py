"""
The CAN bridge lifecycle node: a vehicle on a CAN bus, ROS around ``CanBridgeCore``.

The core holds the logic (``bridge.core``: the safety gate, the active and last
good map, flash time-outs on both clocks, offline detection, the agent
watchdog, episodes, VCU following, counters); ``nodes.vehicle_bridge`` holds
what every bridge node shares (topics, the flash action, the episode service,
diagnostics, lifecycle). This node adds the CAN link: the DBC and its signal
mapping, the bus (python-can, a log, or ROS topics), the flash protocol
(``transfer``, ``xcp`` or ``none``) and the local HMI on UDP.

Topics besides the shared ones (relative, so they follow the node's namespace):

- publishes ``can/frames`` (CanFrameBatch, the raw received frames, when
  ``republish_raw``);
- with ``can_interface: ros_topic`` it talks to the vehicle over
  ``from_can_bus``/``to_can_bus`` (see TopicCanBus).

Safety: every map passes the gate (``SafetyGate.admit``, inside the core)
before it is encoded. While active, the bridge sends the VCU a heartbeat every
100 ms; when it stops (the process dies), the VCU returns to its default map
by itself.
"""

import functools
import sys

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from tspace_interfaces.msg import CanFrameBatch

from tspace_ros.bounded_yaml import read_bounded
from tspace_ros.can.a2l import map_layout
from tspace_ros.can.bridge import CanBridgeCore
from tspace_ros.can.dbc import dbc_dir, load_dbc_with_warnings
from tspace_ros.can.links import make_link
from tspace_ros.can.windowing import SignalMapping, WindowBuilder
from tspace_ros.can.xcp_link import (KEY_ALGORITHMS, SIM_VAN_A2L, SIM_VAN_MASTER_ID,
                                     SIM_VAN_SLAVE_ID, xcp_master_factory, XcpLink)
from tspace_ros.episodes.hmi_udp import HmiUdpListener
from tspace_ros.nodes.can_bus import CanBusUnavailable, open_can_bus
from tspace_ros.nodes.lifecycle import run_lifecycle_node
from tspace_ros.nodes.messages import frame_to_msg
from tspace_ros.nodes.topic_bus import TopicCanBus
from tspace_ros.nodes.vehicle_bridge import ConfigureFailure, VehicleBridgeNode
from tspace_ros.torque_map.map import TorqueMap

# Most frames read in one poll cycle (a flood waits for the next cycle).
MAX_FRAMES_PER_POLL = 5000


class CanBridge(VehicleBridgeNode):
    """The bridge to a vehicle on CAN (see the module docstring)."""

    TITLE = 'CAN bridge'

    def __init__(self, node_name: str = 'can_bridge', **kwargs):
        """Declare the parameters; nothing is opened before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
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
        d('can_interface', 'ros_topic',
          'python-can interface (socketcan, kvaser, pcan, vector, virtual, ...) or ros_topic.')
        d('can_channel', '', 'Channel of the interface (e.g. can0, 0, PCAN_USBBUS1).',
          any_type=True)
        d('can_bitrate', 0, 'Bit rate, bit/s (0 = the driver default).', (0, 8_000_000))
        d('can_fd', False, 'Open the bus in CAN FD mode.')
        d('log_rate', 1.0, 'can_interface log: play the log (can_channel) at this multiple of '
          'log speed; 0 = as fast as possible.', (0.0, 1000.0))
        d('republish_raw', False, 'Republish received frames on can/frames for recording.')
        d('hmi_udp_port', 0, "tspace's local HMI JSON on this loopback UDP port (0: off).",
          (0, 65535))

    def _reset_members(self):
        super()._reset_members()
        self.bus = self._raw_pub = None

    # ---- configuration ----------------------------------------------------------------------

    def _build(self, task) -> str:
        """Load the DBC and mapping, build the link, gate and core; open the bus and HMI."""
        p = self._param
        db, dbc_warnings = load_dbc_with_warnings(p('dbc_file') or None, p('dbc_strict'))
        for warning in dbc_warnings[:5]:
            self.get_logger().warn(f'DBC: {warning}')
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
        # -- the safety gate and the core --
        gate = task.safety_gate(resolution_nm=link.resolution_nm)
        core = CanBridgeCore(db, default_map, gate, windows, link=link,
                             settings=self.settings(task, p('can_bitrate') or 500_000),
                             send=self._send_frames, config_values={
                                 'dbc_warnings': len(dbc_warnings),
                                 'dbc_last_warning': dbc_warnings[-1][:200]
                                 if dbc_warnings else '-'})
        try:
            bus = open_can_bus(self, p('can_interface'), str(p('can_channel')),
                               p('can_bitrate') or None, p('can_fd'),
                               callback_group=MutuallyExclusiveCallbackGroup(),
                               log_rate=p('log_rate'))
        except CanBusUnavailable as error:
            raise ConfigureFailure(str(error)) from None
        try:
            hmi = HmiUdpListener(p('hmi_udp_port')) if p('hmi_udp_port') else None
        except (OSError, ValueError) as error:
            bus.shutdown()
            raise ConfigureFailure(f'hmi_udp_port {p("hmi_udp_port")}: {error}') from None
        core.command_sources = (hmi,) if hmi is not None else ()
        self._raw_pub = self.create_lifecycle_publisher(CanFrameBatch, 'can/frames', 100) \
            if p('republish_raw') else None
        with self._lock:
            self.core, self.bus = core, bus
        return f'{p("can_interface")} {str(p("can_channel"))!r}'

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

    def _release_transport(self) -> None:
        """Close the bus and the raw republisher."""
        self.destroy_entities(self._raw_pub)
        self.bus.shutdown()

    # ---- the bus ----------------------------------------------------------------------------

    def _read(self, core, now):
        """Feed the core the waiting frames (a bounded batch); return them."""
        frames = []
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
        return frames

    def _after_poll(self, frames) -> None:
        """Republish the raw frames (republish_raw)."""
        if frames and self._raw_pub is not None:
            batch = CanFrameBatch(frames=[frame_to_msg(f) for f in frames])
            batch.header.stamp = self.get_clock().now().to_msg()
            self._raw_pub.publish(batch)

    def _pump_answer(self, timeout_s: float) -> None:
        """While stopping: read one frame (or wait timeout_s) and feed the core."""
        frame = self.bus.recv(timeout=timeout_s)
        with self._lock:
            self.core.receive([frame] if frame is not None else [], self._now())

    def _send_frames(self, frames):
        if isinstance(self.bus, TopicCanBus):
            self.bus.send_batch(frames)
        else:
            for frame in frames:
                self.bus.send(frame, timeout=0.1)


def main(args=None) -> int:
    """Run the can_bridge node until it is shut down."""
    # Threads: the bus subscription, the poll timer and waiting flash goals run side by side.
    return run_lifecycle_node(CanBridge, args,
                              executor_class=functools.partial(MultiThreadedExecutor, 4))


if __name__ == '__main__':
    sys.exit(main())
