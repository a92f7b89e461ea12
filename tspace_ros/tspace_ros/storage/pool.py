"""
The transition pool's interface, configuration and factory, and its in-memory index.

A pool stores ``TransitionRecord`` and ``EpisodeSummaryRecord`` durably (a
backend: ``parquet_pool`` or ``mongo_pool``) and keeps every stored
transition in memory as numpy columns that grow by doubling, with an index of
rows per (vehicle, driver) and per episode. Sampling reads only those columns
(it never scans the dataset), so a batch of 256 from a million transitions
takes well under a millisecond.

Sources (``records_source``, ``episodes_source``) are live views: they pick up
transitions appended after they were made, and forget discarded or retired
ones. Time filters are half-open, ``start_ns <= t < end_ns``: on
``state_stamp_ns`` for transitions, on ``episode_start_ns`` for episodes.
"""

from dataclasses import dataclass, field, fields
import json
import logging
import math
import numbers
import operator
import os
import re
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tspace_ros.agents.episode_buffer import _pad_windows
from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord

LOGGER = logging.getLogger('tspace_ros.storage')

BACKENDS = ('parquet', 'mongodb')
NS_PER_S = 1_000_000_000

RUNNING, VALID, DISCARDED = 'running', 'valid', 'discarded'

# Per-row columns besides the vectors (state, next_state, action): name -> dtype.
SCALAR_COLUMNS = {
    'episode_start_ns': np.int64,
    'step_index': np.int64,
    'action_row_start': np.int64,
    'action_row_count': np.int64,
    'reward': np.float64,
    'energy_wh': np.float64,
    'done': np.bool_,
    'timed_out': np.bool_,
    'policy_version': np.int64,
    'state_stamp_ns': np.int64,
    'next_state_stamp_ns': np.int64,
}
VECTOR_COLUMNS = ('state', 'next_state', 'action')
# The index's columns: the above, plus each row's episode code and (vehicle, driver)
# code, whether it can be sampled (alive) and whether a backend folded it into its
# main store (compacted).
_INDEX_DTYPES = dict(SCALAR_COLUMNS, state=np.float32, next_state=np.float32,
                     action=np.float32, episode=np.int64, pair=np.int32, alive=np.bool_,
                     compacted=np.bool_)


_RECORD_FIELDS = operator.attrgetter(*SCALAR_COLUMNS, *VECTOR_COLUMNS, 'vehicle_id', 'driver_id',
                                     'episode_id')


class StorageError(RuntimeError):
    """A storage configuration or IO problem; the message says which and what to do."""


def default_spec() -> Dict[str, Any]:
    """Return the observation specification of the shipped task (``task.spec``)."""
    from tspace_ros.task.spec import observation_spec
    return observation_spec()


def _fail(name: str, expected: str, value: Any) -> None:
    raise StorageError(f'storage config {name}: expected {expected}, got {value!r}')


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_spec(spec) -> None:
    if not isinstance(spec, Mapping):
        _fail('spec', 'a mapping (the observation specification)', spec)
    for key in spec:
        if not isinstance(key, str):
            _fail('spec', 'string keys', key)
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as err:
        raise StorageError(f'storage config spec: expected JSON-serialisable values ({err})')
    lists = {'signals': str, 'units': str, 'scales': numbers.Real}
    for key, kind in lists.items():
        if key in spec and (not isinstance(spec[key], (list, tuple))
                            or not all(isinstance(v, kind) for v in spec[key])):
            _fail(f'spec.{key}', 'a list of strings', spec[key])
    for key in ('sample_rate_hz', 'window_duration_s'):
        if key in spec and not (isinstance(spec[key], numbers.Real)
                                and not isinstance(spec[key], bool)
                                and math.isfinite(spec[key]) and spec[key] > 0):
            _fail(f'spec.{key}', 'a positive number', spec[key])
    if 'samples_per_window' in spec and not (_is_int(spec['samples_per_window'])
                                             and spec['samples_per_window'] > 0):
        _fail('spec.samples_per_window', 'a positive integer', spec['samples_per_window'])
    if 'action_shape' in spec:
        shape = spec['action_shape']
        if (not isinstance(shape, (list, tuple)) or len(shape) != 2
                or not all(_is_int(v) and v > 0 for v in shape)):
            _fail('spec.action_shape', 'two positive integers [rows, columns]', shape)
    for key in ('recent_actions', 'state_size'):
        if key in spec and not (_is_int(spec[key]) and spec[key] >= 0):
            _fail(f'spec.{key}', 'an integer >= 0', spec[key])
    for key in ('action_unit', 'reward_unit', 'state_layout', 'site', 'time_zone'):
        if key in spec and not isinstance(spec[key], str):
            _fail(f'spec.{key}', 'a string', spec[key])


