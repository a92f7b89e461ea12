"""
Bag integrity: our bags carry MCAP CRCs, and a damaged bag never reads (or replays) as data.

The bags are written with BagRecorder; the damage is done to the files
directly: a byte flipped inside a message, truncations, garbage, hostile
metadata.yaml files and absurd record lengths. Reading must either return
exactly what was written or raise BagError; the replay command must exit
non-zero with the reason and no traceback. A hypothesis property covers
arbitrary flips, truncations and garbage in both files.
"""

import logging
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from hypothesis import given, HealthCheck, settings, strategies as st
from mcap.records import Chunk, DataEnd, Footer
from mcap.stream_reader import StreamReader
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from tspace_ros.bags import (bag_info, BagError, BagRecorder, qos_profile_yaml, read_bag,
                             typestore_with_ours)

STRING = 'std_msgs/msg/String'
T0 = 1_795_000_000_000_000_000
REPLAY = [sys.executable, '-m', 'tspace_ros.nodes.replay']
STORE = typestore_with_ours()
INFO_KEYS = ('topics', 'types', 'counts', 'qos', 'message_count', 'start_ns', 'end_ns',
             'custom_data')


def payload(k: int) -> bytes:
    """Return the CDR bytes of a distinct std_msgs/String (its text is easy to find)."""
    text = f'payload-{k:03d}-' + 'abcdefghij' * 3
    return bytes(STORE.serialize_cdr(STORE.types[STRING](data=text), STRING))


def write_bag(path: pathlib.Path, count: int = 8):
    """Write two topics of distinct strings with BagRecorder; return what was written."""
    sent = []
    with BagRecorder(path, STORE, custom_data={'namespace': '/veh'}) as bag:
        bag.add_topic('/veh/a', STRING, qos_profile_yaml(depth=10))
        bag.add_topic('/veh/b', STRING, qos_profile_yaml(depth=5, reliability='best_effort'))
        for k in range(count):
            topic = '/veh/a' if k % 3 else '/veh/b'
            bag.write(topic, T0 + k * 1000, payload(k))
            sent.append((topic, STRING, T0 + k * 1000, payload(k)))
    return sent


def mcap_of(path: pathlib.Path) -> pathlib.Path:
    [mcap_file] = path.glob('*.mcap')
    return mcap_file


def read_all(path):
    """Return (messages, the info that matters) of a bag: what a reader hands on."""
    messages = list(read_bag(path, typestore=STORE))
    info = bag_info(path)
    return messages, {key: info[key] for key in INFO_KEYS}


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    """Return a bag written by BagRecorder, what was written, and what reading it gives."""
    path = tmp_path_factory.mktemp('integrity') / 'good'
    sent = write_bag(path)
    return path, sent, read_all(path)


def damaged_copy(good_path: pathlib.Path, where: pathlib.Path, name: str = 'bag'):
    copy = where / name
    shutil.copytree(good_path, copy)
    return copy


