"""
The embedded pool: hive-partitioned Parquet files plus a durable append log.

Layout under ``root``::

    log/<segment>.tlog                   transitions, one CRC-checked frame per append
    log/<segment>.episodes.tlog          episode ends (summaries; valid False: tombstones)
    records/vehicle_id=<v>/driver_id=<d>/part-<uuid>.c<crc32>.parquet
    episodes/vehicle_id=<v>/driver_id=<d>/part-<uuid>.c<crc32>.parquet
    quarantine/<utc>-<path>              corrupt files, moved aside, never deleted
    .lock                                one process at a time (flock, with the root itself)

Each ``append`` and ``end_episode`` writes one frame to the current log segment
(``log_frames``: Arrow record batches, each frame with a header CRC and a
payload CRC), then flushes and ``fsync``s it before returning. Opening reads
the Parquet files, then replays the log segments in order.

Integrity: every Parquet part is written with page checksums and carries the
CRC-32 of the whole file in its name; opening checks both. A log segment that
ends inside its last frame was interrupted in the middle of a write (never
acknowledged): that frame is dropped with a warning and counted
(``stats()['log_truncated_batches']``). Anything else that does not check (a
CRC mismatch, garbage, a payload that is not what it should be) is corruption:
the good frames are kept, the file is moved to ``quarantine/`` (never deleted),
counted (``quarantined_files``, ``corrupt_frames``) and logged as an error, and
the pool compacts at once so the data it kept is durable again. Compaction
therefore only ever deletes log segments that read clean.

Compaction writes the appended transitions and changed summaries as new
Parquet parts (temp file, fsync, ``os.replace``, fsync of the directory) and
only then deletes the folded log segments; a partition with discarded or
retired rows, or too many parts, is rewritten whole. Replaying a log whose
records already reached Parquet (a crash during compaction) stores nothing
twice: keys are deduplicated on load.

One writer at a time: the pool holds an exclusive ``flock`` on the root
directory itself (and on ``.lock``), so deleting the lock file lets no second
writer in.

Every file carries the schema metadata ``tspace_ros.schema_version`` and
``tspace_ros.observation_spec`` (the pool's spec as JSON); a file of another
schema version is refused with a StorageError. Vehicle and driver ids are
percent-encoded in directory names (anything outside ``[A-Za-z0-9_.-]``).
Parts and segments of earlier versions (``part-<uuid>.parquet``, ``.arrows``
segments) are still read, without the whole-file check.
"""

import fcntl
import json
import logging
import os
import pathlib
import re
import shutil
import time
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple
import urllib.parse
import uuid
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tspace_ros.episodes.records import EpisodeSummaryRecord
from tspace_ros.storage import log_frames
from tspace_ros.storage.pool import (
    Batch, DISCARDED, Episode, PoolConfig, StorageError, TransitionPool)

LOGGER = logging.getLogger('tspace_ros.storage.parquet')

SCHEMA_VERSION = 1
VERSION_KEY = 'tspace_ros.schema_version'
SPEC_KEY = 'tspace_ros.observation_spec'
TIMESTAMP = pa.timestamp('ns', tz='UTC')
MAX_PARTS = 8               # parts per partition before a compaction merges them
_SAFE = re.compile(r'[A-Za-z0-9_.\-]')
_SEGMENT = re.compile(r'^(\d{10})(\.episodes)?\.(tlog|arrows)$')
_PART_CRC = re.compile(r'\.c([0-9a-f]{8})\.parquet$')
READ_CHUNK = 1 << 20

# Columns whose name differs between the Batch (ns integers) and the files (timestamps).
_STAMPS = {'episode_start_ns': 'episode_start', 'state_stamp_ns': 'state_stamp',
           'next_state_stamp_ns': 'next_state_stamp'}


def escape_id(value: str) -> str:
    """Return an id for a directory name: anything outside [A-Za-z0-9_.-] percent-encoded."""
    return ''.join(c if _SAFE.fullmatch(c) else ''.join(f'%{b:02X}' for b in c.encode())
                   for c in value)


