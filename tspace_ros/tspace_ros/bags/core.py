"""
Write and read rosbag2 bags (MCAP storage) with the rosbags library, without rclpy.

A bag is a directory holding ``metadata.yaml`` and one ``.mcap`` file, as
``ros2 bag record -s mcap`` writes it: ``ros2 bag info/play`` and Foxglove open
it. Messages stay CDR bytes throughout (what rclpy's raw subscriptions deliver
and its publishers accept), so recording and replay never deserialize.

The typestore (``typestore_with_ours``) knows the standard ROS 2 types and our
``tspace_interfaces`` messages; the writer stores each type's full message
definition as the MCAP schema, so tools that do not have our package installed
can still decode the bag.

Integrity (``integrity``): the bags we write carry MCAP CRCs (every chunk,
the data section and the summary); every bag we read is verified first, and
its metadata.yaml is checked against the .mcap file, so a corrupt, truncated
or tampered bag is a ``BagError`` naming the file (and the chunk, offset or
topic) instead of data. Bags of other writers without CRCs still read:
``bag_info(...)['unverified']`` and ``BagMessages.unverified`` say what no
checksum covers, and a warning is logged once per file.
"""

import logging
import pathlib
import threading
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from rosbags.interfaces import Qos
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.metadata import parse_qos
from rosbags.typesys import get_types_from_msg, get_typestore, Stores, TypesysError
from tspace_ros.bags.errors import BagError
from tspace_ros.bags.integrity import (add_crcs, check_metadata_yaml, load_bounded_yaml,
                                       McapCheck, verify_mcap)

MSG_PACKAGE = 'tspace_interfaces'
BAG_VERSION = 9
STORAGE_SUFFIXES = ('.mcap', '.db3')
# Kilted is what we run; an older rosbags falls back to its latest store.
ROS2_STORE = getattr(Stores, 'ROS2_KILTED', Stores.LATEST)

Message = Tuple[str, str, int, bytes]
REINDEX = '`ros2 bag reindex` rebuilds metadata.yaml from the .mcap file'

_LOG = logging.getLogger('tspace_ros.bags')
_WARNED = set()
_WARNED_LOCK = threading.Lock()


def msg_dir(share_dir=None) -> pathlib.Path:
    """
    Return the directory of the tspace_interfaces .msg files.

    share_dir: the package's share directory (or its msg/ directory); by default
    the installed one (ament index), else the source tree next to this package.
    """
    if share_dir is None:
        try:
            from ament_index_python.packages import get_package_share_directory
            share_dir = get_package_share_directory(MSG_PACKAGE)
        except (ImportError, LookupError, OSError, ValueError):  # not installed here
            share_dir = pathlib.Path(__file__).resolve().parents[3] / MSG_PACKAGE
    directory = pathlib.Path(share_dir)
    if not any(directory.glob('*.msg')):
        directory = directory / 'msg'
    if not any(directory.glob('*.msg')):
        raise BagError(f'no {MSG_PACKAGE} .msg files in {directory}')
    return directory


def typestore_with_ours(share_dir=None):
    """
    Return a fresh rosbags typestore: standard ROS 2 types plus every tspace_interfaces msg.

    A new store on every call (about 0.2 s): callers may register more types
    in theirs without affecting anyone else's.
    """
    store = get_typestore(ROS2_STORE)
    types = {}
    for path in sorted(msg_dir(share_dir).glob('*.msg')):
        try:
            types.update(get_types_from_msg(path.read_text(),
                                            f'{MSG_PACKAGE}/msg/{path.stem}'))
        except TypesysError as error:
            raise BagError(f'{path}: cannot parse the message definition: {error}') from None
    store.register(types)
    return store


def parse_qos_yaml(qos_profiles_yaml: str) -> List[Qos]:
    """
    Parse offered QoS profiles as rosbag2 stores them (a YAML list of dicts).

    Each dict has history, depth, reliability, durability, deadline, lifespan,
    liveliness, liveliness_lease_duration and avoid_ros_namespace_conventions
    (see ``qos_profile_yaml``); '' means none.
    """
    if not qos_profiles_yaml or not qos_profiles_yaml.strip():
        return []
    try:
        return parse_qos(qos_profiles_yaml)
    except (ReaderError, KeyError, TypeError) as error:
        raise BagError(f'invalid offered_qos_profiles {qos_profiles_yaml!r}: {error}') from None


