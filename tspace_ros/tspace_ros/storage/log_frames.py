"""
The append log's file format: Arrow record batches in CRC-checked frames.

A segment file is ``MAGIC`` followed by frames. Each frame is a 16-byte header,
``b'TSPF'``, the payload length, the payload's CRC-32 and the CRC-32 of the
first 12 header bytes (all little-endian uint32), then the payload: first the
Arrow schema (``Schema.serialize``), then one record batch per write
(``RecordBatch.serialize``).

Reading tells three things apart, so that nothing corrupt is taken for an
interrupted write and nothing is lost silently:

- a clean file: every frame checks;
- a truncated tail: the file ends inside the last frame (its header, if whole,
  checks), or holds no batch at all: the writer was interrupted before that
  write was acknowledged. (A cut exactly between two frames cannot be told
  from a crash between two writes: the log's last segment may end there.)
- corruption: a header or payload CRC that does not match, a payload that is
  not what its place says, or garbage. The reader skips a corrupt frame (its
  header still checks) or resynchronises on the next frame whose header and
  payload both check, so the good frames after a scribble are kept; every
  problem is described in ``LogRead.problems``.
"""

from dataclasses import dataclass, field
import struct
from typing import List, Optional
import zlib

import pyarrow as pa

MAGIC = b'TSPLOG01'
FRAME = b'TSPF'
HEADER = struct.Struct('<4sIII')
MAX_FRAME_BYTES = 256 * 1024 * 1024  # a frame longer than this is a corrupt header


def frame(payload: bytes) -> bytes:
    """Return one payload framed: the 16-byte header, then the payload."""
    head = struct.pack('<4sII', FRAME, len(payload), zlib.crc32(payload))
    return head + struct.pack('<I', zlib.crc32(head)) + payload


def encode_schema(schema: pa.Schema) -> bytes:
    """Return the file's start: the magic and the schema's frame."""
    return MAGIC + frame(schema.serialize().to_pybytes())


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """Return the frame of one record batch."""
    return frame(batch.serialize().to_pybytes())


@dataclass
class LogRead:
    """What reading a segment found: the good batches and every problem."""

    schema: Optional[pa.Schema] = None
    batches: List[pa.RecordBatch] = field(default_factory=list)
    truncated: bool = False           # the file ends inside its last frame
    corrupt_frames: int = 0           # frames (or stretches of garbage) not taken
    problems: List[str] = field(default_factory=list)

    @property
    def corrupt(self) -> bool:
        """Whether anything in the file is corrupt, not just an interrupted write."""
        return self.corrupt_frames > 0


def _header_at(data: bytes, pos: int):
    """Return (length, payload crc) of a frame header that checks at pos, else None."""
    if pos + HEADER.size > len(data):
        return None
    magic, length, payload_crc, header_crc = HEADER.unpack_from(data, pos)
    if magic != FRAME or header_crc != zlib.crc32(data[pos:pos + 12]) or \
            length > MAX_FRAME_BYTES:
        return None
    return length, payload_crc


def _resync(data: bytes, pos: int) -> int:
    """Return the offset of the next frame whose header and payload check, or len(data)."""
    at = data.find(FRAME, pos)
    while at >= 0:
        header = _header_at(data, at)
        if header is not None:
            length, crc = header
            end = at + HEADER.size + length
            if end <= len(data) and zlib.crc32(data[at + HEADER.size:end]) == crc:
                return at
        at = data.find(FRAME, at + 1)
    return len(data)


def read_segment(data: bytes, where: str, schema: Optional[pa.Schema] = None) -> LogRead:
    """
    Return the batches of one segment's bytes and what was wrong with them; never raises.

    ``schema`` is used for the batches when the file's own schema frame is lost.
    """
    result = LogRead()
    if not data:
        result.truncated = True               # created, but its first write never made it
        return result
    if len(data) < len(MAGIC):
        if MAGIC.startswith(data):
            result.truncated = True
        else:
            result.corrupt_frames += 1
            result.problems.append(f'{where}: {len(data)} bytes, not a log segment')
        return result
    pos = len(MAGIC)
    if data[:len(MAGIC)] != MAGIC:
        result.corrupt_frames += 1
        result.problems.append(f'{where}: bad magic {data[:8]!r} at offset 0')
        pos = _resync(data, 0)
    first = True
    while pos < len(data):
        header = _header_at(data, pos)
        if header is None:
            remaining = len(data) - pos
            if remaining < HEADER.size and data[pos:pos + 4] == FRAME[:min(4, remaining)]:
                result.truncated = True       # the header itself was cut short
                break
            result.corrupt_frames += 1
            following = _resync(data, pos + 1)
            result.problems.append(f'{where}: corrupt frame header at offset {pos} '
                                   f'({following - pos} bytes skipped)')
            pos, first = following, False
            continue
        length, crc = header
        start, end = pos + HEADER.size, pos + HEADER.size + length
        if end > len(data):
            result.truncated = True           # an interrupted write: the tail is missing
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            result.corrupt_frames += 1
            result.problems.append(f'{where}: CRC mismatch in the frame at offset {pos} '
                                   f'({length} bytes)')
            pos, first = end, False
            continue
        try:
            buffer = pa.py_buffer(payload)
            if first and pos == len(MAGIC):
                result.schema = pa.ipc.read_schema(buffer)
            else:
                use = result.schema or schema
                if use is None:
                    raise ValueError('no schema to read the batch with')
                batch = pa.ipc.read_record_batch(buffer, use)
                batch.validate(full=True)
                result.batches.append(batch)
        except Exception as error:  # noqa: B902 - a crafted payload with a valid CRC
            result.corrupt_frames += 1
            result.problems.append(f'{where}: frame at offset {pos} is not a valid '
                                   f'{"schema" if first else "record batch"} '
                                   f'({type(error).__name__}: {str(error)[:120]})')
        pos, first = end, False
    if not result.batches and not result.corrupt:
        result.truncated = True  # the writer writes the schema with the first batch
    return result