def _metadata(spec_json: str) -> Dict[str, str]:
    return {VERSION_KEY: str(SCHEMA_VERSION), SPEC_KEY: spec_json}


def records_schema(state_size: int, action_size: int, spec_json: str = '{}') -> pa.Schema:
    """Return the schema of the transition files (vector sizes fixed per pool)."""
    return pa.schema([
        pa.field('vehicle_id', pa.string(), nullable=False),
        pa.field('driver_id', pa.string(), nullable=False),
        pa.field('episode_id', pa.string(), nullable=False),
        pa.field('episode_start', TIMESTAMP, nullable=False),
        pa.field('step_index', pa.uint64(), nullable=False),
        pa.field('state', pa.list_(pa.float32(), state_size), nullable=False),
        pa.field('next_state', pa.list_(pa.float32(), state_size), nullable=False),
        pa.field('action', pa.list_(pa.float32(), action_size), nullable=False),
        pa.field('action_row_start', pa.int64(), nullable=False),
        pa.field('action_row_count', pa.int64(), nullable=False),
        pa.field('reward', pa.float64(), nullable=False),
        pa.field('energy_wh', pa.float64(), nullable=False),
        pa.field('done', pa.bool_(), nullable=False),
        pa.field('timed_out', pa.bool_(), nullable=False),
        pa.field('policy_version', pa.int64(), nullable=False),
        pa.field('state_stamp', TIMESTAMP, nullable=False),
        pa.field('next_state_stamp', TIMESTAMP, nullable=False),
    ], metadata=_metadata(spec_json))


def episodes_schema(spec_json: str = '{}') -> pa.Schema:
    """Return the schema of the episode summary files (and of the log's episode ends)."""
    return pa.schema([
        pa.field('vehicle_id', pa.string(), nullable=False),
        pa.field('driver_id', pa.string(), nullable=False),
        pa.field('episode_id', pa.string(), nullable=False),
        pa.field('episode_start', TIMESTAMP, nullable=False),
        pa.field('episode_end', TIMESTAMP, nullable=False),
        pa.field('step_count', pa.uint64(), nullable=False),
        pa.field('total_reward', pa.float64(), nullable=False),
        pa.field('energy_wh', pa.float64(), nullable=False),
        pa.field('distance_km', pa.float64(), nullable=False),
        pa.field('valid', pa.bool_(), nullable=False),
        pa.field('first_policy_version', pa.int64(), nullable=False),
        pa.field('last_policy_version', pa.int64(), nullable=False),
        pa.field('timed_out_steps', pa.int64(), nullable=False),
    ], metadata=_metadata(spec_json))


