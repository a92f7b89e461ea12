"""
The bridge core's session, without ROS: every time is passed in.

A simulated VCU (``VcuMapReceiver``) answers what the core sends; the core's
``send`` is a list. Times: the node clock (``Now.node_ns``, a simulation's
time in the node) and the wall clock (``Now.wall_s``) move independently.
"""

import json
import socket

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from torque_map_support import tspace_like_map

from tspace_ros.bridge.core import (BridgeCore, BridgeSettings, FlashError, FlashResult,
                                    LEVEL_ERROR, Now, Sample, SAMPLE_REJECTIONS)
from tspace_ros.can.bridge import CanBridgeCore
from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.can.links import CanTransferLink, LinkStatus
from tspace_ros.can.transfer import TORQUE_RESOLUTION_NM, VcuMapReceiver, whole_map_checksum
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.episodes.control import END_INVALID, RUNNING, START
from tspace_ros.episodes.hmi_udp import HmiUdpListener
from tspace_ros.torque_map import apply_action, SafetyGate

DB = load_dbc()
DEFAULT = tspace_like_map('VIN-SESSION')
T0_NS = 1_790_000_000 * 10 ** 9
MAPPED = ('VehicleDynamics.VehicleSpeed', 'VehicleDynamics.AccelPedalPosition',
          'VehicleDynamics.BrakePressure', 'BatteryStatus.BatteryCurrent',
          'BatteryStatus.BatteryVoltage')


class Session:
    """A core, what it sent, and a VCU that answers (unless silent)."""

    def __init__(self, silent=False, link=None, **limits):
        self.sent = []
        defaults = {'vehicle_id': 'VIN-SESSION', 'driver_id': 'driver0',
                    'flash_timeout_s': 3.0, 'vehicle_offline_s': 100.0,
                    'watchdog_timeout_s': 5.0, 'episode_countdown_s': 0.0}
        self.core = CanBridgeCore(
            DB, DEFAULT, SafetyGate(DEFAULT, resolution_nm=TORQUE_RESOLUTION_NM),
            WindowBuilder(vehicle_id='VIN-SESSION'), link=link,
            settings=BridgeSettings(**{**defaults, **limits}), send=self.sent.extend)
        self.vcu = VcuMapReceiver(DB, DEFAULT)
        self.silent = silent
        self.core.start(Now(T0_NS, 0.0))

    def answer(self, now):
        """Let the VCU answer everything sent so far; the core receives its answers."""
        frames, self.sent[:] = list(self.sent), []
        if self.silent:
            return
        answers = [a for f in frames for a in self.vcu.feed(f, now.node_s)]
        for frame in answers:
            frame.timestamp = now.node_s
        self.core.receive(answers, now)


def at(node_s, wall_s):
    return Now(T0_NS + round(node_s * 1e9), wall_s)


def four_rows(version, row_start=2, value=-0.8):
    return apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), value), row_start,
                        policy_version=version)


def flashed(session, now, version=7):
    """Flash four rows and let the VCU apply them; return the result."""
    started = session.core.flash(four_rows(version), 2, 4, now)
    assert not isinstance(started, FlashResult), started
    session.answer(now)
    (result,) = session.core.take_outputs().flashes
    assert result.success, result.message
    return result


def test_watchdog_expiry_restores_the_default_map():
    s = Session(watchdog_timeout_s=2.0)
    flashed(s, at(0.0, 0.0))
    assert s.vcu.active_version == 7 and not s.core.active_is_default
    s.core.feed_watchdog(at(1.5, 1.5))  # the agent's heartbeat
    s.core.check_watchdog(at(3.4, 3.4))
    assert s.sent == [] and not s.core.flash_pending
    s.core.check_watchdog(at(3.5, 3.5))  # 2 s on the node clock without a sign of life
    assert len(s.sent) == 1 and s.core.counts['watchdog_restores'] == 1
    s.answer(at(3.5, 3.5))
    out = s.core.take_outputs()
    assert [r.success for r in out.flashes] == [True]
    assert s.core.active_is_default and s.vcu.on_reference
    assert out.active_map.policy_version == 0
    assert ('info', 'watchdog: default map restored (accepted)') in [
        (level, text.split(' (')[0] + ' (accepted)') for level, text in out.log]
    # Once per silence: no second restore while on the default.
    s.core.check_watchdog(at(60.0, 60.0))
    assert s.sent == [] and s.core.counts['watchdog_restores'] == 1