def flip(file: pathlib.Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= mask
    file.write_bytes(bytes(data))


# ---- written with CRCs --------------------------------------------------------------------


def test_our_bags_carry_chunk_data_and_summary_crcs(good):
    path, sent, (messages, _) = good
    assert messages == sorted(sent, key=lambda m: m[2])
    mcap_file = mcap_of(path)
    with open(mcap_file, 'rb') as stream:  # the mcap library checks chunk and data CRCs
        records = list(StreamReader(stream, validate_crcs=True, emit_chunks=True).records)
    chunks = [r for r in records if isinstance(r, Chunk)]
    [data_end] = [r for r in records if isinstance(r, DataEnd)]
    [footer] = [r for r in records if isinstance(r, Footer)]
    assert chunks and all(chunk.uncompressed_crc != 0 for chunk in chunks)
    assert all(chunk.uncompressed_crc == zlib.crc32(chunk.data) for chunk in chunks)
    assert data_end.data_section_crc != 0 and footer.summary_crc != 0
    data = mcap_file.read_bytes()
    footer_at = len(data) - 8 - 29
    assert footer.summary_crc == zlib.crc32(data[footer.summary_start:footer_at + 25])
    info = bag_info(path)
    assert info['verified'] and info['unverified'] == []


# ---- corrupt, truncated, garbage ----------------------------------------------------------


def test_a_flipped_byte_in_a_message_is_a_crc_error_naming_file_chunk_and_topics(good, tmp_path):
    path, _, _ = good
    bag = damaged_copy(path, tmp_path)
    mcap_file = mcap_of(bag)
    at = mcap_file.read_bytes().index(b'payload-004-')
    flip(mcap_file, at + 3)  # 'payload' -> 'paxload': same length, same structure
    for reader in (lambda p: list(read_bag(p, typestore=STORE)), bag_info):
        with pytest.raises(BagError, match='CRC mismatch') as error:
            reader(bag)
        message = str(error.value)
        assert str(mcap_file) in message and 'chunk 0 at offset' in message, message
        assert '/veh/a' in message and '/veh/b' in message and 'corrupt' in message
        assert error.value.kind == 'crc'


@pytest.mark.parametrize('cut', ['half', 'last byte', 'after magic', 'empty'])
def test_a_truncated_file_is_a_clear_error(good, tmp_path, cut):
    path, _, _ = good
    bag = damaged_copy(path, tmp_path)
    mcap_file = mcap_of(bag)
    data = mcap_file.read_bytes()
    keep = {'half': len(data) // 2, 'last byte': len(data) - 1, 'after magic': 8,
            'empty': 0}[cut]
    mcap_file.write_bytes(data[:keep])
    with pytest.raises(BagError) as error:
        read_bag(bag, typestore=STORE)
    assert str(mcap_file) in str(error.value) and error.value.kind == 'structure'
    assert 'truncated' in str(error.value)


def test_garbage_and_absurd_record_lengths_are_clear_errors_at_once(good, tmp_path):
    path, _, _ = good
    data = mcap_of(path).read_bytes()
    chunk_at = data.index(b'\x06', 8 + 9 + struct.unpack_from('<Q', data, 9)[0])
    cases = {
        'garbage': bytes(range(256)) * 20,
        'appended garbage': data + b'garbage!' * 4,
        'absurd chunk length': data[:chunk_at + 1] + struct.pack('<Q', 2**62) +
        data[chunk_at + 9:],
        'absurd header length': data[:9] + struct.pack('<Q', 2**63 - 1) + data[17:],
        'absurd summary start': data[:-37 + 9] + struct.pack('<Q', 2**64 - 1) + data[-37 + 17:],
    }
    for name, content in cases.items():
        bag = damaged_copy(path, tmp_path, name.replace(' ', '_'))
        mcap_of(bag).write_bytes(content)
        start = time.monotonic()
        with pytest.raises(BagError) as error:
            read_bag(bag, typestore=STORE)
        assert time.monotonic() - start < 5.0, name
        assert str(mcap_of(bag)) in str(error.value), (name, str(error.value))


HOSTILE_METADATA = {
    'deep flow nesting': 'rosbag2_bagfile_information: ' + '[' * 100_000 + ']' * 100_000,
    'deep block nesting': 'rosbag2_bagfile_information:\n' + ''.join(
        ' ' * k + f'k{k}:\n' for k in range(1, 2000)),
    'alias bomb': 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + ''.join(
        f'{chr(98 + k)}: &{chr(98 + k)} [*{chr(97 + k)},*{chr(97 + k)},*{chr(97 + k)},'
        f'*{chr(97 + k)},*{chr(97 + k)},*{chr(97 + k)},*{chr(97 + k)},*{chr(97 + k)}]\n'
        for k in range(9)) + 'rosbag2_bagfile_information: *j\n',
    'huge file': 'rosbag2_bagfile_information: {}\n#' + 'x' * (5 << 20),
    'not a mapping': '- just\n- a list\n',
    'binary garbage': '\x00\x01\x02\x9f\xff garbage',
}


@pytest.mark.parametrize('case', sorted(HOSTILE_METADATA))
def test_hostile_metadata_yaml_is_a_clear_error_quickly(good, tmp_path, case):
    path, _, _ = good
    bag = damaged_copy(path, tmp_path)
    (bag / 'metadata.yaml').write_text(HOSTILE_METADATA[case], errors='surrogateescape')
    start = time.monotonic()
    with pytest.raises(BagError) as error:
        bag_info(bag)
    assert time.monotonic() - start < 5.0
    assert 'metadata.yaml' in str(error.value) and error.value.kind == 'metadata', \
        str(error.value)


@pytest.mark.parametrize('old, new, kind', [
    ('version: 9', 'version: nine', 'metadata'),
    ('message_count: 8\n  relative', 'message_count: 100000000000000000000000\n  relative',
     'metadata'),
    ('message_count: 8\n  relative', 'message_count: -8\n  relative', 'metadata'),
    ('relative_file_paths:\n  - good.mcap', 'relative_file_paths: 7', 'metadata'),
    ('name: /veh/a', 'name: [1, 2]', 'metadata'),
    ('name: /veh/a', 'name: /veh/x', 'mismatch'),  # its messages would vanish
    ('type: std_msgs/msg/String', 'type: nobody_msgs/msg/Gadget', 'mismatch'),
    ('depth: 10', 'depth: 11', 'mismatch'),  # QoS differs: rosbags would drop the topic
    ('namespace: /veh', 'namespace: /vex', 'mismatch'),  # custom data: kept in the .mcap
    ('nanoseconds: 7000', 'nanoseconds: 7001', 'mismatch'),
])
def test_metadata_yaml_of_wrong_types_or_changed_is_refused(good, tmp_path, old, new, kind):
    path, _, _ = good
    bag = damaged_copy(path, tmp_path)
    text = (bag / 'metadata.yaml').read_text()
    assert old in text
    (bag / 'metadata.yaml').write_text(text.replace(old, new, 1))
    with pytest.raises(BagError) as error:
        read_all(bag)
    assert 'metadata.yaml' in str(error.value) and error.value.kind == kind, str(error.value)


# ---- bags without CRCs (other writers) ----------------------------------------------------


def test_a_bag_without_crcs_reads_with_a_warning_that_it_is_unverified(tmp_path, caplog):
    path = tmp_path / 'foreign'
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)  # no CRCs at all
    writer.open()
    connection = writer.add_connection('/veh/a', STRING, typestore=STORE)
    for k in range(3):
        writer.write(connection, T0 + k, payload(k))
    writer.close()
    with caplog.at_level(logging.WARNING, logger='tspace_ros.bags'):
        messages = read_bag(path, typestore=STORE)
        assert [data for _, _, _, data in messages] == [payload(k) for k in range(3)]
    assert messages.unverified and 'no CRC' in messages.unverified[0]
    assert 'unverified' in caplog.text and str(mcap_of(path)) in caplog.text
    info = bag_info(path)
    assert not info['verified'] and 'chunks have no CRC' in info['unverified'][0]


