"""EpisodeBuffer: ragged episodes stored whole, sampled uniformly, padded with a mask."""

import numpy as np
import pytest

from tspace_ros.agents.episode_buffer import (
    EPISODE_BATCH_KEYS, EpisodeBuffer, EpisodeSource, pad_episodes)

STATE_DIM, ACTION_DIM = 3, 2


def make_episode(length: int, offset: float = 0.0):
    """Return an episode whose values encode (offset, step) so rows can be recognised."""
    steps = np.arange(length, dtype=np.float32)
    state = np.stack([offset + steps, steps, -steps], axis=1)
    return {'state': state,
            'action': np.stack([offset + steps / 1000.0, -steps / 1000.0], axis=1),
            'reward': -(offset + steps),
            'next_state': state + 1.0,
            'done': (steps == length - 1).astype(np.float32)}


def test_lengths_1_to_300_are_padded_with_a_mask():
    """Every length from 1 to 300 stores and comes back padded, with values intact."""
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM, capacity=300)
    for length in range(1, 301):
        buffer.add_episode(**make_episode(length, offset=1000.0 * length))
    assert len(buffer) == 300 and buffer.num_steps == 300 * 301 // 2
    assert isinstance(buffer, EpisodeSource)
    batch = buffer.sample(64, np.random.default_rng(0))
    assert set(batch) == set(EPISODE_BATCH_KEYS)
    size, padded = batch['mask'].shape
    assert size == 64 and padded == batch['length'].max()
    for row in range(size):
        length = int(batch['length'][row])
        episode = make_episode(length, offset=1000.0 * length)
        np.testing.assert_array_equal(batch['mask'][row], np.arange(padded) < length)
        for key in ('state', 'action', 'reward', 'next_state', 'done'):
            np.testing.assert_array_equal(batch[key][row, :length], episode[key])
            assert not np.any(batch[key][row, length:])
        np.testing.assert_array_equal(batch['last_action'][row, 0], np.zeros(ACTION_DIM))
        np.testing.assert_array_equal(batch['last_action'][row, 1:length],
                                      episode['action'][:-1])
        assert not np.any(batch['last_action'][row, length:])
    assert batch['state'].shape == (64, padded, STATE_DIM)
    assert batch['state'].dtype == np.float32 and batch['mask'].dtype == bool


def test_pad_to_multiple_and_max_length_window():
    """Padding rounds up to a multiple; a long episode gives a contiguous window."""
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM)
    buffer.add_episode(**make_episode(7))
    batch = buffer.sample(2, np.random.default_rng(1), pad_to_multiple=5)
    assert batch['mask'].shape == (2, 10) and batch['mask'].sum() == 14

    long_episode = make_episode(300)
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM)
    buffer.add_episode(**long_episode)
    starts = set()
    batch = buffer.sample(50, np.random.default_rng(2), max_length=20)
    assert batch['mask'].shape == (50, 20) and batch['mask'].all()
    for row in range(50):
        start = int(batch['state'][row, 0, 1])
        starts.add(start)
        np.testing.assert_array_equal(batch['state'][row], long_episode['state'][start:start + 20])
        expected_last = long_episode['action'][start - 1] if start else np.zeros(ACTION_DIM)
        np.testing.assert_array_equal(batch['last_action'][row, 0], expected_last)
    assert len(starts) > 10   # the window start is drawn, not fixed


def test_sampling_is_uniform_over_episodes_not_steps():
    """A 1-step episode is drawn as often as a 300-step one."""
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM)
    buffer.add_episode(**make_episode(1))
    buffer.add_episode(**make_episode(300))
    batch = buffer.sample(4000, np.random.default_rng(3))
    short = np.mean(batch['length'] == 1)
    assert 0.45 < short < 0.55


def test_step_recording_capacity_and_validation():
    """add_step/end_episode build episodes; the oldest go first; bad input is refused."""
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM, capacity=2)
    assert buffer.end_episode() is False
    for length in (2, 3, 4):
        for step in range(length):
            buffer.add_step(np.full(STATE_DIM, length), np.zeros(ACTION_DIM), 1.0,
                            np.ones(STATE_DIM), step == length - 1)
        assert buffer.open_steps == length
        assert buffer.end_episode() is True
    assert len(buffer) == 2 and buffer.num_steps == 7
    buffer.add_step(np.zeros(STATE_DIM), np.zeros(ACTION_DIM), 0.0, np.zeros(STATE_DIM), False)
    buffer.discard_episode()
    assert buffer.open_steps == 0 and len(buffer) == 2

    bad = make_episode(3)
    bad['reward'][1] = np.nan
    with pytest.raises(ValueError, match='non-finite'):
        buffer.add_episode(**bad)
    bad = make_episode(3)
    bad['action'] = bad['action'][:, :1]
    with pytest.raises(ValueError, match='shape'):
        buffer.add_episode(**bad)
    with pytest.raises(ValueError):
        EpisodeBuffer(STATE_DIM, ACTION_DIM).sample(1, np.random.default_rng())


def test_save_and_load_round_trip(tmp_path):
    """The buffer survives an .npz round trip without pickle."""
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM, capacity=5)
    for length in (1, 4, 9):
        buffer.add_episode(**make_episode(length, offset=length))
    path = tmp_path / 'episodes.npz'
    buffer.save(str(path))
    loaded = EpisodeBuffer.load(str(path))
    assert (len(loaded), loaded.num_steps, loaded.capacity) == (3, 14, 5)
    a = buffer.sample(8, np.random.default_rng(4))
    b = loaded.sample(8, np.random.default_rng(4))
    for key in EPISODE_BATCH_KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    empty = tmp_path / 'empty.npz'
    EpisodeBuffer(STATE_DIM, ACTION_DIM).save(str(empty))
    assert len(EpisodeBuffer.load(str(empty))) == 0


def test_pad_episodes_keeps_order_and_length():
    """pad_episodes pads given episodes in order, to a given length."""
    batch = pad_episodes([make_episode(3), make_episode(1, offset=5.0)], length=4)
    np.testing.assert_array_equal(batch['length'], [3, 1])
    assert batch['mask'].shape == (2, 4)
    assert batch['state'][1, 0, 0] == 5.0
    with pytest.raises(ValueError):
        pad_episodes([make_episode(3)], length=2)
