"""
Corrupt storage never loads silently: CRC-checked log frames and Parquet parts, quarantine.

A scribbled log segment is not taken for an interrupted write and is never
deleted; a damaged Parquet part is moved aside, counted and reported; a deleted
lock file lets no second writer in. The hypothesis property: whatever bytes of
whatever pool file are damaged, opening either refuses with a StorageError or
loads only records that were stored, and every record it does not load is
accounted for (quarantined or an interrupted write).
"""

import os
import pathlib
import shutil
import tempfile

from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pyarrow.parquet as pq
import pytest
from storage_support import make_episode, make_summary, T0
from tspace_ros.storage import log_frames, open_pool, PoolConfig, StorageError


def _key(record):
    return (record.vehicle_id, record.driver_id, record.episode_start_ns, record.step_index)


def _content(record):
    return (_key(record), record.episode_id, record.state.tobytes(), record.next_state.tobytes(),
            record.action.tobytes(), record.reward, record.energy_wh, record.done,
            record.timed_out, record.policy_version, record.action_row_start,
            record.action_row_count, record.state_stamp_ns, record.next_state_stamp_ns)


def _files(root, kind):
    return sorted(str(p) for p in pathlib.Path(root, kind).rglob('*') if p.is_file())


def _build(root):
    """Return the records of a pool with Parquet parts, and a log of three batches."""
    first, second = make_episode('V1', 'd1', T0, 12), make_episode('V1', 'd1', T0 + 10 ** 9, 9)
    pool = open_pool(PoolConfig(root=root, compact_every=0))
    pool.append(first)
    pool.end_episode(make_summary(first))
    pool.compact()
    for i in range(0, 9, 3):
        pool.append(second[i:i + 3])
    crashed = root + '.crashed'
    shutil.copytree(root, crashed)  # as a power cut leaves it: the log not compacted
    pool.close()
    shutil.rmtree(root)
    os.rename(crashed, root)
    return first + second


def test_a_scribbled_log_segment_is_quarantined_never_taken_for_truncation(tmp_path):
    root = str(tmp_path / 'pool')
    records = _build(root)
    (segment,) = _files(root, 'log')
    data = bytearray(pathlib.Path(segment).read_bytes())
    read = log_frames.read_segment(bytes(data), segment)
    assert len(read.batches) == 3 and not read.problems
    middle = len(data) * 2 // 3  # inside the second of the three batch frames
    data[middle:middle + 8] = b'\xde\xad\xbe\xef' * 2
    pathlib.Path(segment).write_bytes(bytes(data))

    with open_pool(PoolConfig(root=root)) as pool:
        stats = pool.stats()
        loaded = {_key(r): _content(r) for r in pool.read_records()}
    expected = {_key(r): _content(r) for r in records}
    assert stats['quarantined_files'] == 1 and stats['corrupt_frames'] >= 1
    assert stats['log_truncated_batches'] == 0  # corruption is not an interrupted write
    assert stats['records'] == len(records) - 3  # only the scribbled batch is missing
    assert all(expected[key] == value for key, value in loaded.items())
    # The segment is kept in quarantine, and what it held otherwise is durable in Parquet.
    (kept,) = _files(root, 'quarantine')
    assert pathlib.Path(kept).read_bytes() == bytes(data)
    assert _files(root, 'log') == []
    with open_pool(PoolConfig(root=root)) as again:
        assert again.stats()['records'] == len(records) - 3
        assert again.stats()['quarantined_files'] == 0
    assert _files(root, 'quarantine') == [kept]  # never deleted


def test_an_interrupted_write_is_truncation_not_corruption(tmp_path):
    root = str(tmp_path / 'pool')
    records = _build(root)
    (segment,) = _files(root, 'log')
    os.truncate(segment, os.path.getsize(segment) - 7)
    with open_pool(PoolConfig(root=root)) as pool:
        stats = pool.stats()
    assert stats['log_truncated_batches'] == 1 and stats['quarantined_files'] == 0
    assert stats['records'] == len(records) - 3


