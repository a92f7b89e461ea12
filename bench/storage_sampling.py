"""
Benchmark: sampling training batches from a parquet storage pool of a million transitions.

Fills a real parquet pool (``tspace_ros.storage``) through ``append`` in batches
(durable: every batch goes to the fsync'd append log; no compaction while
filling), with tspace's sizes: states of 90 floats (3 signals x 30 samples),
actions of 68 (4 rows x 17 pedal columns), 300-step episodes of 4 vehicles x 2
drivers, every episode ended valid. Prints the fill rate, then times
``records_source().sample(256, rng)`` (the DDPG batch): median and p99 against
the goal (median < 2 ms), the same for one (vehicle, driver) and for
``episodes_source().sample(32, max_length=64)`` (the RDPG batch), and the time
``close`` (compaction to Parquet) and a reopen take.

Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/storage_sampling.py [--records N] [--calls N]``.
"""

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

STATE_SIZE, ACTION_SIZE, EPISODE_STEPS = 90, 68, 300
GOAL_MS = 2.0
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'
sys.path.insert(0, str(PACKAGE_ROOT))


def percentiles_ms(samples_s):
    """Return (median, p99) in milliseconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def make_batch(first: int, count: int, pool_vectors, t0_ns: int):
    """Return ``count`` transitions from global index ``first`` on (8 pairs, 300-step episodes)."""
    from tspace_ros.episodes.records import TransitionRecord
    states, actions = pool_vectors
    records = []
    for n in range(first, first + count):
        episode, step = divmod(n, EPISODE_STEPS)
        vehicle, driver = f'VIN{episode % 4:014d}', f'driver{episode // 4 % 2}'
        start = t0_ns + episode * EPISODE_STEPS * 1_500_000_000
        records.append(TransitionRecord(
            vehicle_id=vehicle, driver_id=driver, episode_id=f'{vehicle}-{start}',
            episode_start_ns=start, step_index=step, state=states[n % len(states)],
            action=actions[n % len(actions)], action_row_start=step % 10,
            action_row_count=4, reward=-0.01 * (n % 97), energy_wh=0.01 * (n % 97),
            next_state=states[(n + 1) % len(states)], done=step == EPISODE_STEPS - 1,
            timed_out=n % 211 == 0, policy_version=episode // 10,
            state_stamp_ns=start + (step + 1) * 1_500_000_000,
            next_state_stamp_ns=start + (step + 2) * 1_500_000_000))
    return records


def time_calls(call, count, warmup=20):
    """Call call() count times after a warm-up; return the seconds each took."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


def report(name, samples, goal_ms=None):
    """Print one timing line (with the goal check when there is one)."""
    median, p99 = percentiles_ms(samples)
    goal = ''
    if goal_ms is not None:
        goal = f'   goal median < {goal_ms:.0f} ms: {"ok" if median < goal_ms else "MISSED"}'
    print(f'{name:<46} median {median:7.3f} ms   p99 {p99:7.3f} ms{goal}', flush=True)


def main():
    """Fill a pool, time sampling from it, then close and reopen it."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--records', type=int, default=1_000_000, help='transitions to store')
    parser.add_argument('--append-batch', type=int, default=1000, help='records per append')
    parser.add_argument('--calls', type=int, default=1000, help='timed sample calls')
    parser.add_argument('--batch', type=int, default=256, help='transitions per sample')
    parser.add_argument('--root', default=None, help='pool directory (default: a temporary one)')
    args = parser.parse_args()
    from tspace_ros.episodes.records import EpisodeSummaryRecord
    from tspace_ros.storage import open_pool, PoolConfig

    rng = np.random.default_rng(0)
    vectors = (rng.normal(size=(4096, STATE_SIZE)).astype(np.float32),
               rng.uniform(-1, 1, (4096, ACTION_SIZE)).astype(np.float32))
    t0_ns = 1_700_000_000 * 10 ** 9
    root = args.root or tempfile.mkdtemp(prefix='tspace_storage_bench_')
    print(f'storage sampling: {args.records:,} transitions (state {STATE_SIZE}, action '
          f'{ACTION_SIZE}), parquet pool in {root}', flush=True)
    try:
        pool = open_pool(PoolConfig(root=root, compact_every=0))
        build_s = append_s = 0.0
        for first in range(0, args.records, args.append_batch):
            t_build = time.perf_counter()
            records = make_batch(first, min(args.append_batch, args.records - first), vectors,
                                 t0_ns)
            t_append = time.perf_counter()
            pool.append(records)
            for record in records:
                if record.done:
                    pool.end_episode(EpisodeSummaryRecord(
                        record.vehicle_id, record.driver_id, record.episode_id,
                        record.episode_start_ns, record.next_state_stamp_ns, EPISODE_STEPS,
                        0.0, 0.0, 1.0, True, 0, 0))
            append_s += time.perf_counter() - t_append
            build_s += t_append - t_build
        stats = pool.stats()
        print(f'filled {stats["records"]:,} transitions in {append_s:.1f} s of append '
              f'({stats["records"] / append_s:,.0f}/s durable, batches of {args.append_batch}; '
              f'building the records took {build_s:.1f} s more), '
              f'{stats["episodes_valid"]:,} episodes, log {stats["bytes_on_disk"] / 1e9:.2f} GB',
              flush=True)

        source = pool.records_source()
        report(f'records_source().sample({args.batch}) of {len(source):,}',
               time_calls(lambda: source.sample(args.batch, rng), args.calls), GOAL_MS)
        one = pool.records_source(vehicle_id='VIN00000000000001', driver_id='driver1')
        report(f'  one vehicle/driver ({len(one):,})',
               time_calls(lambda: one.sample(args.batch, rng), args.calls), GOAL_MS)
        episodes = pool.episodes_source()
        report(f'episodes_source().sample(32, max_length=64) of {len(episodes):,}',
               time_calls(lambda: episodes.sample(32, rng, max_length=64), args.calls // 4))
        report('first len() of a new time-filtered source', [
            _first_len(pool, t0_ns + 1000 + i) for i in range(20)])

        t_close = time.perf_counter()
        pool.close()
        close_s = time.perf_counter() - t_close
        t_open = time.perf_counter()
        pool = open_pool(PoolConfig(root=root, compact_every=0))
        open_s = time.perf_counter() - t_open
        reopened = pool.stats()
        print(f'close (compaction to Parquet) {close_s:.1f} s; reopen {open_s:.1f} s '
              f'({reopened["records"]:,} transitions, {reopened["bytes_on_disk"] / 1e9:.2f} GB '
              f'of Parquet)', flush=True)
        pool.close()
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


def _first_len(pool, start_ns):
    source = pool.records_source(start_ns=start_ns)
    t0 = time.perf_counter()
    len(source)
    return time.perf_counter() - t0


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    main()
