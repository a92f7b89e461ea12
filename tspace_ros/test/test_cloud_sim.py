"""
The simulated telematics cloud on its HTTP server, reached through the real client and link.

The van drives on the wall clock (fast), its TBox serves ragged one-second
batches that become the task's windows; a flash of gated rows changes the
van's map after the flash latency; the VCU's own checks refuse a map outside
its limits (2004) or of the wrong shape (2003); a wrong token is refused; AI
mode off is its own code; the TBox falls back to the default map when the
bridge goes silent.
"""

import numpy as np
import pytest
from ros_test_support import poll_until

from tspace_ros.can.decoder import DecodedFrame
from tspace_ros.can.transfer import TransferStatus
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.cloud.batches import BatchDecoder
from tspace_ros.cloud.client import RemoteCanClient
from tspace_ros.cloud.link import CloudLink
from tspace_ros.cloud.remote_can import RemoteCode
from tspace_ros.cloud_sim import CloudSimServer, main
from tspace_ros.task.contract import load_task
from tspace_ros.vehicle.tbox import CloudSimConfig

TASK = load_task()
TOKEN = 'test-token-not-a-secret'


def _config(**kwargs):
    base = {'real_time_factor': 40.0, 'time_zone': 'Europe/Berlin', 'read_latency_s': (0, 0, 0),
            'flash_latency_s': (0.2, 0.0, 1.0), 'seed': 1}
    base.update(kwargs)
    return CloudSimConfig(**base)


@pytest.fixture
def cloud():
    with CloudSimServer(_config(), token=TOKEN) as server:
        yield server


def _link(server, token=TOKEN):
    client = RemoteCanClient(server.url, server.van.vin, token=token, backoff_s=0.01,
                             flash_timeout_s=5.0)
    # The van's clock runs 40x the wall's here: the link judges "future" on it.
    return CloudLink(client, BatchDecoder(time_zone='Europe/Berlin'), TASK.default_map.shape,
                     wall=server.van.vehicle_time_s)


def test_the_cloud_serves_windows_of_the_task(cloud):
    link = _link(cloud)
    poll_until(lambda: cloud.van.state()['seconds'] >= 8)
    builder = WindowBuilder(link.decoder.mapping, TASK.sample_rate_hz, TASK.samples_per_window,
                            cloud.van.vin, 'driver0')
    windows = []
    for _ in range(3):
        poll_until(link.poll_once)  # new seconds come every 25 ms at 40x
        for name, t, value in link.take_samples():
            message, signal = name.split('.', 1)
            windows += builder.feed(t, DecodedFrame(message, {signal: value}))
    assert len(windows) >= 2
    window = windows[-1].window
    assert window.signal_names == TASK.signal_names
    assert np.all(np.isfinite(window.samples))
    assert 0.0 <= float(window.signal('pedal').max()) <= 1.0   # percent on the cloud, 0..1 here
    assert float(window.signal('voltage').min()) > 300.0
    stats = link.stats()
    assert stats['fill_voltage'] == pytest.approx(0.5, abs=0.05)
    assert stats['get_signal_p99_ms'] > 0


def test_a_gated_flash_reaches_the_van_after_its_latency(cloud):
    link = _link(cloud)
    default = TASK.vehicle_default_map()
    table = np.array(default.torque_nm)
    table[2:5] -= 120.0
    admitted = default.with_torque(table, policy_version=3)
    link.write(admitted, 2, 3, 1, 3)
    outcome = poll_until(link.take_outcome)
    assert outcome.status == TransferStatus.ACCEPTED
    assert poll_until(lambda: not cloud.van.state()['on_default_map'], 2.0)
    assert np.allclose(cloud.van.sim.vcu.active_map.torque_nm, table)
    link.restore(TASK.vehicle_default_map(), 2)
    assert poll_until(link.take_outcome).status == TransferStatus.ACCEPTED
    assert poll_until(lambda: cloud.van.state()['on_default_map'], 2.0)


def test_the_vcu_refuses_what_it_must_and_a_wrong_token_is_refused(cloud):
    link = _link(cloud)
    default = TASK.vehicle_default_map()
    below = np.array(default.torque_nm)
    below[0] -= TASK.torque_budget_nm + 50.0
    reply = link.client.set_torque(below[0:1], 0, default.shape)
    assert reply.code == RemoteCode.TORQUE_RANGE
    bad = RemoteCanClient(cloud.url, cloud.van.vin, token='wrong', read_retries=0)
    assert bad.get_signal().http_status == 401
    other = RemoteCanClient(cloud.url, 'OTHER-VIN', token=TOKEN)
    assert other.get_signal().code == RemoteCode.CAR_NOT_REGISTERED
    assert cloud.van.sim.vcu.active_map.torque_nm.tolist() == default.torque_nm.tolist()


def test_ai_mode_off_failures_and_the_tbox_fallback():
    with CloudSimServer(_config(ai_mode=False)) as server:
        client = RemoteCanClient(server.url, server.van.vin)
        assert client.get_signal().code == RemoteCode.AI_MODE_OFF
    with CloudSimServer(_config(flash_success=0.0, flash_failure_codes=(2001,))) as server:
        client = RemoteCanClient(server.url, server.van.vin)
        default = TASK.vehicle_default_map()
        assert client.set_torque(default.torque_nm[0:2], 0, default.shape).code == \
            RemoteCode.AB_SWITCH_FAILED
    with CloudSimServer(_config(tbox_timeout_s=0.5)) as server:
        client = RemoteCanClient(server.url, server.van.vin)
        table = np.array(TASK.default_map.torque_nm)
        table[5] -= 100.0
        assert client.set_torque(table[5:6], 5, table.shape).ok
        assert poll_until(lambda: not server.van.state()['on_default_map'], 2.0)
        # Silence: no request for tbox_timeout_s -> the van is back on its default map.
        assert poll_until(lambda: server.van.state()['on_default_map'], 5.0)
        assert server.van.state()['counts']['tbox_fallback'] == 1


