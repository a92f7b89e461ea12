"""
The RemoteCAN HTTP client: one vehicle's calls, reads retried, flashes never.

``RemoteCanClient`` speaks the contract of ``remote_can`` over HTTP(S) with
``requests``:

- reads (``get_signal``) are retried with exponential backoff on 413, 429 and
  5xx and on connection failures by urllib3's ``Retry`` (it honours
  Retry-After), not a hand-made loop;
- ``set_torque`` is not idempotent: its session retries nothing, so a map is
  written once or the call fails with a typed code (the caller keeps the last
  good map and marks the step as not applied);
- one request at a time per vehicle (a lock per client);
- HTTPS with a CA bundle (``ca_bundle``; the system's by default) and a bearer
  token read from the environment or a secret file (``load_secret``), never
  from the repository or a parameter value;
- every call ends in a ``RemoteReply``: transport failures are codes 1000
  (connection, TLS), 1001 (other) and 1002 (time-out), never an exception;
- latencies and counts per code are kept for the diagnostics (``stats``).
"""

from collections import Counter, deque
import os
import pathlib
import threading
import time
from typing import Deque, Dict, Sequence, Tuple

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from tspace_ros.cloud.remote_can import (DEFAULT_SIGNAL_DURATION_S, get_signal_body,
                                         MAX_REPLY_BYTES, parse_reply, RemoteCode, RemoteReply,
                                         RETRYABLE_STATUSES, set_torque_body, transport_failure)
from urllib3.util.retry import Retry

MAX_SECRET_BYTES = 4096


class SecretError(ValueError):
    """A secret that is missing or unreadable (names where it was looked for, never its value)."""


def load_secret(env: str = '', file: str = '', what: str = 'secret') -> str:
    """
    Return a secret from the environment variable ``env`` or the file ``file``.

    The file wins when both are given (a mounted secret); '' for neither means no
    secret. SecretError when a named source is missing or empty.
    """
    if file:
        path = pathlib.Path(file).expanduser()
        try:
            data = path.read_bytes()[:MAX_SECRET_BYTES + 1]
        except OSError as error:
            raise SecretError(f'{what}: cannot read secret file {str(path)!r}: '
                              f'{error.strerror}') from None
        if len(data) > MAX_SECRET_BYTES:
            raise SecretError(f'{what}: secret file {str(path)!r} is larger than '
                              f'{MAX_SECRET_BYTES} bytes')
        value = data.decode('utf-8', 'replace').strip()
        if not value:
            raise SecretError(f'{what}: secret file {str(path)!r} is empty')
        return value
    if env:
        value = os.environ.get(env, '').strip()
        if not value:
            raise SecretError(f'{what}: environment variable {env} is not set')
        return value
    return ''


