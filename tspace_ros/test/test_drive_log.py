"""
Drive logs as a vehicle: python-can's log formats played as a bus and stored as episodes.

A 90 s stop-and-go drive of the simulated van is written as Vector ASC and
BLF, candump ``.log``, PEAK TRC and CSV with python-can's writers; each is read
back into a pool as one episode of transitions with the default map's actions,
played through ``LogBus`` at log speed and at full speed, and broken logs are
refused with the file and the reason.
"""

import math
import time

import can
from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.can.log_bus import LogBus, LogBusError
from tspace_ros.drive_log import DriveLogError, main, replay_into_pool
from tspace_ros.storage import open_pool, PoolConfig

DB = load_dbc()
T0_S = 1_790_000_000.0
SECONDS = 90.0


def _frames(seconds=SECONDS):
    frames = []
    for i in range(round(seconds * 50)):
        t_s = i / 50.0
        speed = 30.0 * (1.0 - math.cos(2.0 * math.pi * t_s / 60.0))
        accel = math.sin(2.0 * math.pi * t_s / 60.0)
        current = 120.0 * accel + 10.0
        sample = {'speed_kph': speed, 'pedal': min(1.0, max(0.0, 0.15 + 0.5 * accel)),
                  'brake_bar': max(0.0, -20.0 * accel), 'current_a': current,
                  'voltage_v': 400.0 - 0.08 * current, 'soc': 0.8,
                  'motor_torque_nm': 800.0 * accel, 'motor_speed_rpm': speed * 40.0}
        for k, frame in enumerate(encode_vehicle_sample(DB, sample, T0_S + t_s)):
            frame.timestamp = T0_S + t_s + k * 0.0002
            frame.channel = 0
            frames.append(frame)
    return frames


def _write(path, frames):
    with can.Logger(str(path)) as logger:
        for frame in frames:
            logger.on_message_received(frame)
    return path


@pytest.fixture(scope='module')
def frames():
    return _frames()


@pytest.mark.parametrize('suffix', ['.asc', '.blf', '.log', '.trc', '.csv'])
def test_every_log_format_becomes_one_stored_episode(tmp_path, frames, suffix):
    log = _write(tmp_path / f'drive{suffix}', frames)
    result = replay_into_pool(log, tmp_path / 'pool', vehicle_id='VIN-LOG')
    assert result['frames'] == len(frames) and result['decoded'] == len(frames)
    windows = result['windows']
    assert windows == pytest.approx(SECONDS / 1.5, abs=2)  # 30 samples at 20 Hz
    assert len(result['episodes']) == 1
    with open_pool(PoolConfig(root=str(tmp_path / 'pool'))) as pool:
        records = pool.read_records()
        summaries = [s for s in pool.summaries() if s.valid]
    assert len(records) == result['transitions_stored'] >= windows - 3
    assert len(summaries) == 1 and summaries[0].vehicle_id == 'VIN-LOG'
    assert all(np.all(r.action == 0.0) for r in records)  # the default map drove
    # The reward is the energy the logged current and voltage say (regeneration: > 0).
    assert all(np.isfinite(r.reward) and r.reward == pytest.approx(-r.energy_wh)
               for r in records)
    assert min(r.reward for r in records) < -5.0 < 5.0 < max(r.reward for r in records)
    # The log's own time: stamps within the recorded drive.
    assert T0_S * 1e9 <= records[0].state_stamp_ns <= (T0_S + SECONDS) * 1e9
    assert summaries[0].distance_km == pytest.approx(30.0 * SECONDS / 3600.0, rel=0.1)


def test_the_command_line_prints_what_it_stored_and_refuses_what_it_cannot_use(
        tmp_path, frames, capsys):
    log = _write(tmp_path / 'drive.asc', frames[:3000])
    assert main([str(log), '--pool', str(tmp_path / 'pool'), '--vehicle-id', 'VIN-CLI']) == 0
    assert '"transitions_stored"' in capsys.readouterr().out
    assert main([str(tmp_path / 'missing.blf'), '--pool', str(tmp_path / 'p2')]) == 2
    assert 'no such log file' in capsys.readouterr().err
    assert main([str(log.with_suffix('.xyz')), '--pool', str(tmp_path / 'p3')]) == 2
    assert 'unknown log format' in capsys.readouterr().err
    short = _write(tmp_path / 'short.asc', frames[:30])
    with pytest.raises(DriveLogError, match='no complete window'):
        replay_into_pool(short, tmp_path / 'p4')
    garbage = tmp_path / 'garbage.blf'
    garbage.write_bytes(b'\x00LOGG' + bytes(range(256)) * 8)
    with pytest.raises(DriveLogError, match='garbage.blf'):
        replay_into_pool(garbage, tmp_path / 'p5')


