"""
The map_viz lifecycle node: the active torque map as rviz markers.

Topics (relative, in the vehicle's namespace):

- subscribes ``torque_map/active`` (TorqueMap, transient local: the map the VCU
  applies);
- publishes ``torque_map/markers`` (visualization_msgs/MarkerArray, reliable,
  transient local, depth 1, so that an rviz joining late sees the current map)
  and ``/diagnostics`` (counts).

Every new map is drawn by ``tspace_ros.monitoring.torque_map_markers``: the
coloured surface, the rows the last action changed (the message's
changed_row_start / changed_row_count; count 0 highlights nothing) and, with
``show_difference``, the difference to the vehicle's default map. A map that
arrives while the node is inactive is kept and drawn on activation. An unusable
message (inconsistent sizes, non-finite values, changed rows outside the map) is
counted and logged; the node keeps the last good picture.
"""

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tspace_interfaces.msg import TorqueMap as TorqueMapMsg
from tspace_ros.monitoring.markers import DEFAULT_SCALE, STYLES, torque_map_markers
from tspace_ros.nodes.diagnostics import diagnostic_array, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import torque_map_from_msg
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS
from visualization_msgs.msg import MarkerArray

# The latest picture must reach late joiners (rviz started after the map changed).
MARKER_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class MapViz(TspaceLifecycleNode):
    """Lifecycle adapter: torque_map/active -> torque_map/markers."""

    def __init__(self, node_name: str = 'map_viz', **kwargs):
        """Declare the parameters; nothing is created before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('frame_id', 'map', 'Frame the markers are drawn in.')
        d('style', 'surface', f'How the map is drawn: one of {STYLES}.')
        d('speed_scale', DEFAULT_SCALE[0], 'Metres per km/h along x.', (1e-6, 1e3))
        d('pedal_scale', DEFAULT_SCALE[1], 'Metres per pedal unit (0..1) along y.', (1e-6, 1e3))
        d('torque_scale', DEFAULT_SCALE[2], 'Metres per Nm along z.', (1e-9, 1e3))
        d('show_difference', True, 'Also draw the difference to the default map.')
        self.declare_task_file()  # the default map the difference is drawn against
        d('diagnostics_period_s', 1.0, 'How often /diagnostics is published, s.', (0.05, 60.0))
        self._lock = threading.Lock()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._reset_counts()
        self._default_map = None
        self._pending = None
        self._entities = []
        self._marker_pub = self._diag_pub = None

    def _reset_counts(self):
        self.counts = {'maps_received': 0, 'maps_drawn': 0, 'maps_unusable': 0,
                       'difference_skipped': 0}
        self._last_problem = ''
        self._last_drawn = None
        self._last_draw_ms = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Check the parameters, load the default map; create the topics."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = self._param
        if p('style') not in STYLES:
            self.get_logger().error(
                f'configure failed: style must be one of {STYLES}, got {p("style")!r}')
            return TransitionCallbackReturn.FAILURE
        default_map = None
        if p('show_difference'):
            try:
                default_map = self.load_task().default_map
            except (OSError, ValueError) as error:
                self.configure_failed(f'task file: {error}')
                return TransitionCallbackReturn.FAILURE
        self._default_map, self._pending = default_map, None
        self._reset_counts()
        self._marker_pub = self.create_lifecycle_publisher(MarkerArray, 'torque_map/markers',
                                                           MARKER_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._entities = [
            self.create_subscription(TorqueMapMsg, 'torque_map/active', self._on_map,
                                     ACTIVE_MAP_QOS),
            self.create_timer(p('diagnostics_period_s'), self._publish_diagnostics,
                              clock=self._steady),
        ]
        self.get_logger().info(
            f'configured: {p("style")} in frame {p("frame_id")!r}, difference to the default '
            f'map {"on" if default_map is not None else "off"}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Activate the marker publisher and draw the map that arrived while inactive."""
        result = super().on_activate(state)
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._draw(pending)
        return result

    def release(self):
        """Drop the subscription, timer and publishers."""
        self.destroy_entities(*self._entities, self._marker_pub, self._diag_pub)
        self._entities, self._marker_pub, self._diag_pub = [], None, None
        self._default_map, self._pending = None, None

    # ---- maps in, markers out ----------------------------------------------------------------

    def _param(self, name):
        return self.get_parameter(name).value

    def _active(self) -> bool:
        return self._state_machine.current_state[1] == 'active'

    def _on_map(self, msg: TorqueMapMsg):
        with self._lock:
            self.counts['maps_received'] += 1
            if not self._active():
                self._pending = msg
                return
        self._draw(msg)

    def _draw(self, msg: TorqueMapMsg):
        p = self._param
        started = time.monotonic()
        try:
            torque_map = torque_map_from_msg(msg, reference=self._default_map)
            default_map = self._default_map
            if default_map is not None and not torque_map.same_breakpoints(default_map):
                self.get_logger().warning(
                    'map breakpoints differ from the default map: drawing no difference',
                    throttle_duration_sec=10.0)
                with self._lock:
                    self.counts['difference_skipped'] += 1
                default_map = None
            changed = ((msg.changed_row_start, msg.changed_row_count)
                       if msg.changed_row_count else None)
            markers = torque_map_markers(
                torque_map, default_map=default_map, changed_rows=changed,
                frame_id=p('frame_id'), stamp=msg.header.stamp,
                scale=(p('speed_scale'), p('pedal_scale'), p('torque_scale')),
                style=p('style'))
        except ValueError as error:  # TorqueMapError is a ValueError
            problem = f'unusable map (policy v{msg.policy_version}): {error}'
            self.get_logger().warning(problem, throttle_duration_sec=5.0)
            with self._lock:
                self.counts['maps_unusable'] += 1
                self._last_problem = problem
            return
        self._marker_pub.publish(markers)
        with self._lock:
            self.counts['maps_drawn'] += 1
            self._last_problem = ''
            self._last_drawn = (torque_map.vehicle_id, torque_map.policy_version,
                                len(markers.markers))
            self._last_draw_ms = (time.monotonic() - started) * 1e3

    def _publish_diagnostics(self):
        if self._diag_pub is None:
            return
        with self._lock:
            values = dict(self.counts)
            problem, drawn, draw_ms = self._last_problem, self._last_drawn, self._last_draw_ms
        if drawn is not None:
            values.update(vehicle_id=drawn[0], policy_version=drawn[1], markers=drawn[2],
                          draw_ms=draw_ms)
        message = problem or (f'policy v{drawn[1]} drawn' if drawn is not None
                              else 'waiting for torque_map/active')
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), self.get_fully_qualified_name(), 'tspace_ros',
            WARN if problem else OK, message, values))


def main(args=None) -> int:
    """Run the map_viz node until it is shut down."""
    return run_lifecycle_node(MapViz, args)


if __name__ == '__main__':
    sys.exit(main())
