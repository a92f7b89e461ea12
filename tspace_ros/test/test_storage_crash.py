"""
Crash safety of the parquet pool: SIGKILL a writing process, reopen, lose nothing acknowledged.

A child process appends batches of 20 transitions in a loop and prints each
batch's keys only after ``append`` returned (and each episode end after
``end_episode`` returned); the test kills it with SIGKILL once 30 or more
batches were acknowledged, reopens the pool and checks that every acknowledged
transition is there exactly once with its values, then does it again on the
same directory. Compaction runs every 130 transitions in the child, so a kill
can land in the middle of one.
"""

import json
import os
import pathlib
import select
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from storage_support import assert_same_records, make_record, T0
from tspace_ros.storage import open_pool, PoolConfig

TEST_DIR = pathlib.Path(__file__).resolve().parent
BATCH, EPISODE_BATCHES, HOUR_NS = 20, 5, 3600 * 10 ** 9

CHILD = """
import json, sys
from storage_support import make_episode, make_record, make_summary, T0
from tspace_ros.storage import open_pool, PoolConfig
root, run = sys.argv[1], int(sys.argv[2])
pool = open_pool(PoolConfig(root=root, compact_every=130))
for batch in range(100000):
    episode, part = divmod(batch, 5)
    start = T0 + run * 3600 * 10 ** 9 + episode * 1000
    records = [make_record('VIN-1', 'driver/a', start, part * 20 + i, 100) for i in range(20)]
    pool.append(records)
    print(json.dumps(['batch', [list(r.key) for r in records]]), flush=True)
    if part == 4:
        pool.end_episode(make_summary(make_episode('VIN-1', 'driver/a', start, 100)))
        print(json.dumps(['end', start]), flush=True)
"""


def run_and_kill(root: str, run: int, batches: int = 30, timeout_s: float = 60.0):
    """Start the writer, SIGKILL it after ``batches`` acknowledgements; return them."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(TEST_DIR.parent), str(TEST_DIR), env.get('PYTHONPATH', '')])
    proc = subprocess.Popen([sys.executable, '-c', CHILD, root, str(run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    keys, ends, count, pending = [], [], 0, b''
    deadline = time.monotonic() + timeout_s
    fd = proc.stdout.fileno()
    try:
        while count < batches:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 1 << 16) if ready else b''
            if not chunk:
                proc.kill()
                raise AssertionError(f'the writer stopped after {count} batches: '
                                     f'{proc.stderr.read().decode()[-2000:]}')
            *lines, pending = (pending + chunk).split(b'\n')
            for line in lines:
                count += _acknowledge(line, keys, ends)
    finally:
        proc.kill()                     # SIGKILL by PID: no cleanup, no close
        proc.wait(timeout=30)
    while True:                         # lines printed before the kill count too
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b'\n')
        for line in lines:
            _acknowledge(line, keys, ends)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -9
    return keys, ends


def _acknowledge(line: bytes, keys: list, ends: list) -> int:
    kind, value = json.loads(line)
    if kind == 'batch':
        keys.extend(tuple(key) for key in value)
        return 1
    ends.append(value)
    return 0


def check_recovered(root: str, keys, ends, runs) -> None:
    """Reopen; every acknowledged key once with its values; re-appending adds nothing."""
    expected = [make_record(v, d, s, i, 100) for v, d, s, i in keys]
    with open_pool(PoolConfig(root=root)) as pool:
        stored = {r.key: r for r in pool.read_records()}
        missing = [r.key for r in expected if r.key not in stored]
        assert not missing, f'{len(missing)} acknowledged transitions lost, e.g. {missing[:3]}'
        assert_same_records([stored[r.key] for r in expected], expected)
        assert len(stored) <= len(keys) + BATCH        # at most one batch in flight
        for record in stored.values():                 # the unacknowledged one is whole too
            assert_same_records([record], [make_record(*record.key, 100)])
        valid = {s.episode_start_ns for s in pool.summaries() if s.valid}
        assert set(ends) <= valid
        assert pool.append(expected) == 0
        assert pool.stats()['duplicates_ignored'] == len(expected)
        assert pool.stats()['records'] == len(stored)
    # after close everything is in Parquet: each key in exactly one row
    rows = []
    for directory, _, names in os.walk(os.path.join(root, 'records')):
        for name in names:
            table = pq.read_table(os.path.join(directory, name),
                                  columns=['episode_start', 'step_index'])
            rows += zip(table.column('episode_start').cast('int64').to_pylist(),
                        table.column('step_index').to_pylist())
    assert len(rows) == len(set(rows)) == len(stored)
    hours = {(T0 + run * HOUR_NS) // HOUR_NS for run in runs}
    assert {start // HOUR_NS for start, _ in rows} <= hours


def test_sigkill_twice_loses_nothing_acknowledged(tmp_path):
    """Crash, reopen, crash again on the same directory, reopen: all acknowledged data."""
    root = str(tmp_path / 'pool')
    first_keys, first_ends = run_and_kill(root, run=0)
    assert len(first_keys) >= 30 * BATCH and len(first_ends) >= 5
    check_recovered(root, first_keys, first_ends, runs=[0])
    second_keys, second_ends = run_and_kill(root, run=1, batches=37)
    check_recovered(root, first_keys + second_keys, first_ends + second_ends, runs=[0, 1])
    with open_pool(PoolConfig(root=root)) as pool:
        assert len(pool.episodes_source()) >= len(first_ends) + len(second_ends)
        batch = pool.episodes_source().sample(4, np.random.default_rng(0))
        assert batch['length'].tolist() == [100] * 4
