"""FrameDecoder: bad frames are counted and diagnosed, never raised; a real virtual bus."""

import copy
import math
import pickle
import uuid

import can
import cantools
import pytest

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.decoder import (capture_time_ns, DecodedFrame, FrameDecoder,
                                    INVALID_CAPTURE_NS, MAX_CAPTURE_TIME_S, MAX_TRACKED_IDS)
from tspace_ros.can.frames import encode_vehicle_sample

SAMPLE = {'speed_kph': 50.0, 'pedal': 0.25, 'brake_bar': 1.5, 'current_a': 80.0,
          'voltage_v': 400.0, 'soc': 0.5, 'motor_torque_nm': 200.0, 'motor_speed_rpm': 3000.0}

# A multiplexed message: a frame with an undefined multiplexer value cannot be decoded.
MUX_DBC = '\n'.join([
    'VERSION ""', 'NS_ :', 'BS_:', 'BU_: A', 'BO_ 100 Muxed: 8 A',
    ' SG_ Mux M : 0|8@1+ (1,0) [0|255] "" A',
    ' SG_ ValueA m1 : 8|16@1+ (1,0) [0|65535] "" A', ''])


@pytest.fixture(scope='module')
def db():
    """Return the shipped DBC."""
    return load_dbc()


def good_frame(db):
    """Return a valid VehicleDynamics frame."""
    return encode_vehicle_sample(db, SAMPLE, 1_790_000_000.5)[0]


def test_good_frames_decode_and_are_counted_per_id(db):
    decoder = FrameDecoder(db)
    for frame in encode_vehicle_sample(db, SAMPLE, 0.0) * 2:
        assert decoder.decode(frame) is not None
    name, values = decoder.decode_with_name(good_frame(db))
    assert name == 'VehicleDynamics' and values['AccelPedalPosition'] == pytest.approx(25.0)
    stats = decoder.stats
    assert (stats.frames, stats.decoded, stats.rejected) == (7, 7, 0)
    assert dict(stats.per_id) == {0x100: 3, 0x110: 2, 0x120: 2}


def test_unknown_ids_are_counted_with_the_set_of_ids(db):
    decoder = FrameDecoder(db)
    for frame_id in (0x7FF, 0x123, 0x7FF):
        assert decoder.decode(can.Message(arbitration_id=frame_id, is_extended_id=False,
                                          data=bytes(8))) is None
    # The id of a known message, but as a 29-bit extended id, is another frame.
    extended = good_frame(db)
    extended.is_extended_id = True
    assert decoder.decode(extended) is None
    assert decoder.stats.unknown == 4
    assert decoder.stats.unknown_ids == {0x7FF, 0x123, 0x100}
    assert '0x100' in decoder.stats.last_rejection
    assert decoder.stats.decoded == 0


def test_wrong_length_frames_are_counted(db):
    decoder = FrameDecoder(db)
    data = bytes(good_frame(db).data)
    for payload in (data[:4], data + b'\x00' * 4):
        frame = can.Message(arbitration_id=0x100, is_extended_id=False, data=payload,
                            is_fd=len(payload) > 8)
        assert decoder.decode(frame) is None
    mismatched = can.Message(arbitration_id=0x100, is_extended_id=False, data=data, dlc=8,
                             check=False)
    mismatched.dlc = 6
    assert decoder.decode(mismatched) is None
    assert decoder.stats.wrong_length == 3
    assert 'VehicleDynamics' in decoder.stats.last_rejection


def test_error_and_remote_frames_are_counted_not_decoded(db):
    decoder = FrameDecoder(db)
    assert decoder.decode(can.Message(is_error_frame=True, arbitration_id=0x100,
                                      data=bytes(8))) is None
    assert decoder.decode(can.Message(is_remote_frame=True, arbitration_id=0x100,
                                      is_extended_id=False, dlc=8)) is None
    stats = decoder.stats
    assert (stats.error_frames, stats.remote_frames, stats.decoded) == (1, 1, 0)
    assert stats.as_dict()['rejected'] == 2


def test_decode_errors_and_garbage_inputs_are_counted_not_raised():
    decoder = FrameDecoder(cantools.database.load_string(MUX_DBC, database_format='dbc'))
    good = can.Message(arbitration_id=100, is_extended_id=False,
                       data=bytes([1, 0x34, 0x12, 0, 0, 0, 0, 0]))
    assert decoder.decode(good) == {'Mux': 1, 'ValueA': 0x1234}
    bad_mux = can.Message(arbitration_id=100, is_extended_id=False,
                          data=bytes([7, 0, 0, 0, 0, 0, 0, 0]))
    assert decoder.decode(bad_mux) is None
    assert decoder.decode(None) is None
    assert decoder.decode('not a frame') is None
    assert decoder.stats.decode_errors == 3
    assert decoder.stats.frames == 4 and decoder.stats.decoded == 1


def test_frames_through_a_python_can_virtual_bus(db):
    channel = f'tspace-test-decoder-{uuid.uuid4().hex}'
    sender = can.Bus(interface='virtual', channel=channel)
    receiver = can.Bus(interface='virtual', channel=channel)
    try:
        frames = encode_vehicle_sample(db, SAMPLE, 0.0)
        for frame in frames:
            sender.send(frame)
        sender.send(can.Message(arbitration_id=0x555, is_extended_id=False, data=bytes(8)))
        decoder = FrameDecoder(db)
        received = [receiver.recv(timeout=2.0) for _ in range(4)]
        assert all(msg is not None for msg in received)
        decoded = [decoder.decode(msg) for msg in received]
        assert decoded[3] is None and decoder.stats.unknown_ids == {0x555}
        assert decoded[0]['VehicleSpeed'] == pytest.approx(50.0)
        assert decoded[1]['BatteryVoltage'] == pytest.approx(400.0)
        assert decoded[2]['MotorSpeed'] == 3000
        # The bus stamps frames at capture; the decoder's stamp is that time in ns.
        assert capture_time_ns(received[0]) == round(received[0].timestamp * 1e9)
    finally:
        sender.shutdown()
        receiver.shutdown()


