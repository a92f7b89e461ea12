"""
Decoding CAN frames with a DBC, counting and diagnosing every frame it rejects.

A bus carries frames the DBC does not describe, error frames, remote frames and
(on a faulty node) frames of the wrong length. None of them may stop the
bridge: ``FrameDecoder.decode`` never raises, returns None for a rejected frame
and counts why, so diagnostics can say what is wrong on the bus.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Optional, Set, Tuple

import can

from tspace_ros.can.dbc import Database

NS_PER_S = 1_000_000_000


def capture_time_ns(msg: can.Message) -> int:
    """Return a frame's capture time as integer ns since the Unix epoch (UTC)."""
    return round(msg.timestamp * NS_PER_S)


@dataclass
class DecoderStats:
    """
    Counts of the frames a FrameDecoder saw.

    Attributes
    ----------
    frames:
        Every frame passed to ``decode``.
    decoded:
        Frames decoded into signals.
    per_id:
        Frames per arbitration id (every frame with an id, decoded or not).
    unknown, unknown_ids:
        Frames whose (id, standard/extended) the DBC does not describe, and the
        set of those ids.
    wrong_length:
        Frames of a described id whose payload length differs from the DBC's.
    decode_errors:
        Frames cantools could not decode (or that were not CAN messages at all).
    error_frames, remote_frames:
        Error frames and remote transmission requests (never decoded).
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
    last_rejection: str = ''

    @property
    def rejected(self) -> int:
        """Return the number of frames not decoded."""
        return self.frames - self.decoded

    def as_dict(self) -> dict:
        """Return the counts as plain values (for diagnostics and logs)."""
        return {'frames': self.frames, 'decoded': self.decoded, 'rejected': self.rejected,
                'unknown': self.unknown, 'unknown_ids': sorted(self.unknown_ids),
                'wrong_length': self.wrong_length, 'decode_errors': self.decode_errors,
                'error_frames': self.error_frames, 'remote_frames': self.remote_frames,
                'per_id': dict(self.per_id), 'last_rejection': self.last_rejection}


class FrameDecoder:
    """Decode frames described by a DBC into {signal name: physical value}."""

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

    def decode(self, msg: can.Message) -> Optional[Dict[str, float]]:
        """Return the decoded signals of a frame, or None (counted) if it is rejected."""
        named = self.decode_with_name(msg)
        return None if named is None else named[1]

    def decode_with_name(self, msg: can.Message) -> Optional[Tuple[str, Dict[str, float]]]:
        """Return (DBC message name, decoded signals), or None (counted) if rejected."""
        stats = self.stats
        stats.frames += 1
        try:
            if msg.is_error_frame:
                stats.error_frames += 1
                stats.last_rejection = 'error frame'
                return None
            frame_id = msg.arbitration_id
            stats.per_id[frame_id] += 1
            if msg.is_remote_frame:
                stats.remote_frames += 1
                stats.last_rejection = f'remote frame, id 0x{frame_id:x}'
                return None
            message = self._messages.get((frame_id, bool(msg.is_extended_id)))
            if message is None:
                stats.unknown += 1
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
            signals = message.decode(bytes(data), decode_choices=self.decode_choices)
        except Exception as error:  # any malformed input is counted, never raised
            stats.decode_errors += 1
            stats.last_rejection = f'decode error: {type(error).__name__}: {error}'
            return None
        stats.decoded += 1
        return message.name, signals
