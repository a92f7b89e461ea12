"""
Whole episodes for the recurrent agent: the EpisodeSource protocol and a FIFO buffer.

An episode is ragged (1 to several hundred steps; tspace sampled 1..300). A
batch of ``B`` episodes is a dict of arrays padded to a common length ``T``
(post-padding: the valid steps come first, padding after them, filled with 0):

- ``state`` (B, T, state_dim) float32: the observation at each step;
- ``last_action`` (B, T, action_dim) float32: the action applied before that
  step (zeros before an episode's first step, as ``RdpgAgent.reset`` starts);
- ``action`` (B, T, action_dim) float32: the action applied at the step, in
  the actor's [-1, 1] units;
- ``reward`` (B, T) float32; ``next_state`` (B, T, state_dim) float32;
- ``done`` (B, T) float32: 1.0 where the episode terminated (no bootstrapping
  from ``next_state``; a time limit is not a termination);
- ``mask`` (B, T) bool: True on valid steps, False on padding;
- ``length`` (B,) int32: valid steps per row (``mask.sum(axis=1)``).

Numpy only, TF-free. The storage pool implements the same protocol later (and
can pad what it loads with ``pad_episodes``); agents only call ``len(source)``
and ``source.sample(batch_size, rng, max_length, pad_to_multiple)``.
"""

import os
from typing import Dict, List, Optional, Protocol, runtime_checkable, Sequence

import numpy as np

EPISODE_BATCH_KEYS = ('state', 'last_action', 'action', 'reward', 'next_state', 'done',
                      'mask', 'length')
_STEP_KEYS = ('state', 'action', 'reward', 'next_state', 'done')


@runtime_checkable
class EpisodeSource(Protocol):
    """Anything that can hand out padded batches of whole stored episodes."""

    def __len__(self) -> int:
        """Return how many episodes can be sampled."""

    def sample(self, batch_size: int, rng: np.random.Generator,
               max_length: Optional[int] = None,
               pad_to_multiple: int = 1) -> Dict[str, np.ndarray]:
        """Return ``batch_size`` padded episodes drawn with ``rng`` (EPISODE_BATCH_KEYS)."""


