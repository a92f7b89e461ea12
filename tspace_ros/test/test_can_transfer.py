"""The torque-map transfer: sender -> VCU receiver -> ack -> outcome, and what goes wrong."""

import uuid

import can
import numpy as np
import pytest
from torque_map_support import tspace_like_map

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.transfer import (decode_ack, encode_ack, map_checksum, TorqueMapSender,
                                     TransferStatus, VcuMapReceiver)
from tspace_ros.torque_map import DEFAULT_PEDAL_BREAKPOINTS, SafetyGate, TorqueMap

Status = TransferStatus


@pytest.fixture(scope='module')
def db():
    """Return the shipped DBC."""
    return load_dbc()


@pytest.fixture
def default():
    """Return the VCU's default map (14 x 17)."""
    return tspace_like_map()


class Vcu:
    """A receiver with recording callbacks."""

    def __init__(self, db, default, **kwargs):
        """Create the receiver; applied maps are recorded in self.applied."""
        self.applied = []
        self.receiver = VcuMapReceiver(db, default, apply=self.applied.append, **kwargs)

    def feed_all(self, frames, now_s=0.0):
        """Feed frames at one instant; return every ack."""
        acks = []
        for frame in frames:
            acks += self.receiver.feed(frame, now_s)
        return acks


def lowered(default, rows, by_nm=100.0, version=1):
    """Return the default map with rows lowered by by_nm (within the gate's limits)."""
    table = np.array(default.torque_nm)
    table[rows] -= by_nm
    return default.with_torque(table, policy_version=version)


def corrupt(db, frame, signal='SegmentTorque1', delta=0.5):
    """Return a segment frame with one value changed (re-encoded with cantools)."""
    message = db.get_message_by_name('MapSegment')
    values = message.decode(bytes(frame.data), decode_choices=False)
    values[signal] += delta
    return can.Message(arbitration_id=frame.arbitration_id, is_extended_id=False,
                       data=message.encode(values))


