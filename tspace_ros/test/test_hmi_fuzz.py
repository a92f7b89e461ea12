"""
The HMI is hostile input: no datagram stops the listener, each is counted by reason.

Arbitrary bytes and arbitrary JSON (hypothesis) through the parser; wrong types,
deep nesting, oversized datagrams and floods through a real loopback socket;
episode ids that stay unique when many commands arrive at one instant.
"""

import json
import socket
import time

from hypothesis import given, settings, strategies as st
import pytest

from tspace_ros.episodes.control import (CONFIGURE, END_INVALID, END_VALID, EpisodeControl,
                                         EXIT, START)
from tspace_ros.episodes.hmi_udp import (HmiMessageError, HmiUdpListener, MAX_DATAGRAM,
                                         parse_hmi_message, REASONS, STATUS_COMMANDS)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) |
    st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600),
                 JSON.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(['status', 'x']), JSON, max_size=2).map(
                     lambda v: json.dumps(v).encode()),
                 st.sampled_from(sorted(STATUS_COMMANDS)).map(
                     lambda s: json.dumps({'status': s}).encode())))
def test_any_datagram_is_a_command_or_a_counted_reason(data):
    try:
        code = parse_hmi_message(data)
    except HmiMessageError as error:
        assert error.reason in REASONS and str(error)
        return
    message = json.loads(data)
    assert STATUS_COMMANDS[message['status']] == code


@pytest.mark.parametrize('payload, reason', [
    (b'{"status": ["begin"]}', 'bad_status_type'),
    (b'{"status": {"begin": 1}}', 'bad_status_type'),
    (b'{"status": 1}', 'bad_status_type'),
    (b'{"status": null}', 'bad_status_type'),
    (b'[' * 2000 + b']' * 2000, 'too_deep'),
    (b'{"status": ' + b'[' * 2000 + b']' * 2000 + b'}', 'too_deep'),
    (b'{"a": "[[[[[[[[[[[[[[[", "status": "begin"}', None),  # brackets inside a string
    (b'\xff\xfe', 'not_utf8'),
    (b'{"status": "begin"', 'not_json'),
    (b'"begin"', 'not_object'),
    (b'{"state": "begin"}', 'no_status'),
    (b'{"status": "pause"}', 'unknown_status'),
    (b'{"status": "' + b'x' * (MAX_DATAGRAM + 10) + b'"}', 'too_large'),
])
def test_each_hostile_datagram_has_its_reason(payload, reason):
    if reason is None:
        assert parse_hmi_message(payload) == START
        return
    with pytest.raises(HmiMessageError) as caught:
        parse_hmi_message(payload)
    assert caught.value.reason == reason


def _send_all(port, payloads):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, ('127.0.0.1', port))


def _drain(listener, received, timeout_s=5.0):
    commands = []
    deadline = time.monotonic() + timeout_s
    while listener.received + listener.reasons['socket_error'] < received and \
            time.monotonic() < deadline:
        commands += listener.poll()
        time.sleep(0.002)
    return commands + listener.poll()


def test_hostile_datagrams_never_stop_the_listener_and_are_counted():
    listener = HmiUdpListener(port=0)
    try:
        hostile = [b'{"status": ["begin"]}', b'[' * 4000, b'{"status": 3}',
                   b'x' * (MAX_DATAGRAM + 500), b'', b'{"status": "end_valid", "status": 1}']
        _send_all(listener.port, hostile + [b'{"status": "begin"}'])
        commands = _drain(listener, len(hostile) + 1)
        diagnostics = listener.diagnostics()
    finally:
        listener.close()
    assert commands == [START]
    assert listener.rejected == len(hostile) == diagnostics['hmi_rejected']
    assert diagnostics['hmi_rejected_bad_status_type'] == 3  # a duplicate key: the last wins
    assert diagnostics['hmi_rejected_too_deep'] == 1
    assert diagnostics['hmi_rejected_too_large'] == 1
    assert diagnostics['hmi_rejected_not_json'] == 1  # the empty datagram
    assert diagnostics['hmi_accepted'] == 1 and diagnostics['hmi_last_rejection'] != '-'


def test_a_flood_is_read_in_bounded_polls_and_commands_are_rate_limited():
    now = [100.0]
    listener = HmiUdpListener(port=0, max_per_poll=16, max_commands_per_s=5.0,
                              clock=lambda: now[0])
    try:
        _send_all(listener.port, [b'{"status": "begin"}'] * 100)
        deadline = time.monotonic() + 5.0
        sizes, commands = [], []
        while listener.received < 100 and time.monotonic() < deadline:
            before = listener.received
            commands += listener.poll()
            sizes.append(listener.received - before)
            time.sleep(0.002)
    finally:
        listener.close()
    assert listener.received == 100 and max(sizes) <= 16
    assert len(commands) == 5  # the burst; the clock stood still
    assert listener.reasons['rate_limited'] == 95
    now[0] += 1.0  # a second later the bucket holds 5 again
    assert listener._take_token()


def test_kernel_drops_of_a_full_queue_are_counted():
    listener = HmiUdpListener(port=0)
    try:
        listener._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        _send_all(listener.port, [b'{"status": "exit"}' * 50] * 400)  # overflows the queue
        _send_all(listener.port, [b'{"status": "begin"}'])
        deadline = time.monotonic() + 5.0
        while listener.kernel_drops == 0 and time.monotonic() < deadline:
            listener.poll()
            time.sleep(0.002)
            _send_all(listener.port, [b'{"status": "begin"}'])
    finally:
        listener.close()
    assert listener.kernel_drops > 0
    assert listener.diagnostics()['hmi_kernel_drops'] == listener.kernel_drops


def _configured():
    control = EpisodeControl(countdown_s=0.0)
    assert control.command(CONFIGURE, 0, 'VIN', 'driver').accepted
    return control


def test_commands_at_one_instant_give_distinct_strictly_later_episodes():
    control = _configured()
    now = 1_790_000_000_123_456_789
    ids, starts = [], []
    for _ in range(5):  # START then END_INVALID, five times in one poll cycle
        started = control.command(START, now)
        assert started.accepted
        ids.append(started.episode_id)
        starts.append(control.episode.start_ns)
        assert control.command(END_INVALID, now).accepted
    assert len(set(ids)) == 5 and ids == sorted(ids)
    assert all(b - a >= 1_000_000 for a, b in zip(starts, starts[1:]))
    for episode in control.collect_finished():
        assert episode.end_ns >= episode.start_ns


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([START, END_VALID, END_INVALID, START, 9]),
                          st.integers(-5_000_000, 3_000_000)), max_size=60))
def test_episode_ids_are_unique_for_any_command_timing(commands):
    control = _configured()
    now = 1_790_000_000 * 10 ** 9
    seen = []
    for code, step_ns in commands:
        now += step_ns  # the clock may stand still or step back
        answer = control.command(code, now)
        if code == START and answer.accepted:
            seen.append((control.episode.start_ns, answer.episode_id))
    control.command(EXIT, now)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert len({i for _, i in seen}) == len(seen)
    for episode in control.collect_finished():
        assert episode.end_ns >= episode.start_ns
