"""
tspace's RemoteCAN contract: replies with every code, requests, and get_signal batches.

Replies are parsed without trusting the body (HTML error pages, truncated JSON,
NaN, huge bodies); ragged one-second lists in the vehicle's local time become
samples that the window builder turns into the task's windows; duplicate,
late, future and malformed seconds are counted, never a crash.
"""

import datetime
import json
import math

from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.cloud.batches import (BatchDecoder, default_cloud_mapping, parse_timestamp,
                                      PROBLEMS)
from tspace_ros.cloud.remote_can import (get_signal_body, parse_reply, RemoteCode,
                                         RemoteRequestError, set_torque_body, transport_failure)
from tspace_ros.task.contract import load_task

TASK = load_task()
BERLIN = 'Europe/Berlin'


def _body(value) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize('code', [c for c in RemoteCode if 0 < c < 4000 or c == -1])
def test_every_server_code_is_typed(code):
    reply = parse_reply(200, _body({'success': False, 'reason': {'why': {'code': int(code)}}}))
    assert reply.code == code and not reply.ok and reply.server_code == code
    as_text = parse_reply(200, _body({'success': False,
                                      'reason': {'why': {'code': str(int(code))}}}))
    assert as_text.code == code


def test_success_ai_mode_and_unknown_codes():
    ok = parse_reply(200, _body({'success': True, 'result': {'a': 1}}))
    assert ok.ok and ok.result == {'a': 1} and not ok.retryable
    assert parse_reply(200, _body({'success': True, 'result': [1]})).code == \
        RemoteCode.RESULT_NOT_DICT
    assert parse_reply(200, _body({'success': False, 'AIMode': False})).code == \
        RemoteCode.AI_MODE_OFF
    unknown = parse_reply(200, _body({'success': False, 'reason': {'why': {'code': 777}}}))
    assert unknown.code == RemoteCode.UNKNOWN and unknown.server_code == 777
    assert '777' in unknown.message


@pytest.mark.parametrize('status, body, code, retryable', [
    (500, b'<html>Internal Server Error</html>', RemoteCode.HTTP_STATUS, True),
    (429, b'', RemoteCode.HTTP_STATUS, True),
    (413, b'too large', RemoteCode.HTTP_STATUS, True),
    (404, b'{"success": false}', RemoteCode.HTTP_STATUS, False),
    (503, _body({'success': False, 'reason': {'why': {'code': 304}}}), RemoteCode.CAR_OFFLINE,
     True),
    (200, b'<html>ok</html>', RemoteCode.MALFORMED_REPLY, False),
    (200, b'{"success": true, "result": {"x": NaN}}', RemoteCode.MALFORMED_REPLY, False),
    (200, b'{"success": tru', RemoteCode.MALFORMED_REPLY, False),
    (200, b'\xff\xfe', RemoteCode.MALFORMED_REPLY, False),
    (200, b'[1, 2]', RemoteCode.MALFORMED_REPLY, False),
    (200, b'{"success": "yes"}', RemoteCode.MALFORMED_REPLY, False),
    (200, b'{"success": false, "reason": {"why": {"code": true}}}', RemoteCode.MALFORMED_REPLY,
     False),
    (200, b'[' * 100000, RemoteCode.MALFORMED_REPLY, False),
])
def test_non_200_and_non_json_bodies_are_failures_with_a_reason(status, body, code, retryable):
    reply = parse_reply(status, body)
    assert reply.code == code and not reply.ok and reply.message
    assert reply.retryable == retryable


def test_a_huge_body_is_not_read_and_transport_failures_are_retryable():
    assert parse_reply(200, b' ' * (9 * 1024 * 1024)).code == RemoteCode.MALFORMED_REPLY
    timeout = transport_failure(RemoteCode.TIMEOUT, 'read timed out')
    assert timeout.retryable and timeout.http_status == 0