def test_watchdog_rests_while_the_session_is_stopped():
    s = Session(watchdog_timeout_s=1.0)
    flashed(s, at(0.0, 0.0))
    s.core.stop()
    s.core.check_watchdog(at(10.0, 10.0))
    assert s.sent == [] and s.core.counts['watchdog_restores'] == 0


def test_the_flash_time_out_needs_the_node_clock_and_the_wall_clock_both():
    # A simulation running 30x real time: 3 s of node time pass in 0.1 s of wall time.
    s = Session(silent=True)
    s.core.flash(four_rows(3), 2, 4, at(0.0, 0.0))
    s.answer(at(0.0, 0.0))  # nobody answers
    s.core.tick(at(30.0, 1.0))
    assert s.core.flash_pending, 'timed out on the node clock alone'
    s.core.tick(at(30.0, 3.0))
    (result,) = s.core.take_outputs().flashes
    assert result.error == FlashError.TIMEOUT and 'within 3 s' in result.message
    assert result.active_map.policy_version == 0 and s.core.active_is_default


def test_the_flash_time_out_waits_for_the_node_clock_too():
    # A bridge lagging a simulation's clock must not time out what the VCU answered in time.
    s = Session(silent=True)
    s.core.flash(four_rows(3), 2, 4, at(0.0, 0.0))
    s.answer(at(0.0, 0.0))
    s.core.tick(at(1.0, 10.0))
    assert s.core.flash_pending, 'timed out on the wall clock alone'
    assert s.core.take_outputs().flashes == []
    s.core.tick(at(3.0, 10.1))
    (result,) = s.core.take_outputs().flashes
    assert result.error == FlashError.TIMEOUT


def test_a_stopped_clock_ends_the_flash_on_the_wall_clock():
    # Frames keep coming, but their capture time (and the node clock) stands still.
    s = Session(silent=True, vehicle_offline_s=2.0)
    stuck = vehicle_frames(0.02)
    s.core.flash(four_rows(3), 2, 4, at(0.0, 0.0), timeout_s=4.0)
    for wall_s in (1.0, 3.0, 5.0, 7.0, 9.0, 10.9):
        s.core.receive(stuck, at(0.0, wall_s))
        s.core.tick(at(0.0, wall_s))
    assert s.core.flash_pending and not s.core.offline(at(0.0, 10.9))
    s.core.receive(stuck, at(0.0, 11.1))  # 4 s (the client's) + 2 s offline + 5 s margin
    s.core.tick(at(0.0, 11.1))
    (result,) = s.core.take_outputs().flashes
    assert result.error == FlashError.TIMEOUT and 'clock stopped' in result.message


