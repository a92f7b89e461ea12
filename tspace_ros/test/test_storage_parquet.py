"""The parquet storage pool: shared behaviours, files, schema, log recovery and config."""

import dataclasses
import json
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from storage_support import (
    make_episode, make_record, make_summary, PoolBehaviour, STATE_SIZE, T0)
from tspace_ros.storage import log_frames, open_pool, PoolConfig, StorageError
from tspace_ros.storage.parquet_pool import escape_id, SCHEMA_VERSION


def parquet_files(root, kind='records'):
    """Return the Parquet files under root/kind (not the temporary ones)."""
    found = []
    for directory, _, names in os.walk(os.path.join(root, kind)):
        found += [os.path.join(directory, n) for n in names if n.endswith('.parquet')]
    return sorted(found)


class TestParquetPool(PoolBehaviour):
    """Every shared pool behaviour, on the embedded parquet backend."""

    @pytest.fixture(autouse=True)
    def _place(self, tmp_path):
        self.root = tmp_path / 'pool'

    def open_pool(self, **config):
        """Return a parquet pool in this test's directory."""
        return open_pool(PoolConfig(root=str(self.root), **config))


@pytest.fixture
def root(tmp_path):
    """Return the directory of a test's pool."""
    return str(tmp_path / 'pool')


def test_files_are_hive_partitioned_with_schema_metadata(root):
    """Compaction writes partition directories; every file names schema version and spec."""
    spec = {'signals': ['velocity'], 'action_shape': [4, 17], 'site': 'Bucharest test rig',
            'time_zone': 'Europe/Bucharest'}
    records = make_episode('VIN 1/ä', 'driver.one', T0, 5) + make_episode('V2', 'd', T0, 3)
    with open_pool(PoolConfig(root=root, spec=spec)) as pool:
        pool.append(records)
        pool.end_episode(make_summary(records[:5]))
        for name in os.listdir(os.path.join(root, 'log')):    # the log has them too
            with open(os.path.join(root, 'log', name), 'rb') as segment:
                read = log_frames.read_segment(segment.read(), name)
            assert read.batches and not read.problems and not read.truncated
            metadata = read.schema.metadata
            assert metadata[b'tspace_ros.schema_version'] == b'1'
            assert json.loads(metadata[b'tspace_ros.observation_spec']) == spec
    vehicle_dir = os.path.join(root, 'records', 'vehicle_id=VIN%201%2F%C3%A4')
    assert os.listdir(vehicle_dir) == ['driver_id=driver.one']
    assert os.path.isdir(os.path.join(root, 'records', 'vehicle_id=V2', 'driver_id=d'))
    assert os.path.isdir(os.path.join(root, 'episodes', 'vehicle_id=VIN%201%2F%C3%A4',
                                      'driver_id=driver.one'))
    assert os.listdir(os.path.join(root, 'log')) == []         # folded and deleted
    files = parquet_files(root) + parquet_files(root, 'episodes')
    assert len(files) == 3
    for path in files:
        assert os.path.basename(path).startswith('part-')
        metadata = pq.read_schema(path).metadata
        assert metadata[b'tspace_ros.schema_version'] == str(SCHEMA_VERSION).encode() == b'1'
        assert json.loads(metadata[b'tspace_ros.observation_spec']) == spec
    schema = pq.read_schema(parquet_files(root)[0])
    assert schema.field('episode_start').type == pa.timestamp('ns', tz='UTC')
    assert schema.field('state_stamp').type == pa.timestamp('ns', tz='UTC')
    assert schema.field('step_index').type == pa.uint64()
    assert schema.field('state').type.value_type == pa.float32()
    table = ds.dataset(os.path.join(root, 'records'), format='parquet',
                       partitioning='hive').to_table()
    assert table.num_rows == 8
    assert sorted(set(table.column('vehicle_id').to_pylist())) == ['V2', 'VIN 1/ä']


def test_escape_id_keeps_only_safe_characters():
    """Ids in paths are percent-encoded outside [A-Za-z0-9_.-]."""
    assert escape_id('WVW.ZZZ_1-2') == 'WVW.ZZZ_1-2'
    assert escape_id('a/b c~%') == 'a%2Fb%20c%7E%25'
    assert escape_id('..') == '..' and escape_id('ö') == '%C3%B6'


def test_other_schema_version_is_refused(root):
    """A file of another schema version: StorageError naming the file and both versions."""
    with open_pool(PoolConfig(root=root)) as pool:
        pool.append(make_episode('V1', 'd1', T0, 3))
    path = parquet_files(root)[0]
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    metadata[b'tspace_ros.schema_version'] = b'2'
    os.remove(path)
    path = os.path.join(os.path.dirname(path), 'part-of-another-version.parquet')
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(StorageError) as raised:
        open_pool(PoolConfig(root=root))
    message = str(raised.value)
    assert path in message and 'version 2' in message and '(1)' in message


def test_truncated_log_tail_is_dropped_and_counted(root, tmp_path):
    """A batch cut short by a crash is dropped with a count; earlier batches survive."""
    pool = open_pool(PoolConfig(root=root))
    batches = [make_episode('V1', 'd1', T0, 30)[i:i + 10] for i in (0, 10, 20)]
    for batch in batches:
        pool.append(batch)
    copy = str(tmp_path / 'copy')
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns('.lock'))   # as a crash left it
    pool.close()
    log = os.path.join(copy, 'log', sorted(os.listdir(os.path.join(copy, 'log')))[0])
    os.truncate(log, os.path.getsize(log) - 100)
    with open_pool(PoolConfig(root=copy)) as recovered:
        stats = recovered.stats()
        assert stats['log_truncated_batches'] == 1 and stats['records'] == 20
        assert [r.step_index for r in recovered.read_records()] == list(range(20))
        assert recovered.append(batches[2]) == 10                # the lost batch, resent
    with open_pool(PoolConfig(root=copy)) as reopened:
        assert reopened.stats()['records'] == 30
        assert reopened.stats()['log_truncated_batches'] == 0     # compacted away


