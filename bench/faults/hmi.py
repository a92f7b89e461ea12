"""Fault class: HMI datagrams (wrong types, deep nesting, oversize, garbage) over loopback UDP."""

import json
import random
import socket
import time

from faults import FaultTally
from tspace_ros.episodes.hmi_udp import HmiUdpListener

VALID = [b'{"status": "begin"}', b'{"status": "end_valid"}', b'{"status": "end_invalid"}',
         b'{"status": "exit"}']


def _hostile(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(VALID)
    if kind == 1:  # the wrong JSON type for status
        return json.dumps({'status': rng.choice([[], {}, 1, 2.5, None, True, ['begin']])}).encode()
    if kind == 2:  # deep nesting
        depth = rng.randrange(9, 2000)
        return b'{"status": ' + b'[' * depth + b']' * depth + b'}'
    if kind == 3:  # oversize
        return b'{"status": "' + b'x' * rng.randrange(4000, 20000) + b'"}'
    if kind == 4:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if kind == 5:  # a valid message, one byte flipped
        data = bytearray(rng.choice(VALID))
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        return bytes(data)
    if kind == 6:
        return json.dumps(rng.choice([[1, 2], 'begin', 3, None, {'state': 'begin'}])).encode()
    if kind == 7:
        return json.dumps({'status': ''.join(chr(rng.randrange(32, 0x2FF))
                                             for _ in range(rng.randrange(1, 30)))}).encode()
    return b'{"status": "begin", ' * rng.randrange(1, 50)


def run(cases: int, seed: int) -> FaultTally:
    """Send `cases` datagrams in bursts; every one is a command, a counted reason or a drop."""
    tally = FaultTally('HMI datagrams')
    rng = random.Random(seed)
    listener = HmiUdpListener(port=0, max_commands_per_s=1e9)
    sent = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            while sent < cases:
                for _ in range(min(50, cases - sent)):
                    sender.sendto(_hostile(rng), ('127.0.0.1', listener.port))
                    sent += 1
                deadline = time.monotonic() + 2.0
                try:
                    while True:  # drain this burst (drops are told by the next datagram)
                        got = listener.poll()
                        if not got and (listener.received + listener.kernel_drops >= sent
                                        or time.monotonic() > deadline):
                            break
                        time.sleep(0.0005)
                except Exception as error:  # noqa: B902 - what the boundary let through
                    tally.escape(error)
                    return tally
    finally:
        listener.close()
    tally.cases = sent
    tally.accepted = listener.accepted
    tally.clean_rejections = listener.rejected + listener.kernel_drops
    tally.reasons = {reason: n for reason, n in listener.reasons.items() if n}
    if listener.kernel_drops:
        tally.reasons['kernel_drops'] = listener.kernel_drops
    tally.lose(max(0, sent - listener.received - listener.kernel_drops))
    return tally
