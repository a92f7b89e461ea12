"""Fault class: policy blobs (weights npz) flipped, cut, padded, replaced or bombed."""

import io
import random
import zipfile

from faults import FaultTally
import numpy as np
from tspace_ros.agents.policy_exchange import PolicyBlob, PolicyError


def _good() -> bytes:
    rng = np.random.default_rng(0)
    return PolicyBlob('ddpg', 3, [('actor/kernel', rng.normal(size=(90, 8)).astype(np.float32)),
                                  ('actor/bias', np.zeros(8, np.float32))],
                      state_dim=90, action_dim=68).to_bytes()


def _hostile(good: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:  # a flipped byte
        at = rng.randrange(len(good))
        return good[:at] + bytes([rng.randrange(256)]) + good[at + 1:]
    if kind == 1:  # cut short
        return good[:rng.randrange(len(good))]
    if kind == 2:  # garbage
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, \
            zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info) if kind == 4 or rng.random() < 0.5
                         else b'not an array')
        if kind == 4:  # a bomb: megabytes of zeros in a few kilobytes
            out.writestr('bomb.npy', b'\0' * rng.randrange(20_000_000, 60_000_000))
    return buffer.getvalue()


def run(cases: int, seed: int) -> FaultTally:
    """Try `cases` hostile blobs; a blob that loads must hold only plain arrays."""
    tally = FaultTally('policy blobs')
    rng = random.Random(seed)
    good = _good()
    for _ in range(cases):
        data = _hostile(good, rng)
        try:
            blob = PolicyBlob.from_bytes(data, max_bytes=10_000_000)
        except PolicyError as error:
            tally.reject(str(error).split(':')[1].strip()[:40] if ':' in str(error) else 'invalid')
            continue
        except Exception as error:  # noqa: B902 - what the boundary let through
            tally.escape(error)
            continue
        tally.accept()
        if any(array.dtype.hasobject for _, array in blob.weights):
            tally.lose()
    return tally
