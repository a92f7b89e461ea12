"""
CloudLink against a scripted RemoteCAN server: samples in, rows out, typed outcomes.

A write returns at once and its outcome arrives later (a flash of seconds never
stalls the windows); only the admitted rows travel; a failed flash is a typed
outcome and never retried; restore writes the default's rows that differ.
"""

import time

import numpy as np
import pytest
from ros_test_support import poll_until
from test_cloud_client import server  # noqa: F401 - the scripted HTTP server fixture
from test_cloud_contract import _result, BERLIN, NOW_NS, START

from tspace_ros.can.transfer import TransferStatus, whole_map_checksum
from tspace_ros.cloud.batches import BatchDecoder
from tspace_ros.cloud.client import RemoteCanClient
from tspace_ros.cloud.link import CloudLink
from tspace_ros.cloud.remote_can import RemoteCode
from tspace_ros.task.contract import load_task

TASK = load_task()
DEFAULT = TASK.vehicle_default_map()


def _link(url, **kwargs):
    client = RemoteCanClient(url, TASK.vehicle_id, backoff_s=0.01, flash_timeout_s=2.0)
    return CloudLink(client, BatchDecoder(time_zone=BERLIN), DEFAULT.shape,
                     wall=lambda: NOW_NS / 1e9, **kwargs)


def _wait_outcome(link, timeout_s=5.0):
    return poll_until(link.take_outcome, timeout_s, period_s=0.01)


def test_polls_become_samples_for_the_core(server):  # noqa: F811
    url, script = server
    script.replies = [(200, {'success': True, 'result': _result(START, 2)}, 0),
                      (200, {'success': True, 'result': _result(START, 3)}, 0)]
    link = _link(url)
    first = link.poll_once()
    assert first == 2 * (4 * 50 + 25)
    assert link.poll_once() == 225   # one new second; the two taken are not repeated
    samples = link.take_samples()
    assert len(samples) == first + 225 and not link.take_samples()
    names = {name for name, _, _ in samples}
    assert names == {'get_signal.list_speed_1s', 'get_signal.list_pedal_1s',
                     'get_signal.list_brake_pressure_1s', 'get_signal.list_current_1s',
                     'get_signal.list_voltage_1s'}
    times = [t for _, t, _ in samples]
    assert times == sorted(times)
    assert script.requests[0][2] == {'vin': TASK.vehicle_id, 'signal_duration': 4}
    stats = link.stats()
    assert stats['get_signal_0'] == 2 and stats['fill_voltage'] == pytest.approx(0.5)


def test_a_write_sends_only_its_rows_and_returns_before_the_reply(server):  # noqa: F811
    url, script = server
    script.replies = [(200, {'success': True, 'result': {}}, 0.5)]
    link = _link(url)
    table = np.array(DEFAULT.torque_nm)
    table[3:6] -= 100.0
    admitted = DEFAULT.with_torque(table, policy_version=4)
    started = time.monotonic()
    write = link.write(admitted, 3, 3, 7, 12)
    assert time.monotonic() - started < 0.3, 'write blocked on the HTTP call'
    assert write.frames == () and link.take_outcome() is None
    outcome = _wait_outcome(link)
    assert outcome.status == TransferStatus.ACCEPTED and outcome.transfer_id == 7
    assert outcome.vcu_checksum == whole_map_checksum(admitted)
    body = script.requests[0][2]
    assert body['start_line'] == 3 and np.allclose(body['torque'], table[3:6])
    # Restore: the default's values over the rows that differ, and nothing else.
    link.restore(DEFAULT, 8)
    assert _wait_outcome(link).status == TransferStatus.ACCEPTED
    body = script.requests[1][2]
    assert body['start_line'] == 3 and np.allclose(body['torque'], DEFAULT.torque_nm[3:6])


