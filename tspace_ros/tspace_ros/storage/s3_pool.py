"""
The parquet pool on S3 object storage: ``PoolConfig(root='s3://bucket/prefix')``.

The layout under the prefix is the local pool's (``parquet_pool``), so Dask,
pyarrow datasets and a trainer read it alike, except the append log: S3 has no
append, so each ``append`` and ``end_episode`` is one object,
``log/<segment>.<sequence>.tlog`` (``.episodes.tlog`` for episode ends), a
schema frame and one CRC-checked batch frame, durable when the PUT returns.
Compaction folds them into Parquet parts as on disk and then deletes them.

Integrity as on disk: a part is written whole in one PUT (nothing is visible
under its name before it is complete, so no temporary file), with page
checksums and its CRC-32 in its name; opening reads each part once, checks the
CRC, then the pages. A corrupt object is moved (copy, delete) to
``quarantine/`` under the prefix, counted and logged, never deleted.

One writer per prefix: S3 has no lock, so the pool takes none. Give each
writer (each vehicle) its own prefix, ``s3://fleet/vehicles/<vehicle_id>``;
readers that must not write (trainers, analysis) read the Parquet parts
offline (``dask.dataframe.read_parquet`` or ``pyarrow.dataset``) rather than
opening the pool, which compacts on close. Two pools opened on one prefix
would not lose acknowledged transitions (keys are deduplicated on load), but
one's compaction can delete the other's log objects after folding only what it
had read.

Connection: the endpoint is ``PoolConfig.s3_endpoint``, else the environment
variable ``TSPACE_S3_ENDPOINT`` (``http://host:port``; empty: AWS itself); the
credentials come from the AWS-style INI file ``PoolConfig.s3_credentials_file``
(``[default]`` with ``aws_access_key_id`` and ``aws_secret_access_key``), else
the environment variables ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``;
never from the configuration itself.
"""

import configparser
import logging
import os
import pathlib
import re
import time
from typing import Iterable, List, Optional, Sequence, Tuple
import urllib.parse
import uuid
import zlib

import pyarrow as pa
from pyarrow import fs as pafs
import pyarrow.parquet as pq
from tspace_ros.storage import log_frames
from tspace_ros.storage.parquet_pool import ParquetPool
from tspace_ros.storage.pool import PoolConfig, StorageError

LOGGER = logging.getLogger('tspace_ros.storage.s3')

SCHEME = 's3://'
ENDPOINT_ENV = 'TSPACE_S3_ENDPOINT'
_LOG_OBJECT = re.compile(r'^(\d{10})\.(\d{8})(\.episodes)?\.tlog$')
_BUCKET = re.compile(r'^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$')


def is_s3_root(root: str) -> bool:
    """Return True for an ``s3://bucket/prefix`` pool root."""
    return isinstance(root, str) and root.startswith(SCHEME)


def split_root(root: str) -> Tuple[str, str]:
    """Return (bucket, prefix) of ``s3://bucket/prefix``; StorageError when malformed."""
    rest = root[len(SCHEME):].strip('/')
    bucket, _, prefix = rest.partition('/')
    if not _BUCKET.match(bucket):
        raise StorageError(f'storage config root: expected s3://<bucket>/<prefix> with a '
                           f'valid bucket name (3-63 of a-z 0-9 . -), got {root!r}')
    if any(part in ('', '.', '..') for part in prefix.split('/')) and prefix:
        raise StorageError(f'storage config root: empty, . or .. parts in {root!r}')
    return bucket, prefix


def check_endpoint(endpoint: str) -> None:
    """Raise StorageError unless ``endpoint`` is '' or http(s)://host[:port] (no path)."""
    if endpoint == '':
        return
    parsed = urllib.parse.urlsplit(endpoint)
    if (parsed.scheme not in ('http', 'https') or not parsed.hostname
            or parsed.path not in ('', '/') or parsed.query or parsed.username):
        raise StorageError(f'storage config s3_endpoint: expected http(s)://host:port, got '
                           f'{endpoint!r}')