def test_a_silent_vehicle_is_offline_and_ends_the_pending_flash():
    s = Session(silent=True, vehicle_offline_s=2.0, flash_timeout_s=30.0)
    frames = encode_vehicle_sample(DB, {'speed_kph': 10.0, 'pedal': 0.2, 'brake_bar': 0.0,
                                        'current_a': 5.0, 'voltage_v': 400.0, 'soc': 0.7,
                                        'motor_torque_nm': 10.0, 'motor_speed_rpm': 900.0},
                                   T0_NS / 1e9)
    s.core.receive(frames, at(0.0, 10.0))
    assert not s.core.offline(at(0.0, 12.0))
    assert s.core.diagnostics(at(0.0, 12.0))[0] != LEVEL_ERROR
    s.core.flash(four_rows(3), 2, 4, at(0.0, 10.0))
    s.core.tick(at(0.1, 12.0))
    assert s.core.flash_pending
    s.core.tick(at(0.1, 12.1))  # more than 2 s of wall time since the last frame
    (result,) = s.core.take_outputs().flashes
    assert result.error == FlashError.VEHICLE_OFFLINE and s.core.active_is_default
    level, message, values = s.core.diagnostics(at(0.1, 12.1))
    assert (level, message) == (LEVEL_ERROR, 'no frames from the vehicle')
    assert values['flash_vehicle_offline'] == 1
    # A restore to a silent vehicle is sent, but not waited for.
    flashed(Session(), at(0.0, 0.0))
    s2 = Session(vehicle_offline_s=2.0)
    flashed(s2, at(0.0, 0.0))
    assert s2.core.restore_default('deactivating', at(0.0, 5.0)) is False
    assert len(s2.sent) == 1
    assert any('the vehicle is silent' in text for _, text in s2.core.take_outputs().log)


class Commands:
    """A command source (as the HMI listener): each poll returns the next list."""

    def __init__(self, *polls):
        self.polls = list(polls)

    def poll(self):
        item = self.polls.pop(0) if self.polls else []
        if isinstance(item, Exception):
            raise item
        return item


def vehicle_frames(seconds, t0_s=T0_NS / 1e9):
    frames = []
    for k in range(int(seconds * 50)):
        frames += encode_vehicle_sample(DB, {
            'speed_kph': 30.0, 'pedal': 0.3, 'brake_bar': 0.0, 'current_a': 40.0,
            'voltage_v': 390.0, 'soc': 0.7, 'motor_torque_nm': 80.0,
            'motor_speed_rpm': 2500.0}, t0_s + k / 50.0)
    return frames


def test_episodes_from_a_command_source_stamp_windows_and_give_events():
    s = Session()
    source = Commands([START], RuntimeError('HMI gone'), [], [END_INVALID])
    s.core.command_sources = (source,)
    s.core.tick(at(0.0, 0.0))
    assert s.core.episodes.state == RUNNING
    episode_id = s.core.episodes.episode_id
    s.core.receive(vehicle_frames(2.0), at(2.0, 2.0))
    s.core.tick(at(2.0, 2.0))  # the source raises: counted, the bridge goes on
    out = s.core.take_outputs()
    assert out.windows and all(w.window.episode_id == episode_id for w in out.windows)
    assert [(e.kind, e.episode_id) for e in out.episode_events] == [('started', episode_id)]
    assert s.core.counts['hmi_errors'] == 1
    s.core.tick(at(2.1, 2.1))
    s.core.tick(at(2.2, 2.2))
    out = s.core.take_outputs()
    assert [(e.kind, e.episode_id) for e in out.episode_events] == [('discarded', episode_id)]
    assert out.episode_events[0].end_ns == T0_NS + 2_200_000_000
    assert s.core.windows.episode_id == ''
    assert s.core.diagnostics(at(2.2, 2.2))[2]['hmi_errors'] == 1


def test_episodes_from_the_hmi_udp_listener():
    listener = HmiUdpListener(0)
    try:
        s = Session()
        s.core.command_sources = (listener,)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hmi:
            hmi.sendto(json.dumps({'status': 'begin'}).encode(), ('127.0.0.1', listener.port))
            hmi.sendto(b'{"status": 7}', ('127.0.0.1', listener.port))
        for k in range(200):  # loopback delivery is quick but not instant
            s.core.tick(at(k * 0.01, k * 0.01))
            if s.core.episodes.state == RUNNING:
                break
        assert s.core.episodes.state == RUNNING
        values = s.core.diagnostics(at(2.0, 2.0))[2]
        assert values['hmi_accepted'] == 1
        out = s.core.take_outputs()
        assert [e.kind for e in out.episode_events] == ['started']
        assert ('info', 'HMI command 1: started') in out.log
    finally:
        listener.close()