def test_log_alone_restores_without_compaction(root, tmp_path):
    """Without close (a crash), the fsync'd log restores appends and episode ends."""
    pool = open_pool(PoolConfig(root=root, compact_every=0))
    good, bad = make_episode('V1', 'd1', T0, 4), make_episode('V1', 'd1', T0 + 1, 4)
    pool.append(good + bad)
    pool.end_episode(make_summary(good))
    pool.end_episode(make_summary(bad, valid=False))
    copy = str(tmp_path / 'copy')
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns('.lock'))
    pool.close()
    assert parquet_files(copy) == []
    with open_pool(PoolConfig(root=copy)) as recovered:
        stats = recovered.stats()
        assert (stats['records'], stats['episodes_valid'], stats['episodes_discarded']) == (
            4, 1, 1)
        assert len(recovered.episodes_source()) == 1


def test_discarded_rows_leave_the_parquet_files(root):
    """An episode discarded after compaction is rewritten out of its partition."""
    keep, drop = make_episode('V1', 'd1', T0, 5), make_episode('V1', 'd1', T0 + 9, 5)
    with open_pool(PoolConfig(root=root)) as pool:
        pool.append(keep + drop)
        pool.compact()
        assert sum(pq.read_metadata(p).num_rows for p in parquet_files(root)) == 10
        pool.end_episode(make_summary(drop, valid=False))
        pool.compact()
        assert sum(pq.read_metadata(p).num_rows for p in parquet_files(root)) == 5
        summaries = pq.read_table(parquet_files(root, 'episodes')[0])
        assert summaries.column('valid').to_pylist() == [False]


def test_automatic_compaction_folds_the_log(root):
    """Every compact_every transitions the log becomes Parquet parts."""
    with open_pool(PoolConfig(root=root, compact_every=25)) as pool:
        records = make_episode('V1', 'd1', T0, 50)
        for i in range(0, 50, 10):
            pool.append(records[i:i + 10])
        assert sum(pq.read_metadata(p).num_rows for p in parquet_files(root)) == 30
        assert pool.stats()['log_segments'] == 1
    assert sum(pq.read_metadata(p).num_rows for p in parquet_files(root)) == 50


def test_a_second_process_cannot_open_the_same_root(root):
    """One writer per root: a second open fails clearly instead of corrupting the log."""
    with open_pool(PoolConfig(root=root)):
        with pytest.raises(StorageError, match='in use'):
            open_pool(PoolConfig(root=root))
    open_pool(PoolConfig(root=root)).close()


def test_non_records_are_refused(root):
    """Only record types are taken by append and end_episode."""
    with open_pool(PoolConfig(root=root)) as pool:
        with pytest.raises(StorageError, match='TransitionRecord'):
            pool.append([{'state': [1.0]}])
        with pytest.raises(StorageError, match='EpisodeSummaryRecord'):
            pool.end_episode(make_record('V1', 'd1', T0, 0))
        assert pool.append([]) == 0


@pytest.mark.parametrize('field, value', [
    ('backend', 'sqlite'), ('root', ''), ('root', 3), ('mongodb_uri_env', 'NOT A NAME'),
    ('mongodb_uri_file', 'mongodb://u:p@host/'), ('mongodb_database', 'a/b'),
    ('max_bytes', -1), ('max_bytes', 1.5), ('max_bytes', True), ('max_age_s', -1.0),
    ('max_age_s', float('nan')), ('compact_every', -5), ('spec', ['x']),
    ('spec', {'action_shape': [4]}), ('spec', {'sample_rate_hz': 0}),
    ('spec', {'signals': 'velocity'}), ('spec', {'site': object()}),
])
def test_bad_config_names_the_field(tmp_path, field, value):
    """Each invalid field gives a StorageError that names it and what was expected."""
    values = {'root': str(tmp_path), field: value}
    with pytest.raises(StorageError) as raised:
        PoolConfig(**values)
    message = str(raised.value)
    assert field in message and 'expected' in message


def test_config_from_a_mapping(tmp_path):
    """from_dict takes a YAML section; unknown keys are named."""
    config = PoolConfig.from_dict({'root': str(tmp_path), 'max_age_s': 60})
    assert config.max_age_s == 60.0 and config.spec['action_shape'] == [4, 17]
    with pytest.raises(StorageError, match='max_age'):
        PoolConfig.from_dict({'root': str(tmp_path), 'max_age': 60})


def test_large_batches_sample_fast_enough(root):
    """The in-memory index answers a 256 batch from 20k transitions well under 2 ms."""
    base = make_record('V1', 'd1', T0, 0)
    with open_pool(PoolConfig(root=root, compact_every=0)) as pool:
        for chunk in range(20):
            pool.append([dataclasses.replace(base, driver_id=f'd{chunk % 3}',
                                             episode_start_ns=T0 + chunk, step_index=step)
                         for step in range(1000)])
        source = pool.records_source(driver_id='d1')
        assert len(source) == 7000
        rng = np.random.default_rng(0)
        timings = []
        for _ in range(200):
            start = time.perf_counter()
            batch = source.sample(256, rng)
            timings.append(time.perf_counter() - start)
        assert batch['state'].shape == (256, STATE_SIZE)
        assert np.median(timings) < 2e-3
