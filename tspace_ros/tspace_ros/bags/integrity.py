"""
MCAP checksums: written into the bags we record, verified in every bag we read.

MCAP (https://mcap.dev/spec) has three CRC-32 fields, 0 meaning "not
computed": each chunk's ``uncompressed_crc`` (over its records), the
``data_section_crc`` of the DataEnd record (over every byte from the file's
start to the DataEnd record) and the footer's ``summary_crc`` (over the
summary section and the footer up to that field). The rosbags writer leaves
all three at 0; ``add_crcs`` fills them in once the file is closed, in place
(each step leaves a valid file: a crash half-way leaves fewer CRCs, never a
wrong one).

``verify_mcap`` reads the whole file once with bounded memory before anything
else parses it: every record length is checked against the file, every CRC
that is there is checked, the chunk indexes and statistics of the summary
are checked against the chunks and messages really in the data section. A
problem is a ``BagError`` naming the file and the offset (and the chunk and
its topics); a file whose messages or summary carry no CRC (bags of other
writers) passes with ``McapCheck.unverified`` saying what could not be
checked. ``check_metadata_yaml`` bounds and type-checks a metadata.yaml before
any YAML library builds it.
"""

import dataclasses
import pathlib
import struct
import threading
from typing import Dict, List, Optional, Tuple
import zlib

from tspace_ros.bags.errors import BagError
from tspace_ros.bounded_yaml import load_bounded, YamlBoundsError

MAGIC = b'\x89MCAP0\r\n'
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 1, 2, 3, 4, 5, 6
OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS, OP_METADATA = 7, 8, 11, 12
OP_SUMMARY_OFFSET, OP_DATA_END = 14, 15
OPCODE_NAMES = {1: 'header', 2: 'footer', 3: 'schema', 4: 'channel', 5: 'message', 6: 'chunk',
                7: 'message index', 8: 'chunk index', 9: 'attachment',
                10: 'attachment index', 11: 'statistics', 12: 'metadata',
                13: 'metadata index', 14: 'summary offset', 15: 'data end'}
FOOTER_BYTES = 9 + 20  # opcode, length, summary_start, summary_offset_start, summary_crc
MIN_FILE_BYTES = 8 + 9 + 8 + 9 + 4 + FOOTER_BYTES + 8  # magic, header, data end, footer, magic

# Bounds against hostile files: one record (a chunk, a message) is read whole, at most this.
MAX_RECORD_BYTES = 1 << 30
MAX_METADATA_YAML_BYTES = 4 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_EVENTS = 1_000_000
MAX_LIST = 100_000
BLOCK_BYTES = 1 << 20
MAX_NS = 2**63 - 1


def _decompressor(compression: str):
    """Return f(data, size) -> bytes of at most size + 1 bytes, or None when unsupported."""
    if compression == '':
        return lambda data, size: bytes(data)
    if compression == 'zstd':
        try:
            from compression import zstd
        except ImportError:
            try:
                from backports import zstd
            except ImportError:
                return None
        return lambda data, size: zstd.ZstdDecompressor().decompress(data, max_length=size + 1)
    if compression == 'lz4':
        try:
            import lz4.frame
        except ImportError:
            return None
        return lambda data, size: lz4.frame.LZ4FrameDecompressor().decompress(
            data, max_length=size + 1)
    return None


class _Malformed(Exception):
    """A field that runs past its record (internal: becomes a BagError with the place)."""