def qos_profile_yaml(history: str = 'keep_last', depth: int = 10,
                     reliability: str = 'reliable', durability: str = 'volatile') -> str:
    """Return one offered QoS profile as rosbag2's YAML (a list of one dict), for add_topic."""
    zero = '{sec: 0, nsec: 0}'
    return (f'- history: {history}\n  depth: {int(depth)}\n  reliability: {reliability}\n'
            f'  durability: {durability}\n  deadline: {zero}\n  lifespan: {zero}\n'
            f'  liveliness: automatic\n  liveliness_lease_duration: {zero}\n'
            f'  avoid_ros_namespace_conventions: false\n')


def _qos_dicts(profiles: Sequence[Qos]) -> List[dict]:
    return [{'history': q.history.name.lower(), 'depth': q.depth,
             'reliability': q.reliability.name.lower(),
             'durability': q.durability.name.lower()} for q in profiles]


class BagRecorder:
    """
    A rosbag2 bag being written: MCAP storage, CDR messages, offered QoS per topic.

    ``with BagRecorder(path, typestore) as bag: bag.add_topic(...); bag.write(...)``;
    close() (or leaving the block, even on an exception) writes metadata.yaml.
    """

    def __init__(self, path, typestore=None, custom_data: Optional[Mapping[str, str]] = None):
        """Create the bag directory (it must not exist yet); custom_data goes to metadata."""
        self.path = pathlib.Path(path)
        self.typestore = typestore if typestore is not None else typestore_with_ours()
        self.counts: Dict[str, int] = {}
        self.bytes: Dict[str, int] = {}
        self.types: Dict[str, str] = {}
        self._connections = {}
        self._writer = None
        try:
            writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            for key, value in (custom_data or {}).items():
                writer.set_custom_data(str(key), str(value))
            writer.open()
        except (WriterError, OSError) as error:
            raise BagError(f'{self.path}: cannot create the bag: {error}') from None
        self._writer = writer

    @property
    def is_open(self) -> bool:
        """Return True until close()."""
        return self._writer is not None

    @property
    def message_count(self) -> int:
        """Return the number of messages written so far."""
        return sum(self.counts.values())

    def add_topic(self, topic: str, msgtype: str, qos_profiles_yaml: str = '') -> None:
        """
        Declare a topic before writing to it.

        msgtype: e.g. 'tspace_interfaces/msg/ObservationWindow'; the typestore
        must know it (its definition becomes the MCAP schema). qos_profiles_yaml:
        the publishers' offered QoS (``qos_profile_yaml``), which ``ros2 bag
        play`` reuses. Adding a topic again with the same type does nothing.
        """
        self._check_open()
        if topic in self.types:
            if self.types[topic] != msgtype:
                raise BagError(f'{self.path}: topic {topic} is recorded as {self.types[topic]}, '
                               f'not {msgtype}')
            return
        if msgtype not in self.typestore.fielddefs:
            raise BagError(f'{self.path}: unknown message type {msgtype} of topic {topic}: '
                           'neither a standard ROS 2 type nor one of ours')
        try:
            connection = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, serialization_format='cdr',
                offered_qos_profiles=parse_qos_yaml(qos_profiles_yaml))
        except (WriterError, TypesysError, KeyError) as error:
            raise BagError(f'{self.path}: cannot add topic {topic} ({msgtype}): {error}') from None
        self._connections[topic] = connection
        self.types[topic] = msgtype
        self.counts[topic] = 0
        self.bytes[topic] = 0

    def write(self, topic: str, timestamp_ns: int, cdr_bytes: bytes) -> None:
        """Append one serialized (CDR) message of an added topic, stamped timestamp_ns."""
        self._check_open()
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f'{self.path}: topic {topic} was not added')
        try:
            self._writer.write(connection, int(timestamp_ns), cdr_bytes)
        except (WriterError, OSError) as error:
            raise BagError(f'{self.path}: cannot write to {topic}: {error}') from None
        self.counts[topic] += 1
        self.bytes[topic] += len(cdr_bytes)

    def close(self) -> None:
        """Finish the MCAP file and write metadata.yaml; safe to call twice."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except (WriterError, OSError) as error:
                raise BagError(f'{self.path}: cannot close the bag: {error}', 'write') from None
            for storage_file in sorted(self.path.glob('*.mcap')):
                add_crcs(storage_file)  # chunk, data-section and summary CRCs

    def _check_open(self):
        if self._writer is None:
            raise BagError(f'{self.path}: the bag is closed')

    def __enter__(self):
        """Use as a context manager that always closes the bag."""
        return self

    def __exit__(self, *exc):
        """Close the bag (metadata written) on leaving the block."""
        self.close()


def _storage_files(path: pathlib.Path) -> str:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        return ', '.join(str(p) for p in files) or str(path)
    return str(path)


def _storage_paths(path: pathlib.Path, metadata: Optional[dict]) -> List[pathlib.Path]:
    if metadata is None:
        return [path]
    files = [path / pathlib.PurePath(name).name for name in metadata['relative_file_paths']]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BagError(f'{path}: metadata.yaml names storage files that are missing: '
                       f'{", ".join(missing)}', 'missing')
    return files


def _verify_storage(path: pathlib.Path, metadata: Optional[dict]):
    """Verify every storage file; return ({file: McapCheck}, what no checksum covers)."""
    checks: Dict[str, McapCheck] = {}
    unverified: List[str] = []
    storage = metadata.get('storage_identifier') if metadata is not None else None
    for storage_file in _storage_paths(path, metadata):
        if storage == 'mcap' or (storage is None and storage_file.suffix == '.mcap'):
            check = verify_mcap(storage_file)
            checks[str(storage_file)] = check
            unverified += [f'{storage_file}: {reason}' for reason in check.unverified]
        elif storage == 'sqlite3' or storage_file.suffix == '.db3':
            unverified.append(f'{storage_file}: sqlite3 storage has no checksums')
    return checks, unverified


def _mismatch(where, message) -> BagError:
    return BagError(f'{where}: {message}; the bag is damaged or was changed after recording '
                    f'({REINDEX})', 'mismatch')


def _cross_check(path: pathlib.Path, reader: Reader, checks: Dict[str, McapCheck]) -> None:
    """Check what rosbags made of metadata.yaml and the summaries against the verified data."""
    storages = list(getattr(reader.storage, 'storages', [reader.storage]))
    for storage in storages:
        check = checks.get(str(getattr(storage, 'path', '')))
        if check is None:
            continue
        for connection in storage.connections:
            channel = check.channels.get(connection.id)
            count = check.channel_counts.get(connection.id, 0)
            if channel is None or (connection.topic, connection.msgtype) != channel[:2] or \
                    connection.msgcount != count:
                raise _mismatch(check.path, f'channel {connection.id} ({connection.topic}) '
                                'is not what its data holds')
        known = {connection.id for connection in storage.connections}
        lost = sorted(c for c, n in check.channel_counts.items() if n and c not in known)
        if lost or storage.metadata.message_count != check.message_count:
            raise _mismatch(check.path, f'the reader sees {storage.metadata.message_count} '
                            f'of its {check.message_count} messages')
    if not path.is_dir():
        return
    where = path / 'metadata.yaml'
    recorded = reader.storage.connections
    for connection in recorded:
        same = [s for storage in storages for s in storage.connections
                if (s.topic, s.msgtype, s.ext) == (connection.topic, connection.msgtype,
                                                   connection.ext)]
        held = sum(s.msgcount for s in same)
        if connection.msgcount != held:
            raise _mismatch(where, f'topic {connection.topic} ({connection.msgtype}): '
                            f'{connection.msgcount} messages, the storage holds {held} of '
                            'that topic, type and QoS')
    for storage in storages:
        for s in storage.connections:
            if s.msgcount and not any((c.topic, c.msgtype, c.ext) == (s.topic, s.msgtype, s.ext)
                                      for c in recorded):
                raise _mismatch(where, f'no topic {s.topic} ({s.msgtype}) with the QoS of its '
                                f'{s.msgcount} messages in {getattr(storage, "path", path)}')
    total = sum(storage.metadata.message_count for storage in storages)
    if reader.message_count != total:
        raise _mismatch(where, f'message_count {reader.message_count}, the storage holds {total}')
    if total and (reader.start_time, reader.end_time) != (
            min(storage.metadata.start_time for storage in storages),
            max(storage.metadata.end_time for storage in storages)):
        raise _mismatch(where, "starting_time or duration differ from the messages' times")
    if len(checks) == 1:
        [check] = checks.values()
        if check.embedded_metadata:  # the copy rosbag2 (and rosbags) keep in the .mcap
            embedded = load_bounded_yaml(check.embedded_metadata,
                                         f'{check.path} (its rosbag2 metadata record)')
            if isinstance(embedded, dict) and 'custom_data' in embedded and \
                    (embedded['custom_data'] or {}) != (reader.storage.metadata.custom or {}):
                raise _mismatch(where, 'custom_data differs from the copy in the .mcap file')


def _open_reader(path) -> Tuple[Reader, List[str]]:
    """Open a verified bag; return the rosbags reader and what no checksum covers."""
    path = pathlib.Path(path)
    if not path.exists():
        raise BagError(f'{path}: no such bag (a rosbag2 directory or an .mcap file)', 'missing')
    metadata = None
    if path.is_dir():
        if not (path / 'metadata.yaml').exists():
            raise BagError(
                f'{path}: metadata.yaml is missing (was the recording stopped before it '
                f'closed the bag?); `ros2 bag reindex {path} -s mcap` can rebuild it from the '
                '.mcap file', 'missing')
        metadata = check_metadata_yaml(path / 'metadata.yaml')
    checks, unverified = _verify_storage(path, metadata)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags' (and its YAML parser's) errors on a bad bag
        raise BagError(f'{_storage_files(path)}: cannot read the bag: {error} '
                       '(truncated, or not a rosbag2 MCAP file?)', 'structure') from None
    try:
        _cross_check(path, reader, checks)
    except BaseException:
        reader.close()
        raise
    if unverified:
        with _WARNED_LOCK:
            fresh = [note for note in unverified if note not in _WARNED]
            _WARNED.update(fresh)
        for note in fresh:
            _LOG.warning('unverified bag data (no checksum): %s', note)
    return reader, unverified


def _topics(reader: Reader) -> Dict[str, Tuple[str, int, list]]:
    """Return topic -> (msgtype, count, connections)."""
    return {topic: (info.msgtype or info.connections[0].msgtype, info.msgcount,
                    info.connections) for topic, info in reader.topics.items()}


class BagMessages:
    """
    The messages of a bag, in time order: (topic, msgtype, timestamp_ns, cdr_bytes).

    The bag is opened and checked when this is created (``BagError`` at once);
    iterating reads it. ``types`` and ``counts`` describe what will be read;
    ``unverified`` lists what no checksum covers (empty for our bags);
    ``skipped`` maps each topic skipped for its unknown type (skip_unknown) to
    (msgtype, count), and ``skipped_messages`` totals them. Close it (or use
    it as a context manager) when stopping before the end.
    """

    def __init__(self, path, topics: Optional[Sequence[str]] = None, typestore=None,
                 skip_unknown: bool = False):
        """Open the bag and check the topics and their types."""
        self.path = pathlib.Path(path)
        self.typestore = typestore if typestore is not None else typestore_with_ours()
        self._reader, self.unverified = _open_reader(self.path)
        try:
            available = _topics(self._reader)
            wanted = list(available) if topics is None else list(topics)
            missing = [t for t in wanted if t not in available]
            if missing:
                raise BagError(f'{self.path}: no topic {", ".join(missing)} in the bag '
                               f'(it has {", ".join(sorted(available)) or "none"})')
            self.skipped: Dict[str, Tuple[str, int]] = {}
            self.types: Dict[str, str] = {}
            self.counts: Dict[str, int] = {}
            connections = []
            for topic in wanted:
                msgtype, count, topic_connections = available[topic]
                if msgtype not in self.typestore.fielddefs:
                    if not skip_unknown:
                        raise BagError(
                            f'{self.path}: topic {topic} has the unknown message type '
                            f'{msgtype} (neither a standard ROS 2 type nor one of ours); '
                            'read with skip_unknown=True to skip it')
                    self.skipped[topic] = (msgtype, count)
                    continue
                self.types[topic] = msgtype
                self.counts[topic] = count
                connections += topic_connections
            self.skipped_messages = sum(count for _, count in self.skipped.values())
            self._messages = iter(self._reader.messages(connections)) if connections else \
                iter(())
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[Message]:
        """Return self: the messages are read once."""
        return self

    def __next__(self) -> Message:
        """Return the next (topic, msgtype, timestamp_ns, cdr_bytes); close at the end."""
        if self._reader is None:
            raise StopIteration
        try:
            connection, timestamp, data = next(self._messages)
        except StopIteration:
            self.close()
            raise
        except BagError:
            self.close()
            raise
        except Exception as error:  # the parser's own errors on a damaged file
            self.close()
            raise BagError(f'{_storage_files(self.path)}: cannot read the bag: {error} '
                           '(truncated or damaged?)',
                           'crc' if 'checksum' in str(error) else 'structure') from None
        return connection.topic, connection.msgtype, timestamp, bytes(data)

    def close(self) -> None:
        """Close the bag; safe to call twice."""
        reader, self._reader = getattr(self, '_reader', None), None
        if reader is not None:
            reader.close()

    def __enter__(self):
        """Use as a context manager that always closes the bag."""
        return self

    def __exit__(self, *exc):
        """Close the bag on leaving the block."""
        self.close()


def read_bag(path, topics: Optional[Sequence[str]] = None, typestore=None,
             skip_unknown: bool = False) -> BagMessages:
    """
    Return the messages of a bag in time order: (topic, msgtype, timestamp_ns, cdr_bytes).

    topics: the exact (recorded) names to read, None for all. Raises BagError
    (at once) for a missing bag or metadata.yaml, a truncated, garbage or
    corrupt storage file (a CRC that does not match), a metadata.yaml that is
    hostile or disagrees with it, a topic not in the bag, or a topic whose type the typestore
    (by default ``typestore_with_ours()``) does not know; skip_unknown skips
    such topics instead and counts them (``BagMessages.skipped``).
    """
    return BagMessages(path, topics, typestore, skip_unknown)


def bag_info(path) -> dict:
    """
    Describe a bag without reading its messages.

    Keys: path, storage_identifier, files, topics (sorted names), types and
    counts (per topic), qos (per topic: the offered profiles as dicts of
    history, depth, reliability, durability), message_count, start_ns and
    end_ns (first and last message stamps, 0 when empty), duration_ns,
    duration_s, custom_data, verified (every byte read is covered by a CRC that
    matched) and unverified (what no checksum covers, for bags of other writers).
    """
    path = pathlib.Path(path)
    reader, unverified = _open_reader(path)
    try:
        topics = _topics(reader)
        count = sum(count for _, count, _ in topics.values())
        start_ns = reader.start_time if count else 0
        end_ns = reader.end_time - 1 if count else 0
        storage = getattr(reader.storage, 'storages', [reader.storage])
        metadata = getattr(reader.storage, 'metadata', None)
        return {
            'path': str(path),
            'storage_identifier': 'mcap' if any(
                type(s).__name__.startswith('Mcap') for s in storage) else 'sqlite3',
            'files': [str(getattr(s, 'path', path)) for s in storage],
            'topics': sorted(topics),
            'types': {topic: msgtype for topic, (msgtype, _, _) in topics.items()},
            'counts': {topic: n for topic, (_, n, _) in topics.items()},
            'qos': {topic: _qos_dicts(connections[0].ext.offered_qos_profiles)
                    if hasattr(connections[0].ext, 'offered_qos_profiles') else []
                    for topic, (_, _, connections) in topics.items()},
            'message_count': count,
            'start_ns': start_ns,
            'end_ns': end_ns,
            'duration_ns': end_ns - start_ns,
            'duration_s': (end_ns - start_ns) / 1e9,
            'custom_data': dict(getattr(metadata, 'custom', None) or {}),
            'verified': not unverified,
            'unverified': list(unverified),
        }
    finally:
        reader.close()