# ---- the replay command --------------------------------------------------------------------


def _replay(bag, tmp_path):
    return subprocess.run(REPLAY + ['--bag', str(bag), '--rate', '0', '--no-clock'],
                          capture_output=True, text=True, timeout=90)


def test_replay_command_refuses_corrupt_and_truncated_bags_without_a_traceback(good, tmp_path):
    path, _, _ = good
    corrupt = damaged_copy(path, tmp_path, 'corrupt')
    data = mcap_of(corrupt).read_bytes()
    flip(mcap_of(corrupt), data.index(b'payload-002-') + 9, 0x40)
    truncated = damaged_copy(path, tmp_path, 'truncated')
    mcap_of(truncated).write_bytes(data[:len(data) - 100])
    for bag, reason in ((corrupt, 'CRC mismatch'), (truncated, 'truncated')):
        result = _replay(bag, tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert reason in result.stderr and str(mcap_of(bag)) in result.stderr, output
        assert 'Traceback' not in output and 'replaying' not in output, output


# ---- property: any damage is refused or changes nothing ---------------------------------

DAMAGE = st.one_of(
    st.tuples(st.just('flip'), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just('flip payload'), st.integers(0, 7), st.integers(1, 255)),
    st.tuples(st.just('truncate'), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just('garbage'), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
)


def _damage(data: bytes, damage) -> bytes:
    kind, where, value = damage
    data = bytearray(data)
    if kind == 'flip payload':
        at = data.find(f'payload-{where:03d}-'.encode())
        at = at + 5 if at >= 0 else 0
        if at < len(data):
            data[at] ^= value
    elif kind == 'flip' and data:
        data[int(where * len(data))] ^= value
    elif kind == 'truncate':
        del data[int(where * len(data)):]
    elif kind == 'garbage':
        at = int(where * len(data))
        data[at:at + len(value)] = value
    return bytes(data)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(['mcap', 'metadata.yaml']), damages=st.lists(DAMAGE, min_size=1,
                                                                           max_size=3))
def test_property_damage_is_refused_or_changes_nothing(good, target, damages):
    path, _, expected = good
    with tempfile.TemporaryDirectory() as where:
        bag = damaged_copy(path, pathlib.Path(where))
        file = mcap_of(bag) if target == 'mcap' else bag / 'metadata.yaml'
        data = file.read_bytes()
        for damage in damages:
            data = _damage(data, damage)
        file.write_bytes(data)
        try:
            got = read_all(bag)
        except BagError as error:
            assert str(error), 'an empty message'
            return
        assert got == expected, 'damaged data read as good'
