"""
tspace's local HMI: JSON datagrams on a loopback UDP port, mapped to episode commands.

A driver's HMI sends ``{"status": "begin" | "end_valid" | "end_invalid" | "exit"}``
to the configured port. Only loopback addresses may be bound (the HMI runs on the
vehicle computer).

Everything that arrives is hostile until parsed. ``HmiUdpListener.poll`` never
raises: a datagram that is not such a message (not UTF-8, not JSON, nested too
deep, too large, the wrong types, an unknown status) is counted under its reason
(``REASONS``) with the latest reason kept for diagnostics. Each poll reads a
bounded number of datagrams (the rest wait in the socket for the next poll, so
a flood cannot hold the caller's loop), and accepted commands are rate-limited
(a token bucket; the excess is counted ``rate_limited``). Datagrams the kernel
dropped because the socket's queue was full are counted too (``SO_RXQ_OVFL``,
Linux), so a flood is visible even where nothing reached us.
"""

import ipaddress
import json
import socket
import struct
import time
from typing import Callable, Dict, List

from tspace_ros.episodes.control import END_INVALID, END_VALID, EXIT, START

STATUS_COMMANDS = {'begin': START, 'end_valid': END_VALID, 'end_invalid': END_INVALID,
                   'exit': EXIT}
MAX_DATAGRAM = 4096          # bytes; a longer datagram is rejected as too_large
MAX_DEPTH = 8                # nesting of JSON arrays/objects in one message
MAX_PER_POLL = 64            # datagrams read per poll
MAX_COMMANDS_PER_S = 10.0    # accepted commands per second (burst: the same number)
# Linux: ask for the socket's count of datagrams dropped on a full queue.
SO_RXQ_OVFL = getattr(socket, 'SO_RXQ_OVFL', 40)
REASONS = ('not_utf8', 'not_json', 'too_deep', 'too_large', 'not_object', 'no_status',
           'bad_status_type', 'unknown_status', 'rate_limited', 'socket_error')


class HmiMessageError(ValueError):
    """A datagram that is not an HMI message; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        """Keep the reason code with the human-readable message."""
        super().__init__(message)
        self.reason = reason


def _depth_exceeds(data: str, limit: int) -> bool:
    """Whether JSON text nests arrays/objects deeper than limit (strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for char in data:
        if in_string:
            if escaped:
                escaped = False
            elif char == '\\':
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in '[{':
            depth += 1
            if depth > limit:
                return True
        elif char in ']}':
            depth -= 1
    return False


def parse_hmi_message(data: bytes) -> int:
    """Return the command code of one HMI datagram; HmiMessageError says what is wrong."""
    if len(data) > MAX_DATAGRAM:
        raise HmiMessageError('too_large', f'datagram of {len(data)} bytes is larger than '
                              f'{MAX_DATAGRAM}')
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as error:
        raise HmiMessageError('not_utf8', f'not JSON: not UTF-8 ({error})') from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise HmiMessageError('too_deep', f'not an HMI message: JSON nested deeper than '
                              f'{MAX_DEPTH}')
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as error:
        raise HmiMessageError('not_json', f'not JSON: {str(error)[:120]}') from None
    if not isinstance(message, dict):
        raise HmiMessageError('not_object', f'expected an object with "status", got '
                              f'{type(message).__name__} {str(message)[:60]}')
    if 'status' not in message:
        raise HmiMessageError('no_status', f'expected an object with "status", got keys '
                              f'{sorted(map(str, message))[:8]}')
    status = message['status']
    if not isinstance(status, str):
        raise HmiMessageError('bad_status_type', f'"status" must be a string, got '
                              f'{type(status).__name__}')
    if status not in STATUS_COMMANDS:
        raise HmiMessageError('unknown_status', f'unknown status {status[:40]!r}; expected '
                              f'one of {sorted(STATUS_COMMANDS)}')
    return STATUS_COMMANDS[status]


class HmiUdpListener:
    """A non-blocking UDP listener on a loopback address; ``poll()`` returns commands."""

    def __init__(self, port: int, host: str = '127.0.0.1', max_per_poll: int = MAX_PER_POLL,
                 max_commands_per_s: float = MAX_COMMANDS_PER_S,
                 clock: Callable[[], float] = time.monotonic):
        """Bind host:port (port 0 picks a free one; see ``port``)."""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f'the HMI port must be bound to a loopback address, not {host}')
        if max_per_poll < 1 or not max_commands_per_s > 0:
            raise ValueError('max_per_poll must be >= 1 and max_commands_per_s > 0')
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            self._overflow_counted = True
        except OSError:  # not Linux: kernel drops cannot be counted
            self._overflow_counted = False
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.port = self._socket.getsockname()[1]
        self.max_per_poll = int(max_per_poll)
        self.max_commands_per_s = float(max_commands_per_s)
        self._clock = clock
        self._tokens = self.max_commands_per_s
        self._refilled = clock()
        self.received = 0
        self.accepted = 0
        self.kernel_drops = 0
        self.reasons: Dict[str, int] = dict.fromkeys(REASONS, 0)
        self.last_rejection = ''

    @property
    def rejected(self) -> int:
        """Return the datagrams rejected, for any reason."""
        return sum(self.reasons.values())

    def _reject(self, reason: str, message: str) -> None:
        self.reasons[reason] += 1
        self.last_rejection = message

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(self.max_commands_per_s,
                           self._tokens + (now - self._refilled) * self.max_commands_per_s)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _note_drops(self, ancillary) -> None:
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                self.kernel_drops = struct.unpack('=I', data[:4])[0]

    def poll(self) -> List[int]:
        """Read up to max_per_poll waiting datagrams; return their commands, oldest first."""
        commands = []
        space = socket.CMSG_SPACE(4)
        for _ in range(self.max_per_poll):
            try:
                data, ancillary, flags, _ = self._socket.recvmsg(MAX_DATAGRAM + 1, space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:  # e.g. an ICMP error queued on the socket
                self._reject('socket_error', f'socket error: {error}')
                continue
            self.received += 1
            self._note_drops(ancillary)
            if flags & socket.MSG_TRUNC:
                self._reject('too_large', f'datagram larger than {MAX_DATAGRAM} bytes')
                continue
            try:
                code = parse_hmi_message(data)
            except HmiMessageError as error:
                self._reject(error.reason, str(error))
                continue
            except Exception as error:  # noqa: B902 - never raise out of the poll
                self._reject('not_json', f'unparseable: {type(error).__name__}')
                continue
            if not self._take_token():
                self._reject('rate_limited', f'more than {self.max_commands_per_s:g} '
                             'commands per second')
                continue
            self.accepted += 1
            commands.append(code)
        return commands

    def diagnostics(self) -> Dict[str, object]:
        """Return the counters for /diagnostics: every key starts with hmi_."""
        values = {'hmi_received': self.received, 'hmi_accepted': self.accepted,
                  'hmi_rejected': self.rejected,
                  'hmi_kernel_drops': self.kernel_drops if self._overflow_counted else -1,
                  'hmi_last_rejection': self.last_rejection or '-'}
        values.update({f'hmi_rejected_{reason}': n for reason, n in self.reasons.items()})
        return values

    def close(self) -> None:
        """Close the socket."""
        self._socket.close()
