"""
The diagnostics_aggregator lifecycle node: /diagnostics in, one summary per vehicle out.

Subscribes ``/diagnostics`` (DiagnosticArray, from every node) and, while
active, publishes ``/diagnostics_agg`` every ``period_s``: '/tspace' (overall)
and '/tspace/<group>' per group, the group being the first namespace segment
of a status name (the vehicle); see ``tspace_ros.monitoring.diagnostics``.
/diagnostics_agg is the topic of ROS's diagnostic_aggregator, so
rqt_robot_monitor shows it. Timing (the period, staleness) runs on the steady
clock: a simulation whose /clock stops does not make the statuses stale or
stop the summaries.
"""

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from tspace_ros.monitoring.diagnostics import aggregated_array, DiagnosticsAggregator
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode

DIAGNOSTICS_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
AGGREGATED_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class DiagnosticsAggregatorNode(TspaceLifecycleNode):
    """Lifecycle adapter of DiagnosticsAggregator."""

    def __init__(self, node_name: str = 'diagnostics_aggregator', **kwargs):
        """Declare the parameters; nothing is created before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('period_s', 1.0, 'How often /diagnostics_agg is published, s (steady clock).',
          (0.01, 60.0))
        d('stale_after_s', 5.0, 'A status not updated for this long is STALE, s.',
          (0.01, 3600.0))
        self._lock = threading.Lock()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._core = None
        self._entities = []
        self._agg_pub = None

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Create the core, the subscription, the publisher and the timer."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = self.get_parameter
        self._core = DiagnosticsAggregator(p('stale_after_s').value)
        self._agg_pub = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics_agg',
                                                        AGGREGATED_QOS)
        self._entities = [
            self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                     DIAGNOSTICS_QOS),
            self.create_timer(p('period_s').value, self._publish, clock=self._steady),
        ]
        return TransitionCallbackReturn.SUCCESS

    def release(self):
        """Drop the core, subscription, timer and publisher."""
        self.destroy_entities(*self._entities, self._agg_pub)
        self._entities, self._agg_pub, self._core = [], None, None

    @property
    def core(self):
        """Return the aggregator core, or None unless configured."""
        return self._core

    def _on_diagnostics(self, msg: DiagnosticArray):
        with self._lock:
            if self._core is not None:
                self._core.update(msg.status, time.monotonic())

    def _publish(self):
        if self._agg_pub is None or self._state_machine.current_state[1] != 'active':
            return
        with self._lock:
            summary = self._core.summary(time.monotonic())
        self._agg_pub.publish(aggregated_array(summary, self.get_clock().now().to_msg()))


def main(args=None) -> int:
    """Run the diagnostics_aggregator node until it is shut down."""
    return run_lifecycle_node(DiagnosticsAggregatorNode, args)


if __name__ == '__main__':
    sys.exit(main())