def test_the_command_refuses_bad_options(capsys):
    assert main(['--time-zone', 'Mars/Base']) == 2
    assert 'cloud_sim' in capsys.readouterr().err
    assert main(['--token-env', 'TSPACE_NO_SUCH_TOKEN']) == 2


# ---- the van of the main job over the cloud: its own time, parking, profiles ---------------

def _van(parked=False, **kwargs):
    from tspace_ros.vehicle.tbox import TelematicsVan
    return TelematicsVan(_config(**kwargs), 1000.0, parked=parked)


def test_durations_in_vehicle_time_shrink_on_the_wall_with_the_real_time_factor():
    wall = _van(flash_latency_s=(3.0, 0.0, 30.0), read_latency_s=(2.5, 0.0, 10.0))
    van = _van(flash_latency_s=(3.0, 0.0, 30.0), read_latency_s=(2.5, 0.0, 10.0),
               durations_in_vehicle_time=True)
    assert wall.latency('flash') == pytest.approx(3.0)
    assert van.latency('flash') == pytest.approx(3.0 / 40.0)   # 3 s of driving at 40x
    assert van.latency('read') == pytest.approx(2.5 / 40.0)
    # The TBox's fallback (30 s without a request) is 30 s of driving too: 0.75 s of wall.
    table = np.array(TASK.default_map.torque_nm)
    table[5] -= 100.0
    body = {'vin': van.vin, 'torque': table[5:6].tolist(), 'start_line': 5, 'abswitch': True}
    assert van.set_torque(body, 1000.0)['success']
    van.advance(1000.01)
    assert not van.state()['on_default_map']
    van.advance(1000.5)                    # 20 s of driving: not yet
    assert not van.state()['on_default_map']
    van.advance(1000.8)                    # 32 s of driving without a request
    assert van.state()['on_default_map'] and van.counts['tbox_fallback'] == 1


def test_a_parked_van_stops_its_clock_and_its_pending_flash_and_drives_on():
    van = _van(parked=True)
    van.advance(1010.0)
    assert van.paused and van.sim.t_s == 0.0   # parked from the start: nothing driven
    van.resume(1010.0)
    van.advance(1011.0)
    assert van.sim.t_s == pytest.approx(40.0, abs=0.5)
    table = np.array(TASK.default_map.torque_nm)
    table[4] -= 50.0
    body = {'vin': van.vin, 'torque': table[4:5].tolist(), 'start_line': 4, 'abswitch': True}
    assert van.set_torque(body, 1011.0, latency_s=0.5)['success']
    van.pause(1011.2)
    van.advance(1020.0)                    # parked: no driving, the flash waits as well
    assert van.sim.t_s == pytest.approx(48.0, abs=0.5) and van.pending_flash is not None
    assert van.true_time_s() == pytest.approx(van.vehicle_time_s())   # no skew configured
    van.resume(1030.0)
    van.advance(1030.2)                    # 0.2 s left of the flash's 0.5 s: not yet
    assert van.pending_flash is not None
    van.advance(1030.4)
    assert van.pending_flash is None and van.sim.vcu.active_map.torque_nm[4, 3] == \
        pytest.approx(table[4, 3])
    assert van.sim.t_s == pytest.approx(48.0 + 0.4 * 40, abs=0.5)


def test_a_van_reads_its_odometer_exactly_at_the_end_of_its_lap():
    van = _van()
    van.mark(30.0)
    van.advance(1000.5)
    assert van.sim.t_s == pytest.approx(20.0, abs=0.5) and van.odometer_at(30.0) is None
    van.advance(1005.0)                    # 200 s driven: the reading is the one at 30 s
    lap = van.sim.between(van.odometer_at(0.0), van.odometer_at(30.0))
    assert lap['duration_s'] == pytest.approx(30.0)
    assert van.sim.between(van.odometer_at(0.0), van.sim.odometer())['duration_s'] == \
        pytest.approx(van.sim.t_s)
    with pytest.raises(ValueError, match='past the mark'):
        van.mark(100.0)


def test_cloud_profiles_are_read_and_checked(tmp_path):
    from tspace_ros.vehicle.tbox import cloud_profile, TelematicsVan
    measured = cloud_profile('tspace_measured')
    assert measured['flash_success'] == 0.75 and measured['flash_latency_s'][0] == 3.0
    TelematicsVan(CloudSimConfig(**measured), 0.0)   # a shipped profile is a valid van
    with pytest.raises(ValueError, match='no cloud profile'):
        cloud_profile('no_such_profile')
    bad = tmp_path / 'profiles.yaml'
    for text, match in (('p: {warp_drive: 1}\n', 'unknown field'),
                        ("p: {read_latency_s: [1, 'a', 2]}\n", 'must be numbers'),
                        ('p: {read_latency_s: [1, 2]}\n', r'\[median, sigma, max\]'),
                        ('p: {read_success: {a: 1}}\n', 'wrong kind'),
                        ('p: [1, 2]\n', 'no cloud profile')):
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            cloud_profile('p', bad)
    bad.write_text('p: {flash_success: 1.5}\n')
    with pytest.raises(ValueError, match=r'flash_success must be in \[0, 1\]'):
        TelematicsVan(CloudSimConfig(**cloud_profile('p', bad)), 0.0)