class _Fields:
    """Little-endian fields of one record's bytes, each checked against the record's end."""

    def __init__(self, data, start: int = 0, end: Optional[int] = None):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def take(self, size: int):
        if size < 0 or size > self.end - self.pos:
            raise _Malformed(f'a field of {size} bytes runs past the record end')
        start, self.pos = self.pos, self.pos + size
        return self.data[start:self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack('<H', self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack('<I', self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack('<Q', self.take(8))[0]

    def string(self) -> str:
        try:
            return bytes(self.take(self.u32())).decode('utf-8')
        except UnicodeDecodeError:
            raise _Malformed('a string is not UTF-8') from None

    def sized(self, length_bytes: int = 4):
        return self.take(self.u32() if length_bytes == 4 else self.u64())

    def string_map(self) -> Dict[str, str]:
        inner = _Fields(self.sized())
        result = {}
        while inner.pos < inner.end:
            key = inner.string()
            result[key] = inner.string()
        return result


@dataclasses.dataclass
class McapCheck:
    """What verify_mcap found in one .mcap file (every count from the data itself)."""

    path: str
    size: int = 0
    chunks: int = 0
    chunks_with_crc: int = 0
    loose_messages: int = 0  # messages outside chunks
    data_crc: bool = False  # a data-section CRC was there (and matched)
    summary: bool = False
    summary_crc: bool = False
    message_count: int = 0
    channel_counts: Dict[int, int] = dataclasses.field(default_factory=dict)
    channels: Dict[int, Tuple[str, str, str]] = dataclasses.field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    embedded_metadata: Optional[str] = None  # the rosbag2 metadata record's YAML

    @property
    def unverified(self) -> List[str]:
        """Return what no CRC covers (empty: every byte the reader uses is checked)."""
        reasons = []
        if not self.data_crc:
            if self.chunks_with_crc < self.chunks:
                reasons.append(f'{self.chunks - self.chunks_with_crc} of {self.chunks} chunks '
                               'have no CRC')
            if self.loose_messages:
                reasons.append(f'{self.loose_messages} messages outside chunks and no '
                               'data-section CRC')
        if self.summary and not self.summary_crc:
            reasons.append('the summary has no CRC')
        return reasons


def _crc_of_file_range(stream, start: int, end: int, crc: int = 0) -> int:
    stream.seek(start)
    remaining = end - start
    while remaining > 0:
        block = stream.read(min(BLOCK_BYTES, remaining))
        if not block:
            raise _Malformed(f'the file ends at {end - remaining}, before offset {end}')
        crc = zlib.crc32(block, crc)
        remaining -= len(block)
    return crc


def _read_exact(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise _Malformed(f'the file ends {size - len(data)} bytes early')
    return data


def _record_head(stream, pos: int, limit: int, section: str) -> Tuple[int, int, bytes]:
    """Return (opcode, length, its 9 bytes) of the record at pos, which must end by limit."""
    if limit - pos < 9:
        raise _Malformed(f'{section}: {limit - pos} stray bytes at offset {pos}, not a record')
    stream.seek(pos)
    head = _read_exact(stream, 9)
    opcode, length = head[0], struct.unpack('<Q', head[1:])[0]
    name = OPCODE_NAMES.get(opcode, f'opcode 0x{opcode:02x}')
    if length > limit - pos - 9:
        raise _Malformed(f'{section}: the {name} record at offset {pos} says it is {length} '
                         f'bytes long, past the end of the {section} at {limit} (truncated '
                         'or damaged)')
    return opcode, length, head


class _Verifier:
    """One pass over an MCAP file (see verify_mcap)."""

    def __init__(self, stream, path: str, size: int):
        self.stream = stream
        self.check = McapCheck(path=path, size=size)
        self.data_channels: Dict[int, Tuple[int, str, str, dict]] = {}
        self.data_schemas: Dict[int, str] = {}
        self.summary_channels: Dict[int, Tuple[int, str, str, dict]] = {}
        self.summary_schemas: Dict[int, str] = {}
        self.chunks: Dict[int, tuple] = {}  # offset -> (length, compression, sizes, times)
        self.chunk_indexes: Dict[int, tuple] = {}
        self.statistics = None
        self.times: List[int] = []

    # ---- records ---------------------------------------------------------------------------

    @staticmethod
    def _schema(fields: _Fields, schemas: Dict[int, str]):
        key = fields.u16()
        name = fields.string()
        fields.string()  # encoding
        fields.sized()
        if key == 0:
            raise _Malformed('a schema with the reserved id 0')
        schemas[key] = name

    @staticmethod
    def _channel(fields: _Fields, channels, schemas):
        key = fields.u16()
        schema_id = fields.u16()
        topic = fields.string()
        encoding = fields.string()
        metadata = fields.string_map()
        if schema_id and schema_id not in schemas:
            raise _Malformed(f'channel {key} ({topic}) names the unknown schema {schema_id}')
        new = (schema_id, topic, encoding, metadata)
        if channels.get(key, new) != new:
            raise _Malformed(f'channel {key} is declared twice, differently')
        channels[key] = new

    def _message(self, fields: _Fields, where: str):
        channel = fields.u16()
        fields.u32()  # sequence
        log_time = fields.u64()
        fields.u64()  # publish time
        if channel not in self.data_channels and channel not in self.summary_channels:
            raise _Malformed(f'{where}: a message on the undeclared channel {channel}')
        counts = self.check.channel_counts
        counts[channel] = counts.get(channel, 0) + 1
        self.check.message_count += 1
        return channel, log_time

    def _note_time(self, stamp: int):
        if self.check.message_count == 1:
            self.check.start_ns = self.check.end_ns = stamp
        else:
            self.check.start_ns = min(self.check.start_ns, stamp)
            self.check.end_ns = max(self.check.end_ns, stamp)

    def _chunk(self, pos: int, length: int, number: int):
        if length > MAX_RECORD_BYTES:
            raise _Malformed(f'chunk {number} at offset {pos} is {length} bytes, more than '
                             f'the {MAX_RECORD_BYTES} this reader takes')
        body = _read_exact(self.stream, length)
        fields = _Fields(body)
        start, end, size, crc = fields.u64(), fields.u64(), fields.u64(), fields.u32()
        compression = fields.string()
        records = fields.sized(8)
        place = f'chunk {number} at offset {pos}'
        channels = self.chunk_indexes.get(pos, (None,) * 5)[4] or ()
        known = {**self.data_channels, **self.summary_channels}
        names = sorted({known[c][1] for c in channels if c in known})
        topics = f' (messages of {", ".join(names)})' if names else ''
        if size > MAX_RECORD_BYTES:
            raise _Malformed(f'{place}{topics} says it holds {size} bytes, more than '
                             f'{MAX_RECORD_BYTES}')
        decompress = _decompressor(compression)
        if decompress is None:
            raise BagError(f'{place}{topics}: unsupported chunk compression {compression!r}',
                           'structure')
        try:
            data = decompress(records, size)
        except Exception as error:  # the decompressor's own errors on damaged data
            raise BagError(f'{place}{topics}: cannot decompress ({compression}): {error}',
                           'crc' if crc else 'structure') from None
        if len(data) != size:
            raise _Malformed(f'{place}{topics}: holds {len(data)} bytes, its header says '
                             f'{size}')
        self.check.chunks += 1
        if crc:
            actual = zlib.crc32(data)
            if actual != crc:
                raise BagError(
                    f'{place}{topics}: CRC mismatch (stored 0x{crc:08x}, computed '
                    f'0x{actual:08x}): the recorded data is corrupt', 'crc')
            self.check.chunks_with_crc += 1
        self.chunks[pos] = (9 + length, compression, len(records), size, start, end)
        self._chunk_records(data, place, start, end)
        return body

    def _chunk_records(self, data: bytes, place: str, start: int, end: int):
        offset = 0
        while offset < len(data):
            if len(data) - offset < 9:
                raise _Malformed(f'{place}: {len(data) - offset} stray bytes at its end')
            opcode = data[offset]
            length = struct.unpack_from('<Q', data, offset + 1)[0]
            if length > len(data) - offset - 9:
                raise _Malformed(f'{place}: a record at {offset} in it runs past its end')
            fields = _Fields(data, offset + 9, offset + 9 + length)
            if opcode == OP_SCHEMA:
                self._schema(fields, self.data_schemas)
            elif opcode == OP_CHANNEL:
                self._channel(fields, self.data_channels, self.data_schemas)
            elif opcode == OP_MESSAGE:
                channel, stamp = self._message(fields, place)
                if not start <= stamp <= end:
                    raise _Malformed(f'{place}: a message of channel {channel} at {stamp} '
                                     f"ns, outside the chunk's {start}..{end}")
                self._note_time(stamp)
            elif opcode in (OP_HEADER, OP_FOOTER, OP_CHUNK, OP_DATA_END):
                raise _Malformed(f'{place}: a {OPCODE_NAMES[opcode]} record inside a chunk')
            offset += 9 + length

    # ---- sections --------------------------------------------------------------------------

    def run(self) -> McapCheck:
        stream, size = self.stream, self.check.size
        if size < MIN_FILE_BYTES:
            raise _Malformed(f'only {size} bytes: truncated, or not an MCAP file')
        stream.seek(0)
        if stream.read(8) != MAGIC:
            raise _Malformed('no MCAP magic at offset 0: not an MCAP file')
        stream.seek(size - 8)
        if stream.read(8) != MAGIC:
            raise _Malformed('no MCAP magic at its end: truncated (the recording did not '
                             'close the file?) or damaged')
        footer_at = size - 8 - FOOTER_BYTES
        stream.seek(footer_at)
        footer = _read_exact(stream, FOOTER_BYTES)
        if footer[0] != OP_FOOTER or struct.unpack_from('<Q', footer, 1)[0] != 20:
            raise _Malformed(f'no footer record at offset {footer_at}: truncated or damaged')
        summary_start, offsets_start, summary_crc = struct.unpack_from('<QQI', footer, 9)
        if summary_start and not 8 < summary_start <= footer_at:
            raise _Malformed(f'the footer puts the summary at {summary_start}, outside the '
                             'file')
        if summary_start:
            self._summary(summary_start, footer_at, offsets_start, summary_crc)
        elif offsets_start:
            raise _Malformed('the footer has summary offsets but no summary')
        self._data(summary_start or footer_at)
        self._cross_check()
        return self.check

    def _summary(self, start: int, end: int, offsets_start: int, stored_crc: int):
        self.check.summary = True
        if stored_crc:
            actual = _crc_of_file_range(self.stream, start, end)
            actual = _crc_of_file_range(self.stream, end, end + 25, actual)
            if actual != stored_crc:
                raise BagError(f'the summary at offset {start} (topics, chunk index): CRC '
                               f'mismatch (stored 0x{stored_crc:08x}, computed '
                               f'0x{actual:08x}): the file is corrupt', 'crc')
            self.check.summary_crc = True
        pos, first_offset = start, None
        while pos < end:
            opcode, length, _ = _record_head(self.stream, pos, end, 'summary')
            if opcode == OP_SUMMARY_OFFSET:
                first_offset = pos if first_offset is None else first_offset
            elif first_offset is not None:
                raise _Malformed(f'summary: a {OPCODE_NAMES.get(opcode, opcode)} record at '
                                 f'offset {pos} after the summary offsets')
            if opcode in (OP_SCHEMA, OP_CHANNEL, OP_CHUNK_INDEX, OP_STATISTICS,
                          OP_SUMMARY_OFFSET):
                if length > MAX_RECORD_BYTES:
                    raise _Malformed(f'summary: a record of {length} bytes at offset {pos}')
                fields = _Fields(_read_exact(self.stream, length))
                try:
                    self._summary_record(opcode, fields, pos, start, end)
                except _Malformed as error:
                    raise _Malformed(f'summary: the {OPCODE_NAMES[opcode]} record at offset '
                                     f'{pos}: {error}') from None
            elif opcode in (OP_HEADER, OP_FOOTER, OP_MESSAGE, OP_CHUNK, OP_DATA_END):
                raise _Malformed(f'summary: a {OPCODE_NAMES[opcode]} record at offset {pos}')
            pos += 9 + length
        if offsets_start and offsets_start != (first_offset or end):
            raise _Malformed(f'the footer puts the summary offsets at {offsets_start}, not '
                             f'at {first_offset or end}')

    def _summary_record(self, opcode, fields, pos, start, end):
        if opcode == OP_SCHEMA:
            self._schema(fields, self.summary_schemas)
        elif opcode == OP_CHANNEL:
            self._channel(fields, self.summary_channels, self.summary_schemas)
        elif opcode == OP_CHUNK_INDEX:
            first, last, offset, length = (fields.u64() for _ in range(4))
            index = _Fields(fields.sized())
            channels = {}
            while index.pos < index.end:
                channel = index.u16()
                channels[channel] = index.u64()
            index_length = fields.u64()
            compression = fields.string()
            compressed, uncompressed = fields.u64(), fields.u64()
            if offset in self.chunk_indexes:
                raise _Malformed(f'a second index of the chunk at {offset}')
            for channel, at in channels.items():
                if not offset + length <= at < offset + length + index_length:
                    raise _Malformed(f'the message index of channel {channel} at {at} is '
                                     'not after its chunk')
            self.chunk_indexes[offset] = (length, compression, compressed, uncompressed,
                                          tuple(channels), first, last)
        elif opcode == OP_STATISTICS:
            count = fields.u64()
            fields.u16(), fields.u32(), fields.u32(), fields.u32()
            chunk_count, first, last = fields.u32(), fields.u64(), fields.u64()
            counts = {}
            index = _Fields(fields.sized())
            while index.pos < index.end:
                channel = index.u16()
                counts[channel] = index.u64()
            self.statistics = (count, chunk_count, first, last, counts)
        elif opcode == OP_SUMMARY_OFFSET:
            fields.u8()
            group_start, group_length = fields.u64(), fields.u64()
            if not (start <= group_start and group_start + group_length <= end):
                raise _Malformed('it points outside the summary')

    def _data(self, end: int):
        stream, check = self.stream, self.check
        crc = zlib.crc32(MAGIC)
        if _record_head(stream, 8, end, 'data section')[0] != OP_HEADER:
            raise _Malformed('the first record (offset 8) is not the MCAP header')
        pos, number = 8, 0
        while True:
            opcode, length, head = _record_head(stream, pos, end, 'data section')
            if opcode == OP_DATA_END:
                if length < 4:
                    raise _Malformed(f'the data end record at offset {pos} is {length} bytes')
                stored = struct.unpack('<I', _read_exact(stream, 4))[0]
                if stored:
                    if stored != crc:
                        raise BagError(f'data section: CRC mismatch (stored 0x{stored:08x}, '
                                       f'computed 0x{crc:08x}): the file is corrupt '
                                       f'(somewhere between offsets 0 and {pos})', 'crc')
                    check.data_crc = True
                if pos + 9 + length != end:
                    raise _Malformed(f'{end - pos - 9 - length} stray bytes after the data end '
                                     f'record at offset {pos}')
                return
            crc = zlib.crc32(head, crc)
            if opcode == OP_CHUNK:
                body = self._chunk(pos, length, number)
                number += 1
            elif opcode in (OP_HEADER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_MESSAGE_INDEX,
                            OP_METADATA):
                if length > MAX_RECORD_BYTES:
                    raise _Malformed(f'a record of {length} bytes at offset {pos}')
                body = _read_exact(stream, length)
                try:
                    self._data_record(opcode, pos, body)
                except _Malformed as error:
                    raise _Malformed(f'data section: the {OPCODE_NAMES[opcode]} record at '
                                     f'offset {pos}: {error}') from None
            elif opcode in (OP_FOOTER, OP_CHUNK_INDEX, OP_STATISTICS, OP_SUMMARY_OFFSET):
                raise _Malformed(f'a {OPCODE_NAMES[opcode]} record at offset {pos} in the '
                                 'data section')
            else:  # attachments, metadata indexes and unknown records: only their bytes
                crc = _crc_of_file_range(stream, pos + 9, pos + 9 + length, crc)
                body = b''
            crc = zlib.crc32(body, crc)
            pos += 9 + length
            if pos >= end:
                raise _Malformed('the data section has no data end record (truncated?)')

    def _data_record(self, opcode: int, pos: int, body: bytes):
        fields = _Fields(body)
        if opcode == OP_HEADER:
            if pos != 8:
                raise _Malformed('a second header')
            fields.string(), fields.string()
        elif opcode == OP_SCHEMA:
            self._schema(fields, self.data_schemas)
        elif opcode == OP_CHANNEL:
            self._channel(fields, self.data_channels, self.data_schemas)
        elif opcode == OP_MESSAGE:
            _, stamp = self._message(fields, f'offset {pos}')
            self.check.loose_messages += 1
            self._note_time(stamp)
        elif opcode == OP_MESSAGE_INDEX:
            fields.u16()
            entries = fields.sized()
            if len(entries) % 16:
                raise _Malformed('its entries are not 16 bytes each')
        elif opcode == OP_METADATA:
            name = fields.string()
            values = fields.string_map()
            if name == 'rosbag2' and 'serialized_metadata' in values:
                self.check.embedded_metadata = values['serialized_metadata']

    def _cross_check(self):
        check = self.check
        summary_channels = self.summary_channels
        for key, channel in self.data_channels.items():
            if summary_channels.get(key, channel) != channel:
                raise _Malformed(f'channel {key} is {channel[1]} in the data, '
                                 f'{summary_channels[key][1]} in the summary')
        if check.summary and summary_channels:
            channels, schemas = summary_channels, self.summary_schemas
        else:
            channels, schemas = self.data_channels, self.data_schemas
        for channel in check.channel_counts:
            if channel not in channels:
                raise _Malformed(f'messages on channel {channel}, which the summary lacks')
        check.channels = {key: (topic, schemas.get(schema_id, ''), encoding)
                          for key, (schema_id, topic, encoding, _) in channels.items()}
        if self.chunk_indexes:
            if set(self.chunk_indexes) != set(self.chunks):
                lost = sorted(set(self.chunks) ^ set(self.chunk_indexes))
                raise _Malformed(f'the chunk index does not match the chunks (at {lost[:5]})')
            for offset, (length, compression, packed, size, _, first, last) in \
                    self.chunk_indexes.items():
                if self.chunks[offset] != (length, compression, packed, size, first, last):
                    raise _Malformed(f'the chunk index disagrees with the chunk at {offset}')
        if self.statistics is not None:
            count, chunk_count, first, last, counts = self.statistics
            actual = {k: n for k, n in check.channel_counts.items() if n}
            if (count, chunk_count) != (check.message_count, check.chunks) or \
                    {k: n for k, n in counts.items() if n} != actual or \
                    (count and (first, last) != (check.start_ns, check.end_ns)):
                raise _Malformed(
                    f'the statistics ({count} messages in {chunk_count} chunks) disagree '
                    f'with the data ({check.message_count} messages in {check.chunks} chunks)')


_CACHE: Dict[tuple, McapCheck] = {}
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 64


def verify_mcap(path) -> McapCheck:
    """
    Check one .mcap file whole (structure, every CRC there, summary against data).

    Raises BagError naming the file (kind 'crc' for a checksum that does not
    match, 'structure' for a truncated, garbage or malformed file). The result
    is cached for the process by path, size, inode and modification time, so
    opening a bag again (replay opens it several times) does not read it again.
    """
    path = pathlib.Path(path)
    try:
        status = path.stat()
    except OSError as error:
        raise BagError(f'{path}: cannot read the file: {error.strerror or error}',
                       'missing') from None
    key = (str(path.resolve()), status.st_size, status.st_ino, status.st_dev,
           status.st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    try:
        with open(path, 'rb') as stream:
            check = _Verifier(stream, str(path), status.st_size).run()
    except BagError as error:
        raise BagError(f'{path}: {error}', error.kind) from None
    except _Malformed as error:
        raise BagError(f'{path}: cannot read the bag: {error}', 'structure') from None
    except (OSError, struct.error, ValueError, MemoryError) as error:
        raise BagError(f'{path}: cannot read the file: {error}', 'structure') from None
    with _CACHE_LOCK:
        if len(_CACHE) >= CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = check
    return check


def add_crcs(path) -> None:
    """
    Fill in the chunk, data-section and summary CRCs of a closed MCAP file, in place.

    For files of the rosbags writer (uncompressed or zstd chunks); CRCs that are
    already there are kept. Raises BagError when the file is not what a writer
    closes.
    """
    path = pathlib.Path(path)
    try:
        with open(path, 'r+b') as stream:
            _add_crcs(stream, path.stat().st_size)
    except _Malformed as error:
        raise BagError(f'{path}: cannot add the CRCs: {error}', 'write') from None
    except OSError as error:
        raise BagError(f'{path}: cannot add the CRCs: {error}', 'write') from None


def _add_crcs(stream, size: int) -> None:
    if size < MIN_FILE_BYTES:
        raise _Malformed('too short for an MCAP file')
    stream.seek(0)
    if stream.read(8) != MAGIC:
        raise _Malformed('not an MCAP file')
    footer_at = size - 8 - FOOTER_BYTES
    stream.seek(footer_at)
    footer = _read_exact(stream, FOOTER_BYTES)
    if footer[0] != OP_FOOTER:
        raise _Malformed('no footer')
    summary_start, _, summary_crc = struct.unpack_from('<QQI', footer, 9)
    end = summary_start or footer_at
    crc, pos = zlib.crc32(MAGIC), 8
    while True:
        opcode, length, head = _record_head(stream, pos, end, 'data section')
        if opcode == OP_DATA_END:
            stored = struct.unpack('<I', _read_exact(stream, 4))[0]
            if not stored:
                stream.seek(pos + 9)
                stream.write(struct.pack('<I', crc))
            break
        crc = zlib.crc32(head, crc)
        if opcode == OP_CHUNK and length <= MAX_RECORD_BYTES:
            body = bytearray(_read_exact(stream, length))
            fields = _Fields(body)
            fields.u64(), fields.u64()
            uncompressed = fields.u64()
            chunk_crc = fields.u32()
            compression = fields.string()
            records = fields.sized(8)
            decompress = _decompressor(compression)
            if not chunk_crc and decompress is not None:
                chunk_crc = zlib.crc32(decompress(records, uncompressed))
                body[24:28] = struct.pack('<I', chunk_crc)
                stream.seek(pos + 9 + 24)
                stream.write(body[24:28])
            crc = zlib.crc32(body, crc)
        else:
            crc = _crc_of_file_range(stream, pos + 9, pos + 9 + length, crc)
        pos += 9 + length
    stream.flush()
    if summary_start and not summary_crc:
        crc = _crc_of_file_range(stream, summary_start, footer_at)
        crc = _crc_of_file_range(stream, footer_at, footer_at + 25, crc)
        stream.seek(footer_at + 25)
        stream.write(struct.pack('<I', crc))
    stream.flush()


# ---- metadata.yaml --------------------------------------------------------------------------

def load_bounded_yaml(text, where: str):
    """Parse YAML within the bounds above (safe types only); raise BagError otherwise."""
    try:
        return load_bounded(text, where, max_bytes=MAX_METADATA_YAML_BYTES,
                            max_depth=MAX_YAML_DEPTH, max_nodes=MAX_YAML_EVENTS)
    except YamlBoundsError as error:
        raise BagError(str(error), 'metadata') from None


def _is_int(value, low=0, high=MAX_NS) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _type_error(where: str, key: str, expected: str, value) -> BagError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + '...'
    return BagError(f'{where}: {key} must be {expected}, not {shown}', 'metadata')


def check_metadata_yaml(path) -> dict:
    """
    Read a bag's metadata.yaml within bounds and check its types; return its information.

    Returns the ``rosbag2_bagfile_information`` dict. Raises BagError (kind
    'metadata') for a file too big, too deep, with aliases, not YAML, or with a
    field of the wrong type or out of range.
    """
    path = pathlib.Path(path)
    where = str(path)
    try:
        with open(path, 'rb') as stream:
            data = stream.read(MAX_METADATA_YAML_BYTES + 1)
    except OSError as error:
        raise BagError(f'{where}: cannot read: {error.strerror or error}', 'missing') from None
    document = load_bounded_yaml(data, where)
    info = document.get('rosbag2_bagfile_information') if isinstance(document, dict) else None
    if not isinstance(info, dict):
        raise BagError(f'{where}: no rosbag2_bagfile_information mapping', 'metadata')
    if not _is_int(info.get('version'), 1, 9):
        raise _type_error(where, 'version', 'a rosbag2 version 1 to 9', info.get('version'))
    for key in ('storage_identifier', 'compression_format', 'compression_mode', 'ros_distro'):
        if key in info and not isinstance(info[key], (str, type(None))):
            raise _type_error(where, key, 'a string', info[key])
    files = info.get('relative_file_paths')
    if not isinstance(files, list) or not 0 < len(files) <= MAX_LIST or \
            not all(isinstance(name, str) and name for name in files):
        raise _type_error(where, 'relative_file_paths', 'a list of file names', files)
    if not _is_int(info.get('message_count')):
        raise _type_error(where, 'message_count', 'a count', info.get('message_count'))
    for key, inner in (('duration', 'nanoseconds'), ('starting_time', 'nanoseconds_since_epoch')):
        value = info.get(key)
        if not isinstance(value, dict) or not _is_int(value.get(inner)):
            raise _type_error(where, f'{key}.{inner}', 'nanoseconds', value)
    custom = info.get('custom_data')
    if custom is not None and (not isinstance(custom, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool, type(None)))
            for k, v in custom.items())):
        raise _type_error(where, 'custom_data', 'a mapping of strings', custom)
    topics = info.get('topics_with_message_count')
    if not isinstance(topics, list) or len(topics) > MAX_LIST:
        raise _type_error(where, 'topics_with_message_count', 'a list', topics)
    for number, entry in enumerate(topics):
        key = f'topics_with_message_count[{number}]'
        metadata = entry.get('topic_metadata') if isinstance(entry, dict) else None
        if not isinstance(metadata, dict):
            raise _type_error(where, f'{key}.topic_metadata', 'a mapping', entry)
        if not _is_int(entry.get('message_count')):
            raise _type_error(where, f'{key}.message_count', 'a count',
                              entry.get('message_count'))
        for field in ('name', 'type', 'serialization_format'):
            if not isinstance(metadata.get(field), str) or not metadata.get(field):
                raise _type_error(where, f'{key}.{field}', 'a string', metadata.get(field))
        qos = metadata.get('offered_qos_profiles', '')
        if not isinstance(qos, (str, list)) or (isinstance(qos, list) and not all(
                isinstance(profile, dict) for profile in qos)):
            raise _type_error(where, f'{key}.offered_qos_profiles', 'QoS profiles', qos)
        if not isinstance(metadata.get('type_description_hash', ''), str):
            raise _type_error(where, f'{key}.type_description_hash', 'a string',
                              metadata.get('type_description_hash'))
    if not isinstance(info.get('files', []), list):
        raise _type_error(where, 'files', 'a list', info.get('files'))
    return info
