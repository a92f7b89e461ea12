"""
The cloud path's real servers: S3 (SeaweedFS) and MQTT (mosquitto) on loopback.

Each starts on random free ports of 127.0.0.1 and is stopped by its PID (the
process is gone afterwards). MQTT with TLS and a password works with paho-mqtt;
a wrong CA, an expired server certificate and a wrong password are each refused,
and the client sees the failure. Tests skip (with what to install) when a
server's binary is missing.
"""

import json
import os
import queue
import ssl
import subprocess
import sys
import threading
import time

import pytest
from tspace_ros import servers

pytestmark = pytest.mark.timeout(120)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too (it cannot run); our own children are reaped by Popen.wait.
    with open(f'/proc/{pid}/stat') as stat:
        return stat.read().split()[2] == 'Z'


def _listening_ports(pid: int):
    """Return the TCP ports that ``pid`` listens on, as (address, port) from /proc."""
    inodes = set()
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    found = []
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == '0A' and parts[9] in inodes:        # LISTEN
                    address, port = parts[1].split(':')
                    found.append((address, int(port, 16)))
    return found


def _need(finder):
    try:
        finder()
    except servers.ServerUnavailable as err:
        pytest.skip(str(err))


# ---- S3 ------------------------------------------------------------------------
def test_s3_server_binds_only_random_loopback_ports_and_stops_by_pid(tmp_path):
    _need(servers.find_weed)
    with servers.S3Server(buckets=['fleet']) as s3:
        pid = s3.pid
        listening = _listening_ports(pid)
        assert listening, 'weed listens on nothing'
        # 0100007F is 127.0.0.1 in /proc/net/tcp; every port is one we chose at random.
        assert {address for address, _ in listening} == {'0100007F'}
        assert {port for _, port in listening} <= set(s3.ports.values())
        assert s3.port in {port for _, port in listening}
        assert not {8080, 8333, 8888, 9333, 18080, 18888, 19333} & set(s3.ports.values())
        fs = s3.filesystem()
        with fs.open_output_stream('fleet/hello.txt') as out:
            out.write(b'tspace')
        with fs.open_input_stream('fleet/hello.txt') as source:
            assert source.read() == b'tspace'
        assert len(s3.secret_key) >= 30 and s3.access_key not in s3.secret_key
        directory = s3.directory
    assert _gone(pid)
    assert not directory.exists()
    assert s3.pid is None


def test_s3_credentials_are_required():
    _need(servers.find_weed)
    import pyarrow as pa
    from pyarrow import fs as pafs
    with servers.S3Server(buckets=['fleet']) as s3:
        wrong = pafs.S3FileSystem(access_key=s3.access_key, secret_key='not-the-secret',
                                  endpoint_override=f'127.0.0.1:{s3.port}', scheme='http',
                                  region=s3.region,
                                  retry_strategy=pafs.AwsStandardS3RetryStrategy(1))
        with pytest.raises((OSError, pa.ArrowException)):
            with wrong.open_output_stream('fleet/x') as out:
                out.write(b'x')


# ---- MQTT ------------------------------------------------------------------------
def _client(broker, username=None, password=None, ca_file=None):
    import paho.mqtt.client as mqtt
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id='',
                         protocol=mqtt.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file), cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return client


def _connect(client, broker, timeout_s=10.0):
    """Connect and wait for the CONNACK; return its reason code (raises on TLS errors)."""
    result = queue.Queue()
    client.on_connect = lambda c, userdata, flags, code, props: result.put(code)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        return result.get(timeout=timeout_s)
    except queue.Empty:
        return None