def test_full_map_round_trip(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    proposed = lowered(default, slice(None), by_nm=50.0)
    transfer = sender.prepare(proposed, 0, 14, transfer_id=1, map_version=7)
    assert transfer.n_segments == 14 * 6 and len(transfer.frames) == 14 * 6 + 1
    assert transfer.frames[-1] is transfer.commit_frame
    acks = vcu.feed_all(transfer.frames)
    sender.commit_sent(now_s=0.0)
    (ack,) = acks
    outcome = sender.on_frame(ack)
    assert outcome.accepted and outcome.status == Status.ACCEPTED
    assert outcome.active_map_version == 7 and outcome.transfer_id == 1
    assert outcome.vcu_checksum == transfer.checksum and sender.pending is None
    (applied,) = vcu.applied
    # The VCU holds the map quantized to the bus resolution, exactly as the sender predicts.
    np.testing.assert_array_equal(applied.torque_nm, transfer.flashed_map.torque_nm)
    assert np.max(np.abs(applied.torque_nm - proposed.torque_nm)) <= 0.25
    assert not np.array_equal(applied.torque_nm, proposed.torque_nm)  # it was quantized
    assert vcu.receiver.active_version == 7 and vcu.receiver.active_map is applied
    assert applied.policy_version == 7


def test_four_row_round_trip_changes_only_those_rows(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    proposed = lowered(default, slice(5, 9))
    transfer = sender.prepare(proposed, 5, 4, transfer_id=2, map_version=3)
    assert transfer.n_segments == 4 * 6
    (ack,) = vcu.feed_all(transfer.frames)
    assert sender.on_frame(ack).accepted
    applied = vcu.applied[0].torque_nm
    np.testing.assert_array_equal(applied[:5], default.torque_nm[:5])
    np.testing.assert_array_equal(applied[9:], default.torque_nm[9:])
    np.testing.assert_allclose(applied[5:9], proposed.torque_nm[5:9], atol=0.25)


def crc16_ccitt_false(data: bytes) -> int:
    """Return CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), bit by bit: the reference."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def test_checksum_is_crc16_ccitt_false_over_int16_little_endian():
    assert crc16_ccitt_false(b'123456789') == 0x29B1  # the standard check value
    values = [[1, -1, 16383], [-16384, 0, 300]]
    data = b''.join(v.to_bytes(2, 'little', signed=True) for row in values for v in row)
    assert map_checksum(values) == crc16_ccitt_false(data)
    assert map_checksum([[1, -1], [2, 3]]) != map_checksum([[1, -1], [3, 2]])


def test_lost_segment_is_refused_with_missing_segments(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    transfer = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=3,
                              map_version=1)
    frames = transfer.frames
    (ack,) = vcu.feed_all(frames[:7] + frames[8:])
    outcome = sender.on_frame(ack)
    assert outcome.status == Status.MISSING_SEGMENTS and outcome.missing_segments == 1
    assert not outcome.accepted and 'missing' in outcome.message
    assert vcu.applied == [] and vcu.receiver.active_map is default
    assert outcome.active_map_version == 0


def test_corrupted_value_is_refused_with_checksum_mismatch(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    transfer = sender.prepare(lowered(default, slice(2, 6)), 2, 4, transfer_id=4,
                              map_version=1)
    frames = list(transfer.frames)
    frames[5] = corrupt(db, frames[5])
    (ack,) = vcu.feed_all(frames)
    outcome = sender.on_frame(ack)
    assert outcome.status == Status.CHECKSUM_MISMATCH
    assert outcome.vcu_checksum != transfer.checksum
    assert vcu.applied == [] and vcu.receiver.active_map is default


def test_new_transfer_supersedes_an_unfinished_one_and_stale_frames_are_ignored(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    old = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=10, map_version=1)
    assert vcu.feed_all(old.segment_frames[:10]) == []
    assert vcu.receiver.open_transfer_id == 10
    new = sender.prepare(lowered(default, slice(6, 10)), 6, 4, transfer_id=11, map_version=2)
    # The first segment of the new id makes the VCU drop the old transfer and say so.
    (superseded,) = vcu.feed_all(new.segment_frames[:1])
    assert vcu.receiver.open_transfer_id == 11
    assert sender.on_frame(superseded) is None and sender.ignored_acks == 1  # not pending
    # The rest of the old transfer arrives late: stale, ignored, the new one survives.
    assert vcu.feed_all(old.segment_frames[10:]) == []
    assert vcu.receiver.stats['stale_segments'] == len(old.segment_frames) - 10
    assert vcu.receiver.open_transfer_id == 11
    (stale,) = vcu.feed_all([old.commit_frame])
    assert sender.on_frame(stale) is None
    assert decode_ack(db, stale).status == Status.STALE_TRANSFER_ID
    assert decode_ack(db, stale).transfer_id == 10
    (ack,) = vcu.feed_all(new.frames[1:])
    outcome = sender.on_frame(ack)
    assert outcome.accepted and outcome.active_map_version == 2
    assert len(vcu.applied) == 1


def test_the_pending_transfer_learns_it_was_superseded(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    mine = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=20, map_version=1)
    vcu.feed_all(mine.segment_frames[:3])
    other = TorqueMapSender(db).prepare(default, 0, 1, transfer_id=99, map_version=5)
    (ack,) = vcu.feed_all(other.segment_frames[:1])
    outcome = sender.on_frame(ack)
    assert outcome.status == Status.SUPERSEDED and sender.pending is None


def test_vcu_drops_a_quiet_transfer_and_the_sender_times_out_without_ack(db, default):
    sender = TorqueMapSender(db, ack_timeout_s=3.0)
    vcu = Vcu(db, default, transfer_timeout_s=1.0)
    transfer = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=30,
                              map_version=1)
    vcu.feed_all(transfer.segment_frames, now_s=100.0)
    assert vcu.receiver.poll(100.9) == []
    (timed_out,) = vcu.receiver.poll(101.0)
    assert vcu.receiver.open_transfer_id is None
    assert sender.on_frame(timed_out).status == Status.TIMED_OUT
    # A commit that comes after the VCU gave up is stale.
    (ack,) = vcu.receiver.feed(transfer.commit_frame, 101.5)
    assert decode_ack(db, ack).status == Status.STALE_TRANSFER_ID
    # The sender's own time-out: the commit went out, no ack ever came.
    lost = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=31, map_version=1)
    sender.commit_sent(now_s=200.0)
    assert sender.poll(202.9) is None
    outcome = sender.poll(203.0)
    assert outcome.status == Status.NO_ACK and outcome.transfer_id == lost.transfer_id
    assert not outcome.accepted and 'no acknowledgement' in outcome.message
    assert sender.pending is None and sender.poll(300.0) is None
    assert vcu.applied == []


def test_row_range_outside_the_vcu_table_is_refused(db, default):
    # A sender with the 21-row variant flashes rows 16..19 to a 14-row VCU.
    speeds = np.linspace(0.0, 100.0, 21)
    big = TorqueMap(speeds, DEFAULT_PEDAL_BREAKPOINTS, np.zeros((21, 17)))
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    (ack,) = vcu.feed_all(sender.prepare(big, 16, 4, transfer_id=40, map_version=1).frames)
    assert sender.on_frame(ack).status == Status.ROW_RANGE_INVALID
    assert 'outside' in vcu.receiver.last_message and vcu.applied == []


def test_segments_outside_the_vcu_table_are_refused(db, default):
    # 21 pedal columns against a 17-column VCU: segments for columns 18.. do not fit.
    pedals = np.linspace(0.0, 1.0, 21)
    wide = TorqueMap(default.speed_breakpoints_kph, pedals, np.zeros((14, 21)))
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    (ack,) = vcu.feed_all(sender.prepare(wide, 0, 4, transfer_id=41, map_version=1).frames)
    assert sender.on_frame(ack).status == Status.SEGMENT_INVALID
    assert vcu.applied == []


def test_values_outside_the_vcus_bounds_are_refused(db, default):
    gate = SafetyGate(default)

    def bounds(proposed, current, row_start, row_count):
        result = gate.check(proposed, current, row_start, row_count)
        return None if result.ok else result.message

    sender, vcu = TorqueMapSender(db), Vcu(db, default, bounds_check=bounds)
    table = np.array(default.torque_nm)
    table[4:8] += 30.0  # more torque than the default: above the upper limit
    (ack,) = vcu.feed_all(sender.prepare(default.with_torque(table), 4, 4, transfer_id=50,
                                         map_version=1).frames)
    assert sender.on_frame(ack).status == Status.OUT_OF_BOUNDS
    assert 'above_upper_limit' in vcu.receiver.last_message and vcu.applied == []
    (ack,) = vcu.feed_all(sender.prepare(lowered(default, slice(4, 8)), 4, 4,
                                         transfer_id=51, map_version=2).frames)
    assert sender.on_frame(ack).accepted


def test_busy_vcu_and_failed_apply_keep_the_old_map(db, default):
    sender = TorqueMapSender(db)
    busy = Vcu(db, default, accepting=lambda: False)
    (ack,) = busy.feed_all(sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=60,
                                          map_version=1).frames)
    assert sender.on_frame(ack).status == Status.BUSY and busy.applied == []

    def broken(new_map):
        raise RuntimeError('flash write failed')

    receiver = VcuMapReceiver(db, default, apply=broken)
    transfer = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=61,
                              map_version=1)
    acks = []
    for frame in transfer.frames:
        acks += receiver.feed(frame, 0.0)
    assert sender.on_frame(acks[0]).status == Status.APPLY_FAILED
    assert receiver.active_map is default and receiver.active_version == 0
    assert 'flash write failed' in receiver.last_message


def test_a_retried_commit_is_answered_again_without_applying_twice(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    transfer = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=70,
                              map_version=9)
    (first,) = vcu.feed_all(transfer.frames)
    (again,) = vcu.feed_all([transfer.commit_frame])
    assert bytes(first.data) == bytes(again.data)
    assert len(vcu.applied) == 1


def test_commit_without_segments_and_bad_frames(db, default):
    sender, vcu = TorqueMapSender(db), Vcu(db, default)
    transfer = sender.prepare(lowered(default, slice(0, 4)), 0, 4, transfer_id=80,
                              map_version=1)
    (ack,) = vcu.feed_all([transfer.commit_frame])
    outcome = sender.on_frame(ack)
    assert outcome.status == Status.MISSING_SEGMENTS and outcome.missing_segments == 24
    short = can.Message(arbitration_id=0x400, is_extended_id=False, data=bytes(3))
    error = can.Message(is_error_frame=True)
    other = can.Message(arbitration_id=0x100, is_extended_id=False, data=bytes(8))
    assert vcu.feed_all([short, error, other, None]) == []
    assert vcu.receiver.stats['bad_frames'] == 2  # the short segment and the non-frame


def test_sender_rejects_what_the_bus_cannot_carry(db, default):
    sender = TorqueMapSender(db)
    with pytest.raises(ValueError, match='outside the map'):
        sender.prepare(default, 12, 4, transfer_id=1, map_version=1)
    with pytest.raises(ValueError, match='transfer id'):
        sender.prepare(default, 0, 4, transfer_id=256, map_version=1)
    with pytest.raises(ValueError, match='map version'):
        sender.prepare(default, 0, 4, transfer_id=1, map_version=2 ** 24)
    table = np.array(default.torque_nm)
    table[0, 0] = 9000.0
    with pytest.raises(ValueError, match='bus range'):
        sender.prepare(default.with_torque(table), 0, 4, transfer_id=1, map_version=1)
    with pytest.raises(RuntimeError):
        TorqueMapSender(db).commit_sent(0.0)
    with pytest.raises(ValueError):
        encode_ack(db, 1, Status.NO_ACK, 0)


def test_transfer_over_a_python_can_virtual_bus(db, default):
    channel = f'tspace-test-transfer-{uuid.uuid4().hex}'
    bridge_bus = can.Bus(interface='virtual', channel=channel)
    vcu_bus = can.Bus(interface='virtual', channel=channel)
    try:
        sender, vcu = TorqueMapSender(db), Vcu(db, default)
        transfer = sender.prepare(lowered(default, slice(3, 7)), 3, 4, transfer_id=90,
                                  map_version=4)
        for frame in transfer.frames:
            bridge_bus.send(frame)
        sender.commit_sent(now_s=0.0)
        acks = []
        for _ in transfer.frames:
            received = vcu_bus.recv(timeout=2.0)
            assert received is not None
            acks += vcu.receiver.feed(received, now_s=0.0)
        (ack,) = acks
        vcu_bus.send(ack)
        outcome = sender.on_frame(bridge_bus.recv(timeout=2.0))
        assert outcome.accepted and outcome.active_map_version == 4
        np.testing.assert_array_equal(vcu.applied[0].torque_nm, transfer.flashed_map.torque_nm)
    finally:
        bridge_bus.shutdown()
        vcu_bus.shutdown()