def drive_samples(seconds, rate_hz=50.0):
    samples = []
    for k in range(int(seconds * rate_hz)):
        t = T0_NS + round(k * 1e9 / rate_hz)
        samples += [Sample(MAPPED[0], t, 36.0), Sample(MAPPED[1], t, 25.0),
                    Sample(MAPPED[2], t, 0.0), Sample(MAPPED[3], t, 50.0),
                    Sample(MAPPED[4], t, 400.0)]
    return samples


def test_decoded_samples_make_windows_in_our_units():
    core = BridgeCore(DEFAULT, SafetyGate(DEFAULT), WindowBuilder(vehicle_id='VIN-CLOUD'),
                      link=ReadOnly(), settings=BridgeSettings(vehicle_offline_s=2.0))
    core.start(Now(T0_NS, 0.0))
    core.receive_samples(drive_samples(4.0), Now(T0_NS, 1.0))
    windows = core.take_outputs().windows
    assert len(windows) == 2 and windows[0].clean
    window = windows[0].window
    assert window.vehicle_id == 'VIN-CLOUD' and window.samples.shape == (5, 30)
    np.testing.assert_allclose(window.signal('pedal'), 0.25)  # percent on the link
    np.testing.assert_allclose(window.signal('speed'), 36.0)
    assert core.sample_counts['accepted'] == 1000 and core.last_frame_ns > T0_NS
    # Samples are a sign of life.
    assert not core.offline(Now(T0_NS, 2.5))
    assert core.offline(Now(T0_NS, 3.1))
    values = core.diagnostics(Now(T0_NS, 3.1))[2]
    assert values['samples_accepted'] == 1000 and values['windows'] == 2


class ReadOnly:
    """A link of another transport that writes nothing (as a cloud link before writes)."""

    name = 'none'
    writes_maps = False
    reports_status = True
    resolution_nm = 0.0
    ack_timeout_s = 0.0

    def on_frame(self, frame):
        raise AssertionError('a link without frames got one')

    def cancel(self):
        pass


def test_hostile_samples_are_counted_by_reason():
    core = BridgeCore(DEFAULT, SafetyGate(DEFAULT), WindowBuilder(), link=ReadOnly())
    core.receive_samples([
        'nonsense', None, (1, 2), Sample('NoDot', T0_NS, 1.0), (b'x.y', T0_NS, 1.0),
        Sample(MAPPED[0], 'now', 1.0), Sample(MAPPED[0], -5, 1.0), Sample(MAPPED[0], 2 ** 70, 1.0),
        Sample(MAPPED[0], T0_NS, '36'), Sample(MAPPED[0], T0_NS, True),
        Sample('Other.Signal', T0_NS, 1.0), Sample(MAPPED[0], T0_NS, float('nan'))],
        Now(T0_NS, 0.0))
    counts = core.sample_counts
    assert (counts['not_a_sample'], counts['bad_name'], counts['bad_time'],
            counts['bad_value'], counts['unmapped'], counts['accepted']) == (3, 2, 3, 2, 1, 1)
    assert core.windows.stats.invalid == {'speed': 1}  # NaN: flagged by the windows


SAMPLE_PART = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                        st.text(max_size=30), st.binary(max_size=8),
                        st.sampled_from(MAPPED + ('VehicleDynamics.', '.x', 'A.B')),
                        st.integers(T0_NS, T0_NS + 10 ** 10))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.tuples(SAMPLE_PART, SAMPLE_PART, SAMPLE_PART),
                          st.lists(SAMPLE_PART, max_size=4), SAMPLE_PART), max_size=40))