@settings(max_examples=300, deadline=None)
@given(status=st.integers(100, 599), body=st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) |
                 st.dictionaries(st.sampled_from(['success', 'result', 'reason', 'why', 'code',
                                                  'AIMode']), inner, max_size=3),
                 max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_property_any_reply_is_typed_never_a_crash(status, body):
    reply = parse_reply(status, body)
    assert isinstance(reply.code, RemoteCode)
    assert reply.ok == (reply.code == RemoteCode.OK)
    if reply.ok:
        assert status == 200 and isinstance(reply.result, dict)


def test_requests_are_checked_before_anything_is_sent():
    assert json.loads(get_signal_body('VIN1')) == {'vin': 'VIN1', 'signal_duration': 4}
    body = json.loads(set_torque_body('VIN1', np.zeros((3, 17)), 2, 14, 17))
    assert body['start_line'] == 2 and len(body['torque']) == 3 and body['abswitch'] is True
    with pytest.raises(RemoteRequestError, match='rows of 17'):
        set_torque_body('VIN1', np.zeros((3, 16)), 2, 14, 17)
    with pytest.raises(RemoteRequestError, match='does not fit'):
        set_torque_body('VIN1', np.zeros((3, 17)), 12, 14, 17)
    with pytest.raises(RemoteRequestError, match='non-finite'):
        set_torque_body('VIN1', np.full((1, 17), np.nan), 0, 14, 17)
    with pytest.raises(RemoteRequestError, match='vin'):
        get_signal_body('')
    with pytest.raises(RemoteRequestError, match='signal_duration'):
        get_signal_body('VIN1', 0)


def test_timestamps_are_local_time_of_the_site():
    # 2026-07-01 12:00:00.50 in Berlin (CEST, +02:00) is 10:00:00.50 UTC.
    zone = BatchDecoder(time_zone=BERLIN).zone
    ns = parse_timestamp('26070112000050', zone)
    assert ns == int(datetime.datetime(2026, 7, 1, 10, 0, 0, tzinfo=datetime.timezone.utc)
                     .timestamp()) * 10 ** 9 + 500_000_000
    for bad in ('2607011200005', '26130112000000', '2607011260000x', '26032902300000'):
        with pytest.raises(ValueError):
            parse_timestamp(bad, zone)   # the last one: skipped by the DST change
    with pytest.raises(ValueError, match='time zone'):
        BatchDecoder(time_zone='Mars/Olympus')


def _stamp(t: datetime.datetime) -> str:
    return t.strftime('%y%m%d%H%M%S') + '00'


def _result(start: datetime.datetime, seconds: int, rate=50, voltage_rate=25, short=0):
    """Return a get_signal result of ``seconds`` seconds from ``start`` (local time)."""
    stamps = [_stamp(start + datetime.timedelta(seconds=s)) for s in range(seconds)]

    def lists(value, n):
        return [[f'{value + s:.2f}'] * n for s in range(seconds)]
    return {'timestamps': stamps,
            'list_speed_1s': lists(30.0, rate - short), 'list_pedal_1s': lists(20.0, rate),
            'list_brake_pressure_1s': lists(0.0, rate), 'list_current_1s': lists(50.0, rate),
            'list_voltage_1s': lists(380.0, voltage_rate), 'list_gears': [[3, 3]] * seconds}


START = datetime.datetime(2026, 7, 1, 12, 0, 0)   # Berlin local time
NOW_NS = int(datetime.datetime(2026, 7, 1, 10, 1, 0, tzinfo=datetime.timezone.utc)
             .timestamp()) * 10 ** 9


def _windows(batches, decoder=None):
    decoder = decoder or BatchDecoder(time_zone=BERLIN)
    builder = WindowBuilder(decoder.mapping, TASK.sample_rate_hz, TASK.samples_per_window,
                            'VIN1', 'driver0')
    windows = []
    for result in batches:
        for t, frame in decoder.decode(result, NOW_NS).samples:
            windows += builder.feed(t, frame)
    return decoder, builder, windows


