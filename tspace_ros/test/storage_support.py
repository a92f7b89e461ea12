"""
Shared storage-pool tests: records to store, and the behaviours every backend must show.

``PoolBehaviour`` holds the tests; a backend's test module subclasses it as
``Test...`` and says how to open a pool there (``open_pool``), so parquet and
MongoDB are held to exactly the same behaviour.
"""

import time

import numpy as np
import pytest
from tspace_ros.agents.episode_buffer import EPISODE_BATCH_KEYS, EpisodeBuffer, EpisodeSource
from tspace_ros.agents.replay import InMemoryReplay, TRANSITION_KEYS, TransitionSource
from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.storage import StorageError

STATE_SIZE, ACTION_SIZE = 6, 4
HOUR_NS = 3600 * 10 ** 9
T0 = 1_700_000_000 * 10 ** 9        # 2023-11-14, UTC
_RECORD_FIELDS = ('vehicle_id', 'driver_id', 'episode_id', 'episode_start_ns', 'step_index',
                  'action_row_start', 'action_row_count', 'reward', 'energy_wh', 'done',
                  'timed_out', 'policy_version', 'state_stamp_ns', 'next_state_stamp_ns')


def make_record(vehicle: str, driver: str, start_ns: int, step: int, length: int = 0,
                state_size: int = STATE_SIZE, action_size: int = ACTION_SIZE,
                timed_out: bool = False) -> TransitionRecord:
    """
    Return a deterministic transition whose values depend on every part of its key.

    ``reward`` is ``-(start_ns % 10**6) - step / 1000``, so a sampled row can be
    traced to its episode and step; the vectors are random but reproducible.
    """
    seed = [start_ns % 2 ** 32, step, sum(vehicle.encode()), sum(driver.encode())]
    rng = np.random.default_rng(seed)
    state = rng.normal(size=state_size).astype(np.float32)
    return TransitionRecord(
        vehicle_id=vehicle, driver_id=driver, episode_id=f'{vehicle}-{start_ns}',
        episode_start_ns=start_ns, step_index=step, state=state,
        action=rng.uniform(-1, 1, action_size).astype(np.float32),
        action_row_start=int(rng.integers(0, 10)), action_row_count=4,
        reward=-(start_ns % 10 ** 6) - step / 1000.0, energy_wh=float(rng.normal()),
        next_state=rng.normal(size=state_size).astype(np.float32),
        done=length > 0 and step == length - 1, timed_out=timed_out,
        policy_version=int(rng.integers(0, 50)),
        state_stamp_ns=start_ns + (step + 1) * 1_500_000_000,
        next_state_stamp_ns=start_ns + (step + 2) * 1_500_000_000)


def make_episode(vehicle: str, driver: str, start_ns: int, length: int, timed_out=(),
                 **kwargs):
    """Return an episode's transitions, steps 0..length-1 (``timed_out``: those steps)."""
    return [make_record(vehicle, driver, start_ns, step, length,
                        timed_out=step in timed_out, **kwargs) for step in range(length)]


def make_summary(records, valid: bool = True) -> EpisodeSummaryRecord:
    """Return the summary of an episode made by ``make_episode``."""
    first = records[0]
    return EpisodeSummaryRecord(
        vehicle_id=first.vehicle_id, driver_id=first.driver_id, episode_id=first.episode_id,
        episode_start_ns=first.episode_start_ns,
        episode_end_ns=records[-1].next_state_stamp_ns, step_count=len(records),
        total_reward=float(sum(r.reward for r in records)),
        energy_wh=float(sum(r.energy_wh for r in records)), distance_km=1.25 * len(records),
        valid=valid, first_policy_version=records[0].policy_version,
        last_policy_version=records[-1].policy_version,
        timed_out_steps=sum(r.timed_out for r in records))