def test_no_sample_makes_the_core_raise_and_every_one_is_counted(items):
    core = BridgeCore(DEFAULT, SafetyGate(DEFAULT), WindowBuilder(), link=ReadOnly())
    core.receive_samples(items, Now(T0_NS, 0.0))
    counts = core.sample_counts
    assert counts['received'] == len(items)
    assert counts['accepted'] + sum(counts[r] for r in SAMPLE_REJECTIONS) == len(items)
    for window in core.take_outputs().windows:
        assert np.isfinite(window.window.samples).all()


def test_a_status_report_from_a_link_without_frames_is_followed():
    core = BridgeCore(DEFAULT, SafetyGate(DEFAULT), WindowBuilder(), link=ReadOnly())
    other = four_rows(5)
    core.receive_status(LinkStatus(whole_map_checksum(other), False, T0_NS), Now(T0_NS, 0.0))
    assert core.map_in_doubt and core.vcu_counts['map_mismatches'] == 1
    assert not core.offline(Now(T0_NS, 1.0))  # a status report is a sign of life
    core.receive_status(LinkStatus(whole_map_checksum(DEFAULT), True, T0_NS + 1),
                        Now(T0_NS, 0.1))
    assert core.vcu_counts['fallbacks'] == 1 and core.vcu_counts['status'] == 2


class SpyLink(CanTransferLink):
    """The transfer link, recording what it was asked to write."""

    def __init__(self):
        super().__init__(DB)
        self.writes = []

    def write(self, admitted, row_start, row_count, transfer_id, version):
        self.writes.append((admitted, row_start, row_count))
        return super().write(admitted, row_start, row_count, transfer_id, version)


@pytest.mark.parametrize('proposal, rows', [
    (DEFAULT.with_torque(DEFAULT.torque_nm + 50.0, 3), (0, 4)),  # above the default
    (DEFAULT.with_torque(DEFAULT.torque_nm - 1000.0, 3), (0, 4)),  # beyond the budget
    (four_rows(3), (2, 0)),  # no rows: not "the whole map"
    (four_rows(3, row_start=0), (0, 12)),  # more rows than one action may change
    (four_rows(3, row_start=2), (11, 4)),  # rows beyond the table
])
def test_no_map_reaches_the_link_without_passing_the_gate(proposal, rows):
    link = SpyLink()
    s = Session(link=link)
    result = s.core.flash(proposal, *rows, at(0.0, 0.0))
    assert isinstance(result, FlashResult)
    assert result.error == FlashError.REJECTED_BY_SAFETY_GATE
    assert link.writes == [] and s.sent == [], 'a map outside the gate reached the link'
    assert not s.core.flash_pending and s.core.active_is_default
    assert s.core.flash_counts['REJECTED_BY_SAFETY_GATE'] == 1
    # What passes is the admitted map: the active map with the action's rows only.
    s.core.flash(four_rows(4), 2, 4, at(0.0, 0.0))
    ((admitted, row_start, row_count),) = link.writes
    assert (row_start, row_count) == (2, 4)
    np.testing.assert_array_equal(admitted.torque_nm[6:], DEFAULT.torque_nm[6:])


def test_a_failing_driver_ends_the_flash_as_a_transport_error():
    s = Session()

    def broken(frames):
        raise OSError('bus off')
    s.core._send = broken
    result = s.core.flash(four_rows(3), 2, 4, at(0.0, 0.0))
    assert result.error == FlashError.TRANSPORT and 'bus off' in result.message
    assert not s.core.flash_pending and s.core.active_is_default
    s.core.tick(at(0.0, 0.0))  # the heartbeat fails too: counted and logged once
    s.core.tick(at(1.0, 1.0))
    assert s.core.counts['heartbeat_errors'] == 2
    assert [text for _, text in s.core.take_outputs().log].count(
        'sending the heartbeat failed: bus off') == 1