def resolve_credentials(config: PoolConfig) -> Tuple[str, str]:
    """Return (access key, secret key): the secret file, else the AWS_* variables."""
    if config.s3_credentials_file:
        parser = configparser.ConfigParser()
        try:
            with open(config.s3_credentials_file, encoding='utf-8') as f:
                parser.read_file(f)
        except (OSError, configparser.Error) as err:
            raise StorageError(f'storage config s3_credentials_file: cannot read '
                               f'{config.s3_credentials_file} ({err})') from None
        section = parser['default'] if parser.has_section('default') else None
        if (section is None or not section.get('aws_access_key_id')
                or not section.get('aws_secret_access_key')):
            raise StorageError(f'{config.s3_credentials_file}: expected a [default] section '
                               'with aws_access_key_id and aws_secret_access_key')
        return section['aws_access_key_id'].strip(), section['aws_secret_access_key'].strip()
    key, secret = os.environ.get('AWS_ACCESS_KEY_ID'), os.environ.get('AWS_SECRET_ACCESS_KEY')
    if not key or not secret:
        raise StorageError('S3 pool: no credentials; set AWS_ACCESS_KEY_ID and '
                           'AWS_SECRET_ACCESS_KEY, or s3_credentials_file to an AWS-style '
                           'credentials file')
    return key, secret


def s3_filesystem(config: PoolConfig) -> pafs.S3FileSystem:
    """Return the ``pyarrow.fs.S3FileSystem`` that ``config`` names (endpoint, keys)."""
    endpoint = config.s3_endpoint or os.environ.get(ENDPOINT_ENV, '')
    check_endpoint(endpoint)
    key, secret = resolve_credentials(config)
    region = (config.s3_region or os.environ.get('AWS_DEFAULT_REGION')
              or os.environ.get('AWS_REGION') or 'us-east-1')
    options = {}
    if endpoint:
        parsed = urllib.parse.urlsplit(endpoint)
        options = {'endpoint_override': parsed.netloc, 'scheme': parsed.scheme}
    return pafs.S3FileSystem(access_key=key, secret_key=secret, region=region,
                             connect_timeout=5, request_timeout=30, **options)


def s3_folder(uri: str, endpoint: str = '',
              credentials_file: str = '') -> Tuple[pafs.S3FileSystem, str, str]:
    """Return (filesystem, bucket, prefix) of ``s3://bucket/prefix``; StorageError if wrong."""
    if not is_s3_root(uri):
        raise StorageError(f'expected s3://<bucket>/<prefix>, got {uri!r}')
    bucket, prefix = split_root(uri)
    return s3_filesystem(PoolConfig(root=uri, s3_endpoint=endpoint,
                                    s3_credentials_file=credentials_file)), bucket, prefix


class _S3LogStream:
    """A log segment on S3: one object per write (schema frame + batch frame)."""

    def __init__(self, pool: 'S3ParquetPool', segment: str, suffix: str, schema: pa.Schema):
        self._pool, self._segment, self._suffix, self.schema = pool, segment, suffix, schema
        self._sequence = 0
        self.path = pool.root / 'log' / f'{segment}.*{suffix}'

    def write(self, batch: pa.RecordBatch) -> None:
        self._sequence += 1
        path = self._pool.root / 'log' / f'{self._segment}.{self._sequence:08d}{self._suffix}'
        self._pool._put(path, log_frames.encode_schema(self.schema)
                        + log_frames.encode_batch(batch))

    def fsync(self) -> None:
        """Nothing to do: each write is a whole object."""

    def close(self) -> None:
        """Nothing to do: each write is a whole object."""


