"""
The parquet pool on S3 (``root='s3://bucket/prefix'``) against a real SeaweedFS server.

One server for the module (``S3Server``, random loopback ports), a prefix per
test. The pool shows every behaviour of the local one (``PoolBehaviour``);
appends are durable objects before they return; a corrupt part or log object
on S3 is detected by its checksums, moved to quarantine and counted, never
crashed on; Dask (tspace's offline engine) reads the stored records from S3.
"""

import uuid

import numpy as np
import pyarrow as pa
from pyarrow import fs as pafs
import pyarrow.parquet  # noqa: F401  (pa.parquet)
import pytest
from storage_support import (
    assert_same_records, by_key, make_episode, make_summary, PoolBehaviour, T0)
from tspace_ros import servers
from tspace_ros.storage import open_pool, PoolConfig, StorageError
from tspace_ros.storage.offline import read_records_dask

pytestmark = pytest.mark.timeout(300)
BUCKET = 'fleet'


@pytest.fixture(scope='module')
def s3():
    """Return one SeaweedFS S3 server for the whole module (stopped by PID at the end)."""
    try:
        servers.find_weed()
    except servers.ServerUnavailable as err:
        pytest.skip(str(err))
    with servers.S3Server(buckets=[BUCKET]) as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    """Point the pool at the server through the environment (keys never in a config)."""
    for name, value in s3.environ().items():
        monkeypatch.setenv(name, value)
    return s3


def _root() -> str:
    return f's3://{BUCKET}/test/{uuid.uuid4().hex[:12]}'