# Two messages that both carry a 'Speed' and a 'Counter' (as production DBCs do).
SAME_NAMES_DBC = '\n'.join([
    'VERSION ""', 'NS_ :', 'BS_:', 'BU_: A B',
    'BO_ 256 WheelSpeeds: 8 A',
    ' SG_ Speed : 0|16@1+ (0.01,0) [0|655.35] "km/h" B',
    ' SG_ Counter : 16|4@1+ (1,0) [0|15] "" B',
    'BO_ 512 MotorStatus: 8 A',
    ' SG_ Speed : 0|16@1- (1,0) [-32768|32767] "rpm" B',
    ' SG_ Counter : 16|4@1+ (1,0) [0|15] "" B', ''])


def test_decoded_frames_keep_their_message_when_signal_names_repeat():
    same = cantools.database.load_string(SAME_NAMES_DBC, database_format='dbc')
    decoder = FrameDecoder(same)
    wheel = same.get_message_by_name('WheelSpeeds')
    motor = same.get_message_by_name('MotorStatus')
    a = decoder.decode(can.Message(arbitration_id=256, is_extended_id=False,
                                   data=wheel.encode({'Speed': 42.5, 'Counter': 3})))
    b = decoder.decode(can.Message(arbitration_id=512, is_extended_id=False,
                                   data=motor.encode({'Speed': -1200, 'Counter': 9})))
    assert isinstance(a, DecodedFrame) and isinstance(b, DecodedFrame)
    assert (a.message, b.message) == ('WheelSpeeds', 'MotorStatus')
    assert a == {'Speed': pytest.approx(42.5), 'Counter': 3}
    assert b == {'Speed': -1200, 'Counter': 9}
    name, named = decoder.decode_with_name(can.Message(
        arbitration_id=512, is_extended_id=False, data=motor.encode({'Speed': 5, 'Counter': 1})))
    assert name == named.message == 'MotorStatus'
    assert 'MotorStatus' in repr(named)
    assert pickle.loads(pickle.dumps(named)).message == 'MotorStatus'
    assert copy.copy(named).message == 'MotorStatus'


@pytest.mark.parametrize('timestamp', [math.nan, math.inf, -math.inf, -0.5, 1e20,
                                       float(2 ** 31), None, 'noon', True])
def test_frames_with_bad_timestamps_are_counted_never_raised(db, timestamp):
    frame = good_frame(db)
    frame.timestamp = timestamp
    assert capture_time_ns(frame) == INVALID_CAPTURE_NS  # never an exception
    decoder = FrameDecoder(db)
    assert decoder.decode(frame) is None
    stats = decoder.stats
    assert stats.bad_timestamps == 1 and stats.rejected == 1 and stats.decoded == 0
    assert stats.rejections['bad_timestamps'] == 1
    assert 'timestamp' in stats.last_rejection and 'VehicleDynamics' in stats.last_rejection
    assert stats.as_dict()['bad_timestamps'] == 1
    # The epoch itself and the last second a ROS time holds are valid capture times.
    for fine in (0.0, 0, float(MAX_CAPTURE_TIME_S)):
        frame.timestamp = fine
        assert decoder.decode(frame) is not None
        assert capture_time_ns(frame) == round(fine * 1e9)
    assert capture_time_ns(None) == INVALID_CAPTURE_NS


def test_every_rejection_is_counted_under_one_reason(db):
    decoder = FrameDecoder(db)
    nan_stamp = good_frame(db)
    nan_stamp.timestamp = math.nan
    frames = [good_frame(db), nan_stamp, None,
              can.Message(is_error_frame=True, arbitration_id=0x100, data=bytes(8)),
              can.Message(is_remote_frame=True, arbitration_id=0x100, dlc=8),
              can.Message(arbitration_id=0x7AA, is_extended_id=False, data=bytes(8)),
              can.Message(arbitration_id=0x100, is_extended_id=False, data=bytes(3))]
    for frame in frames:
        decoder.decode(frame)
    stats = decoder.stats
    assert stats.rejections == {'unknown': 1, 'wrong_length': 1, 'decode_errors': 1,
                                'error_frames': 1, 'remote_frames': 1, 'bad_timestamps': 1}
    assert sum(stats.rejections.values()) == stats.rejected == len(frames) - 1


def test_random_ids_do_not_grow_the_id_sets_without_bound(db):
    decoder = FrameDecoder(db)
    for frame_id in range(0x1000, 0x1000 + MAX_TRACKED_IDS + 500):
        decoder.decode(can.Message(arbitration_id=frame_id, is_extended_id=True,
                                   data=bytes(8)))
    decoder.decode(good_frame(db))
    stats = decoder.stats
    assert stats.unknown == MAX_TRACKED_IDS + 500 and stats.decoded == 1
    assert len(stats.unknown_ids) == MAX_TRACKED_IDS
    assert len(stats.per_id) <= MAX_TRACKED_IDS
