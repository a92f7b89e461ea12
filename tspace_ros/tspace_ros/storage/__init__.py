"""
The storage pool: durable transitions and episode summaries, sampled from memory.

``open_pool(PoolConfig(...))`` gives a ``TransitionPool`` of one of two backends:

- ``parquet`` (default, embedded): ``root/records/vehicle_id=<v>/driver_id=<d>/
  part-<uuid>.c<crc32>.parquet`` and ``root/episodes/...`` (hive-partitioned, ids
  percent-encoded, page checksums and the whole file's CRC-32 in its name),
  plus an append log ``root/log/<segment>.tlog`` of CRC-checked frames of Arrow
  record batches. Corrupt files are moved to ``root/quarantine/``, counted and
  reported, never deleted. Every file's schema metadata carries
  ``tspace_ros.schema_version`` and ``tspace_ros.observation_spec``.
- ``mongodb``: tspace's collections: ``records`` (time-series, one document
  per step), ``record_keys`` (the natural keys) and ``episodes`` (one document
  per summary, with its transitions when valid). The connection string comes
  from an environment variable or a secret file, never from the YAML.

Durability: ``append`` and ``end_episode`` return only once the data is
durable (parquet: written to the log and fsync'd; MongoDB: journaled), so a
SIGKILL right after loses nothing acknowledged. A crash in the middle of a
write leaves at most a truncated last log batch, dropped and counted on open.

Idempotency: a transition's natural key is (vehicle_id, driver_id,
episode_start_ns, step_index); appending a key that is stored already is
ignored and counted (``stats()['duplicates_ignored']``), so a retry after a
lost acknowledgement never duplicates. ``end_episode`` with valid False
removes the episode's transitions for good (a durable tombstone); the
transitions of a running episode are sampled by ``records_source`` (online
training) but only complete, valid episodes by ``episodes_source`` (RDPG).

Every stored transition is also kept in memory as numpy columns with an index
per (vehicle, driver) and per episode, so sampling never touches the disk.
"""

from tspace_ros.storage.pool import (
    BACKENDS, default_spec, EpisodesSource, open_pool, PoolConfig, RecordsSource, StorageError,
    TransitionPool)

__all__ = ['BACKENDS', 'default_spec', 'EpisodesSource', 'MongoPool', 'open_pool', 'ParquetPool',
           'PoolConfig', 'RecordsSource', 'StorageError', 'TransitionPool']


def __getattr__(name):
    """Import a backend class on first use (pyarrow and pymongo load only when needed)."""
    if name == 'ParquetPool':
        from tspace_ros.storage.parquet_pool import ParquetPool
        return ParquetPool
    if name == 'MongoPool':
        from tspace_ros.storage.mongo_pool import MongoPool
        return MongoPool
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