@pytest.mark.parametrize('reply, status', [
    ((200, {'success': False, 'reason': {'why': {'code': 2001}}}, 0),
     TransferStatus.APPLY_FAILED),
    ((200, {'success': False, 'AIMode': False}, 0), TransferStatus.APPLY_FAILED),
    ((200, {'success': False, 'reason': {'why': {'code': 304}}}, 0),
     TransferStatus.APPLY_FAILED),
    ((503, b'<html>down</html>', 0), TransferStatus.LINK_ERROR),
    ((200, b'not json', 0), TransferStatus.LINK_ERROR),
    ((200, {'success': True, 'result': {}}, 3.0), TransferStatus.NO_ACK),
])
def test_every_failed_flash_is_a_typed_outcome_sent_once(server, reply, status):  # noqa: F811
    url, script = server
    script.replies = [reply, (200, {'success': True, 'result': {}}, 0)]
    link = _link(url)
    link.write(DEFAULT, 0, 2, 1, 1)
    outcome = _wait_outcome(link)
    assert outcome.status == status and 'RemoteCAN' in outcome.message
    assert len(script.requests) == 1
    counted = {k: v for k, v in link.counts.items() if k.startswith('set_torque_')}
    assert sum(counted.values()) == 1 and f'set_torque_{int(RemoteCode.OK)}' not in counted


def test_a_refused_flash_keeps_the_map_the_vehicle_had(server):  # noqa: F811
    """2001 (A/B switch failed): the cloud says the vehicle kept its map; no revert."""
    from tspace_ros.bridge.core import BridgeCore, BridgeSettings, FlashError, FlashResult, Now
    from tspace_ros.can.windowing import WindowBuilder
    from tspace_ros.torque_map import apply_action
    url, script = server
    script.replies = [(200, {'success': True, 'result': {}}, 0),
                      (200, {'success': False, 'reason': {'why': {'code': 2001}}}, 0)]
    link = _link(url)
    core = BridgeCore(DEFAULT, TASK.safety_gate(link.resolution_nm), WindowBuilder(), link,
                      settings=BridgeSettings(vehicle_id=TASK.vehicle_id, driver_id='d',
                                              watchdog_timeout_s=0.0),
                      send=lambda frames: None)
    now = Now(NOW_NS, time.time())
    core.start(now)
    results = []

    def settle():
        core.check_flash(Now(NOW_NS, time.time()))
        results.extend(core.take_outputs().flashes)
        return results

    for version, value in ((1, -0.5), (2, -0.9)):
        proposed = apply_action(DEFAULT, DEFAULT, np.full((2, DEFAULT.shape[1]), value), 3,
                                policy_version=version)
        assert not isinstance(core.flash(proposed, 3, 2, now), FlashResult)
        count = len(results)
        assert poll_until(lambda: len(settle()) > count, 5.0)
        if version == 1:
            first = core.active_map
    assert results[0].success and results[1].error == FlashError.REFUSED_BY_VCU
    assert core.active_map is first and not core.active_is_default
    assert not core.map_in_doubt


class _VanClient:
    """The TBox's answers without HTTP: a van run 80x faster than the wall."""

    timeout_s = flash_timeout_s = 1.0

    def __init__(self, van, vin):
        self.van, self.vin, self.asked = van, vin, []

    def get_signal(self, seconds):
        import json
        from tspace_ros.cloud.remote_can import get_signal_body, parse_reply
        self.asked.append(seconds)
        time.sleep(0.1)    # the read takes 8 s of the van's driving (more under load)
        answer = self.van.get_signal(json.loads(get_signal_body(self.vin, seconds)),
                                     time.time())
        return parse_reply(200, json.dumps(answer).encode())

    def stats(self):
        return {}


@pytest.mark.parametrize('catch_up', [True, False])
def test_slow_reads_ask_for_the_seconds_missed(catch_up):
    """A read slower than the seconds asked for would lose data; the link asks for more."""
    from tspace_ros.vehicle.tbox import CloudSimConfig, TelematicsVan
    van = TelematicsVan(CloudSimConfig(real_time_factor=80.0, time_zone=BERLIN,
                                       read_latency_s=(0, 0, 0), seed=3), time.time())
    client = _VanClient(van, van.vin)
    link = CloudLink(client, BatchDecoder(time_zone=BERLIN, max_clock_skew_s=30),
                     DEFAULT.shape, signal_duration_s=4,
                     max_signal_duration_s=60 if catch_up else 4,
                     wall=van.true_time_s)
    for _ in range(5):     # the link learns the vehicle's pace
        link.poll_once()
    missed_before = link.counts['seconds_missed']
    for _ in range(15):
        link.poll_once()
    missed = link.counts['seconds_missed'] - missed_before
    if catch_up:
        assert missed == 0 and max(client.asked[5:]) > 4, client.asked
        assert link.counts['catch_up_reads'] >= 15
    else:   # 4 s asked per 8 s driven: half of the seconds never come
        assert missed > 15 * 2, client.asked