class EpisodeBuffer:
    """
    Keep the latest ``capacity`` episodes; sample them uniformly and pad them.

    Episodes come in whole (``add_episode``) or step by step (``add_step``,
    then ``end_episode``); the oldest episode is dropped first when full.
    ``sample`` draws episodes uniformly with replacement, so every episode is
    equally likely whatever its length. An episode longer than ``max_length``
    contributes a window of ``max_length`` consecutive steps with a uniformly
    drawn start (its ``last_action`` is the action before the window, and the
    recurrent state at the window start is the zero state). The batch is
    padded to its longest row, rounded up to a multiple of ``pad_to_multiple``
    (the TBPTT update interval k1, so every update window has a fixed shape).
    """

    def __init__(self, state_dim: int, action_dim: int, capacity: int = 1000):
        if state_dim < 1 or action_dim < 1 or capacity < 1:
            raise ValueError('state_dim, action_dim and capacity must be >= 1')
        self.state_dim, self.action_dim, self.capacity = state_dim, action_dim, capacity
        self._episodes: List[Dict[str, np.ndarray]] = []
        self._open: Dict[str, list] = {key: [] for key in _STEP_KEYS}

    def __len__(self) -> int:
        """Return how many complete episodes are stored."""
        return len(self._episodes)

    @property
    def num_steps(self) -> int:
        """Return the number of steps in the stored complete episodes."""
        return sum(len(episode['reward']) for episode in self._episodes)

    @property
    def open_steps(self) -> int:
        """Return the number of steps added since the last ``end_episode``."""
        return len(self._open['reward'])

    def add_step(self, state, action, reward: float, next_state, done: bool) -> None:
        """Append one step to the episode being recorded (see ``end_episode``)."""
        self._open['state'].append(np.asarray(state, np.float32).reshape(self.state_dim))
        self._open['action'].append(np.asarray(action, np.float32).reshape(self.action_dim))
        self._open['reward'].append(np.float32(reward))
        self._open['next_state'].append(
            np.asarray(next_state, np.float32).reshape(self.state_dim))
        self._open['done'].append(np.float32(bool(done)))

    def end_episode(self) -> bool:
        """Store the episode being recorded; return False (storing nothing) if it is empty."""
        steps, self._open = self._open, {key: [] for key in _STEP_KEYS}
        if not steps['reward']:
            return False
        self.add_episode(**{key: np.stack(value) for key, value in steps.items()})
        return True

    def discard_episode(self) -> None:
        """Forget the episode being recorded (an invalid episode)."""
        self._open = {key: [] for key in _STEP_KEYS}

    def add_episode(self, state, action, reward, next_state, done) -> None:
        """
        Store one complete episode of T >= 1 steps.

        ``state`` and ``next_state`` (T, state_dim), ``action`` (T, action_dim),
        ``reward`` and ``done`` (T,). ValueError for wrong shapes or non-finite
        values (they would poison every batch that drew the episode).
        """
        episode = {
            'state': np.asarray(state, np.float32),
            'action': np.asarray(action, np.float32),
            'reward': np.asarray(reward, np.float32).reshape(-1),
            'next_state': np.asarray(next_state, np.float32),
            'done': np.asarray(done, np.float32).reshape(-1),
        }
        length = len(episode['reward'])
        if length < 1:
            raise ValueError('an episode needs at least one step')
        expected = {'state': (length, self.state_dim), 'action': (length, self.action_dim),
                    'reward': (length,), 'next_state': (length, self.state_dim),
                    'done': (length,)}
        for key, shape in expected.items():
            if episode[key].shape != shape:
                raise ValueError(f'{key} has shape {episode[key].shape}, expected {shape}')
            if not np.all(np.isfinite(episode[key])):
                raise ValueError(f'{key} has non-finite values')
        self._episodes.append(episode)
        if len(self._episodes) > self.capacity:
            del self._episodes[0]

    def sample(self, batch_size: int, rng: np.random.Generator,
               max_length: Optional[int] = None,
               pad_to_multiple: int = 1) -> Dict[str, np.ndarray]:
        """Return ``batch_size`` episodes drawn uniformly, padded (see the module doc)."""
        if not self._episodes:
            raise ValueError('the episode buffer is empty')
        if batch_size < 1 or pad_to_multiple < 1 or (max_length is not None and max_length < 1):
            raise ValueError('batch_size, pad_to_multiple and max_length must be >= 1')
        return self.batch(rng.integers(0, len(self._episodes), size=batch_size), rng,
                          max_length, pad_to_multiple)

    def batch(self, picks, rng: np.random.Generator, max_length: Optional[int] = None,
              pad_to_multiple: int = 1) -> Dict[str, np.ndarray]:
        """Return the episodes of the given indices, windowed and padded as ``sample`` does."""
        if len(picks) < 1 or pad_to_multiple < 1 or (max_length is not None and max_length < 1):
            raise ValueError('picks, pad_to_multiple and max_length must be >= 1')
        windows = []
        for index in picks:
            episode = self._episodes[index]
            length = len(episode['reward'])
            start = 0
            if max_length is not None and length > max_length:
                start = int(rng.integers(0, length - max_length + 1))
                length = max_length
            windows.append((episode, start, length))
        longest = max(length for _, _, length in windows)
        padded = -(-longest // pad_to_multiple) * pad_to_multiple
        return _pad_windows(windows, padded)

    def save(self, path: str) -> None:
        """Write the complete episodes to an ``.npz`` file (plain arrays, no pickle)."""
        lengths = np.array([len(e['reward']) for e in self._episodes], np.int64)
        arrays = {'lengths': lengths,
                  'dims': np.array([self.state_dim, self.action_dim, self.capacity], np.int64)}
        for key in _STEP_KEYS:
            if self._episodes:
                arrays[key] = np.concatenate([e[key] for e in self._episodes])
            else:
                width = {'state': self.state_dim, 'next_state': self.state_dim,
                         'action': self.action_dim}.get(key)
                arrays[key] = np.zeros((0,) if width is None else (0, width), np.float32)
        tmp = f'{path}.tmp.npz'
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> 'EpisodeBuffer':
        """Read a buffer written by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            state_dim, action_dim, capacity = (int(v) for v in data['dims'])
            buffer = cls(state_dim, action_dim, capacity)
            bounds = np.concatenate([[0], np.cumsum(data['lengths'])])
            arrays = {key: data[key] for key in _STEP_KEYS}
        for begin, end in zip(bounds[:-1], bounds[1:]):
            buffer.add_episode(**{key: value[begin:end] for key, value in arrays.items()})
        return buffer


def pad_episodes(episodes: Sequence[Dict[str, np.ndarray]],
                 length: Optional[int] = None) -> Dict[str, np.ndarray]:
    """
    Return a padded batch (EPISODE_BATCH_KEYS) of whole episodes, in the given order.

    Each episode is a dict of ``state`` (T, state_dim), ``action`` (T,
    action_dim), ``reward``, ``next_state`` and ``done`` as ``add_episode``
    takes them; ``length`` (default: the longest episode) must be at least
    that long.
    """
    episodes = [{key: np.asarray(e[key], np.float32) for key in _STEP_KEYS} for e in episodes]
    longest = max(len(e['reward']) for e in episodes)
    length = longest if length is None else int(length)
    if length < longest:
        raise ValueError(f'length {length} is shorter than the longest episode ({longest})')
    return _pad_windows([(e, 0, len(e['reward'])) for e in episodes], length)


def _pad_windows(windows, padded: int) -> Dict[str, np.ndarray]:
    """Copy (episode, start, length) windows into zero-padded arrays of length ``padded``."""
    size = len(windows)
    state_dim = windows[0][0]['state'].shape[1]
    action_dim = windows[0][0]['action'].shape[1]
    batch = {
        'state': np.zeros((size, padded, state_dim), np.float32),
        'last_action': np.zeros((size, padded, action_dim), np.float32),
        'action': np.zeros((size, padded, action_dim), np.float32),
        'reward': np.zeros((size, padded), np.float32),
        'next_state': np.zeros((size, padded, state_dim), np.float32),
        'done': np.zeros((size, padded), np.float32),
        'mask': np.zeros((size, padded), bool),
        'length': np.zeros(size, np.int32),
    }
    for row, (episode, start, length) in enumerate(windows):
        steps = slice(start, start + length)
        for key in _STEP_KEYS:
            batch[key][row, :length] = episode[key][steps]
        if start > 0:
            batch['last_action'][row, 0] = episode['action'][start - 1]
        batch['last_action'][row, 1:length] = episode['action'][start:start + length - 1]
        batch['mask'][row, :length] = True
        batch['length'][row] = length
    return batch