def test_log_bus_plays_at_log_speed_or_as_fast_as_possible(tmp_path, frames):
    log = _write(tmp_path / 'drive.log', frames[:150])  # 1 s of traffic
    fast = LogBus(str(log), rate=0)
    start = time.monotonic()
    got = [fast.recv(timeout=0.0) for _ in range(150)]
    fast_s = time.monotonic() - start
    assert all(m is not None for m in got) and fast.recv(timeout=0.01) is None and fast.ended
    assert [m.arbitration_id for m in got] == [f.arbitration_id for f in frames[:150]]
    assert got[0].timestamp == pytest.approx(frames[0].timestamp)
    with pytest.raises(can.CanOperationError, match='read-only'):
        fast.send(frames[0])
    fast.shutdown()
    paced = LogBus(str(log), rate=2.0)  # twice log speed: about 0.5 s
    start = time.monotonic()
    count = 0
    while count < 150 and time.monotonic() - start < 5.0:
        count += paced.recv(timeout=0.1) is not None
    paced_s = time.monotonic() - start
    paced.shutdown()
    assert count == 150 and 0.4 < paced_s < 1.5 and fast_s < 0.4
    with pytest.raises(LogBusError, match='unknown log format'):
        LogBus(str(tmp_path / 'x.mp3'))


def test_the_bridge_node_reads_a_log_as_its_bus(tmp_path, frames):
    from lifecycle_msgs.msg import Transition
    from ros_test_support import NodeProcess, RosContext, spin_until
    from test_window_source_lifecycle import LifecycleDriver
    from tspace_interfaces.msg import ObservationWindow
    from tspace_ros.nodes.messages import window_from_msg

    log = _write(tmp_path / 'drive.blf', frames[:4500])  # 30 s, 3 frames a sample
    with NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / 'bridge.log', [
            '-r', '__ns:=/log_van', '-p', 'can_interface:=log', '-p', f'can_channel:={log}',
            '-p', 'log_rate:=0.0', '-p', 'flash_protocol:=none',
            '-p', 'vehicle_id:=VIN-LOG']) as process, RosContext() as ros:
        windows = []
        probe = ros.node('log_probe')
        probe.create_subscription(ObservationWindow, '/log_van/observation/window',
                                  windows.append, 100)
        node = LifecycleDriver(ros, 'log_van/can_bridge')
        assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: len(windows) >= 18, 20.0), process.output()
        first = window_from_msg(windows[0])
        assert first.vehicle_id == 'VIN-LOG'
        assert T0_S * 1e9 <= first.start_ns < (T0_S + 30.0) * 1e9  # the log's own time
        assert node.transition(Transition.TRANSITION_DEACTIVATE)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from(['.asc', '.blf', '.log', '.trc', '.csv']),
       cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                     st.integers(1, 255)), max_size=6))
def test_property_a_damaged_log_is_stored_or_refused_never_a_crash(tmp_path, frames, suffix,
                                                                   cut, flips):
    import shutil
    source = tmp_path / f'source{suffix}'
    if not source.exists():
        _write(source, frames[:1500])
    data = bytearray(source.read_bytes())
    del data[int(cut * len(data)):]
    for where, value in flips:
        if data:
            data[int(where * len(data))] ^= value
    log = tmp_path / f'damaged{suffix}'
    log.write_bytes(bytes(data))
    pool = tmp_path / 'pool'
    shutil.rmtree(pool, ignore_errors=True)
    try:
        result = replay_into_pool(log, pool)
    except DriveLogError as error:
        assert str(error)
        return
    assert result['transitions_stored'] >= 0 and len(result['episodes']) == 1
