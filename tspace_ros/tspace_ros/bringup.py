"""
Single-process bringup: the main job of ``scripts/run``.

Runs the node suite that exists so far in one process, drives it through its
lifecycle like the lifecycle manager will, collects what it publishes over ROS
topics, and writes the results to disk:

- ``windows.parquet``: every observation window received (ids, UTC stamps, one
  list column per signal), with the observation specification in the metadata.
- ``summary.json``: counts, energy (Wh), distance (km) and Wh/km.

Stage 1 (foundation): the window_source node stands in for the vehicle; the
simulated vehicle, CAN bridge, agent, cruncher, storage and trainer join as they
are built, and this job becomes the learning loop.
"""

import argparse
import datetime
import json
import pathlib
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import rclpy
from rclpy.executors import SingleThreadedExecutor
from tspace_interfaces.msg import ObservationWindow

from tspace_ros.nodes.messages import window_from_msg
from tspace_ros.nodes.qos import WINDOW_QOS
from tspace_ros.nodes.window_source import WINDOW_TOPIC, WindowSource
from tspace_ros.signals.energy import distance_km, electrical_energy_wh


def parse_args(argv):
    """Parse the command line of the main job."""
    parser = argparse.ArgumentParser(prog='tspace_ros.bringup', description=__doc__.split('\n')[1])
    parser.add_argument('--windows', type=int, default=40, help='windows to collect (>0)')
    parser.add_argument('--period-s', type=float, default=0.05,
                        help='seconds between windows (the source runs faster than real time)')
    parser.add_argument('--out', type=pathlib.Path, default=pathlib.Path('runs'),
                        help='directory under which a run directory is created')
    parser.add_argument('--timeout-s', type=float, default=120.0,
                        help='give up if the windows have not arrived by then')
    args = parser.parse_args(argv)
    if args.windows < 1 or args.period_s <= 0 or args.timeout_s <= 0:
        parser.error('--windows, --period-s and --timeout-s must be positive')
    return args


def write_results(run_dir: pathlib.Path, windows, elapsed_s: float) -> dict:
    """Write windows.parquet and summary.json; return the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    first = windows[0]
    columns = {
        'vehicle_id': [w.vehicle_id for w in windows],
        'driver_id': [w.driver_id for w in windows],
        'step_index': pa.array([w.step_index for w in windows], pa.uint64()),
        'window_start': pa.array([w.start_ns for w in windows], pa.timestamp('ns', 'UTC')),
        'window_end': pa.array([w.end_ns for w in windows], pa.timestamp('ns', 'UTC')),
    }
    for name in first.signal_names:
        columns[name] = pa.array([w.signal(name) for w in windows], pa.list_(pa.float32()))
    spec = {'signals': list(first.signal_names), 'units': list(first.units),
            'sample_rate_hz': first.sample_rate_hz, 'samples_per_window': first.n_samples}
    table = pa.table(columns).replace_schema_metadata(
        {'tspace_ros.observation_spec': json.dumps(spec)})
    pq.write_table(table, run_dir / 'windows.parquet')
    energy = sum(electrical_energy_wh(w) for w in windows)
    distance = sum(distance_km(w) for w in windows)
    summary = {
        'windows': len(windows), 'observation_spec': spec, 'elapsed_s': round(elapsed_s, 3),
        'energy_wh': round(energy, 4), 'distance_km': round(distance, 5),
        'energy_per_km_wh': round(energy / distance, 3) if distance > 0 else None,
    }
    (run_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    return summary


def main(argv=None) -> int:
    """Run the main job; return the process exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    run_dir = args.out / stamp
    rclpy.init(args=['--ros-args', '-p', f'publish_period_s:={args.period_s}'])
    received = []
    try:
        source = WindowSource()
        listener = rclpy.create_node('bringup_listener')
        listener.create_subscription(ObservationWindow, WINDOW_TOPIC,
                                     lambda msg: received.append(window_from_msg(msg)),
                                     WINDOW_QOS)
        executor = SingleThreadedExecutor()
        executor.add_node(source)
        executor.add_node(listener)
        source.trigger_configure()
        source.trigger_activate()
        started = time.monotonic()
        while len(received) < args.windows and time.monotonic() - started < args.timeout_s:
            executor.spin_once(timeout_sec=0.1)
        elapsed = time.monotonic() - started
        source.trigger_deactivate()
        source.trigger_cleanup()
        source.trigger_shutdown()
    finally:
        rclpy.try_shutdown()
    if len(received) < args.windows:
        print(f'tspace_ros run: only {len(received)} of {args.windows} windows arrived within '
              f'{args.timeout_s} s', file=sys.stderr)
        return 1
    summary = write_results(run_dir, received[:args.windows], elapsed)
    spec = summary['observation_spec']
    print(f"tspace_ros run: {summary['windows']} windows ({len(spec['signals'])} signals x "
          f"{spec['samples_per_window']} samples at {spec['sample_rate_hz']:g} Hz) "
          f'in {elapsed:.1f} s')
    print(f"  energy {summary['energy_wh']:.2f} Wh over {summary['distance_km']:.3f} km "
          f"= {summary['energy_per_km_wh']} Wh/km")
    print(f'  results: {run_dir}/windows.parquet, {run_dir}/summary.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
