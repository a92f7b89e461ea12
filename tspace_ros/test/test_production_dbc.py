"""
A production-like DBC (written for these tests): the bridge reads a vehicle it does not own.

Multiplexed messages, the same signal name in several messages, big-endian
signals, value tables, an extended id, a CAN FD message of 64 bytes and an
overlapping layout that only loads non-strict. The bridge core windows it with
a vehicle's signal mapping, routes by (message, signal), and with
``flash_protocol none`` gates every goal and writes nothing.
"""

import pathlib

import can
import numpy as np
import pytest

from tspace_ros.can.bridge import CanBridgeCore, FlashError
from tspace_ros.can.dbc import DbcError, load_dbc, load_dbc_with_warnings
from tspace_ros.can.decoder import FrameDecoder
from tspace_ros.can.windowing import MappedSignal, SignalMapping, WindowBuilder
from tspace_ros.task.files import load_default_map
from tspace_ros.torque_map import apply_action
from tspace_ros.torque_map.safety_gate import SafetyGate

DBC = pathlib.Path(__file__).resolve().parent / 'data' / 'production_like.dbc'
T0 = 1_790_000_000.0
MAPPING = SignalMapping([
    MappedSignal('speed', 'km/h', 'ESP_21', 'ESP_v_Signal', minimum=0.0, maximum=300.0),
    MappedSignal('pedal', '1', 'Motor_20', 'AccelPedal', factor=0.01, minimum=0.0,
                 maximum=1.0),
    MappedSignal('brake', 'bar', 'ESP_05', 'BrakePressure', minimum=0.0, maximum=300.0),
    MappedSignal('current', 'A', 'BMS_FD', 'PackCurrent'),
    MappedSignal('voltage', 'V', 'BMS_FD', 'PackVoltage'),
    MappedSignal('motor_counter', '1', 'Motor_20', 'Counter'),
])


def _db():
    return load_dbc(DBC, strict=False)


def _frames(db, t, k):
    """Return one cycle of the vehicle's frames at time t (cycle k)."""
    def frame(name, values, **kwargs):
        message = db.get_message_by_name(name)
        return can.Message(timestamp=t, arbitration_id=message.frame_id,
                           is_extended_id=message.is_extended_frame, is_fd=message.is_fd,
                           data=message.encode(values), **kwargs)
    mux = k % 2
    motor = {'MuxId': mux, 'Counter': k % 16, 'Checksum': 0xAA}
    motor.update({'AccelPedal': 40.0} if mux == 0 else {'EngineTemp': 60})
    return [frame('ESP_21', {'ESP_v_Signal': 50.0 + 0.01 * k, 'Checksum': 0x55,
                             'Counter': 15 - k % 16}),
            frame('Motor_20', motor),
            frame('ESP_05', {'BrakePressure': 12.5, 'GearPosition': 'D'}),
            frame('BMS_FD', {'PackCurrent': -42.5, 'PackVoltage': 398.0,
                             'CellVoltageMax': 4.1}, bitrate_switch=True)]


def test_strict_loading_names_the_file_and_the_fix():
    with pytest.raises(DbcError) as raised:
        load_dbc(DBC)
    assert str(DBC) in str(raised.value) and 'overlapping' in str(raised.value)
    assert 'dbc_strict' in str(raised.value)
    db, warnings = load_dbc_with_warnings(DBC, strict=False)
    assert {m.name for m in db.messages} >= {'ESP_21', 'Motor_20', 'ESP_05', 'BMS_FD'}
    assert isinstance(warnings, list)
    with pytest.raises(DbcError, match='does not exist'):
        load_dbc(DBC.with_name('missing.dbc'))


def test_every_kind_of_frame_decodes_and_routes_by_message_and_signal():
    db = _db()
    MAPPING.check_against(db)
    MAPPING.check_task()
    decoder = FrameDecoder(db)
    builder = WindowBuilder(MAPPING, sample_rate_hz=10.0, samples_per_window=5)
    windows = []
    for k in range(40):
        for frame in _frames(db, T0 + k * 0.05, k):
            decoded = decoder.decode(frame)
            assert decoded is not None, decoder.stats.last_rejection
            windows += builder.feed(round(frame.timestamp * 1e9), decoded)
    assert decoder.stats.rejected == 0 and len(windows) >= 2
    window = windows[-1].window
    assert np.allclose(window.signal('speed'), 50.0, atol=0.5)  # big-endian, 0.01 km/h
    assert np.allclose(window.signal('pedal'), 0.4)  # multiplexed (m0 only), % to 1
    assert np.allclose(window.signal('brake'), 12.5)  # extended id
    assert np.allclose(window.signal('current'), -42.5)  # CAN FD, 64 bytes, signed
    assert np.allclose(window.signal('voltage'), 398.0)
    # Counter is in ESP_21 (counting down) and Motor_20 (counting up): only Motor_20's.
    counter = np.concatenate([w.window.signal('motor_counter') for w in windows])
    steps = np.diff(counter)
    assert np.all((steps > 0) | (steps < -10)), counter  # up, or the 15 -> 0 wrap
    assert windows[-1].window.samples.dtype == np.float32


