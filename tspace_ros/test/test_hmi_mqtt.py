"""
The remote HMI over a real mosquitto broker (TLS, password): tspace's codes for one vehicle.

Configure is answered on the ready topic; a retained command from before the
start is stale (cleared, never acted on); duplicates and out-of-order messages
by sequence number, other vehicles' commands, oversized and malformed
payloads are counted, never acted on; the listener reconnects by itself after
the broker restarts.
"""

import json
import queue
import time

from hypothesis import given, settings, strategies as st
import paho.mqtt.client as mqtt
import pytest
from ros_test_support import poll_until

from tspace_ros import servers
from tspace_ros.episodes.control import CONFIGURE, END_VALID, START
from tspace_ros.episodes.hmi_mqtt import (HmiMqttListener, HmiPayloadError, parse_remote_hmi,
                                          REASONS)

VIN, DRIVER = 'VIN-HMI-1', 'driver0'
TOPIC = f'tspace/hmi/{DRIVER}/{VIN}'


def _need_broker():
    try:
        servers.find_mosquitto()
    except servers.ServerUnavailable as error:
        pytest.skip(str(error))


def _publisher(broker):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id='hmi-test-publisher')
    client.username_pw_set(broker.username, broker.password)
    client.tls_set(ca_certs=broker.ca_file)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _send(client, payload, retain=False):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client.publish(TOPIC, data, qos=1, retain=retain).wait_for_publish(10)


@pytest.fixture(scope='module')
def broker():
    _need_broker()
    with servers.MqttBroker(tls=True, username='hmi') as running:
        yield running


def _listener(broker):
    return HmiMqttListener(broker.host, broker.port, VIN, DRIVER, ca_file=broker.ca_file,
                           username=broker.username, password=broker.password)


def test_codes_arrive_configure_is_answered_and_a_stale_command_is_cleared(broker):
    publisher = _publisher(broker)
    _send(publisher, {'code': START}, retain=True)   # left over from before the start
    ready = queue.Queue()
    publisher.on_message = lambda c, u, m: ready.put(json.loads(m.payload))
    publisher.subscribe(f'{TOPIC}/ready', qos=1)
    listener = _listener(broker)
    try:
        poll_until(lambda: listener.connected)
        poll_until(lambda: listener.counts['stale_retained'])
        _send(publisher, {'code': CONFIGURE, 'vin': VIN, 'seq': 1})
        assert ready.get(timeout=10) == {'vin': VIN, 'is_ready': True}
        _send(publisher, {'code': START, 'seq': 2})
        _send(publisher, {'code': START, 'seq': 2})              # duplicate
        _send(publisher, {'code': END_VALID, 'seq': 1})          # out of order
        _send(publisher, {'code': END_VALID, 'vin': 'OTHER'})    # another vehicle's
        _send(publisher, b'x' * 5000)                            # oversized
        _send(publisher, b'{"code": 9}')
        _send(publisher, {'code': '2', 'seq': 3})
        poll_until(lambda: listener.counts['accepted'] == 3)
        poll_until(lambda: sum(listener.counts[r] for r in REASONS) >= 6)
        assert listener.poll() == [CONFIGURE, START, END_VALID] and listener.poll() == []
        for reason in ('stale_retained', 'duplicate', 'other_vin', 'too_large', 'unknown_code'):
            assert listener.counts[reason] >= 1, reason
        assert listener.counts['duplicate'] == 2
        diagnostics = listener.diagnostics()
        assert diagnostics['hmi_mqtt_connected'] is True
        # The stale command was cleared from the broker: a new listener does not see it.
        second = HmiMqttListener(broker.host, broker.port, VIN, DRIVER, ca_file=broker.ca_file,
                                 username=broker.username, password=broker.password,
                                 client_id='hmi-second')
        try:
            poll_until(lambda: second.connected)
            time.sleep(0.3)
            assert second.counts['stale_retained'] == 0 and second.poll() == []
        finally:
            second.close()
    finally:
        listener.close()
        publisher.disconnect()
        publisher.loop_stop()


def test_a_wrong_password_is_seen_not_a_crash(broker):
    listener = HmiMqttListener(broker.host, broker.port, VIN, DRIVER, ca_file=broker.ca_file,
                               username=broker.username, password='wrong',
                               client_id='hmi-wrong')
    try:
        poll_until(lambda: listener.counts['connect_refused'])
        assert not listener.connected and 'refused' in listener.diagnostics()[
            'hmi_mqtt_last_problem']
        assert listener.poll() == []
    finally:
        listener.close()


def test_the_listener_reconnects_after_the_broker_restarts():
    _need_broker()
    with servers.MqttBroker(username='hmi') as first:
        port, username, password = first.port, first.username, first.password
        listener = HmiMqttListener(first.host, port, VIN, DRIVER, username=username,
                                   password=password, client_id='hmi-reconnect')
        poll_until(lambda: listener.connected)
    try:
        poll_until(lambda: not listener.connected)
        with servers.MqttBroker(username=username, password=password, port=port):
            poll_until(lambda: listener.connected, 40.0)
            assert listener.counts['connects'] >= 2
    finally:
        listener.close()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(['code', 'vin', 'seq', 'x']),
                                 st.one_of(st.none(), st.booleans(), st.integers(-3, 9),
                                           st.text(max_size=4), st.floats()),
                                 max_size=4).map(lambda d: json.dumps(d).encode())))
def test_property_any_payload_is_a_command_or_a_named_reason(payload):
    try:
        code, seq = parse_remote_hmi(payload, VIN)
    except HmiPayloadError as error:
        assert error.reason in REASONS
        return
    assert code in (1, 2, 3, 4, 5) and (seq is None or isinstance(seq, int))
