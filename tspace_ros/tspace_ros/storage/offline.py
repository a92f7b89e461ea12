"""
Offline reads of a parquet pool's dataset with Dask (tspace's engine), local or on S3.

``read_records_dask(root)`` returns a ``dask.dataframe.DataFrame`` with one
partition per Parquet part under ``root/records`` (``root`` a directory or
``s3://bucket/prefix``; for the fleet, a prefix above the vehicles' pools). It
reads only the compacted parts (not the append log), never writes, and checks
each part as the pool does: the CRC-32 in its name and the page checksums; a
part that fails raises ``StorageError`` naming it (``verify=False`` skips it
instead, with a warning). Vehicle and driver ids are the files' own columns
(the hive folder names are not parsed again, so ids keep their exact spelling);
the vectors (state, next_state, action) are Arrow fixed-size lists of float32
(``np.stack(frame['state'].to_numpy())`` gives the matrix).
"""

import logging
from typing import List, Optional, Tuple
import zlib

import pyarrow as pa
from pyarrow import fs as pafs
import pyarrow.parquet as pq
from tspace_ros.storage.parquet_pool import _PART_CRC
from tspace_ros.storage.pool import PoolConfig, StorageError

LOGGER = logging.getLogger('tspace_ros.storage.offline')


def _filesystem(root: str, config: Optional[PoolConfig],
                filesystem: Optional[pafs.FileSystem]) -> Tuple[pafs.FileSystem, str]:
    if root.startswith('s3://'):
        from tspace_ros.storage.s3_pool import s3_filesystem
        fs = filesystem or s3_filesystem(config or PoolConfig(root=root))
        return fs, root[len('s3://'):].rstrip('/')
    return filesystem or pafs.LocalFileSystem(), root.rstrip('/')


def record_parts(root: str, config: Optional[PoolConfig] = None,
                 filesystem: Optional[pafs.FileSystem] = None
                 ) -> Tuple[pafs.FileSystem, List[str]]:
    """Return (filesystem, every transitions part under root, sorted)."""
    fs, base = _filesystem(root, config, filesystem)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    parts = sorted(i.path for i in infos if i.type == pafs.FileType.File
                   and '/records/' in '/' + i.path[len(base):] + '/'
                   and i.path.endswith('.parquet') and not i.base_name.startswith('.'))
    return fs, parts


def read_part(fs: pafs.FileSystem, path: str, verify: bool = True) -> Optional[pa.Table]:
    """Return one part's table after its CRC and page checks (None: bad and not verify)."""
    try:
        with fs.open_input_stream(path) as source:
            data = source.read()
        match = _PART_CRC.search(path)
        if match is not None and f'{zlib.crc32(data):08x}' != match.group(1):
            raise StorageError(f'{path}: file CRC {zlib.crc32(data):08x}, its name says '
                               f'{match.group(1)}')
        parquet = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        return parquet.read()
    except (OSError, pa.ArrowException, StorageError) as err:
        if verify:
            raise StorageError(f'{path}: corrupt or unreadable ({err})') from err
        LOGGER.warning('%s: skipped, corrupt or unreadable (%s)', path, err)
        return None


def read_records_dask(root: str, config: Optional[PoolConfig] = None,
                      filesystem: Optional[pafs.FileSystem] = None, verify: bool = True):
    """Return the stored transitions under ``root`` as a Dask DataFrame (one part each)."""
    import dask.dataframe as dd
    fs, parts = record_parts(root, config, filesystem)
    if not parts:
        raise StorageError(f'{root}: no transitions parts (records/...parquet) found')
    import pandas as pd

    def types(arrow_type):
        # Vectors stay Arrow lists (float32); Dask would turn numpy objects into strings.
        return pd.ArrowDtype(arrow_type) if pa.types.is_fixed_size_list(arrow_type) else None

    first = None
    for path in parts:                 # the columns: of the first part that reads
        first = read_part(fs, path, verify)
        if first is not None:
            break
    if first is None:
        raise StorageError(f'{root}: no transitions part could be read')
    meta = first.schema.empty_table().to_pandas(types_mapper=types)

    def load(path: str):
        table = read_part(fs, path, verify)
        return meta if table is None else table.to_pandas(types_mapper=types)

    return dd.from_map(load, parts, meta=meta, enforce_metadata=False)
