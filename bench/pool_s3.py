"""
Benchmark: the parquet pool on S3 (SeaweedFS on loopback) against the local disk.

Side by side, with the same transitions (tspace's sizes: state 90 floats,
action 68; 300-step episodes): ``append`` latency at ``--batch`` transitions a
call (each durable when it returns: fsync'd log frame on disk, one PUT on S3),
the time to close (the final compaction to Parquet) and to reopen the pool
(list, GET and check every part), and ``get_records`` latency (batch of 256,
from memory on both). Prints median and p99 per operation and the S3/disk
ratio. The S3 server is started by ``tspace_ros.servers.S3Server`` on random
loopback ports and stopped by its PID.

Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/pool_s3.py [--appends N] [--batch B]``.
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
import uuid

import numpy as np

STATE_SIZE, ACTION_SIZE, EPISODE_STEPS = 90, 68, 300
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'
sys.path.insert(0, str(PACKAGE_ROOT))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def percentiles_ms(samples_s):
    """Return (median, p99) in milliseconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def run(config, batches, sample_draws: int):
    """Return {operation: [seconds]} for appends, samples, close and reopen of one pool."""
    from tspace_ros.storage import open_pool
    times = {'append': [], 'get_records(256)': [], 'close (compaction)': [], 'reopen': []}
    pool = open_pool(config)
    for batch in batches:
        start = time.perf_counter()
        pool.append(batch)
        times['append'].append(time.perf_counter() - start)
    rng = np.random.default_rng(0)
    for _ in range(sample_draws):
        start = time.perf_counter()
        pool.get_records(256, rng)
        times['get_records(256)'].append(time.perf_counter() - start)
    start = time.perf_counter()
    pool.close()
    times['close (compaction)'].append(time.perf_counter() - start)
    for _ in range(3):
        start = time.perf_counter()
        with open_pool(config) as again:
            times['reopen'].append(time.perf_counter() - start)
            assert len(again) == sum(len(b) for b in batches)
    return times


def main() -> int:
    """Run both pools and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--appends', type=int, default=300, help='append calls per pool')
    parser.add_argument('--batch', type=int, default=10, help='transitions per append')
    parser.add_argument('--samples', type=int, default=300, help='get_records calls')
    args = parser.parse_args()
    from storage_append import records
    from tspace_ros import servers
    from tspace_ros.storage import PoolConfig
    rng = np.random.default_rng(1)
    vectors = (rng.normal(size=(512, STATE_SIZE)).astype(np.float32),
               rng.uniform(-1, 1, (512, ACTION_SIZE)).astype(np.float32))
    made = records(0, args.appends * args.batch, vectors, 1_700_000_000 * 10 ** 9)
    batches = [made[i:i + args.batch] for i in range(0, len(made), args.batch)]
    print(f'{args.appends} appends of {args.batch} transitions (state {STATE_SIZE}, action '
          f'{ACTION_SIZE}), {args.samples} samples of 256; compaction on close only')
    with tempfile.TemporaryDirectory() as tmp:
        local = run(PoolConfig(root=str(pathlib.Path(tmp, 'pool')), compact_every=0),
                    batches, args.samples)
    with servers.S3Server(buckets=['bench']) as s3:
        config = PoolConfig(root=f's3://bench/pool-{uuid.uuid4().hex[:8]}', compact_every=0,
                            s3_endpoint=s3.endpoint_url)
        os.environ.update({k: v for k, v in s3.environ().items() if k.startswith('AWS_')})
        remote = run(config, batches, args.samples)
    print(f'{"operation":<20} {"disk median":>12} {"disk p99":>10} {"S3 median":>11} '
          f'{"S3 p99":>10} {"ratio (median)":>15}')
    for name in local:
        d_med, d_p99 = percentiles_ms(local[name])
        s_med, s_p99 = percentiles_ms(remote[name])
        print(f'{name:<20} {d_med:>9.3f} ms {d_p99:>7.3f} ms {s_med:>8.3f} ms '
              f'{s_p99:>7.3f} ms {s_med / d_med:>14.1f}x')
    rate_disk = args.batch / statistics.median(local['append'])
    rate_s3 = args.batch / statistics.median(remote['append'])
    print(f'append rate at the median: disk {rate_disk:,.0f} transitions/s, '
          f'S3 {rate_s3:,.0f} transitions/s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
