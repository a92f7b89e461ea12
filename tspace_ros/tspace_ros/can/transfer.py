"""
The torque-map transfer protocol between the CAN bridge and the VCU.

A transfer carries a range of speed rows of a torque map:

1. ``MapSegment`` frames, bridge -> VCU: transfer id, row index, column start
   (0, 3, 6, ...) and three torques (0.5 Nm resolution, -8192..8191.5 Nm);
   every column of every row in the range, ``ceil(n_cols / 3)`` per row.
2. ``MapCommit``, bridge -> VCU: transfer id, first row, row count, map version
   and CRC-16/CCITT-FALSE over the raw torque values of the segments (row by
   row, column by column, 16-bit little-endian two's complement).
3. ``MapAck``, VCU -> bridge: transfer id, TransferStatus, the active map
   version, the number of missing segments and the checksum the VCU computed.

The VCU answers a commit that found everything right with ACCEPTED and
applies the rows; otherwise with a typed refusal and keeps its map. It drops an
open transfer when a segment of a new transfer id arrives (SUPERSEDED) or when
no frame of it came for ``transfer_timeout_s`` (TIMED_OUT), and tells the
bridge with an unsolicited ack. Segments of a closed transfer are stale and
ignored; a repeated commit of a committed transfer gets the same answer again
(so a lost ack can be retried without applying twice); a commit of a
superseded or timed-out transfer gets STALE_TRANSFER_ID. The bridge must not
reuse a transfer id among its last 16 (a counter modulo 256 will do).

Every MapAck carries the CRC-16 of the VCU's *whole* active map
(``whole_map_checksum``), and so does every VcuStatus: the bridge knows the map
the VCU actually holds, not only the rows it sent.

Two more frames make the vehicle side safe on its own:

4. ``BridgeHeartbeat``, bridge -> VCU, every 100 ms: an alive counter (and the
   version and checksum of the map the bridge believes active). The VCU
   returns to its default map by itself when no heartbeat with a new counter
   and no transfer frame came for its heartbeat time-out (``MapFallback`` in
   VcuStatus says so), as an ECU does when its calibration master stops.
5. ``MapRevert``, bridge -> VCU: switch back to the VCU's own default map (a
   calibration page switch: no values travel); answered by MapAck, version 0.

Time is passed in explicitly (``now_s``, any monotonic clock in s): nothing
here sleeps or starts threads.
"""

from collections import Counter, OrderedDict
from dataclasses import dataclass
from enum import IntEnum
import math
from typing import Callable, Dict, List, Optional, Tuple

import can
from crccheck.crc import Crc16CcittFalse
import numpy as np

from tspace_ros.can.dbc import Database, MSG_MAP_ACK, MSG_MAP_COMMIT, MSG_MAP_SEGMENT
from tspace_ros.torque_map.map import ORIGIN_AGENT, TorqueMap

MSG_BRIDGE_HEARTBEAT = 'BridgeHeartbeat'
MSG_MAP_REVERT = 'MapRevert'

VALUES_PER_SEGMENT = 3
_TORQUE_SIGNALS = tuple(f'SegmentTorque{i}' for i in range(VALUES_PER_SEGMENT))

# Resolution of the torques on the bus (MapSegment's scale): the VCU holds values
# quantized to it, so a value flashed at a limit may come back half a step beyond.
TORQUE_RESOLUTION_NM = 0.5


class TransferStatus(IntEnum):
    """
    Outcome of a transfer: the DBC's AckStatus value table, plus NO_ACK.

    NO_ACK (-1) never travels on the bus: the bridge's own time-out when no ack
    came. LINK_ERROR (-2) neither: a link that writes by itself (XCP) reports an
    error of its protocol (the outcome's ``detail`` names it).
    """

    LINK_ERROR = -2
    NO_ACK = -1
    ACCEPTED = 0
    CHECKSUM_MISMATCH = 1
    MISSING_SEGMENTS = 2
    ROW_RANGE_INVALID = 3
    OUT_OF_BOUNDS = 4
    BUSY = 5
    STALE_TRANSFER_ID = 6
    SUPERSEDED = 7
    TIMED_OUT = 8
    SEGMENT_INVALID = 9
    APPLY_FAILED = 10


