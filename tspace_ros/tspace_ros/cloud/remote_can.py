"""
tspace's RemoteCAN contract: requests, replies and their codes, parsed defensively.

Both calls are HTTP POSTs with a JSON body, one request at a time per vehicle:

- ``get_signal {vin, signal_duration}`` (4 s by default): the last seconds of
  signals (``batches.BatchDecoder`` reads the result);
- ``set_torque {vin, torque: [[17 floats] x n rows], start_line, abswitch}``:
  ``start_line`` is the first row's index in the speed breakpoints, ``abswitch``
  asks for the A/B page switch. Not idempotent: never retried automatically.

Replies: ``{success: true, result: {...}}``; AI mode off ``{success: false,
AIMode: false}``; any other failure ``{success: false, reason: {why: {code}}}``.
A non-200 status is a failure too, whatever the body says. ``parse_reply``
never raises: a body that is not JSON (an HTML error page, a truncated reply),
too large, or not in the contract becomes a ``RemoteReply`` with a code and a
message; ``json.loads`` is only run on bodies that can be JSON, and NaN or
Infinity in a body is refused.

Codes (``RemoteCode``): tspace's, plus three of ours for what the contract has
no code for: 4000 AI mode off, 4001 an HTTP status without a code, 4002 a
reply outside the contract.
"""

from dataclasses import dataclass
from enum import IntEnum
import json
import math
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

# A reply larger than this is not read (a get_signal of 60 s at 50 Hz x 6 lists is ~200 kB).
MAX_REPLY_BYTES = 8 * 1024 * 1024
DEFAULT_SIGNAL_DURATION_S = 4
MAX_SIGNAL_DURATION_S = 60


class RemoteCode(IntEnum):
    """Every outcome of a RemoteCAN call (tspace's codes and three of ours)."""

    OK = 0
    # transport
    CONNECTION = 1000
    UNKNOWN = 1001
    TIMEOUT = 1002
    # server
    INTERNAL = -1
    NO_API = 202
    BAD_PARAMETER = 206
    OUT_OF_TIME = 301
    EXECUTE_ERROR = 302
    CAR_NOT_REGISTERED = 303
    CAR_OFFLINE = 304
    INTERNAL_EXCEPTION = 310
    TBOX_ERROR = 311
    # result
    RESULT_NOT_DICT = 3000
    NO_OBJECT_STORAGE_LINK = 3001
    # flash and data
    UDS_VERSION = 2000
    AB_SWITCH_FAILED = 2001
    NOT_ENOUGH_DATA = 2002
    TORQUE_SHAPE = 2003
    TORQUE_RANGE = 2004
    UNKNOWN_FORMAT = 2005
    # ours
    AI_MODE_OFF = 4000
    HTTP_STATUS = 4001
    MALFORMED_REPLY = 4002


# Failures a read may be retried for (never a set_torque): the server asked to slow
# down or failed, or the transport did.
RETRYABLE_STATUSES = frozenset({413, 429}) | frozenset(range(500, 600))
RETRYABLE_CODES = frozenset({RemoteCode.CONNECTION, RemoteCode.TIMEOUT, RemoteCode.OUT_OF_TIME})


class RemoteRequestError(ValueError):
    """A request that must not be sent (names what is wrong); nothing went out."""


@dataclass(frozen=True)
class RemoteReply:
    """
    What a call came to.

    code: ``RemoteCode`` (an unknown server code is UNKNOWN, with ``server_code``
    set); result: the ``result`` mapping on success; http_status: 0 when no
    reply came; retryable: whether a read may be tried again.
    """

    code: RemoteCode
    message: str = ''
    result: Optional[Dict[str, Any]] = None
    http_status: int = 200
    server_code: Optional[int] = None

    @property
    def ok(self) -> bool:
        """Return whether the call succeeded."""
        return self.code == RemoteCode.OK

    @property
    def retryable(self) -> bool:
        """Return whether a read may be retried (413/429/5xx, connection, time-out)."""
        return self.http_status in RETRYABLE_STATUSES or self.code in RETRYABLE_CODES


def transport_failure(code: RemoteCode, message: str) -> RemoteReply:
    """Return the reply of a call that got no HTTP reply (connection, time-out, TLS)."""
    return RemoteReply(code, message, http_status=0)


def _refuse_constant(name: str):
    raise ValueError(f'{name} is not JSON')


def _load_json(body: bytes):
    """Return the JSON value of body, or raise ValueError (never another exception)."""
    try:
        text = body.decode('utf-8')
    except UnicodeDecodeError as error:
        raise ValueError(f'not UTF-8 ({error.reason})') from None
    stripped = text.lstrip()
    if not stripped or stripped[0] not in '{[':
        raise ValueError(f'not JSON: {stripped[:40]!r}')
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError('nested too deeply') from None
    except ValueError as error:
        raise ValueError(f'not JSON: {error}') from None


def _server_code(value: Any) -> Optional[int]:
    """Return reason.why.code as an int, or None when the reply does not carry one."""
    try:
        code = value['reason']['why']['code']
    except (KeyError, TypeError, IndexError):
        return None
    if isinstance(code, bool):
        return None
    if isinstance(code, str):
        code = code.strip()
        if not code.lstrip('-').isdigit() or len(code) > 12:
            return None
        code = int(code)
    return code if isinstance(code, int) and abs(code) < 10 ** 12 else None