@pytest.mark.parametrize('kind', ['records', 'episodes'])
def test_a_damaged_parquet_part_is_quarantined_and_counted(tmp_path, kind):
    root = str(tmp_path / 'pool')
    _build(root)
    (part,) = _files(root, kind)
    assert pq.ParquetFile(part).metadata.row_group(0).column(0).file_offset >= 0
    data = bytearray(pathlib.Path(part).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the data
    pathlib.Path(part).write_bytes(bytes(data))
    with open_pool(PoolConfig(root=root)) as pool:
        stats = pool.stats()
    assert stats['quarantined_files'] == 1 and 'quarantine' in stats['last_quarantined']
    if kind == 'records':
        assert stats['records'] == 9  # the first episode's part is gone, said so
    else:
        assert stats['episodes_valid'] == 0 and stats['records'] == 21
    assert len(_files(root, 'quarantine')) == 1


def test_parts_carry_page_checksums_and_their_crc_in_the_name(tmp_path):
    root = str(tmp_path / 'pool')
    _build(root)
    for part in _files(root, 'records') + _files(root, 'episodes'):
        name = os.path.basename(part)
        assert name.startswith('part-') and '.c' in name and name.endswith('.parquet')
        # readable by any Parquet reader, with page checksums verified
        assert pq.ParquetFile(part, page_checksum_verification=True).read().num_rows > 0


def test_deleting_the_lock_file_lets_no_second_writer_in(tmp_path):
    root = str(tmp_path / 'pool')
    with open_pool(PoolConfig(root=root)) as pool:
        pool.append(make_episode('V1', 'd1', T0, 3))
        os.remove(os.path.join(root, '.lock'))
        with pytest.raises(StorageError, match='in use'):
            open_pool(PoolConfig(root=root))
        pool.append(make_episode('V1', 'd1', T0 + 1, 3))
    with open_pool(PoolConfig(root=root)) as reopened:
        assert reopened.stats()['records'] == 6  # nothing acknowledged was lost


DAMAGE = st.tuples(st.sampled_from(['flip', 'truncate', 'garbage', 'zero']),
                   st.floats(0, 1, exclude_max=True), st.integers(1, 255),
                   st.integers(1, 64))


def _damage(data: bytes, damage) -> bytes:
    kind, where, value, size = damage
    data = bytearray(data)
    at = int(where * len(data))
    if not data:
        return bytes(data)
    if kind == 'flip':
        data[at] ^= value
    elif kind == 'truncate':
        del data[at:]
    elif kind == 'garbage':
        data[at:at + size] = bytes((value * (i + 7)) % 256 for i in range(size))
    else:
        data[at:at + size] = bytes(min(size, len(data) - at))
    return bytes(data)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('integrity') / 'pool')
    records = _build(root)
    return root, {_key(r): _content(r) for r in records}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10), st.lists(DAMAGE, min_size=1, max_size=3))
def test_property_damage_is_refused_or_accounted_for(built, which, damages):
    source, expected = built
    with tempfile.TemporaryDirectory() as where:
        root = os.path.join(where, 'pool')
        shutil.copytree(source, root)
        files = _files(root, 'log') + _files(root, 'records') + _files(root, 'episodes')
        target = pathlib.Path(files[which % len(files)])
        data = target.read_bytes()
        for damage in damages:
            data = _damage(data, damage)
        target.write_bytes(data)
        try:
            pool = open_pool(PoolConfig(root=root))
        except StorageError as error:
            assert str(error)
            return
        with pool:
            stats = pool.stats()
            loaded = {_key(r): _content(r) for r in pool.read_records()}
        for key, value in loaded.items():
            assert expected.get(key) == value, 'a damaged record loaded as good'
        accounted = stats['quarantined_files'] + stats['log_truncated_batches']
        if len(loaded) < len(expected) or stats['episodes_valid'] < 1:
            # The one loss nothing can see: a log cut exactly between two frames reads
            # like a crash between two writes.
            cut_log = '/log/' in str(target) and any(d[0] == 'truncate' for d in damages)
            assert accounted > 0 or cut_log, 'data lost silently'
        assert len(_files(root, 'quarantine')) == stats['quarantined_files']
        assert np.isfinite(stats['records'])
