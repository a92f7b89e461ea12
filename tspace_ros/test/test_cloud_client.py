"""
The RemoteCAN HTTP client against a scripted HTTP server on loopback.

Reads are retried on 429/5xx, flashes never (set_torque is not idempotent);
transport failures, time-outs and bodies outside the contract end in typed
replies; the bearer token is sent and secrets come from the environment or a
file only.
"""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import threading
import time

import numpy as np
import pytest

from tspace_ros.cloud.client import load_secret, RemoteCanClient, SecretError
from tspace_ros.cloud.remote_can import RemoteCode


class Script:
    """Replies to serve in order (status, body, delay_s); records what was asked."""

    def __init__(self):
        self.replies, self.requests = [], []


def _handler(script):
    class Handler(BaseHTTPRequestHandler):

        def do_POST(self):  # noqa: N802 - http.server's name
            length = int(self.headers.get('Content-Length', 0))
            script.requests.append((self.path, self.headers.get('Authorization'),
                                    json.loads(self.rfile.read(length))))
            status, body, delay = script.replies.pop(0) if script.replies else \
                (200, {'success': True, 'result': {}}, 0.0)
            time.sleep(delay)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass
    return Handler


@pytest.fixture
def server():
    script = Script()
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}', script
    httpd.shutdown()
    httpd.server_close()


def _client(url, **kwargs):
    return RemoteCanClient(url, 'VIN1', token='t0ken', backoff_s=0.01, **kwargs)


def test_a_read_is_retried_on_429_and_5xx_then_succeeds(server):
    url, script = server
    script.replies = [(503, b'<html>busy</html>', 0), (429, b'', 0),
                      (200, {'success': True, 'result': {'timestamps': []}}, 0)]
    reply = _client(url).get_signal(4)
    assert reply.ok and reply.result == {'timestamps': []}
    assert len(script.requests) == 3
    path, auth, body = script.requests[0]
    assert path == '/get_signal' and auth == 'Bearer t0ken'
    assert body == {'vin': 'VIN1', 'signal_duration': 4}


def test_a_read_gives_up_with_the_status_after_its_retries(server):
    url, script = server
    script.replies = [(502, b'bad gateway', 0)] * 5
    reply = _client(url, read_retries=2).get_signal()
    assert reply.code == RemoteCode.HTTP_STATUS and reply.http_status == 502
    assert len(script.requests) == 3


def test_a_flash_is_never_retried(server):
    url, script = server
    script.replies = [(503, b'', 0), (200, {'success': True, 'result': {}}, 0)]
    client = _client(url)
    reply = client.set_torque(np.zeros((2, 17)), 3, (14, 17))
    assert reply.code == RemoteCode.HTTP_STATUS and reply.retryable
    assert len(script.requests) == 1, 'set_torque was sent again'
    path, _, body = script.requests[0]
    assert path == '/set_torque' and body['start_line'] == 3 and len(body['torque']) == 2
    script.replies = [(200, {'success': False, 'reason': {'why': {'code': 2001}}}, 0)]
    assert client.set_torque(np.zeros((1, 17)), 0, (14, 17)).code == \
        RemoteCode.AB_SWITCH_FAILED
    assert client.stats()['set_torque_code_2001'] == 1


def test_time_outs_and_refused_connections_are_typed(server):
    url, script = server
    script.replies = [(200, {'success': True, 'result': {}}, 1.5)]
    reply = _client(url, flash_timeout_s=0.3).set_torque(np.zeros((1, 17)), 0, (14, 17))
    assert reply.code == RemoteCode.TIMEOUT and reply.http_status == 0
    assert len(script.requests) == 1
    closed = RemoteCanClient('http://127.0.0.1:9', 'VIN1', read_retries=1, backoff_s=0.01)
    reply = closed.get_signal()
    assert reply.code == RemoteCode.CONNECTION and reply.retryable


def test_secrets_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    secret = tmp_path / 'token'
    secret.write_text('abc\n')
    assert load_secret('', str(secret)) == 'abc'
    monkeypatch.setenv('TSPACE_TEST_TOKEN', 'xyz')
    assert load_secret('TSPACE_TEST_TOKEN') == 'xyz'
    assert load_secret() == ''
    with pytest.raises(SecretError, match='TSPACE_MISSING_TOKEN is not set'):
        load_secret('TSPACE_MISSING_TOKEN')
    with pytest.raises(SecretError, match='cannot read') as error:
        load_secret('', str(tmp_path / 'nope'))
    assert 'abc' not in str(error.value)
