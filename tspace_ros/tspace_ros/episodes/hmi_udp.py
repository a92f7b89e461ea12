"""
tspace's local HMI: JSON datagrams on a loopback UDP port, mapped to episode commands.

A driver's HMI sends ``{"status": "begin" | "end_valid" | "end_invalid" | "exit"}``
to the configured port. Only loopback addresses may be bound (the HMI runs on the
vehicle computer); anything that is not such a message is counted and its reason
kept, never raised.
"""

import ipaddress
import json
import socket
from typing import List

from tspace_ros.episodes.control import END_INVALID, END_VALID, EXIT, START

STATUS_COMMANDS = {'begin': START, 'end_valid': END_VALID, 'end_invalid': END_INVALID,
                   'exit': EXIT}
MAX_DATAGRAM = 4096


class HmiUdpListener:
    """A non-blocking UDP listener on a loopback address; ``poll()`` returns commands."""

    def __init__(self, port: int, host: str = '127.0.0.1'):
        """Bind host:port (port 0 picks a free one; see ``port``)."""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f'the HMI port must be bound to a loopback address, not {host}')
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._socket.bind((host, port))
        self.port = self._socket.getsockname()[1]
        self.received = 0
        self.rejected = 0
        self.last_rejection = ''

    def poll(self) -> List[int]:
        """Read every waiting datagram; return the episode commands, oldest first."""
        commands = []
        while True:
            try:
                data = self._socket.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return commands
            self.received += 1
            try:
                commands.append(parse_hmi_message(data))
            except ValueError as error:
                self.rejected += 1
                self.last_rejection = str(error)

    def close(self) -> None:
        """Close the socket."""
        self._socket.close()


def parse_hmi_message(data: bytes) -> int:
    """Return the command code of one HMI datagram; ValueError says what is wrong."""
    try:
        message = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f'not JSON: {error}') from None
    if not isinstance(message, dict) or 'status' not in message:
        raise ValueError(f'expected an object with "status", got {str(message)[:80]}')
    status = message['status']
    if status not in STATUS_COMMANDS:
        raise ValueError(f'unknown status {status!r}; expected one of {sorted(STATUS_COMMANDS)}')
    return STATUS_COMMANDS[status]