_STATUS_TEXT = {
    TransferStatus.LINK_ERROR: 'the link to the VCU reported an error',
    TransferStatus.NO_ACK: 'no acknowledgement from the VCU in time',
    TransferStatus.ACCEPTED: 'accepted and applied by the VCU',
    TransferStatus.CHECKSUM_MISMATCH: 'checksum mismatch (a value was corrupted)',
    TransferStatus.MISSING_SEGMENTS: 'segments missing at commit',
    TransferStatus.ROW_RANGE_INVALID: "row range outside the VCU's table",
    TransferStatus.OUT_OF_BOUNDS: "values outside the VCU's bounds",
    TransferStatus.BUSY: 'VCU busy, not accepting maps now',
    TransferStatus.STALE_TRANSFER_ID: 'transfer id stale (superseded or timed out earlier)',
    TransferStatus.SUPERSEDED: 'superseded by a newer transfer',
    TransferStatus.TIMED_OUT: 'VCU dropped the transfer: no frame for too long',
    TransferStatus.SEGMENT_INVALID: 'a segment addressed a row or column outside the transfer',
    TransferStatus.APPLY_FAILED: 'VCU failed to apply the map',
}


def segments_per_row(n_cols: int) -> int:
    """Return the MapSegment frames one row of n_cols columns needs."""
    return -(-n_cols // VALUES_PER_SEGMENT)


def map_checksum(raw_values) -> int:
    """Return CRC-16/CCITT-FALSE over raw torque values (ints, row-major) as int16 LE."""
    data = np.asarray(raw_values, dtype=np.int64).ravel()
    return Crc16CcittFalse.calc(data.astype('<i2').tobytes())


def bus_torque_resolution_nm(db: Database) -> float:
    """Return the torque step of MapSegment in this DBC, Nm (the scale of its torque signals)."""
    return float(db.get_message_by_name(MSG_MAP_SEGMENT)
                 .get_signal_by_name(_TORQUE_SIGNALS[0]).scale)


def whole_map_checksum(torque_map: TorqueMap,
                       resolution_nm: float = TORQUE_RESOLUTION_NM) -> int:
    """
    Return the CRC-16 of a whole map as the VCU holds it (MapAck and VcuStatus).

    Every torque, row by row, column by column, as its raw bus value
    round(torque / resolution), 16-bit little-endian two's complement.
    """
    raw = np.round(np.asarray(torque_map.torque_nm, dtype=np.float64) / resolution_nm)
    return map_checksum(np.clip(raw, -32768, 32767).astype(np.int64))


def _frame(message, values: dict) -> can.Message:
    data = message.encode(values, strict=True)
    return can.Message(arbitration_id=message.frame_id, is_extended_id=message.is_extended_frame,
                       data=data, dlc=len(data))


@dataclass(frozen=True)
class TransferOutcome:
    """
    What became of a transfer.

    Attributes
    ----------
    transfer_id:
        The transfer it answers.
    status:
        ACCEPTED, a typed refusal, or NO_ACK.
    active_map_version:
        The version the VCU applies after it (None for NO_ACK).
    missing_segments:
        Segments the VCU lacked at commit (MISSING_SEGMENTS).
    vcu_checksum:
        ``whole_map_checksum`` of the map the VCU applies after it (0 for NO_ACK).

    """

    transfer_id: int
    status: TransferStatus
    active_map_version: Optional[int] = None
    missing_segments: int = 0
    vcu_checksum: int = 0
    detail: str = ''  # what the link says beyond the status (an XCP error's name)

    @property
    def accepted(self) -> bool:
        """Whether the VCU applied the map."""
        return self.status == TransferStatus.ACCEPTED

    @property
    def message(self) -> str:
        """Return a human-readable account of the outcome."""
        text = f'transfer {self.transfer_id}: {_STATUS_TEXT[self.status]}'
        if self.status == TransferStatus.MISSING_SEGMENTS:
            text += f' ({self.missing_segments} missing)'
        if self.active_map_version is not None:
            text += f'; active map version {self.active_map_version}'
        if self.detail:
            text += f' ({self.detail})'
        return text


@dataclass(frozen=True)
class MapTransfer:
    """
    The frames of one transfer, ready to send in order.

    Attributes
    ----------
    transfer_id, map_version, row_start, row_count:
        As in the commit frame.
    checksum:
        CRC-16 of the raw torque values (as in the commit frame).
    segment_frames:
        MapSegment frames, row by row, column by column.
    commit_frame:
        The MapCommit frame, to send after every segment.
    flashed_map:
        The map the VCU holds once it accepts: the given map with the
        transferred rows quantized to the bus resolution (0.5 Nm).

    """

    transfer_id: int
    map_version: int
    row_start: int
    row_count: int
    checksum: int
    segment_frames: Tuple[can.Message, ...]
    commit_frame: can.Message
    flashed_map: TorqueMap

    @property
    def n_segments(self) -> int:
        """Return the number of segment frames (for progress feedback)."""
        return len(self.segment_frames)

    @property
    def frames(self) -> List[can.Message]:
        """Return every frame in sending order: the segments, then the commit."""
        return [*self.segment_frames, self.commit_frame]


def encode_transfer(db: Database, torque_map: TorqueMap, row_start: int, row_count: int,
                    transfer_id: int, map_version: int) -> MapTransfer:
    """
    Encode rows [row_start, row_start + row_count) of a map as a transfer.

    ValueError for a row range outside the map, an id outside 0..255, a
    version outside 0..2**24-1 or a torque outside -8192..8191.5 Nm.
    """
    segment = db.get_message_by_name(MSG_MAP_SEGMENT)
    commit = db.get_message_by_name(MSG_MAP_COMMIT)
    n_rows, n_cols = torque_map.shape
    if not (0 <= row_start and 1 <= row_count and row_start + row_count <= n_rows):
        raise ValueError(f'rows {row_start}..{row_start + row_count - 1} outside the map '
                         f'of {n_rows} rows')
    if not 0 <= transfer_id <= 255:
        raise ValueError(f'transfer id must be 0..255, got {transfer_id}')
    version_signal = commit.get_signal_by_name('CommitMapVersion')
    if not 0 <= map_version <= version_signal.maximum:
        raise ValueError(f'map version must be 0..{int(version_signal.maximum)}, '
                         f'got {map_version}')
    torque_signal = segment.get_signal_by_name(_TORQUE_SIGNALS[0])
    rows = torque_map.torque_nm[row_start:row_start + row_count]
    outside = (rows < torque_signal.minimum) | (rows > torque_signal.maximum)
    if np.any(outside):
        r, c = np.argwhere(outside)[0]
        raise ValueError(f'torque {rows[r, c]} Nm at row {row_start + r}, column {c} outside '
                         f'the bus range {torque_signal.minimum}..{torque_signal.maximum} Nm')
    conversion = torque_signal.conversion
    raw = np.array([[conversion.numeric_scaled_to_raw(float(v)) for v in row] for row in rows],
                   dtype=np.int64)
    frames = []
    for r in range(row_count):
        for c0 in range(0, n_cols, VALUES_PER_SEGMENT):
            values = {'SegmentTransferId': transfer_id, 'SegmentRowIndex': row_start + r,
                      'SegmentColumnStart': c0}
            for i, name in enumerate(_TORQUE_SIGNALS):
                values[name] = float(rows[r, c0 + i]) if c0 + i < n_cols else 0.0
            frames.append(_frame(segment, values))
    checksum = map_checksum(raw)
    commit_frame = _frame(commit, {
        'CommitTransferId': transfer_id, 'CommitFirstRow': row_start,
        'CommitRowCount': row_count, 'CommitChecksum': checksum,
        'CommitMapVersion': map_version})
    table = np.array(torque_map.torque_nm)
    table[row_start:row_start + row_count] = [
        [conversion.raw_to_scaled(int(v)) for v in row] for row in raw]
    flashed = torque_map.with_torque(table, policy_version=torque_map.policy_version,
                                     origin=torque_map.origin)
    return MapTransfer(transfer_id, map_version, row_start, row_count, checksum,
                       tuple(frames), commit_frame, flashed)


def encode_ack(db: Database, transfer_id: int, status: TransferStatus, active_map_version: int,
               missing_segments: int = 0, vcu_checksum: int = 0) -> can.Message:
    """
    Encode a MapAck frame (missing_segments saturates at 255).

    vcu_checksum: ``whole_map_checksum`` of the VCU's active map after the commit.
    """
    if status == TransferStatus.NO_ACK:
        raise ValueError("NO_ACK is the bridge's own outcome, never sent")
    return _frame(db.get_message_by_name(MSG_MAP_ACK), {
        'AckTransferId': transfer_id, 'AckStatus': int(status),
        'AckActiveMapVersion': active_map_version,
        'AckMissingSegments': min(int(missing_segments), 255), 'AckChecksum': vcu_checksum})


def decode_ack(db: Database, msg: can.Message) -> Optional[TransferOutcome]:
    """Return the outcome a MapAck frame reports, or None for any other or bad frame."""
    ack = db.get_message_by_name(MSG_MAP_ACK)
    if (msg.is_error_frame or msg.is_remote_frame or msg.arbitration_id != ack.frame_id or
            bool(msg.is_extended_id) != bool(ack.is_extended_frame) or
            len(msg.data) != ack.length):
        return None
    try:
        values = ack.decode(bytes(msg.data), decode_choices=False)
        status = TransferStatus(int(values['AckStatus']))
    except Exception:  # a corrupt or unknown status is no answer
        return None
    if status == TransferStatus.NO_ACK:
        return None
    return TransferOutcome(int(values['AckTransferId']), status,
                           int(values['AckActiveMapVersion']),
                           int(values['AckMissingSegments']), int(values['AckChecksum']))


def encode_heartbeat(db: Database, alive_counter: int, map_version: int,
                     map_checksum_value: int) -> can.Message:
    """Encode a BridgeHeartbeat frame (the counter is taken modulo 16)."""
    return _frame(db.get_message_by_name(MSG_BRIDGE_HEARTBEAT), {
        'BridgeAliveCounter': int(alive_counter) % 16,
        'BridgeMapVersion': int(map_version) % 2 ** 24,
        'BridgeMapChecksum': int(map_checksum_value) & 0xFFFF})


def encode_revert(db: Database, transfer_id: int) -> can.Message:
    """Encode a MapRevert frame: the VCU returns to its own default map."""
    if not 0 <= transfer_id <= 255:
        raise ValueError(f'transfer id must be 0..255, got {transfer_id}')
    return _frame(db.get_message_by_name(MSG_MAP_REVERT), {'RevertTransferId': transfer_id})


def revert_transfer(db: Database, default_map: TorqueMap, transfer_id: int) -> MapTransfer:
    """Return a MapTransfer that reverts the VCU to its default map (one MapRevert frame)."""
    return MapTransfer(transfer_id, 0, 0, default_map.shape[0], whole_map_checksum(default_map),
                       (), encode_revert(db, transfer_id), default_map)


class TorqueMapSender:
    """
    The bridge's side: encode a transfer, then wait for its ack or time out.

    One transfer is pending at a time; preparing a new one supersedes it.
    """

    def __init__(self, db: Database, ack_timeout_s: float = 3.0):
        """ack_timeout_s: time from the commit to the ack (tspace's XCP write: 3 s)."""
        if not (math.isfinite(ack_timeout_s) and ack_timeout_s > 0):
            raise ValueError(f'ack_timeout_s must be > 0, got {ack_timeout_s}')
        self.db = db
        self.ack_timeout_s = float(ack_timeout_s)
        self.pending: Optional[MapTransfer] = None
        self.ignored_acks = 0
        self._deadline_s: Optional[float] = None
        self._ack_id = db.get_message_by_name(MSG_MAP_ACK).frame_id

    def prepare(self, torque_map: TorqueMap, row_start: int, row_count: int, transfer_id: int,
                map_version: int) -> MapTransfer:
        """Encode a transfer (see encode_transfer) and make it the pending one."""
        return self.hold(encode_transfer(self.db, torque_map, row_start, row_count, transfer_id,
                                         map_version))

    def hold(self, transfer: MapTransfer) -> MapTransfer:
        """Make an encoded transfer (or a revert) the pending one; return it."""
        self.pending = transfer
        self._deadline_s = None
        return transfer

    def commit_sent(self, now_s: float) -> None:
        """Record that the pending transfer's commit went out; the ack is due by now + time-out."""
        if self.pending is None:
            raise RuntimeError('no pending transfer')
        self._deadline_s = now_s + self.ack_timeout_s

    def on_frame(self, msg: can.Message) -> Optional[TransferOutcome]:
        """
        Return the pending transfer's outcome if msg is its ack; else None.

        Acks of other transfer ids (an earlier, superseded transfer) are counted
        in ``ignored_acks``. The pending transfer ends with its ack.
        """
        if msg.arbitration_id != self._ack_id:
            return None
        outcome = decode_ack(self.db, msg)
        if outcome is None:
            return None
        if self.pending is None or outcome.transfer_id != self.pending.transfer_id:
            self.ignored_acks += 1
            return None
        self.pending, self._deadline_s = None, None
        return outcome

    def poll(self, now_s: float) -> Optional[TransferOutcome]:
        """Return a NO_ACK outcome (ending the transfer) once the ack is overdue; else None."""
        if self.pending is None or self._deadline_s is None or now_s < self._deadline_s:
            return None
        outcome = TransferOutcome(self.pending.transfer_id, TransferStatus.NO_ACK)
        self.pending, self._deadline_s = None, None
        return outcome


@dataclass
class _OpenTransfer:
    transfer_id: int
    last_frame_s: float
    segments: Dict[Tuple[int, int], Tuple[int, ...]]  # (row, column start) -> raw values
    invalid: List[str]


BoundsCheck = Callable[[TorqueMap, TorqueMap, int, int], Optional[str]]


class VcuMapReceiver:
    """
    The simulated VCU's side: collect segments, check a commit, apply, answer.

    Callbacks:

    - ``bounds_check(proposed, current, row_start, row_count)`` returns None if
      the proposed map is within the VCU's bounds, else the reason (refusal
      OUT_OF_BOUNDS).
    - ``apply(new_map)`` makes the map active; an exception refuses the
      transfer with APPLY_FAILED and keeps the old map.
    - ``accepting()`` False refuses commits with BUSY (e.g. while in FAULT).

    The VCU's own fallback: with ``heartbeat_timeout_s`` > 0, once a map other
    than ``reference_map`` (the default, version 0) is active and no sign of
    life came from the bridge for that long (a BridgeHeartbeat whose alive
    counter changed, or any transfer frame), ``poll`` applies the reference
    map again by itself, sets ``fallback_active`` (reported in VcuStatus) and
    counts it in ``stats['fallbacks']``. A MapRevert does the same on request.
    """

    def __init__(self, db: Database, active_map: TorqueMap, active_version: int = 0,
                 bounds_check: Optional[BoundsCheck] = None,
                 apply: Optional[Callable[[TorqueMap], None]] = None,
                 accepting: Optional[Callable[[], bool]] = None,
                 transfer_timeout_s: float = 1.0, remembered_transfers: int = 16,
                 reference_map: Optional[TorqueMap] = None, heartbeat_timeout_s: float = 0.0):
        """Start with active_map (version active_version) and no open transfer."""
        if not (math.isfinite(heartbeat_timeout_s) and heartbeat_timeout_s >= 0):
            raise ValueError(f'heartbeat_timeout_s must be >= 0, got {heartbeat_timeout_s}')
        self.db = db
        self.active_map = active_map
        self.active_version = int(active_version)
        self.reference_map = reference_map if reference_map is not None else active_map
        self.bounds_check = bounds_check
        self.apply = apply
        self.accepting = accepting
        self.transfer_timeout_s = float(transfer_timeout_s)
        self.remembered_transfers = int(remembered_transfers)
        self.heartbeat_timeout_s = float(heartbeat_timeout_s)
        self.fallback_active = False
        self.stats: Counter = Counter()
        self.last_message = ''
        self._open: Optional[_OpenTransfer] = None
        self._alive_s: Optional[float] = None
        self._alive_counter: Optional[int] = None
        # Closed transfer id -> (status, missing, checksum, closed by a commit).
        self._closed: 'OrderedDict[int, Tuple[TransferStatus, int, int, bool]]' = OrderedDict()
        self._segment = db.get_message_by_name(MSG_MAP_SEGMENT)
        self._commit = db.get_message_by_name(MSG_MAP_COMMIT)
        self._heartbeat_id = _frame_id(db, MSG_BRIDGE_HEARTBEAT)
        self._revert_id = _frame_id(db, MSG_MAP_REVERT)
        self._conversion = self._segment.get_signal_by_name(_TORQUE_SIGNALS[0]).conversion
        self._checksum = whole_map_checksum(active_map)

    @property
    def open_transfer_id(self) -> Optional[int]:
        """Return the id of the transfer being collected, or None."""
        return None if self._open is None else self._open.transfer_id

    @property
    def active_checksum(self) -> int:
        """Return ``whole_map_checksum`` of the active map (VcuStatus' ActiveMapChecksum)."""
        return self._checksum

    @property
    def on_reference(self) -> bool:
        """Whether the reference (default) map is active."""
        return self.active_version == 0 and np.array_equal(self.active_map.torque_nm,
                                                           self.reference_map.torque_nm)

    def _set_active(self, torque_map: TorqueMap, version: int) -> None:
        self.active_map, self.active_version = torque_map, int(version)
        self._checksum = whole_map_checksum(torque_map)

    def _ack(self, transfer_id: int, status: TransferStatus, missing: int = 0,
             by_commit: bool = True, message: str = '') -> can.Message:
        checksum = self._checksum
        self._closed[transfer_id] = (status, missing, checksum, by_commit)
        self._closed.move_to_end(transfer_id)
        while len(self._closed) > self.remembered_transfers:
            self._closed.popitem(last=False)
        self.stats[status.name] += 1
        self.last_message = message or f'transfer {transfer_id}: {_STATUS_TEXT[status]}'
        return encode_ack(self.db, transfer_id, status, self.active_version, missing, checksum)

    def poll(self, now_s: float) -> List[can.Message]:
        """
        Let time pass to now_s; return the acks this produces.

        Drops the open transfer if it went quiet for transfer_timeout_s, and
        returns to the reference map once the bridge has been silent for the
        heartbeat time-out.
        """
        acks = []
        if self._open is not None and now_s - self._open.last_frame_s >= self.transfer_timeout_s:
            transfer_id = self._open.transfer_id
            self._open = None
            acks.append(self._ack(transfer_id, TransferStatus.TIMED_OUT, by_commit=False))
        if (self.heartbeat_timeout_s > 0 and self._alive_s is not None and
                now_s - self._alive_s >= self.heartbeat_timeout_s and not self.on_reference):
            silent = now_s - self._alive_s
            if self._open is not None:
                acks.append(self._ack(self._open.transfer_id, TransferStatus.TIMED_OUT,
                                      by_commit=False))
                self._open = None
            self._revert()
            self.fallback_active = True
            self.stats['fallbacks'] += 1
            self.last_message = (f'no sign of life from the bridge for {silent:.3g} s '
                                 f'(time-out {self.heartbeat_timeout_s:g} s): back on the '
                                 'default map')
        return acks

    def _revert(self) -> None:
        if self.apply is not None:
            try:
                self.apply(self.reference_map)
            except Exception:  # noqa: B902 - the reference map is the VCU's own: count it
                self.stats['revert_apply_failed'] += 1
        self._set_active(self.reference_map, 0)

    def _alive(self, now_s: float) -> None:
        self._alive_s = now_s

    def feed(self, msg: can.Message, now_s: float) -> List[can.Message]:
        """Take one frame (others than the bridge's are ignored); return acks to send."""
        acks = self.poll(now_s)
        try:
            if msg.is_error_frame or msg.is_remote_frame or msg.is_extended_id:
                return acks
            if msg.arbitration_id == self._segment.frame_id:
                kind, message = 'segment', self._segment
            elif msg.arbitration_id == self._commit.frame_id:
                kind, message = 'commit', self._commit
            elif msg.arbitration_id in (self._heartbeat_id, self._revert_id):
                kind = 'heartbeat' if msg.arbitration_id == self._heartbeat_id else 'revert'
                message = self.db.get_message_by_frame_id(msg.arbitration_id)
            else:
                return acks
            if len(msg.data) != message.length:
                self.stats['bad_frames'] += 1
                return acks
            values = message.decode(bytes(msg.data), decode_choices=False, scaling=False)
        except Exception:  # a malformed frame is counted, never raised
            self.stats['bad_frames'] += 1
            return acks
        if kind == 'heartbeat':
            counter = int(values['BridgeAliveCounter'])
            self.stats['heartbeats'] += 1
            if counter != self._alive_counter:
                self._alive_counter = counter
                self._alive(now_s)
            else:
                self.stats['stuck_heartbeats'] += 1
            return acks
        self._alive(now_s)
        if kind == 'segment':
            return acks + self._on_segment(values, now_s)
        if kind == 'revert':
            return acks + self._on_revert(values)
        return acks + [self._on_commit(values)]

    def _on_revert(self, values: dict) -> List[can.Message]:
        self.stats['reverts'] += 1
        transfer_id = int(values['RevertTransferId'])
        acks = []
        if self._open is not None:
            old = self._open.transfer_id
            self._open = None
            if old != transfer_id:
                acks.append(self._ack(old, TransferStatus.SUPERSEDED, by_commit=False))
        self._revert()
        self.fallback_active = False
        acks.append(self._ack(transfer_id, TransferStatus.ACCEPTED,
                              message=f'transfer {transfer_id}: back on the default map'))
        return acks

    def _on_segment(self, values: dict, now_s: float) -> List[can.Message]:
        self.stats['segments'] += 1
        transfer_id = int(values['SegmentTransferId'])
        acks = []
        if transfer_id in self._closed:
            self.stats['stale_segments'] += 1
            return acks
        if self._open is not None and self._open.transfer_id != transfer_id:
            old = self._open.transfer_id
            self._open = None
            acks.append(self._ack(old, TransferStatus.SUPERSEDED, by_commit=False))
        if self._open is None:
            self._open = _OpenTransfer(transfer_id, now_s, {}, [])
        transfer = self._open
        transfer.last_frame_s = now_s
        row, c0 = int(values['SegmentRowIndex']), int(values['SegmentColumnStart'])
        n_rows, n_cols = self.active_map.shape
        if row >= n_rows or c0 >= n_cols or c0 % VALUES_PER_SEGMENT:
            transfer.invalid.append(f'segment row {row}, column {c0} outside the '
                                    f'{n_rows} x {n_cols} table')
        transfer.segments[(row, c0)] = tuple(int(values[name]) for name in _TORQUE_SIGNALS)
        return acks

    def _on_commit(self, values: dict) -> can.Message:
        self.stats['commits'] += 1
        transfer_id = int(values['CommitTransferId'])
        first, count = int(values['CommitFirstRow']), int(values['CommitRowCount'])
        version, checksum = int(values['CommitMapVersion']), int(values['CommitChecksum'])
        ack = TransferStatus
        if transfer_id in self._closed:
            status, missing, _, by_commit = self._closed[transfer_id]
            if by_commit:  # a retried commit: answer again, apply nothing
                return self._ack(transfer_id, status, missing)
            return self._ack(transfer_id, ack.STALE_TRANSFER_ID, by_commit=False)
        transfer = None
        if self._open is not None and self._open.transfer_id == transfer_id:
            transfer, self._open = self._open, None
        if self.accepting is not None and not self.accepting():
            return self._ack(transfer_id, ack.BUSY)
        n_rows, n_cols = self.active_map.shape
        if count < 1 or first + count > n_rows:
            return self._ack(transfer_id, ack.ROW_RANGE_INVALID, message=(
                f'transfer {transfer_id}: rows {first}..{first + count - 1} outside the '
                f'{n_rows}-row table'))
        expected = [(r, c0) for r in range(first, first + count)
                    for c0 in range(0, n_cols, VALUES_PER_SEGMENT)]
        if transfer is None:
            return self._ack(transfer_id, ack.MISSING_SEGMENTS, len(expected))
        outside = sorted({row for row, _ in transfer.segments} - set(range(first, first + count)))
        if transfer.invalid or outside:
            reasons = transfer.invalid + [f'segments for rows {outside} outside the commit']
            return self._ack(transfer_id, ack.SEGMENT_INVALID, message=(
                f'transfer {transfer_id}: ' + '; '.join(reasons[:3])))
        missing = [key for key in expected if key not in transfer.segments]
        if missing:
            return self._ack(transfer_id, ack.MISSING_SEGMENTS, len(missing), message=(
                f'transfer {transfer_id}: {len(missing)} of {len(expected)} segments missing, '
                f'first (row, column) {missing[0]}'))
        raw = np.array([[v for c0 in range(0, n_cols, VALUES_PER_SEGMENT)
                         for v in transfer.segments[(r, c0)]][:n_cols]
                        for r in range(first, first + count)], dtype=np.int64)
        computed = map_checksum(raw)
        if computed != checksum:
            return self._ack(transfer_id, ack.CHECKSUM_MISMATCH, message=(
                f'transfer {transfer_id}: checksum 0x{computed:04x}, commit says '
                f'0x{checksum:04x}'))
        table = np.array(self.active_map.torque_nm)
        table[first:first + count] = [[self._conversion.raw_to_scaled(int(v)) for v in row]
                                      for row in raw]
        proposed = self.active_map.with_torque(table, policy_version=version,
                                               origin=ORIGIN_AGENT)
        if self.bounds_check is not None:
            reason = self.bounds_check(proposed, self.active_map, first, count)
            if reason:
                return self._ack(transfer_id, ack.OUT_OF_BOUNDS,
                                 message=f'transfer {transfer_id}: {reason}')
        if self.apply is not None:
            try:
                self.apply(proposed)
            except Exception as error:  # the VCU keeps its map and reports why
                return self._ack(transfer_id, ack.APPLY_FAILED,
                                 message=f'transfer {transfer_id}: apply failed: {error}')
        self._set_active(proposed, version)
        self.fallback_active = False
        return self._ack(transfer_id, ack.ACCEPTED)


def _frame_id(db: Database, name: str) -> Optional[int]:
    """Return the frame id of a message, or None if the DBC lacks it."""
    try:
        return db.get_message_by_name(name).frame_id
    except KeyError:
        return None
