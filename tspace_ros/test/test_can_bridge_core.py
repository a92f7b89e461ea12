"""The CAN bridge core: windows from vehicle frames, gated flashes with typed outcomes."""

import numpy as np
import pytest
from torque_map_support import tspace_like_map

from tspace_ros.can.bridge import CanBridgeCore, FlashError, FlashResult, Watchdog
from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.can.transfer import (MapTransfer, TORQUE_RESOLUTION_NM, VcuMapReceiver,
                                     whole_map_checksum)
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.torque_map import apply_action, SafetyGate


@pytest.fixture(scope='module')
def db():
    return load_dbc()


@pytest.fixture
def default():
    return tspace_like_map('VIN-CORE')


def bus_gate(default, **kwargs):
    return SafetyGate(default, resolution_nm=TORQUE_RESOLUTION_NM, **kwargs)


def make_core(db, default, **kwargs):
    return CanBridgeCore(db, default, bus_gate(default), WindowBuilder(vehicle_id='VIN-CORE'),
                         **kwargs)


def vehicle_frames(db, seconds, rate_hz=50.0, t0=1_790_000_000.0):
    frames = []
    for k in range(int(seconds * rate_hz)):
        t = k / rate_hz
        sample = {'speed_kph': 36.0 + t, 'pedal': 0.25, 'brake_bar': 0.0, 'current_a': 50.0,
                  'voltage_v': 400.0, 'soc': 0.8, 'motor_torque_nm': 100.0,
                  'motor_speed_rpm': 3000.0}
        frames += encode_vehicle_sample(db, sample, t0 + t)
    return frames


def feed(core, frames):
    windows, results = [], []
    for frame in frames:
        new, result = core.on_frame(frame)
        windows += new
        if result is not None:
            results.append(result)
    return windows, results


def test_vehicle_frames_become_windows_in_our_units(db, default):
    core = make_core(db, default)
    windows, results = feed(core, vehicle_frames(db, 4.0))
    assert results == [] and len(windows) == 2
    window = windows[0].window
    assert window.vehicle_id == 'VIN-CORE' and window.samples.shape == (5, 30)
    assert window.unit('pedal') == '1'
    np.testing.assert_allclose(window.signal('pedal'), 0.25, atol=1e-4)
    np.testing.assert_allclose(np.diff(window.signal('speed')), 1.0 / 20.0, atol=1e-3)
    assert windows[1].window.step_index == 1
    assert core.decoder.stats.unknown == 0


def action_map(default, row_start, value):
    action = np.full((4, default.shape[1]), value)
    return apply_action(default, default, action, row_start, policy_version=7)


def test_flash_round_trip_updates_the_last_good_map(db, default):
    core = make_core(db, default)
    vcu = VcuMapReceiver(db, default)
    proposed = action_map(default, 3, -0.5)
    transfer = core.begin_flash(proposed, 3, 4)
    assert isinstance(transfer, MapTransfer) and core.flash_pending
    acks = []
    for frame in transfer.frames:
        acks += vcu.feed(frame, now_s=0.0)
    core.commit_sent(0.0)
    _, results = feed(core, acks)
    (result,) = results
    assert result.success and result.error == FlashError.NONE
    assert core.active_map.policy_version == 7 and not core.active_is_default
    np.testing.assert_allclose(core.active_map.torque_nm, proposed.torque_nm, atol=0.25)
    np.testing.assert_array_equal(core.active_map.torque_nm, vcu.active_map.torque_nm)
    assert core.flash_counts['NONE'] == 1