def test_a_mapping_without_a_reward_signal_is_a_clear_error():
    partial = SignalMapping([s for s in MAPPING.signals if s.name != 'current'])
    with pytest.raises(ValueError, match=r"no 'current' \(A, reward\)"):
        partial.check_task()
    wrong_unit = SignalMapping([MappedSignal('speed', 'm/s', 'ESP_21', 'ESP_v_Signal')] +
                               [s for s in MAPPING.signals if s.name != 'speed'])
    with pytest.raises(ValueError, match="'speed' is in 'm/s', the task needs 'km/h'"):
        wrong_unit.check_task()


def test_read_only_bridge_gates_goals_and_writes_nothing():
    db = _db()
    default = load_default_map()
    gate = SafetyGate(default, 250.0, 1.0, 4)
    windows = WindowBuilder(MAPPING, sample_rate_hz=10.0, samples_per_window=5)
    with pytest.raises(ValueError, match='MapSegment, MapCommit, MapAck.*flash_protocol none'):
        CanBridgeCore(db, default, gate, windows, flash_protocol='transfer')
    core = CanBridgeCore(db, default, gate, windows, flash_protocol='none')
    for k in range(40):
        for frame in _frames(db, T0 + k * 0.05, k):
            core.on_frame(frame)
    assert core.windows.stats.windows >= 2
    good = apply_action(default, default, np.full((4, default.shape[1]), -0.5), 2,
                        policy_version=3)
    result = core.begin_flash(good, 2, 4)
    assert result.error == FlashError.NO_FLASH_PROTOCOL and result.active_map is core.active_map
    bad = default.with_torque(default.torque_nm - 1000.0, 4, 1)  # the gate still rules first
    assert core.begin_flash(bad, 2, 4).error == FlashError.REJECTED_BY_SAFETY_GATE
    assert core.begin_restore_default() is None and core.heartbeat_frame(1.0, 1.0) is None
    assert core.active_is_default and not core.flash_pending


def test_the_bridge_node_says_why_configure_failed_and_runs_read_only(tmp_path):
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from rclpy.action import ActionClient
    from ros_test_support import NodeProcess, RosContext, spin_until
    from test_window_source_lifecycle import LifecycleDriver
    from tspace_interfaces.action import FlashTorqueMap
    from tspace_ros.nodes.messages import torque_map_to_msg

    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text(yaml.safe_dump([
        {'name': s.name, 'unit': s.unit, 'message': s.message, 'signal': s.signal,
         'factor': s.factor} for s in MAPPING.signals]))
    common = ['-r', '__ns:=/prod_van', '-p', f'dbc_file:={DBC}',
              '-p', f'signal_mapping_file:={mapping}', '-p', 'can_interface:=ros_topic']
    with RosContext() as ros:
        diagnostics = []
        probe = ros.node('prod_probe')
        probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 100)
        with NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / 'strict.log',
                         common) as process:
            node = LifecycleDriver(ros, 'prod_van/can_bridge')
            assert not node.transition(Transition.TRANSITION_CONFIGURE)

            def failure():
                return [kv.value for d in diagnostics for st in d.status
                        for kv in st.values if kv.key == 'configure_failure']
            assert spin_until(ros.executor, failure, 10.0), process.output()
            assert 'overlapping' in failure()[0] and 'dbc_strict' in failure()[0]
        assert 'configure failed: DbcError' in process.output()

        with NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / 'read_only.log', common + [
                '-p', 'dbc_strict:=false', '-p', 'flash_protocol:=none']) as process:
            node = LifecycleDriver(ros, 'prod_van/can_bridge')
            assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
            assert node.transition(Transition.TRANSITION_ACTIVATE), process.output()
            flash = ActionClient(ros.node('prod_flash'), FlashTorqueMap,
                                 '/prod_van/flash_torque_map')
            assert spin_until(ros.executor, flash.server_is_ready, 10.0)
            default = load_default_map()
            proposed = apply_action(default, default, np.full((4, default.shape[1]), -0.5), 2,
                                    policy_version=3)
            goal = flash.send_goal_async(FlashTorqueMap.Goal(
                map=torque_map_to_msg(proposed, 0, 2, 4)))
            assert spin_until(ros.executor, goal.done, 10.0)
            result = goal.result().get_result_async()
            assert spin_until(ros.executor, result.done, 10.0)
            outcome = result.result().result
            assert not outcome.success
            assert outcome.error_code == FlashTorqueMap.Result.ERROR_NO_FLASH_PROTOCOL
            assert 'flash_protocol none' in outcome.message
            assert node.transition(Transition.TRANSITION_DEACTIVATE)