class S3ParquetPool(ParquetPool):
    """The parquet pool under an ``s3://bucket/prefix`` root (see the module docstring)."""

    def __init__(self, config: PoolConfig, filesystem: Optional[pafs.FileSystem] = None):
        self.fs = filesystem if filesystem is not None else s3_filesystem(config)
        super().__init__(config)

    # -- where the objects are ---------------------------------------------------------
    def _root_path(self, root: str) -> pathlib.PurePosixPath:
        bucket, prefix = split_root(root)
        return pathlib.PurePosixPath(bucket, *([prefix] if prefix else []))

    def _open_root(self) -> None:
        """Check that the bucket answers; S3 has no folders to make and no lock to take."""
        bucket = self.root.parts[0]
        try:
            info = self.fs.get_file_info(bucket)
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'storage root {self.url}: S3 does not answer ({err})') from err
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f'storage root {self.url}: no bucket {bucket!r} (create it)')

    @property
    def url(self) -> str:
        """Return the root as s3://bucket/prefix."""
        return SCHEME + self.root.as_posix()

    def _list(self, sub: str) -> List[pafs.FileInfo]:
        base = (self.root / sub).as_posix()
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True,
                                                            allow_not_found=True))
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'{SCHEME}{base}: cannot list it ({err})') from err
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def _put(self, path: pathlib.PurePosixPath, data: bytes) -> None:
        try:
            with self.fs.open_output_stream(path.as_posix()) as out:
                out.write(data)
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'{SCHEME}{path}: cannot write it ({err})') from err

    def _read_bytes(self, path) -> bytes:
        try:
            with self.fs.open_input_stream(path.as_posix()) as source:
                return source.read()
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'{SCHEME}{path}: cannot read it ({err})') from err

    def _part_source(self, path, with_crc: bool):
        data = self._read_bytes(path)               # one GET: the CRC and the pages
        return pa.BufferReader(data), zlib.crc32(data)

    def _partition_files(self, kind: str) -> Iterable[Tuple[Tuple[str, str],
                                                            pathlib.PurePosixPath]]:
        base = self.root / kind
        for info in self._list(kind):
            path = pathlib.PurePosixPath(info.path)
            parts = path.relative_to(base).parts
            if (len(parts) != 3 or not parts[0].startswith('vehicle_id=')
                    or not parts[1].startswith('driver_id=') or path.suffix != '.parquet'
                    or path.name.startswith('.')):
                continue
            vehicle = urllib.parse.unquote(parts[0][len('vehicle_id='):])
            driver = urllib.parse.unquote(parts[1][len('driver_id='):])
            yield (vehicle, driver), path

    def _quarantine(self, path, why: str) -> None:
        """Move a corrupt object to quarantine/ (copy, then delete), count it, say so."""
        relative = path.relative_to(self.root).as_posix().replace('/', '__')
        target = (self.root / 'quarantine'
                  / f'{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}-{relative}')
        try:
            while self.fs.get_file_info(target.as_posix()).type != pafs.FileType.NotFound:
                target = target.with_name(target.name + '_')
            self.fs.move(path.as_posix(), target.as_posix())
        except (OSError, pa.ArrowException) as err:
            raise StorageError(f'{SCHEME}{path} is corrupt ({why}) and cannot be moved to '
                               f'quarantine ({err})') from err
        self._quarantined.append(SCHEME + target.as_posix())
        LOGGER.error('%s%s is corrupt (%s): moved to %s%s; the pool opens without what it '
                     'could not read', SCHEME, path, why, SCHEME, target)

    # -- the log: one object per append ---------------------------------------------------
    def _log_objects(self) -> List[Tuple[int, bool, int, pathlib.PurePosixPath]]:
        found = []
        for info in self._list('log'):
            path = pathlib.PurePosixPath(info.path)
            match = _LOG_OBJECT.match(path.name)
            if match and path.parent == self.root / 'log':
                found.append((int(match.group(1)), bool(match.group(3)), int(match.group(2)),
                              path))
        return sorted(found)

    def _segment_numbers(self) -> List[int]:
        return sorted({number for number, _, _, _ in self._log_objects()})

    def _log_files_in_order(self):
        # As on disk: per segment, its transitions in order, then its episode ends.
        return [(path, self._replay_episodes if episodes else self._replay_records)
                for _, episodes, _, path in self._log_objects()]

    def _log_files(self) -> list:
        return [path for _, _, _, path in self._log_objects()]

    def _delete_log_files(self, segments) -> None:
        self._remove_files(segments)

    def _open_log(self, suffix: str, schema: pa.Schema) -> _S3LogStream:
        if self._segment is None:
            self._segment = f'{self._next_segment:010d}'
            self._next_segment += 1
        return _S3LogStream(self, self._segment, suffix, schema)

    # -- parts ------------------------------------------------------------------------
    def _write_parquet(self, kind: str, pair: Tuple[str, str], table: pa.Table
                       ) -> pathlib.PurePosixPath:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, write_page_checksum=True)
        data = sink.getvalue().to_pybytes()
        path = (self._partition_dir(kind, pair)
                / f'part-{uuid.uuid4().hex}.c{zlib.crc32(data):08x}.parquet')
        self._put(path, data)
        return path

    def _remove_files(self, paths: Sequence) -> None:
        for path in paths:
            try:
                self.fs.delete_file(path.as_posix())
            except FileNotFoundError:
                pass
            except (OSError, pa.ArrowException) as err:
                raise StorageError(f'{SCHEME}{path}: cannot delete it ({err})') from err

    # -- figures --------------------------------------------------------------------------
    def _bytes_on_disk(self) -> int:
        return sum(info.size or 0 for sub in ('records', 'episodes', 'log')
                   for info in self._list(sub))

    def _extra_stats(self):
        stats = super()._extra_stats()
        stats['root'] = self.url
        return stats
