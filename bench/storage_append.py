"""
Benchmark: durable append rate of the parquet storage pool, and how long a reopen takes.

For each batch size (1, 10, 100, 1000 transitions per ``append``) a fresh parquet
pool (``tspace_ros.storage``) takes transitions of tspace's sizes (state 90
floats, action 68) for ``--seconds`` or ``--max-records``, whichever comes
first. Every ``append`` returns only once its batch is in the append log and
``fsync``'d; automatic compaction (every ``--compact-every`` transitions, to
Parquet) runs inside the appends that trigger it and is included in the rate
and the p99. Building the records is not timed. Prints transitions/s and
the median and p99 batch latency against the goal (>= 20,000 transitions/s at
batches of 100), then the time to close (final compaction) the largest pool and
to reopen it.

Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/storage_append.py [--seconds S] [--sizes 1,10,100,1000]``.
"""

import argparse
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

STATE_SIZE, ACTION_SIZE, EPISODE_STEPS = 90, 68, 300
GOAL_PER_S, GOAL_BATCH = 20_000, 100
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'
sys.path.insert(0, str(PACKAGE_ROOT))


def percentiles_ms(samples_s):
    """Return (median, p99) in milliseconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def records(first: int, count: int, vectors, t0_ns: int):
    """Return ``count`` transitions from global index ``first`` on (300-step episodes)."""
    from tspace_ros.episodes.records import TransitionRecord
    states, actions = vectors
    made = []
    for n in range(first, first + count):
        episode, step = divmod(n, EPISODE_STEPS)
        start = t0_ns + episode * EPISODE_STEPS * 1_500_000_000
        made.append(TransitionRecord(
            vehicle_id='VIN00000000000001', driver_id=f'driver{episode % 2}',
            episode_id=f'ep-{start}', episode_start_ns=start, step_index=step,
            state=states[n % len(states)], action=actions[n % len(actions)],
            action_row_start=step % 10, action_row_count=4, reward=-0.01 * (n % 97),
            energy_wh=0.01 * (n % 97), next_state=states[(n + 1) % len(states)],
            done=step == EPISODE_STEPS - 1, timed_out=False, policy_version=episode // 10,
            state_stamp_ns=start + (step + 1) * 1_500_000_000,
            next_state_stamp_ns=start + (step + 2) * 1_500_000_000))
    return made


def run_size(root: str, size: int, args, vectors, t0_ns: int):
    """Append batches of ``size`` for args.seconds; return (pool, count, latencies)."""
    from tspace_ros.storage import open_pool, PoolConfig
    pool = open_pool(PoolConfig(root=root, compact_every=args.compact_every))
    pool.append(records(10 ** 9, 1, vectors, t0_ns))          # warm-up (imports, first file)
    latencies, count = [], 0
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline and count + size <= args.max_records:
        batch = records(count, size, vectors, t0_ns)
        start = time.perf_counter()
        pool.append(batch)
        latencies.append(time.perf_counter() - start)
        count += size
    return pool, count, latencies


def main():
    """Time durable appends per batch size, then close and reopen the largest pool."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='1,10,100,1000', help='batch sizes, comma-separated')
    parser.add_argument('--seconds', type=float, default=5.0, help='appending per batch size')
    parser.add_argument('--max-records', type=int, default=300_000,
                        help='most transitions per batch size')
    parser.add_argument('--compact-every', type=int, default=50_000,
                        help='transitions between automatic compactions')
    parser.add_argument('--root', default=None, help='where the pools go (default: temporary)')
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]
    rng = np.random.default_rng(0)
    vectors = (rng.normal(size=(4096, STATE_SIZE)).astype(np.float32),
               rng.uniform(-1, 1, (4096, ACTION_SIZE)).astype(np.float32))
    t0_ns = 1_700_000_000 * 10 ** 9
    base = args.root or tempfile.mkdtemp(prefix='tspace_storage_append_')
    print(f'durable append (log + fsync per call), state {STATE_SIZE}, action {ACTION_SIZE}, '
          f'compaction every {args.compact_every:,}, {args.seconds:.0f} s per size, in {base}',
          flush=True)
    try:
        largest = None
        for size in sizes:
            root = str(pathlib.Path(base) / f'batch{size}')
            pool, count, latencies = run_size(root, size, args, vectors, t0_ns)
            rate = count / sum(latencies)
            median, p99 = percentiles_ms(latencies)
            goal = ''
            if size == GOAL_BATCH:
                goal = (f'   goal >= {GOAL_PER_S:,}/s: '
                        f'{"ok" if rate >= GOAL_PER_S else "MISSED"}')
            print(f'batch {size:>5}: {rate:>9,.0f} transitions/s   median {median:7.2f} ms   '
                  f'p99 {p99:8.2f} ms   ({count:,} transitions){goal}', flush=True)
            if largest is None or count > largest[1]:
                if largest is not None:
                    largest[0].close()
                largest = (pool, count, root)
            else:
                pool.close()
        from tspace_ros.storage import open_pool, PoolConfig
        pool, count, root = largest
        start = time.perf_counter()
        pool.close()
        close_s = time.perf_counter() - start
        start = time.perf_counter()
        reopened = open_pool(PoolConfig(root=root))
        open_s = time.perf_counter() - start
        stats = reopened.stats()
        reopened.close()
        print(f'close (final compaction) {close_s:.2f} s; reopen {open_s:.2f} s for '
              f'{stats["records"]:,} transitions ({stats["bytes_on_disk"] / 1e6:,.0f} MB)',
              flush=True)
    finally:
        if args.root is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