def _objects(s3, root: str, sub: str):
    base = root[len('s3://'):] + '/' + sub
    infos = s3.filesystem().get_file_info(pafs.FileSelector(base, recursive=True,
                                                            allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _put(s3, path: str, data: bytes) -> None:
    with s3.filesystem().open_output_stream(path) as out:
        out.write(data)


def _get(s3, path: str) -> bytes:
    with s3.filesystem().open_input_stream(path) as source:
        return source.read()


class TestS3Pool(PoolBehaviour):
    """Every shared pool behaviour, on the parquet pool under an s3:// root."""

    @pytest.fixture(autouse=True)
    def _place(self, s3_env):
        self.root = _root()

    def open_pool(self, **config):
        """Return a pool under this test's own prefix of the module's bucket."""
        return open_pool(PoolConfig(root=self.root, **config))


def test_the_pool_is_on_s3_not_on_disk(s3_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _root()
    records = make_episode('V1', 'd1', T0, 6)
    with open_pool(PoolConfig(root=root)) as pool:
        assert pool.backend == 'parquet' and pool.stats()['root'] == root
        pool.append(records)
        # Durable before append returns: one log object per append, on S3.
        assert len(_objects(s3_env, root, 'log')) == 1
        pool.end_episode(make_summary(records))
        assert pool.stats()['bytes_on_disk'] > 0
    assert list(tmp_path.iterdir()) == []
    assert _objects(s3_env, root, 'log') == []                   # folded on close
    parts = _objects(s3_env, root, 'records')
    assert len(parts) == 1 and '/vehicle_id=V1/driver_id=d1/part-' in parts[0]
    assert len(_objects(s3_env, root, 'episodes')) == 1


def test_an_unclosed_pool_loses_nothing_acknowledged(s3_env):
    """A writer that dies without closing: the next pool replays its log objects."""
    root = _root()
    first, second = make_episode('V1', 'd1', T0, 5), make_episode('V1', 'd1', T0 + 10**12, 3)
    writer = open_pool(PoolConfig(root=root))
    writer.append(first)
    writer.end_episode(make_summary(first))
    writer.append(second)
    # No close, no compaction: as if the process was killed here.
    with open_pool(PoolConfig(root=root)) as again:
        assert_same_records(again.read_records(), by_key(first + second))
        assert [s.episode_id for s in again.summaries()] == [first[0].episode_id]
        assert again.stats()['log_segments'] == 1
        assert len(again.episodes_source().episodes()) == 1


@pytest.mark.parametrize('fix_name', [False, True], ids=['file-crc', 'page-checksum'])
def test_a_corrupt_part_on_s3_is_quarantined_and_counted(s3_env, fix_name):
    import zlib
    root = _root()
    kept, damaged = make_episode('V1', 'd1', T0, 8), make_episode('V2', 'd1', T0, 8)
    with open_pool(PoolConfig(root=root)) as pool:
        pool.append(kept + damaged)
    (part,) = [p for p in _objects(s3_env, root, 'records') if 'vehicle_id=V2' in p]
    data = bytearray(_get(s3_env, part))
    chunk = pa.parquet.ParquetFile(pa.BufferReader(bytes(data))).metadata.row_group(0).column(5)
    data[chunk.data_page_offset + chunk.total_compressed_size - 3] ^= 0xFF   # in a data page
    s3_env.filesystem().delete_file(part)
    if fix_name:       # a matching name CRC: only the page checksums can tell
        part = part.rsplit('.c', 1)[0] + f'.c{zlib.crc32(bytes(data)):08x}.parquet'
    _put(s3_env, part, bytes(data))
    with open_pool(PoolConfig(root=root)) as pool:
        stats = pool.stats()
        assert stats['quarantined_files'] == 1
        assert stats['last_quarantined'].startswith(root + '/quarantine/')
        assert_same_records(pool.read_records(), kept)             # the rest is intact
        assert len(pool.get_records(16, np.random.default_rng(1))) == 16
    assert len(_objects(s3_env, root, 'quarantine')) == 1          # kept, never deleted
    with open_pool(PoolConfig(root=root)) as pool:
        assert pool.stats()['quarantined_files'] == 0


def test_a_scribbled_log_object_is_quarantined_and_the_rest_kept(s3_env):
    root = _root()
    good, bad = make_episode('V1', 'd1', T0, 4), make_episode('V1', 'd1', T0 + 10**12, 4)
    writer = open_pool(PoolConfig(root=root))
    writer.append(good)
    writer.append(bad)
    logs = _objects(s3_env, root, 'log')
    assert len(logs) == 2
    data = bytearray(_get(s3_env, logs[1]))
    data[-20:-10] = b'\x00' * 10
    _put(s3_env, logs[1], bytes(data))
    with open_pool(PoolConfig(root=root)) as pool:
        stats = pool.stats()
        assert stats['quarantined_files'] == 1 and stats['corrupt_frames'] >= 1
        assert_same_records(pool.read_records(), good)
    assert _objects(s3_env, root, 'log') == []
    assert len(_objects(s3_env, root, 'quarantine')) == 1


def test_dask_reads_the_dataset_offline_from_s3(s3_env):
    import dask.dataframe as dd
    root = _root()
    records = make_episode('V1', 'd1', T0, 9) + make_episode('V2', 'd2', T0 + 10**12, 5)
    with open_pool(PoolConfig(root=root)) as pool:
        pool.append(records)
    frame = read_records_dask(root)
    assert isinstance(frame, dd.DataFrame) and frame.npartitions == 2    # a part each
    frame = frame.compute()
    frame = frame.sort_values(['vehicle_id', 'step_index']).reset_index(drop=True)
    want = by_key(records)
    assert list(frame['vehicle_id']) == [r.vehicle_id for r in want]
    assert list(frame['step_index']) == [r.step_index for r in want]
    np.testing.assert_array_equal(frame['reward'].to_numpy(), [r.reward for r in want])
    np.testing.assert_array_equal(np.stack(frame['state'].to_numpy()),
                                  np.stack([r.state for r in want]))
    assert list(frame['state_stamp'].astype('int64')) == [r.state_stamp_ns for r in want]
    # The fleet: one read above the vehicles' prefixes; a damaged part is refused.
    assert len(read_records_dask(f's3://{BUCKET}/test').compute()) >= len(records)
    fs = s3_env.filesystem()
    part = sorted(p for p in _objects(s3_env, root, 'records'))[0]
    data = bytearray(_get(s3_env, part))
    data[10] ^= 1
    _put(s3_env, part, bytes(data))
    with pytest.raises(StorageError, match='file CRC'):
        read_records_dask(root).compute()
    assert len(read_records_dask(root, verify=False).compute()) == 5      # V1's part skipped
    fs.delete_dir_contents(root[len('s3://'):])


def test_credentials_come_from_a_secret_file(s3, tmp_path, monkeypatch):
    monkeypatch.delenv('AWS_ACCESS_KEY_ID', raising=False)
    monkeypatch.delenv('AWS_SECRET_ACCESS_KEY', raising=False)
    root = _root()
    with pytest.raises(StorageError, match='AWS_ACCESS_KEY_ID'):
        open_pool(PoolConfig(root=root, s3_endpoint=s3.endpoint_url))
    secret = tmp_path / 'credentials'
    secret.write_text(f'[default]\naws_access_key_id = {s3.access_key}\n'
                      f'aws_secret_access_key = {s3.secret_key}\n')
    config = PoolConfig(root=root, s3_endpoint=s3.endpoint_url,
                        s3_credentials_file=str(secret))
    with open_pool(config) as pool:
        assert pool.append(make_episode('V1', 'd1', T0, 3)) == 3
    wrong = tmp_path / 'wrong'
    wrong.write_text(f'[default]\naws_access_key_id = {s3.access_key}\n'
                     'aws_secret_access_key = not-it\n')
    with pytest.raises(StorageError):
        open_pool(PoolConfig(root=root, s3_endpoint=s3.endpoint_url,
                             s3_credentials_file=str(wrong)))


def test_s3_config_errors_say_what_is_wrong(s3_env):
    for root in ('s3://', 's3://A_B/x', 's3://fleet//x', 's3://fleet/../x'):
        with pytest.raises(StorageError, match='root'):
            PoolConfig(root=root)
    with pytest.raises(StorageError, match='s3_endpoint'):
        PoolConfig(root='s3://fleet/x', s3_endpoint='ftp://127.0.0.1:1')
    with pytest.raises(StorageError, match="no bucket 'nosuchbucket'"):
        open_pool(PoolConfig(root='s3://nosuchbucket/x'))
    assert PoolConfig.from_dict({'root': 's3://fleet/v', 's3_region': 'eu-central-1'})


def test_one_prefix_per_vehicle_shares_one_dataset(s3_env):
    """Vehicles write their own prefixes; one offline read sees the fleet."""
    base = _root()
    fleet = {vin: make_episode(vin, 'd1', T0, 4) for vin in ('VAN-1', 'VAN-2')}
    for vin, records in fleet.items():
        with open_pool(PoolConfig(root=f'{base}/vehicles/{vin}')) as pool:
            pool.append(records)
    selector = pafs.FileSelector(base[len('s3://'):] + '/vehicles', recursive=True)
    paths = sorted(i.path for i in s3_env.filesystem().get_file_info(selector)
                   if i.path.endswith('.parquet') and '/records/' in i.path)
    table = pa.concat_tables(
        pa.parquet.read_table(p, filesystem=s3_env.filesystem()) for p in paths)
    assert sorted(set(table.column('vehicle_id').to_pylist())) == ['VAN-1', 'VAN-2']
    assert table.num_rows == 8