def test_ragged_lists_become_the_tasks_windows():
    decoder, builder, windows = _windows([_result(START, 8, short=3)])
    # 8 s at 20 Hz: 160 grid points -> 5 windows of 30 (1.5 s each), the rest pending.
    assert len(windows) == 5
    window = windows[0].window
    assert window.n_samples == TASK.samples_per_window
    assert window.signal_names == TASK.signal_names
    assert window.unit('pedal') == '1' and np.allclose(window.signal('pedal'), 0.2, atol=0.02)
    assert np.all(np.abs(window.signal('voltage') - 380.5) < 1.0)
    assert window.start_ns >= NOW_NS - 61 * 10 ** 9
    fill = decoder.decode(_result(START, 1), NOW_NS).fill_ratio
    assert fill['voltage'] == pytest.approx(0.5) and fill['speed'] == pytest.approx(47 / 50)


def test_overlapping_polls_take_each_second_once_and_count_what_is_wrong():
    decoder = BatchDecoder(time_zone=BERLIN)
    first = decoder.decode(_result(START, 4), NOW_NS)
    again = decoder.decode(_result(START + datetime.timedelta(seconds=2), 4), NOW_NS)
    assert (first.seconds, again.seconds, again.already_taken) == (4, 2, 2)
    assert not again.problems
    late = _result(START - datetime.timedelta(seconds=10), 1)
    assert decoder.decode(late, NOW_NS).problems == {'late': 1}
    future = _result(START + datetime.timedelta(minutes=5), 1)
    assert decoder.decode(future, NOW_NS).problems == {'future': 1}
    mixed = _result(START + datetime.timedelta(seconds=10), 3)
    mixed['timestamps'] = [mixed['timestamps'][i] for i in (2, 0, 0)]
    mixed['list_speed_1s'][1] = ['1.0', 'abc', None, 'nan', '2.0']
    mixed['list_current_1s'] = mixed['list_current_1s'][:2]
    del mixed['list_voltage_1s']
    batch = decoder.decode(mixed, NOW_NS)
    assert batch.problems == {'out_of_order': 1, 'duplicate': 1, 'ragged_seconds': 1,
                              'missing_list': 1, 'non_numeric': 3}
    assert set(decoder.problems) <= set(PROBLEMS)
    assert decoder.decode('nope', NOW_NS).problems == {'not_a_mapping': 1}
    assert decoder.decode({'list_timestamps': []}, NOW_NS).problems == {'no_timestamps': 1}


def test_a_bad_value_reaches_the_window_flagged_not_as_a_number():
    result = _result(START, 4)
    result['list_speed_1s'][1][10] = 'NaN'
    result['list_speed_1s'][1][11] = '9e999'
    _, _, windows = _windows([result])
    assert windows and all(np.all(np.isfinite(w.window.samples)) for w in windows)
    assert any('speed' in w.flagged_signals for w in windows)


_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                   st.text(max_size=6), st.sampled_from(['1.5', '-3', 'nan', '1e400']))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(['timestamps', 'list_speed_1s', 'list_voltage_1s', 'list_gears']),
       seconds=st.integers(0, 3), value=st.one_of(_VALUE, st.lists(_VALUE, max_size=4),
                                                  st.lists(st.lists(_VALUE, max_size=60),
                                                           max_size=4)))
def test_property_any_damaged_batch_gives_finite_windows_or_counted_problems(key, seconds,
                                                                             value):
    result = _result(START, 4)
    if seconds < 4 and isinstance(result[key], list) and seconds < len(result[key]):
        result[key][seconds] = value
    else:
        result[key] = value
    decoder, builder, windows = _windows([result])
    for w in windows:
        assert np.all(np.isfinite(w.window.samples))
    assert sum(decoder.problems.values()) >= 0 and set(decoder.problems) <= set(PROBLEMS)
    assert not math.isnan(sum(decoder.decode(_result(START, 1), NOW_NS).fill_ratio.values()))


def test_the_cloud_mapping_serves_the_task():
    default_cloud_mapping().check_task(TASK.required_signals)
