"""
Benchmark: observation windows as ROS 2 messages.

Measures, for tspace's two window shapes (local 5 x 30 at 20 Hz; cloud 5 x 200 at
50 Hz, 5 signals each):

- conversion of a core SignalWindow to an ObservationWindow message and back;
- latency from publish to the subscriber's callback between two nodes in one
  process over the real middleware (Fast DDS, LOCALHOST discovery, reliable QoS).

Prints median and p99 in microseconds. Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/window_messages.py [--count N]``.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from tspace_interfaces.msg import ObservationWindow  # noqa: E402

from tspace_ros.nodes.messages import window_from_msg, window_to_msg  # noqa: E402
from tspace_ros.signals.synthetic import SyntheticDrive  # noqa: E402

SHAPES = {'local 5x30 @20Hz': (20.0, 30), 'cloud 5x200 @50Hz': (50.0, 200)}


def percentiles(samples_s):
    """Return (median, p99) in microseconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


def bench_conversion(rate, n, count):
    """Time window_to_msg and window_from_msg; return their (median, p99) in us."""
    drive = SyntheticDrive(sample_rate_hz=rate, samples_per_window=n)
    to_msg, from_msg = [], []
    for i in range(count):
        window = drive.window(1_790_000_000_000_000_000 + i * 10**9)
        t0 = time.perf_counter()
        msg = window_to_msg(window)
        t1 = time.perf_counter()
        window_from_msg(msg)
        t2 = time.perf_counter()
        to_msg.append(t1 - t0)
        from_msg.append(t2 - t1)
    return percentiles(to_msg), percentiles(from_msg)


def bench_latency(rate, n, count):
    """Time publish -> callback between two nodes; return (median, p99) in us."""
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    rclpy.init()
    try:
        pub_node = rclpy.create_node('bench_pub')
        sub_node = rclpy.create_node('bench_sub')
        arrived = []
        sub_node.create_subscription(ObservationWindow, 'bench/window',
                                     lambda m: arrived.append(time.perf_counter()), qos)
        publisher = pub_node.create_publisher(ObservationWindow, 'bench/window', qos)
        executor = SingleThreadedExecutor()
        executor.add_node(pub_node)
        executor.add_node(sub_node)
        deadline = time.monotonic() + 10
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        msg = window_to_msg(SyntheticDrive(sample_rate_hz=rate, samples_per_window=n)
                            .window(1_790_000_000_000_000_000))
        latencies = []
        for _ in range(count):
            before = len(arrived)
            sent = time.perf_counter()
            publisher.publish(msg)
            while len(arrived) == before:
                executor.spin_once(timeout_sec=1.0)
            latencies.append(arrived[-1] - sent)
        return percentiles(latencies)
    finally:
        rclpy.shutdown()


def main():
    """Run the benchmarks and print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--count', type=int, default=2000, help='repetitions per figure')
    args = parser.parse_args()
    for label, (rate, n) in SHAPES.items():
        (to_med, to_p99), (from_med, from_p99) = bench_conversion(rate, n, args.count)
        lat_med, lat_p99 = bench_latency(rate, n, args.count)
        print(f'{label:18s} to_msg median {to_med:7.1f} us p99 {to_p99:7.1f} us | '
              f'from_msg median {from_med:7.1f} us p99 {from_p99:7.1f} us | '
              f'publish->callback median {lat_med:7.1f} us p99 {lat_p99:7.1f} us')


if __name__ == '__main__':
    main()
