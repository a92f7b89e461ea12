"""
Sample sources that fetch their batches from a pool elsewhere (the storage's service).

A trainer in a process of its own samples the storage node's pool through its
``sample_batch`` service instead of keeping a private buffer fed by topics, so
that a restarted trainer finds all the replay data the storage holds. These
sources are plain Python: ``fetch(kind, size)`` is given by the caller (the
trainer node calls the service; a test can call a pool) and returns
``(items, available)``: ``size`` items drawn uniformly with replacement from
the pool, and how many the pool holds.

- ``FetchedRecords`` (a ``TransitionSource``): ``sample`` hands out the next
  ``batch_size`` rows of what was fetched, in order, fetching
  ``prefetch_batches`` batches at a time when it runs short. Every batch is
  therefore a uniform draw with replacement from the pool, as from a local
  buffer.
- ``FetchedEpisodes`` (an ``EpisodeSource``): fetches ``batch_size`` episodes
  per batch and pads them as ``EpisodeBuffer`` does (the same windows for long
  episodes).

``len`` is the pool's size as of the latest fetch or ``refresh`` (which asks
for one item). A fetch that fails raises ``FetchError``; the trainer reports it
and trains later. Items are checked: wrong dimensions or non-finite values are
a ``FetchError`` too, never a silent batch.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tspace_ros.agents.episode_buffer import EpisodeBuffer
from tspace_ros.agents.replay import TRANSITION_KEYS

RECORDS, EPISODES = 'records', 'episodes'
Fetch = Callable[[str, int], Tuple[Sequence[Any], int]]


class FetchError(RuntimeError):
    """The pool could not be sampled (service down, refused, or wrong data)."""


def _stack(name: str, values) -> np.ndarray:
    """Return values as one float32 array; FetchError if they do not make one (ragged, text)."""
    try:
        return np.asarray(values, np.float32)
    except (TypeError, ValueError) as error:
        raise FetchError(f'fetched {name} is malformed: {error}') from None


def _check(name: str, array: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    if array.shape != shape:
        raise FetchError(f'fetched {name} has shape {array.shape}, expected {shape}')
    if not np.all(np.isfinite(array)):
        raise FetchError(f'fetched {name} holds non-finite values')
    return array


class _Fetched:
    kind = ''

    def __init__(self, fetch: Fetch, state_dim: int, action_dim: int):
        self._fetch = fetch
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.available = 0
        self.fetches = 0
        self.fetched = 0

    def __len__(self) -> int:
        """Return how many items the pool held at the latest fetch or refresh."""
        return self.available

    def refresh(self) -> int:
        """Ask the pool how many items it holds (one item is fetched); return the count."""
        self._get(1)
        return self.available

    def _get(self, size: int) -> Sequence[Any]:
        try:
            items, available = self._fetch(self.kind, int(size))
        except FetchError:
            raise
        except Exception as error:  # the fetch is the caller's: name what went wrong
            raise FetchError(f'fetching {size} {self.kind}: {type(error).__name__}: '
                             f'{error}') from None
        self.available = int(available)
        self.fetches += 1
        if self.available and len(items) != size:
            raise FetchError(f'asked for {size} {self.kind}, got {len(items)}')
        self.fetched += len(items)
        return items


class FetchedRecords(_Fetched):
    """A TransitionSource over a remote pool (see the module doc)."""

    kind = RECORDS

    def __init__(self, fetch: Fetch, state_dim: int, action_dim: int,
                 prefetch_batches: int = 64):
        """Fetch with ``fetch``; items are ``TransitionRecord`` s (state_dim, action_dim)."""
        super().__init__(fetch, state_dim, action_dim)
        if prefetch_batches < 1:
            raise ValueError(f'prefetch_batches must be >= 1, got {prefetch_batches}')
        self.prefetch_batches = int(prefetch_batches)
        self._rows: Dict[str, np.ndarray] = {}
        self._next = 0

    def _left(self) -> int:
        return len(self._rows['reward']) - self._next if self._rows else 0

    def sample(self, batch_size: int, rng: Optional[np.random.Generator] = None
               ) -> Dict[str, np.ndarray]:
        """Return the next ``batch_size`` fetched transitions (rng unused: the pool draws)."""
        if self._left() < batch_size:
            self._load(batch_size * self.prefetch_batches)
        start, self._next = self._next, self._next + batch_size
        return {key: value[start:self._next] for key, value in self._rows.items()}

    def _load(self, size: int) -> None:
        records = self._get(size)
        if not records:
            raise FetchError('the pool holds no transitions')
        n, s, a = len(records), self.state_dim, self.action_dim
        rows = {
            'state': _stack('state', [r.state for r in records]),
            'action': _stack('action', [r.action for r in records]),
            'reward': _stack('reward', [r.reward for r in records]),
            'next_state': _stack('next_state', [r.next_state for r in records]),
            'done': _stack('done', [r.done for r in records]),
        }
        shapes = {'state': (n, s), 'action': (n, a), 'reward': (n,), 'next_state': (n, s),
                  'done': (n,)}
        self._rows = {key: _check(key, rows[key], shapes[key]) for key in TRANSITION_KEYS}
        self._next = 0


class FetchedEpisodes(_Fetched):
    """An EpisodeSource over a remote pool (see the module doc)."""

    kind = EPISODES

    def sample(self, batch_size: int, rng: np.random.Generator,
               max_length: Optional[int] = None,
               pad_to_multiple: int = 1) -> Dict[str, np.ndarray]:
        """Fetch ``batch_size`` episodes and return them padded (EpisodeBuffer's windows)."""
        episodes = self._get(batch_size)
        if not episodes:
            raise FetchError('the pool holds no episodes')
        buffer = EpisodeBuffer(self.state_dim, self.action_dim, capacity=len(episodes))
        for transitions in episodes:
            if not transitions:
                raise FetchError('fetched an episode without steps')
            arrays = self._arrays(transitions)
            buffer.add_episode(*arrays)
        # One episode per row, in the order fetched (the pool drew them uniformly).
        return buffer.batch(list(range(len(episodes))), rng, max_length, pad_to_multiple)

    def _arrays(self, transitions: List[Any]):
        n, s, a = len(transitions), self.state_dim, self.action_dim
        shapes = {'state': (n, s), 'action': (n, a), 'reward': (n,), 'next_state': (n, s),
                  'done': (n,)}
        return tuple(_check(key, _stack(key, [getattr(t, key) for t in transitions]), shape)
                     for key, shape in shapes.items())