@dataclass
class PoolConfig:
    """
    Where and how a pool stores transitions; every field is checked on creation.

    Attributes
    ----------
    backend:
        'parquet' (embedded, the default) or 'mongodb'.
    root:
        The parquet pool's directory (created when missing), or
        ``s3://bucket/prefix`` for the pool on S3 object storage (``s3_pool``).
    mongodb_uri_env:
        Name of the environment variable that holds the MongoDB connection string.
    mongodb_uri_file:
        Path of a secret file holding the connection string ('' for none). The
        URI itself never goes in a configuration file.
    mongodb_database:
        MongoDB database name.
    max_bytes:
        Retention: largest size of the stored data, bytes (0: unlimited).
    max_age_s:
        Retention: oldest episode start kept, seconds before now (0: unlimited).
    compact_every:
        Transitions appended between automatic compactions (0: only on close).
    spec:
        The observation specification, stored with the data as metadata.
    s3_endpoint:
        For an s3:// root: the S3 endpoint, ``http(s)://host:port`` ('' : the
        environment variable TSPACE_S3_ENDPOINT, else AWS itself).
    s3_credentials_file:
        For an s3:// root: an AWS-style credentials file (``[default]`` with
        aws_access_key_id, aws_secret_access_key); '' : the environment
        variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    s3_region:
        For an s3:// root: the region ('' : AWS_DEFAULT_REGION, else us-east-1).

    """

    backend: str = 'parquet'
    root: str = ''
    mongodb_uri_env: str = 'TSPACE_MONGODB_URI'
    mongodb_uri_file: str = ''
    mongodb_database: str = 'tspace'
    max_bytes: int = 0
    max_age_s: float = 0.0
    compact_every: int = 50_000
    spec: Dict[str, Any] = field(default_factory=default_spec)
    s3_endpoint: str = ''
    s3_credentials_file: str = ''
    s3_region: str = ''

    def __post_init__(self):
        """Check every field; StorageError naming the field and what was expected."""
        if self.backend not in BACKENDS:
            _fail('backend', ' or '.join(repr(b) for b in BACKENDS), self.backend)
        if isinstance(self.root, os.PathLike):
            self.root = os.fspath(self.root)
        if not isinstance(self.root, str):
            _fail('root', 'a directory path', self.root)
        if self.backend == 'parquet' and not self.root:
            _fail('root', "a directory path for the 'parquet' backend", self.root)
        if not (isinstance(self.mongodb_uri_env, str)
                and re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', self.mongodb_uri_env)):
            _fail('mongodb_uri_env', 'an environment variable name', self.mongodb_uri_env)
        if isinstance(self.mongodb_uri_file, os.PathLike):
            self.mongodb_uri_file = os.fspath(self.mongodb_uri_file)
        if not isinstance(self.mongodb_uri_file, str):
            _fail('mongodb_uri_file', "a file path or ''", self.mongodb_uri_file)
        if self.mongodb_uri_file.startswith(('mongodb://', 'mongodb+srv://')):
            raise StorageError('storage config mongodb_uri_file: expected the path of a file '
                               'that holds the connection string, got a connection string '
                               '(keep it out of the configuration)')
        if not (isinstance(self.mongodb_database, str)
                and re.fullmatch(r'[^/\\. "$\x00]{1,63}', self.mongodb_database)):
            _fail('mongodb_database', 'a MongoDB database name (1-63 characters, none of '
                  '/\\. "$)', self.mongodb_database)
        if not _is_int(self.max_bytes) or self.max_bytes < 0:
            _fail('max_bytes', 'an integer >= 0 (0: unlimited)', self.max_bytes)
        if (not isinstance(self.max_age_s, numbers.Real) or isinstance(self.max_age_s, bool)
                or not math.isfinite(self.max_age_s) or self.max_age_s < 0):
            _fail('max_age_s', 'a finite number of seconds >= 0 (0: unlimited)', self.max_age_s)
        if not _is_int(self.compact_every) or self.compact_every < 0:
            _fail('compact_every', 'an integer >= 0 (0: compact only on close)',
                  self.compact_every)
        _check_spec(self.spec)
        self._check_s3()
        self.max_bytes, self.compact_every = int(self.max_bytes), int(self.compact_every)
        self.max_age_s = float(self.max_age_s)
        self.spec = dict(self.spec)

    def _check_s3(self) -> None:
        if isinstance(self.s3_credentials_file, os.PathLike):
            self.s3_credentials_file = os.fspath(self.s3_credentials_file)
        for name in ('s3_endpoint', 's3_credentials_file', 's3_region'):
            if not isinstance(getattr(self, name), str):
                _fail(name, "a string ('' for the default)", getattr(self, name))
        if self.root.startswith('s3://') and self.backend == 'parquet':
            from tspace_ros.storage.s3_pool import check_endpoint, split_root
            split_root(self.root)
            check_endpoint(self.s3_endpoint)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> 'PoolConfig':
        """Return a config from a mapping (a YAML section); unknown keys are an error."""
        if not isinstance(values, Mapping):
            raise StorageError(f'storage config: expected a mapping, got {values!r}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StorageError(f'storage config: unknown field(s) {unknown}; '
                               f'expected some of {sorted(known)}')
        return cls(**values)

    def spec_json(self) -> str:
        """Return the observation specification as canonical JSON."""
        return json.dumps(self.spec, sort_keys=True)


def open_pool(config: PoolConfig, client=None) -> 'TransitionPool':
    """
    Open (creating when needed) the pool that ``config`` describes.

    ``client`` is a ``pymongo.MongoClient`` (or ``mongomock.MongoClient``) for
    the 'mongodb' backend; without one the pool connects with the URI from the
    environment or the secret file (see ``mongo_pool.resolve_mongodb_uri``).
    """
    if not isinstance(config, PoolConfig):
        raise StorageError(f'open_pool: expected a PoolConfig, got {type(config).__name__}')
    if config.backend == 'parquet':
        if client is not None:
            raise StorageError("open_pool: a client is only for the 'mongodb' backend")
        if config.root.startswith('s3://'):
            from tspace_ros.storage.s3_pool import S3ParquetPool
            return S3ParquetPool(config)
        from tspace_ros.storage.parquet_pool import ParquetPool
        return ParquetPool(config)
    from tspace_ros.storage.mongo_pool import MongoPool
    return MongoPool(config, client=client)


class _Growable:
    """A 1-D numpy array that grows by doubling."""

    __slots__ = ('data', 'size')

    def __init__(self, dtype, capacity: int = 8):
        self.data = np.empty(capacity, dtype)
        self.size = 0

    def extend(self, values) -> None:
        need = self.size + len(values)
        if need > len(self.data):
            grown = np.empty(max(need, 2 * len(self.data)), self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:need] = values
        self.size = need

    def view(self) -> np.ndarray:
        return self.data[:self.size]

    def replace(self, values) -> None:
        self.size = 0
        self.extend(values)


class Batch:
    """
    Transitions as columns: what backends write and read (one row per transition).

    ``cols`` maps SCALAR_COLUMNS and VECTOR_COLUMNS names to numpy arrays;
    ``vehicle``, ``driver`` and ``episode_id`` are object arrays of strings.
    """

    def __init__(self, cols: Dict[str, np.ndarray], vehicle, driver, episode_id):
        self.cols = cols
        self.vehicle = np.asarray(vehicle, object)
        self.driver = np.asarray(driver, object)
        self.episode_id = np.asarray(episode_id, object)

    def __len__(self) -> int:
        """Return the number of transitions."""
        return len(self.cols['step_index'])

    @classmethod
    def from_records(cls, records: Sequence[TransitionRecord]) -> 'Batch':
        """Return the records as columns; StorageError for mixed vector sizes."""
        for i, record in enumerate(records):
            if not isinstance(record, TransitionRecord):
                raise StorageError(f'append: item {i} is a {type(record).__name__}, '
                                   'expected a TransitionRecord')
        for name in ('state', 'action'):
            sizes = {getattr(r, name).size for r in records}
            if len(sizes) > 1:
                raise StorageError(f'append: the records have different {name} sizes '
                                   f'{sorted(sizes)}; one call must have equal sizes')
        columns = list(zip(*map(_RECORD_FIELDS, records)))
        try:
            cols = {name: np.array(values, dtype) for name, dtype, values in zip(
                SCALAR_COLUMNS, SCALAR_COLUMNS.values(), columns)}
        except OverflowError as err:
            raise StorageError(f'append: an integer field does not fit 63 bits ({err})') from None
        for name, values in zip(VECTOR_COLUMNS, columns[len(SCALAR_COLUMNS):]):
            cols[name] = np.stack(values)
        return cls(cols, *columns[-3:])

    def take(self, index) -> 'Batch':
        """Return the rows ``index`` as a new batch."""
        return Batch({k: v[index] for k, v in self.cols.items()}, self.vehicle[index],
                     self.driver[index], self.episode_id[index])

    @property
    def dims(self) -> Tuple[int, int]:
        """Return (state size, action size)."""
        return self.cols['state'].shape[1], self.cols['action'].shape[1]

    def episode_groups(self) -> List[Tuple[Tuple[str, str, int], str, np.ndarray]]:
        """Return [((vehicle, driver, episode start), episode_id, row indices)]."""
        n = len(self)
        if n == 0:
            return []
        starts = self.cols['episode_start_ns']
        vehicle, driver = self.vehicle[0], self.driver[0]
        if np.all(self.vehicle == vehicle) and np.all(self.driver == driver):
            unique, inverse = np.unique(starts, return_inverse=True)
            if len(unique) == 1:
                return [((vehicle, driver, int(unique[0])), self.episode_id[0], np.arange(n))]
            order = np.argsort(inverse, kind='stable')
            bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
            groups = []
            for i, start in enumerate(unique.tolist()):
                rows = order[bounds[i]:bounds[i + 1]]
                groups.append(((vehicle, driver, start), self.episode_id[rows[0]], rows))
            return groups
        buckets: Dict[Tuple[str, str, int], List[int]] = {}
        for i, key in enumerate(zip(self.vehicle.tolist(), self.driver.tolist(),
                                    starts.tolist())):
            buckets.setdefault(key, []).append(i)
        return [(key, self.episode_id[rows[0]], np.array(rows, np.int64))
                for key, rows in buckets.items()]


class Episode:
    """One episode in the index: its key, status, summary and rows (by step)."""

    __slots__ = ('vehicle', 'driver', 'start_ns', 'episode_id', 'pair', 'code', 'status',
                 'summary', 'steps', 'rows', 'max_step', 'sorted', '_order')

    def __init__(self, vehicle: str, driver: str, start_ns: int, episode_id: str, pair: int,
                 code: int):
        self.vehicle, self.driver, self.start_ns = vehicle, driver, start_ns
        self.episode_id, self.pair, self.code = episode_id, pair, code
        self.status = RUNNING
        self.summary: Optional[EpisodeSummaryRecord] = None
        self.steps = _Growable(np.int64)
        self.rows = _Growable(np.int64)
        self.max_step = -1
        self.sorted = True
        self._order = None

    @property
    def key(self) -> Tuple[str, str, int]:
        """Return (vehicle, driver, episode start)."""
        return (self.vehicle, self.driver, self.start_ns)

    @property
    def count(self) -> int:
        """Return the number of stored transitions."""
        return self.rows.size

    def add(self, steps: np.ndarray, rows: np.ndarray) -> None:
        """Add rows (steps not stored yet)."""
        if len(steps) == 0:
            return
        if steps.min() <= self.max_step or np.any(np.diff(steps) <= 0):
            self.sorted = False
        self.steps.extend(steps)
        self.rows.extend(rows)
        self.max_step = max(self.max_step, int(steps.max()))
        self._order = None

    def ordered_rows(self) -> np.ndarray:
        """Return the rows in step order (cached)."""
        if self._order is None:
            rows = self.rows.view()
            if not self.sorted:
                rows = rows[np.argsort(self.steps.view(), kind='stable')]
            self._order = rows.copy()
        return self._order

    def clear(self) -> None:
        """Forget the rows (they were discarded)."""
        self.steps, self.rows = _Growable(np.int64), _Growable(np.int64)
        self.max_step, self.sorted, self._order = -1, True, None


class Index:
    """
    Every stored transition as growing numpy columns, with rows per pair and episode.

    ``epoch`` changes whenever rows stop being sampleable or are renumbered;
    ``episode_epoch`` whenever the set of sampleable episodes may change;
    sources compare them to refresh their cached row lists.
    """

    def __init__(self):
        self.size = 0               # rows used (alive or not)
        self.live = 0               # alive rows
        self.cols: Dict[str, np.ndarray] = {}
        self.dims: Optional[Tuple[int, int]] = None
        self.pairs: Dict[Tuple[str, str], int] = {}
        self.pair_names: List[Tuple[str, str]] = []
        self.pair_rows: List[_Growable] = []
        self.episodes: Dict[Tuple[str, str, int], Episode] = {}
        self.episode_list: List[Optional[Episode]] = []     # by code; None once removed
        self.epoch = 0
        self.episode_epoch = 0

    # -- columns ---------------------------------------------------------
    def _reserve(self, extra: int) -> None:
        need = self.size + extra
        capacity = len(self.cols['step_index']) if self.cols else 0
        if need <= capacity:
            return
        capacity = max(need, 2 * capacity, 1024)
        state_dim, action_dim = self.dims
        shapes = {'state': (state_dim,), 'next_state': (state_dim,), 'action': (action_dim,)}
        grown = {}
        for name, dtype in _INDEX_DTYPES.items():
            array = np.zeros((capacity,) + shapes.get(name, ()), dtype)
            if name in self.cols:
                array[:self.size] = self.cols[name][:self.size]
            grown[name] = array
        self.cols = grown

    def column(self, name: str) -> np.ndarray:
        """Return the used part of a column."""
        if not self.cols:
            return np.zeros(0, _INDEX_DTYPES[name])
        return self.cols[name][:self.size]

    def pair_code(self, vehicle: str, driver: str) -> int:
        """Return the code of (vehicle, driver), creating it."""
        code = self.pairs.get((vehicle, driver))
        if code is None:
            code = self.pairs[(vehicle, driver)] = len(self.pair_names)
            self.pair_names.append((vehicle, driver))
            self.pair_rows.append(_Growable(np.int64))
        return code

    def matching_pairs(self, vehicle_id=None, driver_id=None) -> Optional[List[int]]:
        """Return the pair codes that match (None: every pair, no filter)."""
        if vehicle_id is None and driver_id is None:
            return None
        return [code for code, (vehicle, driver) in enumerate(self.pair_names)
                if (vehicle_id is None or vehicle == vehicle_id)
                and (driver_id is None or driver == driver_id)]

    def episode(self, key: Tuple[str, str, int], episode_id: str) -> Episode:
        """Return the episode with this key, creating a running one."""
        episode = self.episodes.get(key)
        if episode is None:
            episode = Episode(key[0], key[1], key[2], episode_id,
                              self.pair_code(key[0], key[1]), len(self.episode_list))
            self.episodes[key] = episode
            self.episode_list.append(episode)
        return episode

    # -- inserting -------------------------------------------------------
    def plan(self, batch: Batch) -> Tuple[np.ndarray, int, int]:
        """
        Return (new, duplicates, discarded) for a batch.

        ``new`` marks the rows to store: not stored yet, first of their key in
        the batch, and not of a discarded episode (those are counted apart).
        """
        new = np.zeros(len(batch), bool)
        discarded = 0
        steps = batch.cols['step_index']
        for key, _, rows in batch.episode_groups():
            episode = self.episodes.get(key)
            if episode is not None and episode.status == DISCARDED:
                discarded += len(rows)
                continue
            unique, first = np.unique(steps[rows], return_index=True)
            candidates = rows[first]
            if episode is not None and episode.count and unique[0] <= episode.max_step:
                candidates = candidates[~np.isin(unique, episode.steps.view())]
            new[candidates] = True
        return new, len(batch) - int(new.sum()) - discarded, discarded

    def insert(self, batch: Batch, compacted: bool = False) -> np.ndarray:
        """Store a batch of new transitions (see ``plan``); return their rows."""
        n = len(batch)
        if n == 0:
            return np.zeros(0, np.int64)
        if self.dims is None:
            self.dims = batch.dims
        elif batch.dims != self.dims:
            raise StorageError(f"state/action sizes {batch.dims} differ from the pool's "
                               f'{self.dims}')
        self._reserve(n)
        rows = np.arange(self.size, self.size + n, dtype=np.int64)
        for name, values in batch.cols.items():
            self.cols[name][rows] = values
        self.cols['alive'][rows] = True
        self.cols['compacted'][rows] = compacted
        steps = batch.cols['step_index']
        for key, episode_id, index in batch.episode_groups():
            episode = self.episode(key, episode_id)
            if episode.status != RUNNING:
                self.episode_epoch += 1       # a late step of an ended episode
            self.cols['episode'][rows[index]] = episode.code
            self.cols['pair'][rows[index]] = episode.pair
            episode.add(steps[index], rows[index])
            self.pair_rows[episode.pair].extend(rows[index])
        self.size += n
        self.live += n
        return rows

    # -- ending and removing episodes --------------------------------------
    def end_episode(self, summary: EpisodeSummaryRecord) -> np.ndarray:
        """Apply a summary; return the rows it discarded (empty unless valid is False)."""
        episode = self.episode(summary.key, summary.episode_id)
        self.episode_epoch += 1
        if summary.valid:
            if episode.status == DISCARDED:
                LOGGER.warning('episode %s was discarded; a later valid end is ignored',
                               summary.key)
                return np.zeros(0, np.int64)
            episode.status, episode.summary = VALID, summary
            return np.zeros(0, np.int64)
        episode.status, episode.summary = DISCARDED, summary
        rows = episode.rows.view().copy()
        self._kill(rows)
        episode.clear()
        self.vacuum()
        return rows

    def remove(self, episodes: Sequence[Episode]) -> int:
        """Forget whole episodes (retention); return the transitions removed."""
        removed = 0
        for episode in episodes:
            rows = episode.rows.view()
            removed += len(rows)
            self._kill(rows)
            self.episodes.pop(episode.key, None)
            self.episode_list[episode.code] = None
        self.episode_epoch += 1
        self.vacuum()
        return removed

    def _kill(self, rows: np.ndarray) -> None:
        if len(rows):
            self.cols['alive'][rows] = False
            self.live -= len(rows)
            self.epoch += 1

    def vacuum(self, force: bool = False) -> None:
        """Drop dead rows from the columns when they outnumber the live ones."""
        dead = self.size - self.live
        if not dead or (not force and dead < max(65536, self.live)):
            return
        keep = np.flatnonzero(self.column('alive'))
        remap = np.full(self.size, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        for name, array in self.cols.items():
            array[:len(keep)] = array[keep]
        self.size = len(keep)
        for episode in self.episodes.values():
            if episode.count:
                episode.rows.replace(remap[episode.rows.view()])
                episode._order = None
        for rows in self.pair_rows:
            mapped = remap[rows.view()]
            rows.replace(mapped[mapped >= 0])
        self.epoch += 1

    # -- reading -----------------------------------------------------------
    def episode_of(self, row: int) -> Episode:
        """Return the episode a row belongs to."""
        return self.episode_list[int(self.cols['episode'][row])]

    def candidate_rows(self, pairs: Optional[List[int]], begin: int = 0) -> np.ndarray:
        """Return the rows >= begin of the given pairs (None: all rows)."""
        if pairs is None:
            return np.arange(begin, self.size)
        if begin == 0:
            parts = [self.pair_rows[code].view() for code in pairs]
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
        rows = np.arange(begin, self.size)
        return rows[np.isin(self.cols['pair'][rows], pairs)]

    def select(self, rows: np.ndarray, start_ns=None, end_ns=None,
               include_timed_out: bool = True) -> np.ndarray:
        """Return the alive rows among ``rows`` that pass the filters."""
        if not self.cols:
            return rows
        keep = self.cols['alive'][rows]
        if not include_timed_out:
            keep &= ~self.cols['timed_out'][rows]
        if start_ns is not None:
            keep &= self.cols['state_stamp_ns'][rows] >= int(start_ns)
        if end_ns is not None:
            keep &= self.cols['state_stamp_ns'][rows] < int(end_ns)
        return rows[keep]

    def record(self, row: int) -> TransitionRecord:
        """Return the transition stored in a row."""
        cols, row = self.cols, int(row)
        episode = self.episode_of(row)
        return TransitionRecord(
            vehicle_id=episode.vehicle, driver_id=episode.driver,
            episode_id=episode.episode_id, episode_start_ns=episode.start_ns,
            step_index=int(cols['step_index'][row]), state=cols['state'][row].copy(),
            action=cols['action'][row].copy(),
            action_row_start=int(cols['action_row_start'][row]),
            action_row_count=int(cols['action_row_count'][row]),
            reward=float(cols['reward'][row]), energy_wh=float(cols['energy_wh'][row]),
            next_state=cols['next_state'][row].copy(), done=bool(cols['done'][row]),
            timed_out=bool(cols['timed_out'][row]),
            policy_version=int(cols['policy_version'][row]),
            state_stamp_ns=int(cols['state_stamp_ns'][row]),
            next_state_stamp_ns=int(cols['next_state_stamp_ns'][row]))

    def batch(self, rows: np.ndarray) -> Batch:
        """Return rows as a Batch (for writing them out)."""
        cols = {name: self.cols[name][rows] for name in (*SCALAR_COLUMNS, *VECTOR_COLUMNS)}
        codes = self.cols['episode'][rows]
        unique, inverse = np.unique(codes, return_inverse=True)
        episodes = [self.episode_list[code] for code in unique.tolist()]
        names = {attr: np.array([getattr(e, attr) for e in episodes] or [''], object)
                 for attr in ('vehicle', 'driver', 'episode_id')}
        return Batch(cols, names['vehicle'][inverse], names['driver'][inverse],
                     names['episode_id'][inverse])


def _check_filters(start_ns, end_ns) -> None:
    for name, value in (('start_ns', start_ns), ('end_ns', end_ns)):
        if value is not None and not _is_int(value):
            raise StorageError(f'{name}: expected integer nanoseconds or None, got {value!r}')


def check_summary(summary: EpisodeSummaryRecord) -> None:
    """Raise StorageError unless ``summary`` is an EpisodeSummaryRecord that can be stored."""
    if not isinstance(summary, EpisodeSummaryRecord):
        raise StorageError(f'end_episode: expected an EpisodeSummaryRecord, got '
                           f'{type(summary).__name__}')
    for name in ('vehicle_id', 'driver_id', 'episode_id'):
        if not isinstance(getattr(summary, name), str) or not getattr(summary, name):
            raise StorageError(f'end_episode: summary.{name} must be a non-empty string')
    for name in ('episode_start_ns', 'episode_end_ns', 'step_count', 'first_policy_version',
                 'last_policy_version', 'timed_out_steps'):
        value = getattr(summary, name)
        if not _is_int(value) or not 0 <= value < 2 ** 63:
            raise StorageError(f'end_episode: summary.{name} must be an integer >= 0, '
                               f'got {value!r}')
    for name in ('total_reward', 'energy_wh', 'distance_km'):
        value = getattr(summary, name)
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise StorageError(f'end_episode: summary.{name} must be a finite number, '
                               f'got {value!r}')


class RecordsSource:
    """
    Uniform batches of the stored transitions that match filters (a TransitionSource).

    A live view of its pool: transitions appended later are included, discarded
    or retired ones dropped, at the next ``len`` or ``sample``.
    """

    def __init__(self, pool: 'TransitionPool', vehicle_id=None, driver_id=None, start_ns=None,
                 end_ns=None, include_timed_out: bool = False):
        _check_filters(start_ns, end_ns)
        self._pool = pool
        self.filters = {'vehicle_id': vehicle_id, 'driver_id': driver_id, 'start_ns': start_ns,
                        'end_ns': end_ns, 'include_timed_out': bool(include_timed_out)}
        self._rows = np.zeros(0, np.int64)
        self._epoch = None
        self._seen = 0

    def rows(self) -> np.ndarray:
        """Return the matching rows of the pool's index (refreshed when it changed)."""
        index = self._pool._index
        f = self.filters
        if self._epoch != index.epoch or self._seen > index.size:
            pairs = index.matching_pairs(f['vehicle_id'], f['driver_id'])
            self._rows = index.select(index.candidate_rows(pairs), f['start_ns'], f['end_ns'],
                                      f['include_timed_out'])
            self._epoch, self._seen = index.epoch, index.size
        elif self._seen < index.size:
            pairs = index.matching_pairs(f['vehicle_id'], f['driver_id'])
            new = index.select(index.candidate_rows(pairs, self._seen), f['start_ns'],
                               f['end_ns'], f['include_timed_out'])
            if len(new):
                self._rows = np.concatenate([self._rows, new])
            self._seen = index.size
        return self._rows

    def __len__(self) -> int:
        """Return how many transitions match."""
        with self._pool._lock:
            return len(self.rows())

    def sample(self, batch_size: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Return ``batch_size`` matching transitions drawn uniformly with replacement."""
        with self._pool._lock:
            rows = self.rows()
            if not len(rows):
                raise ValueError(f'no stored transitions match {self.filters}')
            picks = rows[rng.integers(0, len(rows), size=int(batch_size))]
            cols = self._pool._index.cols
            return {'state': cols['state'][picks], 'action': cols['action'][picks],
                    'reward': cols['reward'][picks].astype(np.float32),
                    'next_state': cols['next_state'][picks],
                    'done': cols['done'][picks].astype(np.float32)}


class EpisodesSource:
    """
    Padded batches of the valid, complete episodes that match filters (an EpisodeSource).

    Episodes are drawn uniformly with replacement (in order of episode start, so
    a seed gives the same batch after a reopen) and padded as
    ``EpisodeBuffer.sample`` pads them; every step of an episode is in it,
    timed-out ones included, so that the sequence stays contiguous.
    """

    def __init__(self, pool: 'TransitionPool', vehicle_id=None, driver_id=None, start_ns=None,
                 end_ns=None):
        _check_filters(start_ns, end_ns)
        self._pool = pool
        self.filters = {'vehicle_id': vehicle_id, 'driver_id': driver_id, 'start_ns': start_ns,
                        'end_ns': end_ns}
        self._episodes: List[Episode] = []
        self._epoch = None

    def episodes(self) -> List[Episode]:
        """Return the matching episode entries, refreshed when the pool changed."""
        index = self._pool._index
        if self._epoch != index.episode_epoch:
            self._episodes = sorted(
                (e for e in index.episodes.values()
                 if e.status == VALID and e.count and _episode_matches(e, **self.filters)),
                key=lambda e: (e.start_ns, e.vehicle, e.driver))
            self._epoch = index.episode_epoch
        return self._episodes

    def __len__(self) -> int:
        """Return how many episodes match."""
        with self._pool._lock:
            return len(self.episodes())

    def sample(self, batch_size: int, rng: np.random.Generator,
               max_length: Optional[int] = None,
               pad_to_multiple: int = 1) -> Dict[str, np.ndarray]:
        """Return ``batch_size`` episodes drawn uniformly, padded (EPISODE_BATCH_KEYS)."""
        with self._pool._lock:
            episodes = self.episodes()
            if not episodes:
                raise ValueError(f'no stored episodes match {self.filters}')
            if batch_size < 1 or pad_to_multiple < 1 or (max_length is not None
                                                         and max_length < 1):
                raise ValueError('batch_size, pad_to_multiple and max_length must be >= 1')
            cols = self._pool._index.cols
            picks = rng.integers(0, len(episodes), size=batch_size)
            windows = []
            for pick in picks:
                order = episodes[pick].ordered_rows()
                length, start = len(order), 0
                if max_length is not None and length > max_length:
                    start = int(rng.integers(0, length - max_length + 1))
                    length = max_length
                rows = order[max(start - 1, 0):start + length]   # with the action before
                window = {'state': cols['state'][rows], 'action': cols['action'][rows],
                          'reward': cols['reward'][rows].astype(np.float32),
                          'next_state': cols['next_state'][rows],
                          'done': cols['done'][rows].astype(np.float32)}
                windows.append((window, 1 if start > 0 else 0, length))
            longest = max(length for _, _, length in windows)
            return _pad_windows(windows, -(-longest // pad_to_multiple) * pad_to_multiple)


def _episode_matches(episode: Episode, vehicle_id=None, driver_id=None, start_ns=None,
                     end_ns=None) -> bool:
    return ((vehicle_id is None or episode.vehicle == vehicle_id)
            and (driver_id is None or episode.driver == driver_id)
            and (start_ns is None or episode.start_ns >= start_ns)
            and (end_ns is None or episode.start_ns < end_ns))


class TransitionPool:
    """
    Durable storage of transitions and episode summaries, sampled from memory.

    The interface both backends implement; see the package docstring for the
    layout, durability and idempotency. Thread-safe (one lock per pool).
    """

    backend = ''

    def __init__(self, config: PoolConfig):
        if not isinstance(config, PoolConfig):
            raise StorageError(f'expected a PoolConfig, got {type(config).__name__}')
        self.config = config
        self._index = Index()
        self._lock = threading.RLock()
        self._closed = False
        self._duplicates = 0
        self._discarded_ignored = 0
        self._since_compaction = 0
        self._sources: Dict[tuple, Any] = {}

    # -- backend hooks -------------------------------------------------------
    def _persist_records(self, batch: Batch) -> Optional[np.ndarray]:
        """Store new transitions durably; return a mask of those stored (None: all)."""
        raise NotImplementedError

    def _persist_summary(self, summary: EpisodeSummaryRecord) -> None:
        """Store a summary durably (for valid False, the episode's tombstone)."""
        raise NotImplementedError

    def _remove_episodes(self, episodes: Sequence[Episode]) -> None:
        """Remove whole episodes from storage, durably (retention)."""
        raise NotImplementedError

    def _bytes_on_disk(self) -> int:
        raise NotImplementedError

    def _compact(self) -> None:
        """Fold what was appended since the last compaction into the main store."""

    def _flush(self) -> None:
        """Make everything appended durable (appends already are)."""

    def _release(self) -> None:
        """Release files and connections (after the final compaction)."""

    def _extra_stats(self) -> Dict[str, Any]:
        return {}

    # -- writing ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f'the {self.backend} pool is closed')

    def append(self, records: Sequence[TransitionRecord]) -> int:
        """
        Store transitions durably; return how many were new.

        Durable when it returns. A key (vehicle, driver, episode start, step)
        already stored is ignored and counted in ``stats()['duplicates_ignored']``;
        transitions of a discarded episode are ignored too. Every record must
        have the state and action sizes of the pool's first record, else
        StorageError and nothing of the call is stored.
        """
        with self._lock:
            self._check_open()
            records = list(records)
            if not records:
                return 0
            batch = Batch.from_records(records)
            dims = self._index.dims
            if dims is not None and batch.dims != dims:
                raise StorageError(f'append: state/action sizes {batch.dims} differ from the '
                                   f"pool's {dims} (set by its first record)")
            new, duplicates, discarded = self._index.plan(batch)
            self._duplicates += duplicates
            self._discarded_ignored += discarded
            if not new.any():
                return 0
            batch = batch.take(np.flatnonzero(new))
            stored = self._persist_records(batch)
            if stored is not None:
                self._duplicates += int((~stored).sum())
                batch = batch.take(np.flatnonzero(stored))
            self._index.insert(batch)
            self._since_compaction += len(batch)
            if self.config.compact_every and self._since_compaction >= self.config.compact_every:
                self.compact()
            return len(batch)

    def end_episode(self, summary: EpisodeSummaryRecord) -> None:
        """
        End an episode durably with its summary.

        valid True: the episode is complete; its transitions become available to
        episode sampling. valid False: its transitions are removed (now and if
        they arrive later) and never sampled again; the summary is kept.
        """
        with self._lock:
            self._check_open()
            check_summary(summary)
            existing = self._index.episodes.get(summary.key)
            if summary.valid and existing is not None and existing.status == DISCARDED:
                LOGGER.warning('episode %s was discarded; its valid end is ignored', summary.key)
                return
            self._persist_summary(summary)
            self._index.end_episode(summary)

    # -- reading ---------------------------------------------------------------
    def records_source(self, vehicle_id: Optional[str] = None, driver_id: Optional[str] = None,
                       start_ns: Optional[int] = None, end_ns: Optional[int] = None,
                       include_timed_out: bool = False) -> RecordsSource:
        """Return a live TransitionSource of the matching transitions (see RecordsSource)."""
        key = ('records', vehicle_id, driver_id, start_ns, end_ns, bool(include_timed_out))
        with self._lock:
            source = self._sources.get(key)
            if source is None:
                source = RecordsSource(self, vehicle_id, driver_id, start_ns, end_ns,
                                       include_timed_out)
                self._remember(key, source)
            return source

    def episodes_source(self, vehicle_id: Optional[str] = None, driver_id: Optional[str] = None,
                        start_ns: Optional[int] = None,
                        end_ns: Optional[int] = None) -> EpisodesSource:
        """Return a live EpisodeSource of the matching valid episodes (see EpisodesSource)."""
        key = ('episodes', vehicle_id, driver_id, start_ns, end_ns)
        with self._lock:
            source = self._sources.get(key)
            if source is None:
                source = EpisodesSource(self, vehicle_id, driver_id, start_ns, end_ns)
                self._remember(key, source)
            return source

    def _remember(self, key: tuple, source) -> None:
        if len(self._sources) >= 32:
            self._sources.pop(next(iter(self._sources)))
        self._sources[key] = source

    def get_records(self, batch_size: int, rng: np.random.Generator,
                    **filters) -> List[TransitionRecord]:
        """Return ``batch_size`` matching transitions drawn like ``records_source``."""
        with self._lock:
            rows = self.records_source(**filters).rows()
            if not len(rows):
                return []
            return [self._index.record(row)
                    for row in rows[rng.integers(0, len(rows), size=int(batch_size))]]

    def get_episodes(self, batch_size: int, rng: np.random.Generator, **filters
                     ) -> List[Tuple[EpisodeSummaryRecord, List[TransitionRecord]]]:
        """Return ``batch_size`` (summary, transitions in step order) of matching episodes."""
        with self._lock:
            episodes = self.episodes_source(**filters).episodes()
            if not episodes:
                return []
            picks = rng.integers(0, len(episodes), size=int(batch_size))
            return [(episodes[i].summary,
                     [self._index.record(row) for row in episodes[i].ordered_rows()])
                    for i in picks]

    def read_records(self, vehicle_id: Optional[str] = None, driver_id: Optional[str] = None,
                     start_ns: Optional[int] = None, end_ns: Optional[int] = None,
                     include_timed_out: bool = True) -> List[TransitionRecord]:
        """Return every matching stored transition, in key order (for export and checks)."""
        with self._lock:
            _check_filters(start_ns, end_ns)
            index = self._index
            rows = index.select(index.candidate_rows(index.matching_pairs(vehicle_id, driver_id)),
                                start_ns, end_ns, include_timed_out)
            records = [index.record(row) for row in rows]
            return sorted(records, key=lambda r: r.key)

    def summaries(self, vehicle_id: Optional[str] = None, driver_id: Optional[str] = None,
                  start_ns: Optional[int] = None, end_ns: Optional[int] = None
                  ) -> List[EpisodeSummaryRecord]:
        """Return the stored summaries, valid and discarded, ordered by episode start."""
        with self._lock:
            found = [e.summary for e in self._index.episodes.values() if e.summary is not None
                     and _episode_matches(e, vehicle_id, driver_id, start_ns, end_ns)]
            return sorted(found, key=lambda s: (s.episode_start_ns, s.vehicle_id, s.driver_id))

    def stats(self, vehicle_id: Optional[str] = None, driver_id: Optional[str] = None,
              start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> Dict[str, Any]:
        """
        Return figures about the stored data (filters as ``records_source``).

        records, timed_out, oldest_ns and newest_ns (state stamps) count the
        matching stored transitions; episodes_* the matching episodes by
        status; vehicles and drivers the distinct ids among them;
        duplicates_ignored counts since the pool was opened; bytes_on_disk is
        the whole pool's.
        """
        with self._lock:
            _check_filters(start_ns, end_ns)
            index = self._index
            rows = index.select(index.candidate_rows(index.matching_pairs(vehicle_id, driver_id)),
                                start_ns, end_ns)
            stamps = index.cols['state_stamp_ns'][rows] if len(rows) else None
            counts = {RUNNING: 0, VALID: 0, DISCARDED: 0}
            vehicles, drivers = set(), set()
            filters = {'vehicle_id': vehicle_id, 'driver_id': driver_id, 'start_ns': start_ns,
                       'end_ns': end_ns}
            for episode in index.episodes.values():
                if _episode_matches(episode, **filters):
                    counts[episode.status] += 1
                    vehicles.add(episode.vehicle)
                    drivers.add(episode.driver)
            result = {
                'backend': self.backend,
                'records': int(len(rows)),
                'episodes_valid': counts[VALID],
                'episodes_discarded': counts[DISCARDED],
                'episodes_running': counts[RUNNING],
                'timed_out': int(index.cols['timed_out'][rows].sum()) if len(rows) else 0,
                'vehicles': len(vehicles),
                'drivers': len(drivers),
                'duplicates_ignored': self._duplicates,
                'discarded_records_ignored': self._discarded_ignored,
                'bytes_on_disk': int(self._bytes_on_disk()),
                'oldest_ns': int(stamps.min()) if stamps is not None else None,
                'newest_ns': int(stamps.max()) if stamps is not None else None,
                'state_size': index.dims[0] if index.dims else None,
                'action_size': index.dims[1] if index.dims else None,
            }
            result.update(self._extra_stats())
            return result

    # -- maintenance -----------------------------------------------------------
    def apply_retention(self, now_ns: Optional[int] = None) -> Dict[str, int]:
        """
        Drop whole oldest episodes (by episode start) to honour max_bytes and max_age_s.

        An episode that started more than ``max_age_s`` before ``now_ns``
        (default: now) is dropped; then the oldest episodes go until
        ``bytes_on_disk <= max_bytes``. Returns {'episodes': n, 'records': n}
        removed. Called automatically after each compaction.
        """
        removed = {'episodes': 0, 'records': 0}
        with self._lock:
            self._check_open()
            config = self.config
            if not config.max_bytes and not config.max_age_s:
                return removed
            self._prepare_retention()
            now_ns = time.time_ns() if now_ns is None else int(now_ns)
            ordered = sorted(self._index.episodes.values(),
                             key=lambda e: (e.start_ns, e.vehicle, e.driver))
            if config.max_age_s:
                cutoff = now_ns - int(round(config.max_age_s * NS_PER_S))
                old = [e for e in ordered if e.start_ns < cutoff]
                ordered = ordered[len(old):]
                self._drop(old, removed)
            for _ in range(64):
                if not config.max_bytes or not ordered:
                    break
                size = self._bytes_on_disk()
                if size <= config.max_bytes:
                    break
                per_record = size / max(1, self._index.live)
                excess, picked = size - config.max_bytes, 0
                while picked < len(ordered) and excess > 0:
                    excess -= max(1, ordered[picked].count) * per_record
                    picked += 1
                self._drop(ordered[:picked], removed)
                ordered = ordered[picked:]
            if removed['episodes']:
                LOGGER.info('retention removed %d episodes (%d transitions)',
                            removed['episodes'], removed['records'])
            return removed

    def _prepare_retention(self) -> None:
        """Bring storage to a state where episodes can be removed (parquet: fold the log)."""

    def _drop(self, episodes: List[Episode], removed: Dict[str, int]) -> None:
        if not episodes:
            return
        self._remove_episodes(episodes)
        removed['records'] += self._index.remove(episodes)
        removed['episodes'] += len(episodes)

    def flush(self) -> None:
        """Make sure everything appended is durable (append already guarantees it)."""
        with self._lock:
            self._check_open()
            self._flush()

    def compact(self) -> None:
        """Fold recent appends into the main store, then apply retention."""
        with self._lock:
            self._check_open()
            self._compact()
            self._since_compaction = 0
            self.apply_retention()

    def close(self) -> None:
        """Compact and release the storage; calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            try:
                self.compact()
            finally:
                self._closed = True
                self._release()

    @property
    def closed(self) -> bool:
        """Return True once ``close`` was called."""
        return self._closed

    def __enter__(self) -> 'TransitionPool':
        """Return the pool (``with open_pool(config) as pool``)."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the pool."""
        self.close()

    def __len__(self) -> int:
        """Return the number of stored transitions."""
        return self._index.live
