"""Policy blobs from the outside: any bytes, crafted archives and zip bombs are refused cleanly."""

import io
import time
import tracemalloc
import zipfile

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from test_policy_exchange import make_blob

from tspace_ros.agents.policy_exchange import PolicyBlob, PolicyError


def archive(entries, compression=zipfile.ZIP_STORED):
    """Return an npz-like zip of (name, bytes) entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression=compression) as out:
        for name, data in entries:
            out.writestr(name, data)
    return buffer.getvalue()


def entries_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        return [(info.filename, src.read(info)) for info in src.infolist()]


GOOD = make_blob().to_bytes()


def test_a_good_blob_still_loads():
    blob = PolicyBlob.from_bytes(GOOD)
    assert blob.state_dim == 90 and blob.action_dim == 68


@pytest.mark.parametrize('replacement', [
    b'not an array at all',
    b'\x93NUMPY\x01\x00\x10\x00{"descr": "|O"}  \n',              # object array header
    b'\x93NUMPY\x01\x00v\x00' + b'{' * 118 + b'\n',              # garbage header
])
def test_a_member_that_is_not_a_numeric_array_is_a_policy_error(replacement):
    entries = entries_of(GOOD)
    name = next(n for n, _ in entries if n != 'metadata.json.npy')
    crafted = archive([(n, replacement if n == name else d) for n, d in entries])
    with pytest.raises(PolicyError):
        PolicyBlob.from_bytes(crafted)


def test_a_zip_bomb_is_refused_before_it_is_decompressed():
    entries = entries_of(GOOD)
    bomb = archive(entries + [('bomb.npy', b'\0' * 300_000_000)], zipfile.ZIP_DEFLATED)
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(PolicyError, match='limit'):
        PolicyBlob.from_bytes(bomb, max_bytes=10_000_000)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50_000_000 and elapsed < 5.0, (peak, elapsed)


def test_a_lying_zip_directory_is_caught_by_the_read_cap():
    entries = entries_of(GOOD)
    data = bytearray(archive(entries + [('liar.npy', b'\0' * 5_000_000)],
                             zipfile.ZIP_DEFLATED))
    # Rewrite the declared uncompressed size of 'liar.npy' in its central directory entry.
    at = data.rfind(b'PK\x01\x02')
    data[at + 24:at + 28] = (16).to_bytes(4, 'little')
    with pytest.raises(PolicyError):
        PolicyBlob.from_bytes(bytes(data), max_bytes=1_000_000)


@settings(max_examples=60, deadline=None)
@given(st.one_of(
    st.binary(max_size=2000),
    st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)).map(
        lambda flip: GOOD[:flip[0]] + bytes([flip[1]]) + GOOD[flip[0] + 1:]),
    st.integers(0, len(GOOD)).map(lambda cut: GOOD[:cut])))
def test_any_bytes_load_or_are_a_policy_error(data):
    try:
        blob = PolicyBlob.from_bytes(data)
    except PolicyError:
        return
    for _, array in blob.weights:
        assert isinstance(array, np.ndarray) and not array.dtype.hasobject