def test_rows_flashed_at_the_limit_are_quantized_inside_the_limits(db, default):
    # The default is not on the bus's 0.5 Nm grid: rows flashed at a limit are rounded to a
    # bus step inside the limits, so what the VCU holds passes the gate with no tolerance.
    assert not np.allclose(default.torque_nm % TORQUE_RESOLUTION_NM, 0)
    strict = SafetyGate(default, tolerance_nm=0.0)
    core = make_core(db, default)
    vcu = VcuMapReceiver(db, default)
    for row_start, action in ((3, 1.0), (5, -1.0), (4, 1.0)):  # overlapping rows, both limits
        proposed = apply_action(default, core.active_map,
                                np.full((4, default.shape[1]), action), row_start,
                                policy_version=row_start)
        transfer = core.begin_flash(proposed, row_start, 4)
        assert isinstance(transfer, MapTransfer), transfer
        acks = [ack for frame in transfer.frames for ack in vcu.feed(frame, now_s=0.0)]
        core.commit_sent(0.0)
        (result,) = feed(core, acks)[1]
        assert result.success, result.message
        assert strict.check_full_map(core.active_map).ok
        np.testing.assert_array_equal(vcu.active_map.torque_nm, core.active_map.torque_nm)
        assert vcu.active_checksum == core.active_checksum
    changed = np.abs(core.active_map.torque_nm - default.torque_nm) > 1e-9
    np.testing.assert_array_equal(np.flatnonzero(changed.any(axis=1)), [3, 4, 5, 6, 7, 8])


def test_the_map_sent_keeps_the_current_rows_whatever_the_client_sent(db, default):
    core = make_core(db, default)
    vcu = VcuMapReceiver(db, default)
    # A proposal whose other rows carry float32 noise (within the gate's tolerance).
    noisy = default.torque_nm + 4e-4
    noisy[2:6] = default.torque_nm[2:6] - 100.0
    transfer = core.begin_flash(default.with_torque(noisy, 9), 2, 4)
    assert isinstance(transfer, MapTransfer), transfer
    np.testing.assert_array_equal(transfer.flashed_map.torque_nm[6:], default.torque_nm[6:])
    for frame in transfer.frames:
        feed(core, vcu.feed(frame, 0.0))
    assert core.active_checksum == vcu.active_checksum
    np.testing.assert_array_equal(core.active_map.torque_nm[:2], default.torque_nm[:2])


def test_gate_rejection_sends_nothing_and_keeps_the_map(db, default):
    core = make_core(db, default)
    too_much = default.with_torque(default.torque_nm + 1.0, policy_version=3)
    result = core.begin_flash(too_much, 0, 4)
    assert isinstance(result, FlashResult)
    assert result.error == FlashError.REJECTED_BY_SAFETY_GATE and 'above' in result.message
    assert not core.flash_pending and core.active_is_default


def test_vcu_refusal_and_time_out_are_typed_and_keep_the_last_good_map(db, default):
    core = make_core(db, default, ack_timeout_s=3.0)
    vcu = VcuMapReceiver(db, default)
    transfer = core.begin_flash(action_map(default, 0, -1.0), 0, 4)
    acks = []
    for frame in transfer.frames[1:]:  # first segment lost
        acks += vcu.feed(frame, now_s=0.0)
    core.commit_sent(0.0)
    (refused,) = feed(core, acks)[1]
    assert refused.error == FlashError.REFUSED_BY_VCU and 'missing' in refused.message
    assert core.active_is_default

    core.begin_flash(action_map(default, 0, -1.0), 0, 4)
    core.commit_sent(10.0)
    assert core.poll(12.9) is None
    timed_out = core.poll(13.0)
    assert timed_out.error == FlashError.TIMEOUT and core.active_is_default
    assert not core.flash_pending


def test_restoring_the_default_is_a_revert_not_values(db, default):
    core = make_core(db, default)
    vcu = VcuMapReceiver(db, default)
    for frame in core.begin_flash(action_map(default, 5, -1.0), 5, 4).frames:
        feed(core, vcu.feed(frame, 0.0))
    assert not core.active_is_default and not vcu.on_reference
    transfer = core.begin_restore_default()
    assert transfer.n_segments == 0 and len(transfer.frames) == 1
    acks = []
    for frame in transfer.frames:
        acks += vcu.feed(frame, 1.0)
    (result,) = feed(core, acks)[1]
    assert result.success and core.active_is_default and vcu.on_reference
    np.testing.assert_array_equal(core.active_map.torque_nm, default.torque_nm)
    assert core.active_checksum == vcu.active_checksum == whole_map_checksum(default)


def test_abandoned_flash_is_reported_with_its_reason(db, default):
    core = make_core(db, default)
    core.begin_flash(action_map(default, 0, 0.5), 0, 4)
    result = core.abandon(FlashError.CANCELED, 'canceled by the client')
    assert (result.error, result.message) == (FlashError.CANCELED, 'canceled by the client')
    assert not core.flash_pending and core.poll(1e9) is None


