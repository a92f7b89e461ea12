"""Sources that fetch batches from a pool elsewhere: uniform draws, checked data, named errors."""

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.storage import open_pool, PoolConfig
from tspace_ros.training.fetched import (EPISODES, FetchedEpisodes, FetchedRecords,
                                         FetchError, RECORDS)

S, A = 4, 2
START = 1_795_000_000_000_000_000


def fill(pool, episodes=3, steps=20):
    rng = np.random.default_rng(1)
    for e in range(episodes):
        pool.append([TransitionRecord(
            'VIN', 'd', f'ep{e}', START + e * 10**12, step, rng.uniform(0, 1, S),
            rng.uniform(-1, 1, A), 0, 1, float(e * 100 + step), 1.0, rng.uniform(0, 1, S),
            step == steps - 1, False, 0, START + step, START + step + 1)
            for step in range(steps)])
        pool.end_episode(EpisodeSummaryRecord('VIN', 'd', f'ep{e}', START + e * 10**12,
                                              START + e * 10**12 + 1, steps, -1.0, 1.0, 1.0,
                                              True, 0, 0))


@pytest.fixture
def pool_fetch(tmp_path):
    pool = open_pool(PoolConfig(root=str(tmp_path / 'pool')))
    fill(pool)
    rng = np.random.default_rng(0)
    calls = []

    def fetch(kind, size):
        calls.append((kind, size))
        if kind == RECORDS:
            return pool.get_records(size, rng), len(pool.records_source())
        return [t for _, t in pool.get_episodes(size, rng)], len(pool.episodes_source())
    yield pool, fetch, calls
    pool.close()


def test_records_come_in_batches_fetched_ahead_and_cover_the_pool(pool_fetch):
    pool, fetch, calls = pool_fetch
    source = FetchedRecords(fetch, S, A, prefetch_batches=4)
    assert len(source) == 0 and source.refresh() == 60 and len(source) == 60
    rewards = []
    for _ in range(40):
        batch = source.sample(8)
        assert batch['state'].shape == (8, S) and batch['action'].shape == (8, A)
        rewards += batch['reward'].tolist()
    # One fetch of 4 batches per 4 batches, after the refresh's one item.
    assert calls == [(RECORDS, 1)] + [(RECORDS, 32)] * 10
    # Drawn uniformly over the pool: all three episodes, in about equal shares.
    episode = np.asarray(rewards) // 100
    shares = np.bincount(episode.astype(int), minlength=3) / len(rewards)
    assert np.all(np.abs(shares - 1 / 3) < 0.08), shares


def test_episodes_are_fetched_per_batch_and_padded(pool_fetch):
    _, fetch, calls = pool_fetch
    source = FetchedEpisodes(fetch, S, A)
    batch = source.sample(5, np.random.default_rng(0), max_length=8, pad_to_multiple=4)
    assert batch['state'].shape == (5, 8, S)
    assert batch['mask'].all() and calls == [(EPISODES, 5)] and len(source) == 3


def test_a_failing_or_wrong_fetch_is_a_fetch_error_naming_it():
    def broken(kind, size):
        raise ConnectionError('storage is down')
    with pytest.raises(FetchError, match='ConnectionError: storage is down'):
        FetchedRecords(broken, S, A).sample(4)

    def empty(kind, size):
        return [], 0
    with pytest.raises(FetchError, match='holds no transitions'):
        FetchedRecords(empty, S, A).sample(4)

    record = TransitionRecord('VIN', 'd', 'ep', START, 0, np.zeros(S + 1), np.zeros(A), 0, 1,
                              0.0, 1.0, np.zeros(S + 1), False, False, 0, START, START + 1)
    with pytest.raises(FetchError, match=r'state has shape \(4, 5\), expected \(4, 4\)'):
        FetchedRecords(lambda kind, size: ([record] * size, 9), S, A, 1).sample(4)
    with pytest.raises(FetchError, match='asked for 4 records, got 2'):
        FetchedRecords(lambda kind, size: ([record] * 2, 9), S, A, 1).sample(4)


class _Row:
    """A record-like row as a hostile or broken service could send it."""

    def __init__(self, state, action, reward, next_state, done):
        self.state, self.action, self.reward = state, action, reward
        self.next_state, self.done = next_state, done


_values = st.floats(allow_nan=True, allow_infinity=True, width=32)
_vectors = st.lists(_values, min_size=0, max_size=6)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.builds(_Row, _vectors, _vectors, _values, _vectors,
                               st.sampled_from([0.0, 1.0])), min_size=1, max_size=6),
       available=st.integers(0, 100))
def test_property_a_fetched_batch_is_whole_and_finite_or_a_fetch_error(rows, available):
    def fetch(kind, size):
        return [rows[i % len(rows)] for i in range(size)], available
    try:
        batch = FetchedRecords(fetch, S, A, prefetch_batches=1).sample(3)
    except FetchError:
        return
    assert batch['state'].shape == (3, S) and batch['action'].shape == (3, A)
    assert batch['reward'].shape == (3,) and batch['next_state'].shape == (3, S)
    assert all(np.all(np.isfinite(v)) for v in batch.values())
