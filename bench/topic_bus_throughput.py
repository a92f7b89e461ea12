"""
Benchmark: raw CAN frames over ROS topics (TopicCanBus), end to end.

The vehicle side publishes CanFrameBatch messages of the shipped DBC's traffic
(batches of 80 frames, as vehicle_sim sends per 0.5 s step); the bridge side
receives, converts to python-can frames and decodes them with the bridge's
FrameDecoder. Both in one process (the GIL makes this a lower bound for two
processes). Prints frames/s and the per-batch receive cost, median and p99.
Run after ``scripts/bootstrap``: ``source scripts/env.sh && python
bench/topic_bus_throughput.py [--batches N]``.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from tspace_ros.can.dbc import load_dbc  # noqa: E402
from tspace_ros.can.decoder import FrameDecoder  # noqa: E402
from tspace_ros.can.frames import encode_vehicle_sample  # noqa: E402
from tspace_ros.nodes.topic_bus import TopicCanBus  # noqa: E402

FRAMES_PER_BATCH = 75  # 25 samples x 3 frames = 0.5 s at 50 Hz


def main():
    """Send batches through the topic bus and print throughput figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--batches', type=int, default=400, help='batches to send')
    args = parser.parse_args()
    db = load_dbc()
    sample = {'speed_kph': 50.0, 'pedal': 0.3, 'brake_bar': 0.0, 'current_a': 40.0,
              'voltage_v': 390.0, 'soc': 0.7, 'motor_torque_nm': 80.0,
              'motor_speed_rpm': 2500.0}
    batch = []
    for k in range(FRAMES_PER_BATCH // 3):
        batch += encode_vehicle_sample(db, sample, 1_790_000_000.0 + k / 50)
    rclpy.init()
    try:
        vehicle = rclpy.create_node('bench_vehicle')
        bridge = rclpy.create_node('bench_bridge')
        bus = TopicCanBus(vehicle, side='bus')
        client = TopicCanBus(bridge, side='client')
        decoder = FrameDecoder(db)
        executor = SingleThreadedExecutor()
        executor.add_node(vehicle)
        executor.add_node(bridge)
        while not (bus.peers and client.peers):
            executor.spin_once(timeout_sec=0.05)
        costs = []
        started = time.perf_counter()
        for _ in range(args.batches):
            bus.send_batch(batch)
            t0 = time.perf_counter()
            while client.received < (len(costs) + 1) * len(batch):
                executor.spin_once(timeout_sec=1.0)
            while (frame := client.recv(timeout=0)) is not None:
                decoder.decode(frame)
            costs.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        frames = args.batches * len(batch)
        ordered = sorted(costs)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * (len(ordered) - 1)))]
        print(f'TopicCanBus: {frames} frames in {args.batches} batches of {len(batch)}: '
              f'{frames / elapsed:,.0f} frames/s end to end (publish, DDS, convert, decode)')
        print(f'  receive+convert+decode per batch: median {statistics.median(costs) * 1e3:.2f}'
              f' ms, p99 {p99 * 1e3:.2f} ms; decoded {decoder.stats.decoded}, '
              f'dropped {client.dropped}')
        print(f'  = {frames / elapsed / 150:.0f}x real time for the 150 frames/s of the van')
        bus.shutdown()
        client.shutdown()
    finally:
        rclpy.shutdown()


if __name__ == '__main__':
    main()
