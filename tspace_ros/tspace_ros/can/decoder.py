"""
Decoding CAN frames with a DBC, counting and diagnosing every frame it rejects.

A bus carries frames the DBC does not describe, error frames, remote frames,
frames of the wrong length (on a faulty node) and frames whose capture time is
not a time at all (NaN, infinite, negative or beyond what a ROS time can hold).
None of them may stop the bridge: ``FrameDecoder.decode`` never raises,
returns None for a rejected frame and counts why, so diagnostics can say what
is wrong on the bus.

A decoded frame keeps the DBC message it came from (``DecodedFrame``): real
DBCs reuse signal names (``Checksum``, ``Counter``, ``Speed`` in many messages),
so a signal is only ever identified by (message, signal).
"""

from collections import Counter
from dataclasses import dataclass, field
import math
from typing import Dict, Mapping, Optional, Set, Tuple

import can

from tspace_ros.can.dbc import Database

NS_PER_S = 1_000_000_000
# The latest capture time accepted: the end of builtin_interfaces/Time (int32
# seconds, 2038-01-19T03:14:07Z), which every window stamp must fit in.
MAX_CAPTURE_TIME_S = 2 ** 31 - 1
MAX_CAPTURE_TIME_NS = MAX_CAPTURE_TIME_S * NS_PER_S
# What capture_time_ns returns for a frame without a valid capture time.
INVALID_CAPTURE_NS = -1
# At most this many distinct ids are kept in per_id / unknown_ids (a bus of random
# ids must not grow them without bound); the counts themselves stay exact.
MAX_TRACKED_IDS = 1024


def timestamp_problem(timestamp) -> Optional[str]:
    """
    Return why a python-can timestamp (s since the Unix epoch) is no capture time, or None.

    Valid: a real number in [0, MAX_CAPTURE_TIME_S]. NaN, +-inf, negative values,
    later times and anything that is not a number are not.
    """
    if isinstance(timestamp, bool):
        return f'timestamp {timestamp!r} is not a number'
    try:
        value = float(timestamp)
    except (TypeError, ValueError, OverflowError):
        return f'timestamp {timestamp!r:.40} is not a number'
    if math.isnan(value):
        return 'timestamp is NaN'
    if math.isinf(value):
        return f'timestamp is {value}'
    if value < 0.0:
        return f'timestamp {value!r} s is before the Unix epoch'
    if value > MAX_CAPTURE_TIME_S:
        return f'timestamp {value!r} s is after 2038-01-19 (beyond a ROS time)'
    return None


def capture_time_ns(msg: can.Message) -> int:
    """
    Return a frame's capture time as integer ns since the Unix epoch (UTC); never raises.

    A frame whose timestamp is not a valid capture time (see
    ``timestamp_problem``: NaN, inf, negative, after 2038-01-19, not a number)
    gives INVALID_CAPTURE_NS (-1), which ``WindowBuilder.feed`` rejects and
    counts. ``FrameDecoder.decode`` rejects such frames before.
    """
    try:
        timestamp = msg.timestamp
        if type(timestamp) is float and 0.0 <= timestamp <= MAX_CAPTURE_TIME_S:
            return round(timestamp * NS_PER_S)  # the fast path
        if timestamp_problem(timestamp) is not None:
            return INVALID_CAPTURE_NS
        return round(float(timestamp) * NS_PER_S)
    except Exception:  # noqa: B902 - not a frame: no capture time, never an exception
        return INVALID_CAPTURE_NS


class DecodedFrame(dict):
    """
    The decoded signals of one frame, {DBC signal name: value}, and its DBC message.

    A plain dict of the signals (compares equal to one) with the attribute
    ``message``, the name of the DBC message: the window builder routes signals
    by (message, signal), never by signal name alone.
    """

    __slots__ = ('message',)

    def __init__(self, message: str, signals: Mapping = ()):
        """Take the message name and the signals (copied)."""
        super().__init__(signals)
        self.message = message

    def __repr__(self) -> str:
        """Show the message with the signals."""
        return f'DecodedFrame({self.message!r}, {dict.__repr__(self)})'

    def __reduce__(self):
        """Pickle and copy as (message, signals)."""
        return (type(self), (self.message, dict(self)))