def test_mqtt_publish_subscribe_with_tls_and_password():
    _need(servers.find_mosquitto)
    with servers.MqttBroker(tls=True, username='driver') as broker:
        assert broker.password and broker.tls
        received = queue.Queue()
        subscriber = _client(broker, 'driver', broker.password, broker.ca_file)
        subscribed = threading.Event()
        subscriber.on_message = lambda c, u, msg: received.put((msg.topic, msg.payload))
        subscriber.on_subscribe = lambda *args: subscribed.set()
        publisher = _client(broker, 'driver', broker.password, broker.ca_file)
        try:
            assert _connect(subscriber, broker) == 0
            subscriber.subscribe('tspace/hmi/#', qos=1)
            assert subscribed.wait(10)
            assert _connect(publisher, broker) == 0
            publisher.publish('tspace/hmi/van-1', b'{"eco": 3}', qos=1).wait_for_publish(10)
            assert received.get(timeout=10) == ('tspace/hmi/van-1', b'{"eco": 3}')
        finally:
            for client in (subscriber, publisher):
                client.disconnect()
                client.loop_stop()
        pid = broker.pid
        assert _listening_ports(pid) == [('0100007F', broker.port)]
    assert _gone(pid)


def test_mqtt_wrong_password_is_refused():
    _need(servers.find_mosquitto)
    with servers.MqttBroker(tls=True, username='driver') as broker:
        client = _client(broker, 'driver', 'wrong-' + broker.password, broker.ca_file)
        try:
            code = _connect(client, broker)
        finally:
            client.disconnect()
            client.loop_stop()
        assert code is not None and code != 0 and code.is_failure
        assert broker.running             # nothing crashed


def test_mqtt_anonymous_client_is_refused_when_a_password_is_set():
    _need(servers.find_mosquitto)
    with servers.MqttBroker(username='driver') as broker:
        client = _client(broker)
        try:
            code = _connect(client, broker)
        finally:
            client.disconnect()
            client.loop_stop()
        assert code is not None and code.is_failure


def test_mqtt_wrong_ca_is_refused(tmp_path):
    _need(servers.find_mosquitto)
    other = servers.make_certificates(tmp_path / 'other')
    with servers.MqttBroker(tls=True, username='driver') as broker:
        client = _client(broker, 'driver', broker.password, other.ca_cert)
        with pytest.raises(ssl.SSLCertVerificationError):
            client.connect(broker.host, broker.port)
        client.loop_stop()
        assert broker.running
        good = _client(broker, 'driver', broker.password, broker.ca_file)
        try:
            assert _connect(good, broker) == 0    # the broker still serves others
        finally:
            good.disconnect()
            good.loop_stop()


def test_mqtt_expired_server_certificate_is_refused(tmp_path):
    _need(servers.find_mosquitto)
    expired = servers.make_certificates(tmp_path / 'expired', expired=True)
    with servers.MqttBroker(certificates=expired, username='driver') as broker:
        client = _client(broker, 'driver', broker.password, expired.ca_cert)
        with pytest.raises(ssl.SSLCertVerificationError, match='expired'):
            client.connect(broker.host, broker.port)
        assert broker.running


def test_certificates_serve_https(tmp_path):
    import http.server
    import urllib.request
    certs = servers.make_certificates(tmp_path)
    assert oct(certs.key.stat().st_mode & 0o777) == '0o600'
    httpd = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)
    httpd.socket = certs.server_context().wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f'https://127.0.0.1:{httpd.server_address[1]}/'
        with urllib.request.urlopen(url, context=certs.client_context(), timeout=10) as reply:
            assert reply.status == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_command_line_prints_endpoint_and_stops_on_sigint():
    _need(servers.find_mosquitto)
    process = subprocess.Popen([sys.executable, '-m', 'tspace_ros.servers', 'mqtt', '--tls',
                                '--username', 'dev'], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith('}'):
                break
        info = json.loads(''.join(lines))
        assert info['server'] == 'mqtt' and info['tls'] and info['password']
        assert servers.port_open(info['port'])
        process.send_signal(2)                    # Ctrl-C
        assert process.wait(timeout=20) == 0
        assert _gone(info['pid'])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