def test_a_mismatching_vcu_is_reverted_to_the_default():
    s = Session()
    flashed(s, at(0.0, 0.0))
    # The VCU reports a map the bridge never sent.
    from tspace_ros.can.frames import encode_vcu_status, VcuState
    odd = encode_vcu_status(DB, VcuState.DRIVE, 0, 1, (), T0_NS / 1e9 + 5.0,
                            map_checksum=whole_map_checksum(four_rows(9, value=-0.2)))
    s.core.receive([odd], at(5.0, 5.0))
    assert s.core.map_in_doubt
    s.core.tick(at(5.0, 5.0))
    assert s.core.counts['mismatch_reverts'] == 1
    s.answer(at(5.0, 5.0))
    assert s.vcu.on_reference and s.core.active_is_default
    out = s.core.take_outputs()
    assert any('VCU: the VCU holds a map' in text for _, text in out.log)
    assert any(text.startswith('map checksum mismatch: default map restored')
               for _, text in out.log)


class _WallClockLink(CanTransferLink):
    """The transfer link, counting signs of life, with XCP's heartbeat timing."""

    heartbeat_on_wall_clock = True

    def __init__(self, db):
        super().__init__(db)
        self.beats = 0

    def heartbeat(self, counter, version, checksum):
        self.beats += 1
        return None


@pytest.mark.parametrize('wall_only, expected', [(False, 20), (True, 1)])
def test_a_blocking_sign_of_life_is_timed_on_the_wall_clock_alone(wall_only, expected):
    # At 40x real time a poll cycle of 10 ms wall is 0.4 s of bus time: a CAN heartbeat
    # (a frame, the VCU counts bus time) goes out every cycle; XCP's GET_STATUS, a blocking
    # round trip the ECU times on its own clock, once per 100 ms of wall time.
    link = _WallClockLink(DB)
    link.heartbeat_on_wall_clock = wall_only
    s = Session(link=link)
    for i in range(1, 21):
        s.core.tick(at(0.4 * i, 0.005 * i))  # 20 cycles in 0.1 s of wall time
    assert link.beats == expected
    s.core.tick(at(8.5, 0.2))
    assert link.beats == expected + 1


def test_a_frame_without_a_capture_time_does_not_turn_the_bus_clock_back():
    s = Session(silent=True)
    frame = encode_vehicle_sample(DB, {'speed_kph': 30.0, 'pedal': 0.3, 'brake_bar': 0.0,
                                       'current_a': 40.0, 'voltage_v': 390.0, 'soc': 0.7,
                                       'motor_torque_nm': 80.0, 'motor_speed_rpm': 2500.0},
                                  T0_NS / 1e9 + 1.0)[0]
    s.core.receive([frame], at(1.0, 1.0))
    assert s.core.bus_now_s(at(1.0, 1.0)) == pytest.approx(T0_NS / 1e9 + 1.0)
    s.core.flash(four_rows(3), 2, 4, at(1.0, 1.0))
    stale = encode_vehicle_sample(DB, {'speed_kph': 30.0, 'pedal': 0.3, 'brake_bar': 0.0,
                                       'current_a': 40.0, 'voltage_v': 390.0, 'soc': 0.7,
                                       'motor_torque_nm': 80.0, 'motor_speed_rpm': 2500.0},
                                  0.0)[0]  # a driver that stamps nothing
    later = encode_vehicle_sample(DB, {'speed_kph': 30.0, 'pedal': 0.3, 'brake_bar': 0.0,
                                       'current_a': 40.0, 'voltage_v': 390.0, 'soc': 0.7,
                                       'motor_torque_nm': 80.0, 'motor_speed_rpm': 2500.0},
                                  T0_NS / 1e9 + 4.5)[0]
    s.core.receive([later, stale], at(4.5, 4.5))
    assert s.core.bus_now_s(at(4.5, 4.5)) == pytest.approx(T0_NS / 1e9 + 4.5)
    s.core.check_flash(at(4.5, 4.5))  # 3.5 s on both clocks since the commit: timed out
    (result,) = s.core.take_outputs().flashes
    assert result.error == FlashError.TIMEOUT