def _vectors(values: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def records_batch(batch: Batch, schema: pa.Schema) -> pa.RecordBatch:
    """Return transitions as an Arrow record batch of ``schema``."""
    cols = batch.cols
    arrays = []
    for field in schema:
        name = field.name
        if name in ('vehicle_id', 'driver_id', 'episode_id'):
            values = {'vehicle_id': batch.vehicle, 'driver_id': batch.driver,
                      'episode_id': batch.episode_id}[name]
            arrays.append(pa.array(values.tolist(), pa.string()))
        elif name in ('state', 'next_state', 'action'):
            arrays.append(_vectors(cols[name]))
        elif field.type == TIMESTAMP:
            source = {v: k for k, v in _STAMPS.items()}[name]
            arrays.append(pa.array(cols[source], pa.int64()).view(TIMESTAMP))
        elif name == 'step_index':
            arrays.append(pa.array(cols[name].astype(np.uint64), pa.uint64()))
        else:
            arrays.append(pa.array(cols[name], field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _ints(column) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_timestamp(column.type):
        column = column.view(pa.int64())
    return column.to_numpy(zero_copy_only=False).astype(np.int64)


def batch_from_table(table, where: str) -> Batch:
    """Return the transitions of an Arrow table or record batch of ``records_schema``."""
    n = table.num_rows
    cols = {}
    for name in ('state', 'next_state', 'action'):
        column = table.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if not pa.types.is_fixed_size_list(column.type):
            raise StorageError(f'{where}: column {name} is {column.type}, expected a '
                               'fixed-size list of float32')
        width = column.type.list_size
        cols[name] = column.flatten().to_numpy(zero_copy_only=False).astype(
            np.float32, copy=False).reshape(n, width)
    for name in ('episode_start_ns', 'state_stamp_ns', 'next_state_stamp_ns'):
        cols[name] = _ints(table.column(_STAMPS[name]))
    for name in ('step_index', 'action_row_start', 'action_row_count', 'policy_version'):
        cols[name] = _ints(table.column(name))
    for name, dtype in (('reward', np.float64), ('energy_wh', np.float64), ('done', np.bool_),
                        ('timed_out', np.bool_)):
        column = table.column(name)
        cols[name] = np.asarray(column.to_numpy(zero_copy_only=False), dtype)
    ids = {}
    for name in ('vehicle_id', 'driver_id', 'episode_id'):
        column = table.column(name)
        unique = pc.unique(column)
        if len(unique) == 1:
            ids[name] = np.full(n, unique[0].as_py(), object)
        else:
            ids[name] = np.array(column.to_pylist(), object)
    return Batch(cols, ids['vehicle_id'], ids['driver_id'], ids['episode_id'])


def summaries_table(summaries: Sequence[EpisodeSummaryRecord], schema: pa.Schema) -> pa.Table:
    """Return episode summaries as an Arrow table of ``episodes_schema``."""
    columns = {field.name: [] for field in schema}
    for s in summaries:
        columns['vehicle_id'].append(s.vehicle_id)
        columns['driver_id'].append(s.driver_id)
        columns['episode_id'].append(s.episode_id)
        columns['episode_start'].append(int(s.episode_start_ns))
        columns['episode_end'].append(int(s.episode_end_ns))
        columns['step_count'].append(int(s.step_count))
        columns['total_reward'].append(float(s.total_reward))
        columns['energy_wh'].append(float(s.energy_wh))
        columns['distance_km'].append(float(s.distance_km))
        columns['valid'].append(bool(s.valid))
        columns['first_policy_version'].append(int(s.first_policy_version))
        columns['last_policy_version'].append(int(s.last_policy_version))
        columns['timed_out_steps'].append(int(s.timed_out_steps))
    arrays = []
    for field in schema:
        if field.type == TIMESTAMP:
            arrays.append(pa.array(columns[field.name], pa.int64()).view(TIMESTAMP))
        else:
            arrays.append(pa.array(columns[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def summaries_from_table(table) -> List[EpisodeSummaryRecord]:
    """Return the episode summaries of an Arrow table of ``episodes_schema``."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        columns[name] = (_ints(column).tolist() if pa.types.is_timestamp(column.type)
                         else column.to_pylist())
    return [EpisodeSummaryRecord(
        vehicle_id=columns['vehicle_id'][i], driver_id=columns['driver_id'][i],
        episode_id=columns['episode_id'][i], episode_start_ns=columns['episode_start'][i],
        episode_end_ns=columns['episode_end'][i], step_count=columns['step_count'][i],
        total_reward=columns['total_reward'][i], energy_wh=columns['energy_wh'][i],
        distance_km=columns['distance_km'][i], valid=columns['valid'][i],
        first_policy_version=columns['first_policy_version'][i],
        last_policy_version=columns['last_policy_version'][i],
        timed_out_steps=columns['timed_out_steps'][i]) for i in range(table.num_rows)]


def check_version(schema: pa.Schema, where: str) -> None:
    """Raise StorageError unless the schema metadata names this schema version."""
    metadata = schema.metadata or {}
    found = metadata.get(VERSION_KEY.encode())
    if found is None:
        raise StorageError(f'{where}: no {VERSION_KEY} in the schema metadata; expected '
                           f'version {SCHEMA_VERSION} (not a tspace_ros pool file?)')
    if found.decode() != str(SCHEMA_VERSION):
        raise StorageError(f'{where}: schema version {found.decode()} differs from the '
                           f'version this code reads ({SCHEMA_VERSION}); convert the pool '
                           'or open it with a matching tspace_ros')


def _file_crc32(path: pathlib.Path) -> int:
    """Return the CRC-32 of a whole file, read in chunks."""
    crc = 0
    with open(path, 'rb') as source:
        for chunk in iter(lambda: source.read(READ_CHUNK), b''):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LogStream:
    """One segment of the append log: a CRC-checked frame per write, fsync'd."""

    def __init__(self, path: pathlib.Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self._file = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._file is None:
            self._file = open(self.path, 'xb')
            self._file.write(log_frames.encode_schema(self.schema))
            _fsync_dir(self.path.parent)
        self._file.write(log_frames.encode_batch(batch))
        self._file.flush()
        os.fsync(self._file.fileno())

    def fsync(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self.fsync()
            self._file.close()
        self._file = None


def read_stream(path: pathlib.Path) -> Tuple[List[pa.RecordBatch], bool]:
    """
    Return (batches, truncated) of an IPC stream file of the log (``.arrows``, earlier versions).

    A batch that cannot be read whole ends the stream: it and anything after
    it are dropped and ``truncated`` is True. StorageError for another schema
    version.
    """
    if path.stat().st_size == 0:
        return [], False
    with pa.OSFile(str(path), 'rb') as source:
        data = source.read_buffer()
    try:
        reader = pa.ipc.open_stream(data)
    except (pa.ArrowException, OSError):
        return [], True
    check_version(reader.schema, str(path))
    batches = []
    while True:
        try:
            batch = reader.read_next_batch()
            batch.validate(full=True)
        except StopIteration:
            return batches, False
        except (pa.ArrowException, OSError):
            return batches, True
        batches.append(batch)


class ParquetPool(TransitionPool):
    """The embedded transition pool (see the module docstring for layout and durability)."""

    backend = 'parquet'

    def __init__(self, config: PoolConfig):
        super().__init__(config)
        self.root = self._root_path(config.root)
        self._spec_json = config.spec_json()
        self._episodes_schema = episodes_schema(self._spec_json)
        self._records_schema: Optional[pa.Schema] = None
        self._parts: Dict[int, List[pathlib.Path]] = {}          # pair code -> record parts
        self._episode_parts: Dict[Tuple[str, str], List[pathlib.Path]] = {}
        self._dirty: Set[int] = set()               # pairs with dead rows in their parts
        self._summaries_changed: Set[Tuple[str, str]] = set()
        self._log_truncated = 0
        self._records_log: Optional[_LogStream] = None
        self._episodes_log: Optional[_LogStream] = None
        self._segment: Optional[str] = None
        self._lock_file = None
        self._root_fd: Optional[int] = None
        self._quarantined: List[str] = []
        self._corrupt_frames = 0
        self._open_root()
        try:
            self._load()
        except BaseException:
            self._release()
            raise
        numbers = self._segment_numbers()
        self._next_segment = numbers[-1] + 1 if numbers else 1
        if self._quarantined:
            # What was kept of the quarantined files lives only in memory now: make it
            # durable at once (compaction deletes only segments that read clean).
            self._compact()

    # -- where the files are (the S3 pool overrides these) -------------------------
    def _root_path(self, root: str):
        return pathlib.Path(root)

    def _open_root(self) -> None:
        """Create the root's folders and take the one-writer lock."""
        try:
            for sub in ('records', 'episodes', 'log'):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            self._lock_file = open(self.root / '.lock', 'a+')
        except OSError as err:
            self._release()
            raise StorageError(f'storage root {self.root}: cannot create the pool '
                               f'({err.strerror})') from err
        try:
            # The root directory itself is the lock (it cannot be deleted while it holds
            # the pool); .lock too, for tools that look for it.
            fcntl.flock(self._root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._release()
            raise StorageError(f'storage root {self.root}: in use by another process '
                               f'(the pool is locked)') from err

    def _read_bytes(self, path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as err:
            raise StorageError(f'{path}: cannot read it ({err.strerror})') from err

    def _part_source(self, path, with_crc: bool):
        """Return (what pq.ParquetFile reads, the whole file's CRC-32 or None)."""
        return path, (_file_crc32(path) if with_crc else None)

    def _log_files_in_order(self):
        """Return [(segment path, replay function)] in the order they were written."""
        found = []
        for number in self._segment_numbers():
            for name, replay in ((f'{number:010d}.arrows', self._replay_records),
                                 (f'{number:010d}.episodes.arrows', self._replay_episodes),
                                 (f'{number:010d}.tlog', self._replay_records),
                                 (f'{number:010d}.episodes.tlog', self._replay_episodes)):
                path = self.root / 'log' / name
                if path.exists():
                    found.append((path, replay))
        return found

    def _log_files(self) -> list:
        """Return every log segment (what a compaction folds and then deletes)."""
        return [path for path in (self.root / 'log').iterdir() if _SEGMENT.match(path.name)]

    def _delete_log_files(self, segments) -> None:
        for path in segments:
            path.unlink(missing_ok=True)
        _fsync_dir(self.root / 'log')

    def _open_log(self, suffix: str, schema: pa.Schema) -> '_LogStream':
        return _LogStream(self._segment_path(suffix), schema)

    # -- opening ---------------------------------------------------------------
    def _partition_files(self, kind: str) -> Iterable[Tuple[Tuple[str, str], pathlib.Path]]:
        base = self.root / kind
        for vehicle_dir in sorted(base.iterdir()):
            if not vehicle_dir.is_dir() or not vehicle_dir.name.startswith('vehicle_id='):
                continue
            vehicle = urllib.parse.unquote(vehicle_dir.name[len('vehicle_id='):])
            for driver_dir in sorted(vehicle_dir.iterdir()):
                if not driver_dir.is_dir() or not driver_dir.name.startswith('driver_id='):
                    continue
                driver = urllib.parse.unquote(driver_dir.name[len('driver_id='):])
                for path in sorted(driver_dir.iterdir()):
                    if path.name.startswith('.') and path.name.endswith('.tmp'):
                        path.unlink()               # an unfinished write of a crashed run
                    elif path.suffix == '.parquet' and not path.name.startswith('.'):
                        yield (vehicle, driver), path

    def _quarantine(self, path: pathlib.Path, why: str) -> None:
        """Move a corrupt file to quarantine/ (never deleted), count it and say so."""
        directory = self.root / 'quarantine'
        relative = path.relative_to(self.root).as_posix().replace('/', '__')
        target = directory / f'{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}-{relative}'
        try:
            directory.mkdir(exist_ok=True)
            while target.exists():
                target = target.with_name(target.name + '_')
            shutil.move(str(path), str(target))
            _fsync_dir(directory)
            _fsync_dir(path.parent)
        except OSError as err:
            raise StorageError(f'{path} is corrupt ({why}) and cannot be moved to '
                               f'{directory} ({err})') from err
        self._quarantined.append(str(target))
        LOGGER.error('%s is corrupt (%s): moved to %s; the pool opens without what it '
                     'could not read', path, why, target)

    def _read_parquet(self, path: pathlib.Path) -> Optional[pa.Table]:
        """Return a part's table, or None after quarantining a corrupt one."""
        match = _PART_CRC.search(path.name)
        try:
            source, crc = self._part_source(path, match is not None)
        except OSError as err:
            raise StorageError(f'{path}: cannot read it ({err})') from err
        if match is not None and f'{crc:08x}' != match.group(1):
            self._quarantine(path, f'file CRC {crc:08x}, its name says {match.group(1)}')
            return None
        try:
            parquet = pq.ParquetFile(source, page_checksum_verification=True)
        except OSError as err:
            if not isinstance(source, pa.BufferReader):
                raise StorageError(f'{path}: cannot read it ({err})') from err
            # Read into memory already (S3): an OSError is a footer that does not parse.
            self._quarantine(path, f'not a readable Parquet file: {err}')
            return None
        except pa.ArrowException as err:
            self._quarantine(path, f'not a readable Parquet file: {err}')
            return None
        check_version(parquet.schema_arrow, str(path))
        try:
            table = parquet.read()
            table.validate(full=True)
        except (pa.ArrowException, OSError) as err:
            self._quarantine(path, f'unreadable: {err}')
            return None
        return table

    def _load(self) -> None:
        index = self._index
        for pair, path in list(self._partition_files('records')):
            table = self._read_parquet(path)
            if table is None:
                continue
            self._check_spec(table.schema, path)
            try:
                batch = batch_from_table(table, str(path))
            except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
                self._quarantine(path, f'not a transitions table: {err}')
                continue
            self._check_dims(batch, path)
            new, duplicates, _ = index.plan(batch)
            index.insert(batch.take(np.flatnonzero(new)), compacted=True)
            code = index.pair_code(*pair)
            self._parts.setdefault(code, []).append(path)
            if duplicates:              # a rewrite was interrupted: merge on next compaction
                self._dirty.add(code)
        for pair, path in list(self._partition_files('episodes')):
            table = self._read_parquet(path)
            if table is None:
                continue
            try:
                summaries = summaries_from_table(table)
            except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
                self._quarantine(path, f'not an episodes table: {err}')
                continue
            for summary in summaries:
                self._apply_summary(summary, changed=False)
            self._episode_parts.setdefault(pair, []).append(path)
        for path, replay in self._log_files_in_order():
            self._replay_segment(path, replay)
        self._since_compaction = int((index.column('alive')
                                      & ~index.column('compacted')).sum())

    def _replay_segment(self, path: pathlib.Path, replay) -> None:
        """Replay one log segment's good batches; quarantine it if anything is corrupt."""
        if path.suffix == '.arrows':
            batches, truncated = read_stream(path)
            problems = []
        else:
            data = self._read_bytes(path)
            expected = (self._episodes_schema if replay == self._replay_episodes
                        else self._records_schema)
            read = log_frames.read_segment(data, str(path), expected)
            if read.schema is not None:
                check_version(read.schema, str(path))
            batches, truncated, problems = read.batches, read.truncated, list(read.problems)
        good = []
        for batch in batches:
            try:
                check_version(batch.schema, str(path))
                replay(batch, path)
                good.append(batch)
            except StorageError:
                raise
            except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
                problems.append(f'{path}: a batch is not what this log holds: {err}')
        if truncated:
            self._log_truncated += 1
            LOGGER.warning('%s: dropped a truncated last batch (the writer was '
                           'interrupted); %d complete batches kept', path, len(good))
        if problems:
            self._corrupt_frames += len(problems)
            for problem in problems[:5]:
                LOGGER.error('%s', problem)
            self._quarantine(path, f'{len(problems)} corrupt frame(s); {len(good)} good '
                             'batches kept')

    def _replay_records(self, batch: pa.RecordBatch, path: pathlib.Path) -> None:
        self._check_spec(batch.schema, path)
        records = batch_from_table(batch, str(path))
        self._check_dims(records, path)
        new, _, _ = self._index.plan(records)
        self._index.insert(records.take(np.flatnonzero(new)), compacted=False)

    def _replay_episodes(self, batch: pa.RecordBatch, path: pathlib.Path) -> None:
        for summary in summaries_from_table(batch):
            self._apply_summary(summary, changed=True)

    def _check_dims(self, batch: Batch, path: pathlib.Path) -> None:
        dims = self._index.dims
        if dims is not None and len(batch) and batch.dims != dims:
            raise StorageError(f'{path}: state/action sizes {batch.dims} differ from the '
                               f'rest of the pool {dims}')

    def _check_spec(self, schema: pa.Schema, path: pathlib.Path) -> None:
        stored = (schema.metadata or {}).get(SPEC_KEY.encode(), b'').decode()
        if stored and stored != self._spec_json and not getattr(self, '_spec_warned', False):
            self._spec_warned = True
            LOGGER.warning('%s: stored observation spec %s differs from the configured one; '
                           'new files get the configured spec', path, stored)

    def _segment_numbers(self) -> List[int]:
        numbers = set()
        for path in (self.root / 'log').iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                numbers.add(int(match.group(1)))
        return sorted(numbers)

    def _apply_summary(self, summary: EpisodeSummaryRecord, changed: bool) -> None:
        index = self._index
        episode = index.episodes.get(summary.key)
        if episode is not None and episode.status == DISCARDED and summary.valid:
            return                          # a discard is final
        if (not summary.valid and episode is not None and episode.count
                and index.cols['compacted'][episode.rows.view()].any()):
            self._dirty.add(episode.pair)    # its rows are in Parquet parts: rewrite them
        index.end_episode(summary)
        if changed:
            self._summaries_changed.add((summary.vehicle_id, summary.driver_id))

    # -- writing ---------------------------------------------------------------
    def _segment_path(self, suffix: str) -> pathlib.Path:
        if self._segment is None:
            self._segment = f'{self._next_segment:010d}'
            self._next_segment += 1
        return self.root / 'log' / f'{self._segment}{suffix}'

    def _persist_records(self, batch: Batch) -> None:
        if self._records_log is None:
            if self._records_schema is None:
                self._records_schema = records_schema(*batch.dims, self._spec_json)
            self._records_log = self._open_log('.tlog', self._records_schema)
        try:
            self._records_log.write(records_batch(batch, self._records_schema))
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'cannot write the append log {self._records_log.path}: '
                               f'{err}') from err
        return None

    def _persist_summary(self, summary: EpisodeSummaryRecord) -> None:
        if self._episodes_log is None:
            self._episodes_log = self._open_log('.episodes.tlog', self._episodes_schema)
        table = summaries_table([summary], self._episodes_schema)
        try:
            self._episodes_log.write(table.to_batches()[0])
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'cannot write the append log {self._episodes_log.path}: '
                               f'{err}') from err
        index = self._index
        episode = index.episodes.get(summary.key)
        if (not summary.valid and episode is not None and episode.count
                and index.cols['compacted'][episode.rows.view()].any()):
            self._dirty.add(episode.pair)
        self._summaries_changed.add((summary.vehicle_id, summary.driver_id))

    def _flush(self) -> None:
        for stream in (self._records_log, self._episodes_log):
            if stream is not None:
                stream.fsync()

    def _close_log(self) -> None:
        for stream in (self._records_log, self._episodes_log):
            if stream is not None:
                stream.close()
        self._records_log = self._episodes_log = None
        self._segment = None

    # -- compaction and retention ------------------------------------------------
    def _partition_dir(self, kind: str, pair: Tuple[str, str]) -> pathlib.Path:
        return (self.root / kind / f'vehicle_id={escape_id(pair[0])}'
                / f'driver_id={escape_id(pair[1])}')

    def _write_parquet(self, kind: str, pair: Tuple[str, str], table: pa.Table
                       ) -> pathlib.Path:
        directory = self._partition_dir(kind, pair)
        directory.mkdir(parents=True, exist_ok=True)
        name = f'part-{uuid.uuid4().hex}'
        temporary = directory / f'.{name}.parquet.tmp'
        with open(temporary, 'wb') as sink:
            pq.write_table(table, sink, write_page_checksum=True)
            sink.flush()
            os.fsync(sink.fileno())
        final = directory / f'{name}.c{_file_crc32(temporary):08x}.parquet'
        os.replace(temporary, final)
        for path in (directory, directory.parent, directory.parent.parent):
            _fsync_dir(path)
        return final

    def _remove_files(self, paths: Sequence[pathlib.Path]) -> None:
        directories = set()
        for path in paths:
            path.unlink(missing_ok=True)
            directories.add(path.parent)
        for directory in directories:
            for path in (directory, directory.parent):
                try:
                    path.rmdir()            # only succeeds when empty
                except OSError:
                    pass
            if directory.exists():
                _fsync_dir(directory)

    def _pair_rows(self, code: int, only_new: bool, exclude: Set[int] = frozenset()
                   ) -> np.ndarray:
        index = self._index
        rows = index.pair_rows[code].view()
        rows = rows[index.cols['alive'][rows]]
        if only_new:
            rows = rows[~index.cols['compacted'][rows]]
        if exclude:
            rows = rows[~np.isin(index.cols['episode'][rows], list(exclude))]
        order = np.lexsort((index.cols['step_index'][rows], index.cols['episode_start_ns'][rows]))
        return rows[order]

    def _write_records(self, code: int, full: bool, exclude: Set[int] = frozenset()) -> None:
        index = self._index
        rows = self._pair_rows(code, only_new=not full, exclude=exclude)
        old = list(self._parts.get(code, [])) if full else []
        kept = [] if full else list(self._parts.get(code, []))
        if len(rows):
            if self._records_schema is None:
                self._records_schema = records_schema(*index.dims, self._spec_json)
            table = pa.Table.from_batches([records_batch(index.batch(rows),
                                                         self._records_schema)])
            kept.append(self._write_parquet('records', index.pair_names[code], table))
        self._remove_files(old)
        self._parts[code] = kept
        index.cols['compacted'][rows] = True

    def _write_summaries(self, pair: Tuple[str, str], exclude: Set[int] = frozenset()) -> None:
        summaries = sorted((e.summary for e in self._index.episodes.values()
                            if e.summary is not None and (e.vehicle, e.driver) == pair
                            and e.code not in exclude),
                           key=lambda s: s.episode_start_ns)
        old = self._episode_parts.get(pair, [])
        kept = []
        if summaries:
            table = summaries_table(summaries, self._episodes_schema)
            kept.append(self._write_parquet('episodes', pair, table))
        self._remove_files(old)
        self._episode_parts[pair] = kept

    def _compact(self) -> None:
        index = self._index
        self._close_log()
        segments = self._log_files()
        try:
            pending = np.flatnonzero(index.column('alive') & ~index.column('compacted'))
            codes = set(np.unique(index.column('pair')[pending]).tolist()) | self._dirty
            codes |= {code for code, parts in self._parts.items() if len(parts) >= MAX_PARTS}
            for code in sorted(codes):
                full = code in self._dirty or len(self._parts.get(code, [])) >= MAX_PARTS
                self._write_records(code, full)
                self._dirty.discard(code)
            for pair in sorted(self._summaries_changed):
                self._write_summaries(pair)
            self._summaries_changed.clear()
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'compaction of {self.root} failed ({err}); the append log '
                               'is kept') from err
        self._delete_log_files(segments)   # only now: everything in them is in durable parts

    def _prepare_retention(self) -> None:
        index = self._index
        if (self._dirty or self._summaries_changed or self._segment_numbers()
                or np.any(index.column('alive') & ~index.column('compacted'))):
            self._compact()

    def _remove_episodes(self, episodes: Sequence[Episode]) -> None:
        exclude = {e.code for e in episodes}
        try:
            for code in sorted({e.pair for e in episodes}):
                self._write_records(code, full=True, exclude=exclude)
            for pair in sorted({(e.vehicle, e.driver) for e in episodes}):
                self._write_summaries(pair, exclude=exclude)
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'retention in {self.root} failed: {err}') from err

    # -- figures and closing -------------------------------------------------------
    def _bytes_on_disk(self) -> int:
        total = 0
        for sub in ('records', 'episodes', 'log'):
            for directory, _, names in os.walk(self.root / sub):
                for name in names:
                    try:
                        total += os.stat(os.path.join(directory, name)).st_size
                    except FileNotFoundError:
                        pass
        return total

    def _extra_stats(self) -> Dict[str, object]:
        return {'root': str(self.root), 'log_truncated_batches': self._log_truncated,
                'quarantined_files': len(self._quarantined),
                'corrupt_frames': self._corrupt_frames,
                'last_quarantined': self._quarantined[-1] if self._quarantined else '-',
                'log_segments': len(self._segment_numbers()),
                'parquet_files': sum(len(p) for p in self._parts.values())
                + sum(len(p) for p in self._episode_parts.values()),
                'schema_version': SCHEMA_VERSION}

    def _release(self) -> None:
        try:
            self._close_log()
        finally:
            if self._lock_file is not None:
                self._lock_file.close()         # releases the flock
                self._lock_file = None
            if self._root_fd is not None:
                os.close(self._root_fd)         # releases the root's flock
                self._root_fd = None

    def spec(self) -> dict:
        """Return the observation specification written with the data."""
        return json.loads(self._spec_json)
