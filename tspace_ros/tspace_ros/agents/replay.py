"""
Where training batches come from: the TransitionSource protocol and a ring buffer.

A batch is a dict of float32 arrays: ``state`` (B, state_dim), ``action``
(B, action_dim) in the actor's [-1, 1] units, ``reward`` (B,), ``next_state``
(B, state_dim) and ``done`` (B,) (1.0 where the episode terminated: no
bootstrapping from ``next_state``; a time limit is not a termination). The
storage pool implements the same protocol later; agents only ever call
``len(source)`` and ``source.sample(batch_size, rng)``. Numpy only, TF-free.
"""

import os
from typing import Dict, Protocol, runtime_checkable

import numpy as np

TRANSITION_KEYS = ('state', 'action', 'reward', 'next_state', 'done')


@runtime_checkable
class TransitionSource(Protocol):
    """Anything that can hand out uniform batches of stored transitions."""

    def __len__(self) -> int:
        """Return how many transitions can be sampled."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Return ``batch_size`` transitions drawn with ``rng`` (keys TRANSITION_KEYS)."""


class InMemoryReplay:
    """
    A fixed-capacity ring buffer of transitions; the oldest are overwritten first.

    ``sample`` draws indices uniformly with replacement from the stored ones, so
    it is as fast for a batch larger than the buffer as for a small one.
    """

    def __init__(self, capacity: int, state_dim: int, action_dim: int):
        if capacity < 1 or state_dim < 1 or action_dim < 1:
            raise ValueError('capacity, state_dim and action_dim must be positive')
        self.capacity, self.state_dim, self.action_dim = int(capacity), state_dim, action_dim
        self._data = {
            'state': np.zeros((capacity, state_dim), np.float32),
            'action': np.zeros((capacity, action_dim), np.float32),
            'reward': np.zeros(capacity, np.float32),
            'next_state': np.zeros((capacity, state_dim), np.float32),
            'done': np.zeros(capacity, np.float32),
        }
        self._next = 0      # index the next transition goes to
        self._size = 0      # transitions stored (<= capacity)
        self.total_added = 0

    def __len__(self) -> int:
        """Return how many transitions are stored."""
        return self._size

    def add(self, state, action, reward: float, next_state, done: bool) -> None:
        """Store one transition: state (state_dim,), action (action_dim,), ..."""
        self.add_batch(np.reshape(state, (1, -1)), np.reshape(action, (1, -1)),
                       np.reshape(reward, (1,)), np.reshape(next_state, (1, -1)),
                       np.reshape(done, (1,)))

    def add_batch(self, states, actions, rewards, next_states, dones) -> None:
        """Store n transitions at once: states (n, state_dim), rewards (n,), ..."""
        columns = {'state': states, 'action': actions, 'reward': rewards,
                   'next_state': next_states, 'done': dones}
        arrays = {}
        for key, value in columns.items():
            value = np.asarray(value, np.float32)
            expected = self._data[key].shape[1:]
            if value.ndim != 1 + len(expected) or value.shape[1:] != expected:
                raise ValueError(f'{key}: expected shape (n, *{expected}), got {value.shape}')
            arrays[key] = value
        n = len(arrays['reward'])
        if any(len(v) != n for v in arrays.values()):
            raise ValueError('all columns need the same number of transitions')
        keep = min(n, self.capacity)        # of more than capacity, only the newest survive
        index = (self._next + (n - keep) + np.arange(keep)) % self.capacity
        for key, value in arrays.items():
            self._data[key][index] = value[n - keep:]
        self._next = (self._next + n) % self.capacity
        self._size = min(self.capacity, self._size + n)
        self.total_added += n

    def end_episode(self) -> None:
        """Do nothing: transitions carry their own ``done``; episode buffers need this hook."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Return ``batch_size`` transitions drawn uniformly with replacement (fresh arrays)."""
        if self._size == 0:
            raise ValueError('cannot sample from an empty replay buffer')
        index = rng.integers(0, self._size, size=int(batch_size))
        return {key: value[index] for key, value in self._data.items()}

    def save(self, path: str) -> None:
        """Write the buffer to an ``.npz`` file (plain arrays, no pickle)."""
        order = (self._next - self._size + np.arange(self._size)) % self.capacity  # oldest first
        np.savez(path, capacity=np.int64(self.capacity),
                 **{key: value[order] for key, value in self._data.items()})

    @classmethod
    def load(cls, path: str) -> 'InMemoryReplay':
        """Read a buffer written by ``save``."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            replay = cls(int(data['capacity']), data['state'].shape[1], data['action'].shape[1])
            replay.add_batch(*(data[key] for key in TRANSITION_KEYS))
        return replay