@dataclass
class DecoderStats:
    """
    Counts of the frames a FrameDecoder saw.

    Every frame is either decoded or counted under exactly one reason:
    ``rejected == unknown + wrong_length + decode_errors + error_frames +
    remote_frames + bad_timestamps``.

    Attributes
    ----------
    frames:
        Every frame passed to ``decode``.
    decoded:
        Frames decoded into signals.
    per_id:
        Frames per arbitration id (every frame with an id, decoded or not; at
        most MAX_TRACKED_IDS distinct ids are kept).
    unknown, unknown_ids:
        Frames whose (id, standard/extended) the DBC does not describe, and the
        set of those ids (at most MAX_TRACKED_IDS of them).
    wrong_length:
        Frames of a described id whose payload length differs from the DBC's.
    decode_errors:
        Frames cantools could not decode (or that were not CAN messages at all).
    error_frames, remote_frames:
        Error frames and remote transmission requests (never decoded).
    bad_timestamps:
        Frames of a described id and length whose capture time is not a time:
        NaN, +-inf, negative, after 2038-01-19 or not a number.
    last_rejection:
        A human-readable reason for the latest rejected frame.

    """

    frames: int = 0
    decoded: int = 0
    per_id: Counter = field(default_factory=Counter)
    unknown: int = 0
    unknown_ids: Set[int] = field(default_factory=set)
    wrong_length: int = 0
    decode_errors: int = 0
    error_frames: int = 0
    remote_frames: int = 0
    bad_timestamps: int = 0
    last_rejection: str = ''

    @property
    def rejected(self) -> int:
        """Return the number of frames not decoded."""
        return self.frames - self.decoded

    @property
    def rejections(self) -> Dict[str, int]:
        """Return the rejected frames by reason (the reasons sum to ``rejected``)."""
        return {'unknown': self.unknown, 'wrong_length': self.wrong_length,
                'decode_errors': self.decode_errors, 'error_frames': self.error_frames,
                'remote_frames': self.remote_frames, 'bad_timestamps': self.bad_timestamps}

    def as_dict(self) -> dict:
        """Return the counts as plain values (for diagnostics and logs)."""
        return {'frames': self.frames, 'decoded': self.decoded, 'rejected': self.rejected,
                'unknown': self.unknown, 'unknown_ids': sorted(self.unknown_ids),
                'wrong_length': self.wrong_length, 'decode_errors': self.decode_errors,
                'error_frames': self.error_frames, 'remote_frames': self.remote_frames,
                'bad_timestamps': self.bad_timestamps,
                'per_id': dict(self.per_id), 'last_rejection': self.last_rejection}


class FrameDecoder:
    """Decode frames described by a DBC into DecodedFrame {signal name: physical value}."""

    def __init__(self, db: Database, decode_choices: bool = False):
        """
        Index the DBC's messages by (frame id, extended).

        decode_choices False (the default, and the fast path) returns enum
        signals as integers; True returns cantools' named values.
        """
        self.db = db
        self.decode_choices = decode_choices
        self.stats = DecoderStats()
        self._messages: Dict[Tuple[int, bool], object] = {
            (m.frame_id, bool(m.is_extended_frame)): m for m in db.messages}

    def decode(self, msg: can.Message) -> Optional[DecodedFrame]:
        """
        Return the decoded signals of a frame, or None (counted) if it is rejected.

        The result is a DecodedFrame: a dict of the signals whose ``message`` is
        the DBC message's name. Never raises.
        """
        named = self.decode_with_name(msg)
        return None if named is None else named[1]

    def decode_with_name(self, msg: can.Message) -> Optional[Tuple[str, DecodedFrame]]:
        """Return (DBC message name, decoded signals), or None (counted) if rejected."""
        stats = self.stats
        stats.frames += 1
        try:
            if msg.is_error_frame:
                stats.error_frames += 1
                stats.last_rejection = 'error frame'
                return None
            frame_id = msg.arbitration_id
            per_id = stats.per_id
            if frame_id in per_id or len(per_id) < MAX_TRACKED_IDS:
                per_id[frame_id] += 1
            if msg.is_remote_frame:
                stats.remote_frames += 1
                stats.last_rejection = f'remote frame, id 0x{frame_id:x}'
                return None
            message = self._messages.get((frame_id, bool(msg.is_extended_id)))
            if message is None:
                stats.unknown += 1
                if len(stats.unknown_ids) < MAX_TRACKED_IDS:
                    stats.unknown_ids.add(frame_id)
                stats.last_rejection = f'id 0x{frame_id:x} not in the DBC'
                return None
            data = msg.data
            if len(data) != message.length or msg.dlc != message.length:
                stats.wrong_length += 1
                stats.last_rejection = (
                    f'{message.name} (0x{frame_id:x}): {len(data)} bytes (dlc {msg.dlc}), '
                    f'DBC says {message.length}')
                return None
            timestamp = msg.timestamp
            problem = None if (type(timestamp) is float and  # the fast path
                               0.0 <= timestamp <= MAX_CAPTURE_TIME_S) \
                else timestamp_problem(timestamp)
            if problem is not None:
                stats.bad_timestamps += 1
                stats.last_rejection = f'{message.name} (0x{frame_id:x}): {problem}'
                return None
            signals = message.decode(bytes(data), decode_choices=self.decode_choices)
        except Exception as error:  # any malformed input is counted, never raised
            stats.decode_errors += 1
            stats.last_rejection = f'decode error: {type(error).__name__}: {error}'[:300]
            return None
        stats.decoded += 1
        return message.name, DecodedFrame(message.name, signals)
