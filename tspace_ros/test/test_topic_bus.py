"""Raw CAN frames over ROS topics: conversions and the TopicCanBus python-can bus."""

import can
import pytest
from ros_test_support import RosContext, spin_until
from tspace_interfaces.msg import CanFrame, CanFrameBatch

from tspace_ros.nodes.messages import frame_from_msg, frame_to_msg
from tspace_ros.nodes.topic_bus import FRAME_QOS, FROM_BUS_TOPIC, TopicCanBus

TIMEOUT_S = 15.0


def frames(n, start=0):
    return [can.Message(timestamp=1_790_000_000.25 + i / 1000, arbitration_id=0x100 + i,
                        is_extended_id=False, data=bytes([i % 256] * (i % 9)))
            for i in range(start, start + n)]


def same(a: can.Message, b: can.Message) -> bool:
    return (a.arbitration_id, a.is_extended_id, a.is_fd, a.is_remote_frame, a.is_error_frame,
            bytes(a.data), round(a.timestamp * 1e6)) == \
        (b.arbitration_id, b.is_extended_id, b.is_fd, b.is_remote_frame, b.is_error_frame,
         bytes(b.data), round(b.timestamp * 1e6))


def test_frame_conversion_round_trips_classic_extended_and_fd_frames():
    for frame in [
        can.Message(timestamp=1_790_000_000.123456, arbitration_id=0x7FF, is_extended_id=False,
                    data=b'\x01\x02'),
        can.Message(timestamp=1.5, arbitration_id=0x1FFFFFFF, is_extended_id=True, data=b''),
        can.Message(timestamp=2.0, arbitration_id=0x123, is_extended_id=False, is_fd=True,
                    bitrate_switch=True, data=bytes(range(64))),
    ]:
        msg = frame_to_msg(frame)
        assert msg.length == len(frame.data)
        assert same(frame_from_msg(msg), frame)


@pytest.mark.parametrize('fields, message', [
    ({'id': 0x800, 'is_extended': False}, '11-bit'),
    ({'id': 0x20000000, 'is_extended': True}, '29-bit'),
    ({'id': 1, 'length': 3, 'data': b'\x00'}, 'length 3'),
    ({'id': 1, 'length': 9, 'data': bytes(9)}, 'classic'),
])
def test_impossible_frames_are_refused_with_the_reason(fields, message):
    msg = CanFrame(**fields)
    if 'length' not in fields:
        msg.length = len(msg.data)
    with pytest.raises(ValueError, match=message):
        frame_from_msg(msg)


def test_frames_cross_between_bus_and_client_in_order():
    with RosContext() as ros:
        bus = TopicCanBus(ros.node('vehicle_side'), side='bus', channel='sim')
        client = TopicCanBus(ros.node('bridge_side'), side='client')
        assert spin_until(ros.executor, lambda: bus.peers and client.peers, TIMEOUT_S)
        sent_up = frames(50)
        bus.send_batch(sent_up)
        assert spin_until(ros.executor, lambda: client.received == 50, TIMEOUT_S)
        got = [client.recv(timeout=0) for _ in range(50)]
        assert all(same(a, b) for a, b in zip(got, sent_up))
        assert client.recv(timeout=0) is None
        command = frames(1, start=7)[0]
        client.send(command)
        assert spin_until(ros.executor, lambda: bus.received == 1, TIMEOUT_S)
        assert same(bus.recv(timeout=0), command)
        bus.shutdown()
        client.shutdown()


def test_bad_and_overflowing_frames_are_counted_not_lost_silently():
    with RosContext() as ros:
        client = TopicCanBus(ros.node('small_client'), side='client', max_queue=3)
        raw = ros.node('raw_sender').create_publisher(CanFrameBatch, FROM_BUS_TOPIC, FRAME_QOS)
        assert spin_until(ros.executor, lambda: raw.get_subscription_count() > 0, TIMEOUT_S)
        batch = CanFrameBatch(frames=[frame_to_msg(f) for f in frames(5)])
        batch.frames.append(CanFrame(id=0x800, is_extended=False))
        raw.publish(batch)
        assert spin_until(ros.executor, lambda: client.received + client.dropped +
                          client.rejected == 6, TIMEOUT_S)
        assert (client.received, client.dropped, client.rejected) == (3, 2, 1)
        assert '11-bit' in client.last_rejection
        client.shutdown()


def test_side_must_be_named():
    with RosContext() as ros, pytest.raises(ValueError, match='side'):
        TopicCanBus(ros.node('confused'), side='middle')
