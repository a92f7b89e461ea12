"""Fault class: pool files (log segments, Parquet parts) flipped, cut, zeroed or scribbled."""

import logging
import os
import pathlib
import random
import shutil
import tempfile

from faults import FaultTally
import numpy as np
from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.storage import open_pool, PoolConfig, StorageError

T0 = 1_790_000_000 * 10 ** 9


def _record(start_ns: int, step: int) -> TransitionRecord:
    rng = np.random.default_rng([start_ns % 2 ** 32, step])
    return TransitionRecord(
        vehicle_id='VIN-FAULT', driver_id='driver0', episode_id=f'e{start_ns}',
        episode_start_ns=start_ns, step_index=step,
        state=rng.normal(size=8).astype(np.float32),
        action=rng.uniform(-1, 1, 4).astype(np.float32), action_row_start=2,
        action_row_count=4, reward=float(rng.normal()), energy_wh=float(rng.normal()),
        next_state=rng.normal(size=8).astype(np.float32), done=False, timed_out=False,
        policy_version=1, state_stamp_ns=start_ns + step * 10 ** 9,
        next_state_stamp_ns=start_ns + (step + 1) * 10 ** 9)


def _content(r: TransitionRecord) -> tuple:
    return (r.episode_start_ns, r.step_index, r.state.tobytes(), r.action.tobytes(),
            r.next_state.tobytes(), r.reward, r.energy_wh)


def _build(root: str) -> dict:
    """Return {key: content} of a pool with a compacted episode and a live log."""
    first = [_record(T0, s) for s in range(10)]
    second = [_record(T0 + 10 ** 9, s) for s in range(9)]
    pool = open_pool(PoolConfig(root=root, compact_every=0))
    pool.append(first)
    pool.end_episode(EpisodeSummaryRecord(
        vehicle_id='VIN-FAULT', driver_id='driver0', episode_id=f'e{T0}', episode_start_ns=T0,
        episode_end_ns=T0 + 11 * 10 ** 9, step_count=10, total_reward=0.0, energy_wh=1.0,
        distance_km=0.1, valid=True, first_policy_version=1, last_policy_version=1,
        timed_out_steps=0))
    pool.compact()
    for i in range(0, 9, 3):
        pool.append(second[i:i + 3])
    crashed = root + '.crashed'
    shutil.copytree(root, crashed)  # a power cut: the log not folded
    pool.close()
    shutil.rmtree(root)
    os.rename(crashed, root)
    return {(r.episode_start_ns, r.step_index): _content(r) for r in first + second}


def _damage(data: bytearray, rng: random.Random) -> str:
    kind = rng.choice(['flip', 'truncate', 'zero', 'scribble'])
    at = rng.randrange(len(data)) if data else 0
    if kind == 'flip' and data:
        data[at] ^= rng.randrange(1, 256)
    elif kind == 'truncate':
        del data[at:]
    elif kind == 'zero':
        data[at:at + 16] = bytes(len(data[at:at + 16]))
    else:
        data[at:at + 32] = bytes(rng.randrange(256) for _ in range(32))
    return kind


def run(cases: int, seed: int) -> FaultTally:
    """Damage one pool file per case; opening must refuse, or load only what was stored."""
    logging.getLogger('tspace_ros.storage').setLevel(logging.CRITICAL)
    tally = FaultTally('pool files')
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as where:
        source = os.path.join(where, 'source')
        expected = _build(source)
        for case in range(cases):
            root = os.path.join(where, f'case{case}')
            shutil.copytree(source, root)
            files = sorted(p for p in pathlib.Path(root).rglob('*')
                           if p.is_file() and p.name != '.lock')
            target = rng.choice(files)
            data = bytearray(target.read_bytes())
            kind = _damage(data, rng)
            target.write_bytes(bytes(data))
            try:
                pool = open_pool(PoolConfig(root=root))
            except StorageError as error:
                tally.reject(f'refused: {str(error)[:30]}')
                shutil.rmtree(root)
                continue
            except Exception as error:  # noqa: B902 - what the boundary let through
                tally.escape(error)
                shutil.rmtree(root)
                continue
            with pool:
                stats = pool.stats()
                loaded = {(r.episode_start_ns, r.step_index): _content(r)
                          for r in pool.read_records()}
            wrong = sum(1 for key, value in loaded.items() if expected.get(key) != value)
            accounted = stats['quarantined_files'] + stats['log_truncated_batches']
            cut_between_frames = kind == 'truncate' and '/log/' in str(target)
            if wrong or (len(loaded) < len(expected) and not accounted
                         and not cut_between_frames):
                tally.accept()
                tally.lose(wrong or len(expected) - len(loaded))
            elif stats['quarantined_files']:
                tally.reject('quarantined')
            elif stats['log_truncated_batches']:
                tally.reject('interrupted write dropped')
            else:
                tally.accept()  # the damage hit nothing that is read (or a frame boundary)
            shutil.rmtree(root)
    return tally
