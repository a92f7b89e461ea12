"""
Lifecycle node that publishes synthetic observation windows.

A plumbing check and demo source: while active it publishes one
``tspace_interfaces/ObservationWindow`` per window period on ``observation/window``
(relative, so it follows the node's namespace). Inactive, it publishes nothing.

Parameters (all declared with descriptors): vehicle_id, driver_id, episode_id,
sample_rate_hz, samples_per_window, publish_period_s (0: one window duration),
seed.
"""

import sys

from rclpy.lifecycle import TransitionCallbackReturn
from tspace_interfaces.msg import ObservationWindow

from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import window_to_msg
from tspace_ros.nodes.qos import WINDOW_QOS
from tspace_ros.signals.synthetic import SyntheticDrive

WINDOW_TOPIC = 'observation/window'


class WindowSource(TspaceLifecycleNode):
    """Publish windows of a SyntheticDrive while active."""

    def __init__(self, node_name: str = 'window_source', **kwargs):
        """Declare the parameters; nothing is created before configure."""
        super().__init__(node_name, **kwargs)
        self.declare_described('vehicle_id', 'SIM0000000000001', 'Vehicle id (VIN) on windows.')
        self.declare_described('driver_id', 'driver0', 'Driver id on windows.')
        self.declare_described('episode_id', '', "Episode id on windows ('' for none).")
        self.declare_described('sample_rate_hz', 20.0, 'Signal sampling rate, Hz.', (0.1, 1000.0))
        self.declare_described('samples_per_window', 30, 'Samples per signal and window.',
                               (1, 100000))
        self.declare_described('publish_period_s', 0.0,
                               'Seconds between windows; 0 publishes one per window duration.',
                               (0.0, 3600.0))
        self.declare_described('seed', 0, 'Seed of the synthetic measurement noise.',
                               (0, 2**31 - 1))
        self._drive = None
        self._publisher = None
        self._timer = None
        self._period_s = 0.0

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Build the synthetic drive and the (lifecycle) publisher."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = {name: self.get_parameter(name).value for name in (
            'vehicle_id', 'driver_id', 'episode_id', 'sample_rate_hz', 'samples_per_window',
            'publish_period_s', 'seed')}
        try:
            self._drive = SyntheticDrive(
                vehicle_id=p['vehicle_id'], driver_id=p['driver_id'],
                episode_id=p['episode_id'], sample_rate_hz=p['sample_rate_hz'],
                samples_per_window=p['samples_per_window'], seed=p['seed'])
        except ValueError as error:
            self.configure_failed(f'{error}')
            return TransitionCallbackReturn.FAILURE
        self._period_s = p['publish_period_s'] or p['samples_per_window'] / p['sample_rate_hz']
        self._publisher = self.create_lifecycle_publisher(
            ObservationWindow, WINDOW_TOPIC, WINDOW_QOS)
        self.get_logger().info(
            f'configured: {p["samples_per_window"]} samples at {p["sample_rate_hz"]} Hz '
            f'every {self._period_s:.3f} s for vehicle {p["vehicle_id"]}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Start publishing: activate the publisher and start the timer."""
        result = super().on_activate(state)
        self._timer = self.create_timer(self._period_s, self._publish_window)
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop publishing: stop the timer first, then deactivate the publisher."""
        self._destroy_timer()
        return super().on_deactivate(state)

    def _publish_window(self):
        now_ns = self.get_clock().now().nanoseconds
        self._publisher.publish(window_to_msg(self._drive.window(now_ns)))

    def _destroy_timer(self):
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def release(self):
        """Release the timers, publishers and what configure built."""
        self._destroy_timer()
        if self._publisher is not None:
            self.destroy_lifecycle_publisher(self._publisher)
            self._publisher = None
        self._drive = None


def main(args=None) -> int:
    """Run the window_source node until it is shut down."""
    return run_lifecycle_node(WindowSource, args)


if __name__ == '__main__':
    sys.exit(main())
