"""tspace's local HMI over loopback UDP: JSON statuses become episode commands."""

import socket
import time

import pytest

from tspace_ros.episodes.control import END_INVALID, END_VALID, EXIT, START
from tspace_ros.episodes.hmi_udp import HmiUdpListener, parse_hmi_message


def poll_until(listener, count, timeout_s=5.0):
    commands = []
    deadline = time.monotonic() + timeout_s
    while listener.received < count and time.monotonic() < deadline:
        commands += listener.poll()
        time.sleep(0.005)
    return commands + listener.poll()


def test_statuses_map_to_commands_and_bad_messages_are_counted():
    listener = HmiUdpListener(port=0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for payload in [b'{"status": "begin"}', b'not json', b'{"status": "end_valid"}',
                        b'[1, 2]', b'{"status": "pause"}', b'\xff\xfe',
                        b'{"status": "end_invalid"}', b'{"status": "exit"}']:
            sender.sendto(payload, ('127.0.0.1', listener.port))
        commands = poll_until(listener, 8)
    finally:
        sender.close()
        listener.close()
    assert commands == [START, END_VALID, END_INVALID, EXIT]
    assert (listener.received, listener.rejected) == (8, 4)
    assert 'not JSON' in listener.last_rejection  # the last bad one: b'\xff\xfe'


@pytest.mark.parametrize('payload, reason', [
    (b'{"status": "pause"}', "unknown status 'pause'"),
    (b'[1, 2]', 'expected an object'),
    (b'{"state": "begin"}', 'expected an object'),
    (b'{', 'not JSON'),
])
def test_each_bad_message_names_its_fault(payload, reason):
    with pytest.raises(ValueError, match=reason):
        parse_hmi_message(payload)


def test_only_loopback_addresses_may_be_bound():
    with pytest.raises(ValueError, match='loopback'):
        HmiUdpListener(port=0, host='0.0.0.0')