def assert_same_records(actual, expected) -> None:
    """Assert two lists of transitions are equal field by field (order included)."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        for name in _RECORD_FIELDS:
            assert getattr(got, name) == getattr(want, name), (name, want.key)
            assert type(getattr(got, name)) is type(getattr(want, name)), name
        for name in ('state', 'action', 'next_state'):
            assert getattr(got, name).dtype == np.float32
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def by_key(records):
    """Return the records sorted by their natural key."""
    return sorted(records, key=lambda r: r.key)


def episode_of_reward(reward: float) -> int:
    """Return start_ns % 10**6 of the episode a sampled reward (float32) came from."""
    return int(round(-float(reward)))


class PoolBehaviour:
    """The behaviour every backend shows; subclasses provide ``open_pool(**config)``."""

    def open_pool(self, **config):
        """Return a pool of this backend (config overrides the test defaults)."""
        raise NotImplementedError

    def test_append_and_read_back_every_field(self):
        """Everything appended comes back exactly: ids, stamps, vectors, flags."""
        records = make_episode('VIN/ä 1', 'drv', T0, 7, timed_out={3})
        with self.open_pool() as pool:
            assert pool.append(records) == 7
            assert_same_records(pool.read_records(), records)
            drawn = pool.get_records(50, np.random.default_rng(0), include_timed_out=True)
            assert {r.key for r in drawn} <= {r.key for r in records}
            for record in drawn:
                assert_same_records([record], [records[record.step_index]])
            stats = pool.stats()
            assert stats['records'] == 7 and stats['timed_out'] == 1
            assert stats['episodes_running'] == 1 and stats['vehicles'] == 1
            assert stats['oldest_ns'] == records[0].state_stamp_ns
            assert stats['newest_ns'] == records[-1].state_stamp_ns
            assert stats['backend'] == pool.backend

    def test_reappend_is_idempotent_and_counted(self):
        """A stored key is ignored on re-append and counted; only new keys are stored."""
        records = make_episode('V1', 'd1', T0, 10)
        with self.open_pool() as pool:
            assert pool.append(records) == 10
            assert pool.append(records) == 0
            assert pool.stats()['duplicates_ignored'] == 10
            more = make_episode('V1', 'd1', T0, 15)
            assert pool.append(more[5:] + more[12:13]) == 5      # 5 old, 5 new, 1 twice
            stats = pool.stats()
            assert stats['records'] == 15 and stats['duplicates_ignored'] == 16
            assert_same_records(pool.read_records(), records + more[10:])   # first one wins

    def test_reopen_restores_everything(self):
        """A closed and reopened pool has the same transitions, summaries and samples."""
        valid = make_episode('V1', 'd1', T0, 12, timed_out={2})
        discarded = make_episode('V1', 'd2', T0 + HOUR_NS, 5)
        running = make_episode('V2', 'd1', T0 + 2 * HOUR_NS, 8)
        with self.open_pool() as pool:
            pool.append(valid + discarded + running)
            pool.end_episode(make_summary(valid))
            pool.end_episode(make_summary(discarded, valid=False))
            before = pool.stats()
            records_before = pool.read_records()
            summaries_before = pool.summaries()
            sample_before = pool.episodes_source().sample(4, np.random.default_rng(5),
                                                          max_length=5)
        with self.open_pool() as pool:
            after = pool.stats()
            for name in ('records', 'episodes_valid', 'episodes_discarded', 'episodes_running',
                         'timed_out', 'vehicles', 'drivers', 'oldest_ns', 'newest_ns'):
                assert after[name] == before[name], name
            assert (before['records'], before['episodes_valid'], before['episodes_discarded'],
                    before['episodes_running']) == (20, 1, 1, 1)
            assert_same_records(pool.read_records(), records_before)
            assert pool.summaries() == summaries_before
            sample_after = pool.episodes_source().sample(4, np.random.default_rng(5),
                                                         max_length=5)
            for key in EPISODE_BATCH_KEYS:
                np.testing.assert_array_equal(sample_after[key], sample_before[key])
            assert pool.append(running) == 0          # still idempotent after a reopen

    def test_discarded_episode_is_never_sampled(self):
        """A summary with valid False removes the transitions, now and when they come again."""
        kept = make_episode('V1', 'd1', T0 + 111, 10)
        dropped = make_episode('V1', 'd1', T0 + 222, 10)
        with self.open_pool() as pool:
            pool.append(kept + dropped)
            source = pool.records_source()
            assert len(source) == 20
            pool.end_episode(make_summary(dropped, valid=False))
            assert len(source) == 10
            assert pool.append(dropped) == 0
            assert pool.stats()['discarded_records_ignored'] == 10
            pool.end_episode(make_summary(dropped, valid=True))     # a discard is final
            rewards = source.sample(2000, np.random.default_rng(1))['reward']
            assert {episode_of_reward(r) for r in rewards} == {111}
            assert len(pool.episodes_source()) == 0
            assert pool.get_records(100, np.random.default_rng(2)) and all(
                r.episode_start_ns == T0 + 111
                for r in pool.get_records(100, np.random.default_rng(2)))
            stats = pool.stats()
            assert stats['episodes_discarded'] == 1 and stats['records'] == 10
            assert [s.valid for s in pool.summaries()] == [False]
        with self.open_pool() as pool:
            assert len(pool.records_source()) == 10
            assert pool.append(dropped) == 0
            assert {r.episode_start_ns for r in pool.read_records()} == {T0 + 111}

    def test_running_episode_is_sampled_by_records_not_by_episodes(self):
        """Steps of an episode without an end are online training data, not RDPG data."""
        records = make_episode('V1', 'd1', T0, 6)
        with self.open_pool() as pool:
            records_source, episodes_source = pool.records_source(), pool.episodes_source()
            pool.append(records)
            assert len(records_source) == 6 and len(episodes_source) == 0
            with pytest.raises(ValueError):
                episodes_source.sample(2, np.random.default_rng(0))
            assert pool.get_episodes(3, np.random.default_rng(0)) == []
            pool.end_episode(make_summary(records))
            assert len(episodes_source) == 1
            summary, steps = pool.get_episodes(1, np.random.default_rng(0))[0]
            assert summary == make_summary(records)
            assert_same_records(steps, records)

    def test_filters_by_vehicle_driver_and_time(self):
        """Sources, stats and get_records honour vehicle, driver and [start, end)."""
        episodes = {('A', 'x'): make_episode('A', 'x', T0, 10),
                    ('A', 'y'): make_episode('A', 'y', T0 + HOUR_NS, 20),
                    ('B', 'x'): make_episode('B', 'x', T0 + 2 * HOUR_NS, 30)}
        with self.open_pool() as pool:
            for records in episodes.values():
                pool.append(records)
                pool.end_episode(make_summary(records))
            assert len(pool.records_source()) == 60
            assert len(pool.records_source(vehicle_id='A')) == 30
            assert len(pool.records_source(driver_id='x')) == 40
            assert len(pool.records_source(vehicle_id='A', driver_id='y')) == 20
            assert len(pool.records_source(vehicle_id='C')) == 0
            stamps = [r.state_stamp_ns for r in episodes[('B', 'x')]]
            window = pool.records_source(start_ns=stamps[5], end_ns=stamps[15])
            assert len(window) == 10
            rewards = window.sample(500, np.random.default_rng(0))['reward']
            expected = np.array([r.reward for r in episodes[('B', 'x')][5:15]], np.float32)
            assert set(rewards.tolist()) == set(expected.tolist())
            assert len(pool.records_source(start_ns=T0 + HOUR_NS)) == 50
            drawn = pool.get_records(40, np.random.default_rng(1), vehicle_id='A',
                                     driver_id='x')
            assert len(drawn) == 40 and {(r.vehicle_id, r.driver_id) for r in drawn} == {
                ('A', 'x')}
            assert len(pool.episodes_source(vehicle_id='A')) == 2
            assert len(pool.episodes_source(driver_id='x')) == 2
            assert len(pool.episodes_source(start_ns=T0 + HOUR_NS)) == 2
            assert len(pool.episodes_source(end_ns=T0 + HOUR_NS)) == 1
            batch = pool.episodes_source(vehicle_id='B').sample(5, np.random.default_rng(2))
            assert batch['length'].tolist() == [30] * 5
            stats = pool.stats(vehicle_id='A')
            assert (stats['records'], stats['episodes_valid'], stats['drivers']) == (30, 2, 2)
            assert pool.stats(driver_id='x')['vehicles'] == 2

    def test_timed_out_transitions_only_when_asked(self):
        """Timed-out steps are stored but left out of sampling unless included."""
        records = make_episode('V1', 'd1', T0, 10, timed_out={1, 4, 7})
        with self.open_pool() as pool:
            pool.append(records)
            assert len(pool.records_source()) == 7
            assert len(pool.records_source(include_timed_out=True)) == 10
            rewards = pool.records_source().sample(1000, np.random.default_rng(0))['reward']
            steps = {int(round((-r - (T0 % 10 ** 6)) * 1000)) for r in rewards.astype(float)}
            assert steps == {0, 2, 3, 5, 6, 8, 9}
            assert pool.stats()['timed_out'] == 3
            assert all(not r.timed_out for r in pool.get_records(200, np.random.default_rng(1)))

    def test_sample_has_the_replay_buffer_format(self):
        """records_source().sample matches InMemoryReplay.sample: keys, shapes, dtypes."""
        records = make_episode('V1', 'd1', T0, 9)
        with self.open_pool() as pool:
            pool.append(records)
            source = pool.records_source()
            assert isinstance(source, TransitionSource)
            replay = InMemoryReplay(100, STATE_SIZE, ACTION_SIZE)
            replay.add_batch(*(np.array([getattr(r, k) for r in records])
                               for k in TRANSITION_KEYS))
            ours = source.sample(32, np.random.default_rng(0))
            theirs = replay.sample(32, np.random.default_rng(0))
            assert set(ours) == set(theirs) == set(TRANSITION_KEYS)
            for key in TRANSITION_KEYS:
                assert ours[key].shape == theirs[key].shape, key
                assert ours[key].dtype == theirs[key].dtype == np.float32, key
                np.testing.assert_array_equal(ours[key], theirs[key])   # same rows, same rng
            assert ours['done'].sum() == (ours['reward'] == np.float32(records[-1].reward)).sum()

    def test_episodes_source_equals_episode_buffer(self):
        """For the same episodes, episodes_source samples exactly what EpisodeBuffer does."""
        lengths = [1, 7, 30, 12, 3]
        buffer = EpisodeBuffer(STATE_SIZE, ACTION_SIZE, capacity=10)
        with self.open_pool() as pool:
            for i, length in enumerate(lengths):     # appended newest first, in pieces
                records = make_episode('V1', 'd1', T0 + (5 - i) * HOUR_NS, length)
                pool.append(records[length // 2:])
                pool.append(records[:length // 2])
                pool.end_episode(make_summary(records))
            for i, length in reversed(list(enumerate(lengths))):   # oldest first
                records = make_episode('V1', 'd1', T0 + (5 - i) * HOUR_NS, length)
                buffer.add_episode(**{k: np.array([getattr(r, k) for r in records])
                                      for k in TRANSITION_KEYS})
            source = pool.episodes_source()
            assert isinstance(source, EpisodeSource) and len(source) == len(buffer) == 5
            for kwargs in ({}, {'max_length': 8, 'pad_to_multiple': 4}, {'max_length': 1}):
                ours = source.sample(16, np.random.default_rng(3), **kwargs)
                theirs = buffer.sample(16, np.random.default_rng(3), **kwargs)
                assert set(ours) == set(theirs) == set(EPISODE_BATCH_KEYS)
                for key in EPISODE_BATCH_KEYS:
                    assert ours[key].dtype == theirs[key].dtype, key
                    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)

    def test_sizes_differing_from_the_first_record_are_refused(self):
        """A call with other state/action sizes fails whole: StorageError, nothing stored."""
        with self.open_pool() as pool:
            mixed = make_episode('V1', 'd1', T0, 3) + [
                make_record('V1', 'd1', T0, 3, state_size=STATE_SIZE + 1)]
            with pytest.raises(StorageError, match='state sizes'):
                pool.append(mixed)
            assert pool.stats()['records'] == 0
            pool.append(make_episode('V1', 'd1', T0, 3))
            with pytest.raises(StorageError, match='sizes'):
                pool.append([make_record('V2', 'd1', T0, 0, action_size=ACTION_SIZE + 2)])
            assert pool.stats()['records'] == 3 and pool.stats()['vehicles'] == 1

    def test_retention_by_max_age(self):
        """Episodes that started more than max_age_s ago go whole; the rest stay."""
        now = time.time_ns()            # close applies retention again, with the clock
        old = make_episode('V1', 'd1', now - 3 * HOUR_NS, 5)
        older = make_episode('V1', 'd2', now - 5 * HOUR_NS, 4)
        recent = make_episode('V1', 'd1', now - HOUR_NS // 6, 6)
        with self.open_pool(max_age_s=3600.0) as pool:
            pool.append(old + older + recent)
            pool.end_episode(make_summary(old))
            pool.end_episode(make_summary(older, valid=False))
            removed = pool.apply_retention(now_ns=now)
            assert removed == {'episodes': 2, 'records': 5}   # the discarded had none left
            assert {r.episode_start_ns for r in pool.read_records()} == {now - HOUR_NS // 6}
            stats = pool.stats()
            assert (stats['episodes_valid'], stats['episodes_discarded'],
                    stats['episodes_running']) == (0, 0, 1)
            assert len(pool.records_source()) == 6 and pool.summaries() == []
            assert pool.apply_retention(now_ns=now) == {'episodes': 0, 'records': 0}
        with self.open_pool(max_age_s=0) as pool:
            assert_same_records(pool.read_records(), recent)

    def test_retention_by_max_bytes(self):
        """The oldest episodes go until the stored bytes fit max_bytes."""
        episodes = [make_episode('V1', 'd1', T0 + i * HOUR_NS, 40, state_size=64)
                    for i in range(8)]
        with self.open_pool() as pool:
            for records in episodes:
                pool.append(records)
                pool.end_episode(make_summary(records))
            pool.compact()
            full = pool.stats()['bytes_on_disk']
        limit = full // 2
        with self.open_pool(max_bytes=limit) as pool:
            pool.compact()
            stats = pool.stats()
            assert stats['bytes_on_disk'] <= limit
            starts = sorted({r.episode_start_ns for r in pool.read_records()})
            assert 1 <= len(starts) < 8
            assert starts == [T0 + i * HOUR_NS for i in range(8 - len(starts), 8)]  # newest kept
            assert stats['episodes_valid'] == len(starts)
        with self.open_pool() as pool:
            assert len(pool.episodes_source()) == len(starts)

    def test_sources_are_live_views(self):
        """A source made before appends sees them; no dataset scan per batch."""
        with self.open_pool() as pool:
            source = pool.records_source(vehicle_id='V1')
            assert len(source) == 0
            with pytest.raises(ValueError):
                source.sample(4, np.random.default_rng(0))
            pool.append(make_episode('V1', 'd1', T0, 5))
            pool.append(make_episode('V2', 'd1', T0, 5))
            assert len(source) == 5
            pool.append(make_episode('V1', 'd9', T0 + 1, 4))
            assert len(source) == 9
            assert pool.records_source(vehicle_id='V1') is source

    def test_dead_rows_are_reclaimed_without_losing_anything(self):
        """Dropping discarded rows from memory renumbers rows; nothing else changes."""
        first, middle, last = (make_episode('V1', 'd1', T0 + i * HOUR_NS, 10 + i)
                               for i in range(3))
        with self.open_pool() as pool:
            pool.append(first + middle + last)
            pool.end_episode(make_summary(first))
            pool.end_episode(make_summary(middle, valid=False))
            records_source, episodes_source = pool.records_source(), pool.episodes_source()
            assert len(records_source) == 22
            before = episodes_source.sample(6, np.random.default_rng(4))
            pool._index.vacuum(force=True)
            assert pool._index.size == 22
            assert_same_records(pool.read_records(), first + last)
            assert len(records_source) == 22 and len(episodes_source) == 1
            rewards = set(records_source.sample(500, np.random.default_rng(0))['reward'])
            assert rewards == {np.float32(r.reward) for r in first + last}
            after = episodes_source.sample(6, np.random.default_rng(4))
            for key in EPISODE_BATCH_KEYS:
                np.testing.assert_array_equal(after[key], before[key])
            longer = make_episode('V1', 'd1', T0 + 2 * HOUR_NS, 14)
            pool.append(longer)                     # new rows go where dead ones were
            pool.end_episode(make_summary(longer))
            assert len(episodes_source) == 2
            expected = {T0: first, T0 + 2 * HOUR_NS: last + longer[12:]}
            for summary, steps in pool.get_episodes(10, np.random.default_rng(5)):
                assert_same_records(steps, expected[summary.episode_start_ns])
            assert len(pool.records_source(vehicle_id='V1', driver_id='d1')) == 24
        with self.open_pool() as pool:
            assert_same_records(pool.read_records(),     # steps 0-11 kept as first stored
                                first + last + make_episode('V1', 'd1', T0 + 2 * HOUR_NS, 14)[12:])

    def test_closed_pool_refuses_work(self):
        """Closing twice is fine; a closed pool raises StorageError instead of losing data."""
        pool = self.open_pool()
        pool.append(make_episode('V1', 'd1', T0, 2))
        pool.close()
        pool.close()
        with pytest.raises(StorageError, match='closed'):
            pool.append(make_episode('V1', 'd1', T0 + 1, 2))


def wait_until(predicate, timeout_s: float) -> bool:
    """Poll predicate every 10 ms until true or timeout_s passes; return it."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
