"""
tspace's remote HMI over an MQTT broker: the driver's episode commands for one vehicle.

Topics (``prefix`` default ``tspace/hmi``): commands arrive on
``<prefix>/<driver>/<vin>`` as JSON ``{"code": N}`` with tspace's codes (5
configure, 1 begin, 2 valid end, 3 invalid end, 4 exit), optionally with the
``vin`` (must be ours) and a sequence number ``seq`` (a message whose ``seq``
is not newer than the last one taken is a duplicate or out of order: counted
and dropped). A configure is answered with ``{"vin": ..., "is_ready": true}``
on ``<prefix>/<driver>/<vin>/ready``.

Stale messages are cleared at start: a retained command on the topic is
removed (an empty retained message) and never acted on. paho-mqtt's network
thread reconnects by itself (backoff 1..30 s); while it is away the
diagnostics say so. TLS with a CA bundle and a username and password (from the
environment or a secret file, never from the repository).

Everything that arrives is hostile until parsed: ``poll`` never raises, and
every rejected message is counted under its reason (``REASONS``).
"""

from collections import Counter, deque
import json
import threading
from typing import Deque, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt

from tspace_ros.episodes.control import CONFIGURE, END_INVALID, END_VALID, EXIT, START
from tspace_ros.episodes.hmi_udp import _depth_exceeds, MAX_DEPTH

CODES = (START, END_VALID, END_INVALID, EXIT, CONFIGURE)
MAX_PAYLOAD = 4096
MAX_QUEUED = 64
REASONS = ('too_large', 'not_utf8', 'not_json', 'too_deep', 'not_object', 'no_code',
           'unknown_code', 'other_vin', 'duplicate', 'stale_retained', 'queue_full')


class HmiPayloadError(ValueError):
    """A payload that is not a remote HMI command; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        """Keep the reason with the message."""
        super().__init__(message)
        self.reason = reason


def parse_remote_hmi(payload: bytes, vin: str) -> Tuple[int, Optional[int]]:
    """Return (code, seq or None) of a command payload; HmiPayloadError if it is not one."""
    if len(payload) > MAX_PAYLOAD:
        raise HmiPayloadError('too_large', f'{len(payload)} bytes, at most {MAX_PAYLOAD}')
    try:
        text = payload.decode('utf-8')
    except UnicodeDecodeError:
        raise HmiPayloadError('not_utf8', 'payload is not UTF-8') from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise HmiPayloadError('too_deep', f'nested deeper than {MAX_DEPTH}')
    try:
        value = json.loads(text, parse_constant=lambda c: None)
    except ValueError as error:
        raise HmiPayloadError('not_json', f'not JSON: {error}') from None
    if not isinstance(value, dict):
        raise HmiPayloadError('not_object', f'a {type(value).__name__}, not an object')
    code = value.get('code')
    if isinstance(code, str) and code.isdigit() and len(code) < 3:
        code = int(code)
    if code is None:
        raise HmiPayloadError('no_code', 'no "code"')
    if isinstance(code, bool) or code not in CODES:
        raise HmiPayloadError('unknown_code', f'code {code!r:.20} is not one of {CODES}')
    if 'vin' in value and value['vin'] != vin:
        raise HmiPayloadError('other_vin', f'for vin {str(value["vin"])[:40]!r}, not ours')
    seq = value.get('seq')
    if not isinstance(seq, int) or isinstance(seq, bool):
        seq = None
    return int(code), seq


class HmiMqttListener:
    """The remote HMI of one vehicle and driver (see the module docstring); a CommandSource."""

    def __init__(self, host: str, port: int, vin: str, driver_id: str,
                 prefix: str = 'tspace/hmi', ca_file: str = '', username: str = '',
                 password: str = '', client_id: str = '', keepalive_s: int = 30):
        """Connect in paho's network thread (it retries by itself); nothing blocks here."""
        for name, value in (('vin', vin), ('driver_id', driver_id)):
            if not value or any(c in value for c in '+#/\0'):
                raise ValueError(f'{name} {value!r} cannot be part of an MQTT topic')
        self.vin, self.driver_id = vin, driver_id
        self.topic = f'{prefix}/{driver_id}/{vin}'
        self.ready_topic = f'{self.topic}/ready'
        self.counts: Counter = Counter()
        self.last_problem = ''
        self.connected = False
        self._lock = threading.Lock()
        self._queue: Deque[int] = deque()
        self._last_seq: Optional[int] = None
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f'tspace-hmi-{vin}',
                                   clean_session=True)
        if username:
            self._client.username_pw_set(username, password)
        if ca_file:
            self._client.tls_set(ca_certs=ca_file)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive_s)
        self._client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.counts['connect_refused'] += 1
            self.last_problem = f'broker refused the connection: {reason_code}'
            return
        self.connected = True
        self.counts['connects'] += 1
        client.subscribe(self.topic, qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        self.counts['disconnects'] += 1

    def _on_message(self, client, userdata, message):
        if message.retain:
            # A command kept by the broker from before we started: stale. Clear it.
            self._reject('stale_retained', 'a retained command from before the start')
            if message.payload:
                client.publish(self.topic, b'', qos=1, retain=True)
            return
        try:
            code, seq = parse_remote_hmi(message.payload, self.vin)
        except HmiPayloadError as error:
            self._reject(error.reason, str(error))
            return
        with self._lock:
            if seq is not None and self._last_seq is not None and seq <= self._last_seq:
                self._reject('duplicate', f'seq {seq} after {self._last_seq}')
                return
            if seq is not None:
                self._last_seq = seq
            if len(self._queue) >= MAX_QUEUED:
                self._reject('queue_full', f'more than {MAX_QUEUED} commands waiting')
                return
            self._queue.append(code)
        self.counts['accepted'] += 1
        if code == CONFIGURE:
            client.publish(self.ready_topic, json.dumps({'vin': self.vin, 'is_ready': True}),
                           qos=1)

    def _reject(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        self.last_problem = f'{reason}: {message}'[:200]

    def poll(self) -> List[int]:
        """Return the commands received since the last poll, oldest first; never blocks."""
        with self._lock:
            commands, self._queue = list(self._queue), deque()
        return commands

    def diagnostics(self) -> Dict[str, object]:
        """Return the connection state and the counts (for /diagnostics)."""
        return {'hmi_mqtt_connected': self.connected, 'hmi_mqtt_topic': self.topic,
                **{f'hmi_mqtt_{k}': v for k, v in self.counts.items()},
                **({'hmi_mqtt_last_problem': self.last_problem} if self.last_problem else {})}

    def close(self) -> None:
        """Disconnect and stop paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()