def _coded(code: int, http_status: int, what: str) -> RemoteReply:
    try:
        known = RemoteCode(code)
    except ValueError:
        return RemoteReply(RemoteCode.UNKNOWN, f'{what}: unknown code {code}', None,
                           http_status, code)
    return RemoteReply(known, f'{what}: {known.name.lower()} ({code})', None, http_status, code)


def parse_reply(http_status: int, body: bytes) -> RemoteReply:
    """Return what an HTTP reply says in the contract's terms; never raises."""
    if not isinstance(body, (bytes, bytearray)):
        return RemoteReply(RemoteCode.MALFORMED_REPLY, 'reply body is not bytes', None,
                           int(http_status))
    if len(body) > MAX_REPLY_BYTES:
        return RemoteReply(RemoteCode.MALFORMED_REPLY,
                           f'reply of {len(body)} bytes, more than {MAX_REPLY_BYTES}', None,
                           http_status)
    try:
        value = _load_json(bytes(body))
    except ValueError as error:
        value, problem = None, str(error)
    else:
        problem = ''
    if http_status != 200:
        code = _server_code(value) if isinstance(value, Mapping) else None
        if code is not None:
            return _coded(code, http_status, f'HTTP {http_status}')
        return RemoteReply(RemoteCode.HTTP_STATUS, f'HTTP {http_status}'
                           + (f' ({problem})' if problem else ''), None, http_status)
    if problem:
        return RemoteReply(RemoteCode.MALFORMED_REPLY, f'reply {problem}', None, http_status)
    if not isinstance(value, Mapping) or not isinstance(value.get('success'), bool):
        return RemoteReply(RemoteCode.MALFORMED_REPLY,
                           f'reply without a boolean success: {str(value)[:80]!r}', None,
                           http_status)
    if value['success']:
        result = value.get('result')
        if not isinstance(result, Mapping):
            return RemoteReply(RemoteCode.RESULT_NOT_DICT,
                               f'result is a {type(result).__name__}, not a mapping', None,
                               http_status, int(RemoteCode.RESULT_NOT_DICT))
        return RemoteReply(RemoteCode.OK, 'ok', dict(result), http_status)
    if value.get('AIMode') is False:
        return RemoteReply(RemoteCode.AI_MODE_OFF, 'AI mode is off on the vehicle', None,
                           http_status)
    code = _server_code(value)
    if code is None:
        return RemoteReply(RemoteCode.MALFORMED_REPLY,
                           f'failure without reason.why.code: {str(value)[:80]!r}', None,
                           http_status)
    return _coded(code, http_status, 'server')


def get_signal_body(vin: str, signal_duration_s: int = DEFAULT_SIGNAL_DURATION_S) -> bytes:
    """Return the JSON body of get_signal; RemoteRequestError for a bad VIN or duration."""
    _check_vin(vin)
    if isinstance(signal_duration_s, bool) or not isinstance(signal_duration_s, int) or \
            not 1 <= signal_duration_s <= MAX_SIGNAL_DURATION_S:
        raise RemoteRequestError(f'signal_duration must be an integer 1..'
                                 f'{MAX_SIGNAL_DURATION_S} s, got {signal_duration_s!r}')
    return json.dumps({'vin': vin, 'signal_duration': signal_duration_s}).encode()


def set_torque_body(vin: str, rows: Sequence[Sequence[float]], start_line: int,
                    n_rows: int, n_columns: int, abswitch: bool = True) -> bytes:
    """
    Return the JSON body of set_torque for ``rows`` from ``start_line``.

    The rows must already have passed the gate; this only checks that they fit
    the map (``n_rows`` x ``n_columns``) and are finite. RemoteRequestError if not.
    """
    _check_vin(vin)
    table = np.asarray(rows, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != n_columns or not 1 <= table.shape[0] <= n_rows:
        raise RemoteRequestError(f'torque must be 1..{n_rows} rows of {n_columns} values, got '
                                 f'shape {table.shape}')
    if not np.all(np.isfinite(table)):
        raise RemoteRequestError('torque has non-finite values')
    if isinstance(start_line, bool) or not isinstance(start_line, (int, np.integer)) or \
            not 0 <= start_line <= n_rows - table.shape[0]:
        raise RemoteRequestError(f'start_line {start_line!r} does not fit {table.shape[0]} rows '
                                 f'in {n_rows}')
    return json.dumps({'vin': vin, 'torque': [[float(v) for v in row] for row in table],
                       'start_line': int(start_line), 'abswitch': bool(abswitch)},
                      allow_nan=False).encode()


def _check_vin(vin: str) -> None:
    if not isinstance(vin, str) or not 1 <= len(vin) <= 64 or not vin.isprintable() or \
            not vin.strip() == vin:
        raise RemoteRequestError(f'vin must be 1..64 printable characters, got {vin!r:.80}')


def finite_or_none(value: Any) -> Optional[float]:
    """Return a numeric string or number as a finite float, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 32:
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None