def test_watchdog_fires_once_per_silence_and_can_be_disabled():
    dog = Watchdog(2.0)
    assert not dog.expired(100.0)  # not armed before the first sign of life
    dog.feed(100.0)
    assert not dog.expired(101.9)
    assert dog.expired(102.0)
    assert not dog.expired(105.0)
    dog.feed(106.0)
    assert dog.expired(108.5)
    off = Watchdog(0.0)
    off.feed(0.0)
    assert not off.expired(1e9)
    with pytest.raises(ValueError):
        Watchdog(-1.0)


def test_a_status_captured_before_the_ack_never_makes_the_bridge_follow_or_doubt(db, default):
    # Frames of two topics can cross: a VcuStatus the VCU sent before it applied the map
    # (default checksum) arrives after the MapAck. Following it would make the bridge
    # believe the VCU is on its default map while it holds the agent's.
    from tspace_ros.can.frames import encode_vcu_status, VcuState
    from tspace_ros.can.transfer import whole_map_checksum
    core = make_core(db, default)
    vcu = VcuMapReceiver(db, default)
    transfer = core.begin_flash(action_map(default, 3, -0.5), 3, 4)
    acks = [ack for frame in transfer.frames for ack in vcu.feed(frame, now_s=0.0)]
    for ack in acks:
        ack.timestamp = 1_790_000_010.0
    core.commit_sent(0.0)
    (result,) = feed(core, acks)[1]
    assert result.success and not core.active_is_default
    stale = encode_vcu_status(db, VcuState.DRIVE, 0, 1, (), 1_790_000_009.99,
                              map_checksum=whole_map_checksum(core.default_map))
    feed(core, [stale])
    assert not core.active_is_default and not core.map_in_doubt
    assert core.vcu_counts['stale_status'] == 1
    # A report captured after the answer is believed: the VCU went back on its own.
    fresh = encode_vcu_status(db, VcuState.DRIVE, 0, 2, (), 1_790_000_010.5,
                              map_checksum=whole_map_checksum(core.default_map),
                              map_fallback=True)
    feed(core, [fresh])
    assert core.active_is_default and core.vcu_counts['fallbacks'] == 1


@pytest.mark.parametrize('interface_t0_s', [1000.0, 1_790_000_000.0, 1_790_000_000.0 + 86400])
def test_a_map_becomes_active_on_the_windows_clock_however_skewed_the_node_clock(
        db, default, interface_t0_s):
    # The interface's clock (frame capture times: hardware timestamps since the device
    # started, or UTC a day ahead) is not the node's. The agent and the cruncher compare a
    # window's start with the active map's stamp: both must be on the windows' clock.
    from tspace_ros.bridge.core import Now
    node_now = Now(1_795_000_000_000_000_000, 5.0)
    core = make_core(db, default)
    before, _ = feed(core, vehicle_frames(db, 2.0, t0=interface_t0_s))
    vcu = VcuMapReceiver(db, default)
    transfer = core.begin_flash(action_map(default, 3, -0.5), 3, 4)
    acks = []
    for frame in transfer.frames:
        acks += vcu.feed(frame, now_s=interface_t0_s + 2.0)
    for ack in acks:   # captured by the interface when the VCU answered
        ack.timestamp = interface_t0_s + 2.0
    core.commit_sent(0.0)
    _, results = feed(core, acks)
    assert results[0].success
    since = core.active_since_ns(node_now)
    assert since == pytest.approx((interface_t0_s + 2.0) * 1e9, abs=1e6)
    after, _ = feed(core, vehicle_frames(db, 4.0, t0=interface_t0_s + 2.02))
    assert before and after
    assert all(w.window.start_ns < since for w in before)   # began under the old map
    # Of the later windows only one straddling the flash began before it; the rest are
    # wholly under the new map: the agent answers them.
    assert sum(w.window.start_ns < since for w in after) <= 1
    assert sum(w.window.start_ns >= since for w in after) >= len(after) - 1 >= 1
    # A cloud link's windows are on the node clock (UTC from the TBox, polled late).
    core.window_clock = 'node'
    assert core.active_since_ns(node_now) == node_now.node_ns
