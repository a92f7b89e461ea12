"""Opening the configured CAN bus: real interfaces, topics, and clear errors."""

import can
import pytest
from ros_test_support import RosContext

from tspace_ros.nodes.can_bus import CanBusUnavailable, open_can_bus
from tspace_ros.nodes.topic_bus import TopicCanBus


def test_virtual_interface_carries_frames_between_two_buses(request):
    channel = f'tspace-open-{request.node.name}'
    with RosContext() as ros:
        node = ros.node('bus_opener')
        a = open_can_bus(node, 'virtual', channel)
        b = open_can_bus(node, 'virtual', channel)
        # A simulated vehicle stamps frames with its own clock: the stamp must survive.
        a.send(can.Message(timestamp=1234.5, arbitration_id=0x10, data=b'\x01',
                           is_extended_id=False))
        frame = b.recv(timeout=1.0)
        a.shutdown()
        b.shutdown()
    assert frame is not None and frame.arbitration_id == 0x10
    assert frame.timestamp == 1234.5


def test_ros_topic_interface_gives_a_topic_bus():
    with RosContext() as ros:
        bus = open_can_bus(ros.node('topic_opener'), 'ros_topic', '')
        assert isinstance(bus, TopicCanBus)
        bus.shutdown()


@pytest.mark.parametrize('interface, channel, message', [
    ('kvaser', '0', "cannot open CAN interface 'kvaser'"),   # no Kvaser driver here
    ('pcan', 'PCAN_USBBUS1', "cannot open CAN interface 'pcan'"),
    ('udp_multicast', '239.0.0.1', 'not allowed'),
    ('carrier-pigeon', '0', 'unknown CAN interface'),
])
def test_unavailable_interfaces_raise_a_clear_error_not_a_crash(interface, channel, message):
    with RosContext() as ros:
        with pytest.raises(CanBusUnavailable, match=message):
            open_can_bus(ros.node('failing_opener'), interface, channel)