class RemoteCanClient:
    """The RemoteCAN calls of one vehicle (see the module docstring)."""

    def __init__(self, base_url: str, vin: str, token: str = '', ca_bundle: str = '',
                 timeout_s: float = 10.0, flash_timeout_s: float = 35.0,
                 read_retries: int = 3, backoff_s: float = 0.5,
                 signal_path: str = '/get_signal', torque_path: str = '/set_torque'):
        """Prepare the two sessions; nothing is sent. ValueError for a bad URL or timing."""
        if not base_url.startswith(('http://', 'https://')):
            raise ValueError(f'base_url must be http:// or https://, got {base_url!r}')
        for name, value in (('timeout_s', timeout_s), ('flash_timeout_s', flash_timeout_s)):
            if not 0 < value <= 600:
                raise ValueError(f'{name} must be in (0, 600] s, got {value}')
        if not 0 <= read_retries <= 10 or not 0 <= backoff_s <= 60:
            raise ValueError('read_retries must be 0..10 and backoff_s 0..60')
        self.base_url, self.vin = base_url.rstrip('/'), vin
        self.timeout_s, self.flash_timeout_s = float(timeout_s), float(flash_timeout_s)
        self.signal_url = self.base_url + signal_path
        self.torque_url = self.base_url + torque_path
        headers = {'Content-Type': 'application/json', 'Accept': 'application/json'}
        if token:
            headers['Authorization'] = f'Bearer {token}'
        retry = Retry(total=read_retries, connect=read_retries, read=read_retries,
                      status=read_retries, backoff_factor=backoff_s,
                      status_forcelist=sorted(RETRYABLE_STATUSES),
                      allowed_methods=frozenset({'POST'}), raise_on_status=False,
                      respect_retry_after_header=True)
        self._read = self._session(headers, ca_bundle, retry)
        self._flash = self._session(headers, ca_bundle, Retry(total=0, connect=0, read=0,
                                                              status=0, redirect=0,
                                                              raise_on_status=False))
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self.latency_ms: Dict[str, Deque[float]] = {'get_signal': deque(maxlen=1000),
                                                    'set_torque': deque(maxlen=1000)}

    @staticmethod
    def _session(headers, ca_bundle: str, retry: Retry) -> requests.Session:
        session = requests.Session()
        session.headers.update(headers)
        session.verify = ca_bundle or True
        session.trust_env = False  # no proxies or netrc credentials from the environment
        adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=1)
        session.mount('http://', adapter)
        session.mount('https://', adapter)
        return session

    def get_signal(self, signal_duration_s: int = DEFAULT_SIGNAL_DURATION_S) -> RemoteReply:
        """Return the last seconds of signals (reply.result), retried on 413/429/5xx."""
        return self._call('get_signal', self._read, self.signal_url,
                          get_signal_body(self.vin, signal_duration_s), self.timeout_s)

    def set_torque(self, rows: Sequence[Sequence[float]], start_line: int,
                   map_shape: Tuple[int, int], abswitch: bool = True) -> RemoteReply:
        """Write rows from start_line (already gated) once; never retried."""
        body = set_torque_body(self.vin, np.asarray(rows, np.float64), start_line,
                               int(map_shape[0]), int(map_shape[1]), abswitch)
        return self._call('set_torque', self._flash, self.torque_url, body,
                          self.flash_timeout_s)

    def _call(self, name: str, session: requests.Session, url: str, body: bytes,
              timeout_s: float) -> RemoteReply:
        with self._lock:
            start = time.monotonic()
            reply = self._post(session, url, body, timeout_s)
            self.latency_ms[name].append((time.monotonic() - start) * 1e3)
            self.counts[(name, int(reply.code))] += 1
            return reply

    @staticmethod
    def _post(session: requests.Session, url: str, body: bytes,
              timeout_s: float) -> RemoteReply:
        try:
            response = session.post(url, data=body, timeout=(min(timeout_s, 5.0), timeout_s),
                                    stream=True, allow_redirects=False)
        except requests.exceptions.SSLError as error:
            return transport_failure(RemoteCode.CONNECTION, f'TLS: {_short(error)}')
        except requests.exceptions.Timeout as error:
            return transport_failure(RemoteCode.TIMEOUT, f'time-out: {_short(error)}')
        except requests.exceptions.RetryError as error:
            return transport_failure(RemoteCode.CONNECTION, f'retries exhausted: {_short(error)}')
        except requests.exceptions.ConnectionError as error:
            return transport_failure(RemoteCode.CONNECTION, f'connection: {_short(error)}')
        except requests.exceptions.RequestException as error:
            return transport_failure(RemoteCode.UNKNOWN, f'request: {_short(error)}')
        try:
            data = response.raw.read(MAX_REPLY_BYTES + 1, decode_content=True)
        except requests.exceptions.RequestException as error:
            return transport_failure(RemoteCode.CONNECTION, f'reading the reply: {_short(error)}')
        except Exception as error:  # noqa: B902 - urllib3 read errors (timeouts, resets)
            code = RemoteCode.TIMEOUT if 'timed out' in str(error).lower() else \
                RemoteCode.CONNECTION
            return transport_failure(code, f'reading the reply: {_short(error)}')
        finally:
            response.close()
        return parse_reply(response.status_code, data)

    def stats(self) -> Dict[str, float]:
        """Return p50/p99 latency per call (ms) and counts per (call, code)."""
        out: Dict[str, float] = {}
        for name, values in self.latency_ms.items():
            if values:
                p50, p99 = np.percentile(np.fromiter(values, float), [50, 99])
                out[f'{name}_p50_ms'], out[f'{name}_p99_ms'] = float(p50), float(p99)
        for (name, code), count in sorted(self.counts.items()):
            out[f'{name}_code_{code}'] = count
        return out

    def close(self) -> None:
        """Close both sessions."""
        self._read.close()
        self._flash.close()


def _short(error: Exception) -> str:
    return str(error)[:200]
