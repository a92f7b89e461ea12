"""The shipped DBC and the encoders of the simulated vehicle's frames."""

import math

import pytest

from tspace_ros.can import dbc as dbc_module
from tspace_ros.can.dbc import default_dbc_path, load_dbc
from tspace_ros.can.decoder import FrameDecoder
from tspace_ros.can.frames import (encode_vcu_diagnostics, encode_vcu_status,
                                   encode_vehicle_sample, VCU_FAULTS, VcuState)
from tspace_ros.can.transfer import TransferStatus

SAMPLE = {'speed_kph': 53.21, 'pedal': 0.375, 'brake_bar': 0.0, 'current_a': -42.5,
          'voltage_v': 398.76, 'soc': 0.8125, 'motor_torque_nm': -310.25,
          'motor_speed_rpm': -1234.0}


@pytest.fixture(scope='module')
def db():
    """Return the shipped DBC."""
    return load_dbc()


def test_shipped_dbc_has_the_documented_messages_ids_and_periods(db):
    expected = {'VehicleDynamics': (0x100, 20), 'BatteryStatus': (0x110, 20),
                'MotorStatus': (0x120, 20), 'VcuStatus': (0x200, 100),
                'VcuDiagnostics': (0x300, 1000), 'MapSegment': (0x400, None),
                'MapCommit': (0x401, None), 'MapAck': (0x402, None),
                'BridgeHeartbeat': (0x403, 100), 'MapRevert': (0x404, None)}
    found = {m.name: (m.frame_id, m.cycle_time) for m in db.messages}
    assert found == expected
    for message in db.messages:
        assert message.length == 8 and not message.is_extended_frame
        assert not message.is_fd
        assert message.comment, message.name
        for signal in message.signals:
            assert signal.comment, f'{message.name}.{signal.name} has no CM_ comment'


def test_signal_names_are_unique_across_messages(db):
    names = [s.name for m in db.messages for s in m.signals]
    assert len(names) == len(set(names))


def test_value_tables_match_the_python_enums(db):
    state = db.get_message_by_name('VcuStatus').get_signal_by_name('VcuState')
    assert {int(k): str(v) for k, v in state.choices.items()} == \
        {s.value: s.name for s in VcuState}
    ack = db.get_message_by_name('MapAck').get_signal_by_name('AckStatus')
    assert {int(k): str(v) for k, v in ack.choices.items()} == \
        {s.value: s.name for s in TransferStatus if s.value >= 0}  # NO_ACK, LINK_ERROR: ours
    assert {TransferStatus.NO_ACK, TransferStatus.LINK_ERROR} == \
        {s for s in TransferStatus if s.value < 0}


def test_transfer_torque_scale_covers_8000_nm_at_half_nm(db):
    signal = db.get_message_by_name('MapSegment').get_signal_by_name('SegmentTorque0')
    assert signal.scale <= 0.5 and signal.minimum <= -8000 and signal.maximum >= 8000
    assert signal.is_signed


def test_dbc_is_found_in_the_source_tree_and_by_bare_name():
    path = default_dbc_path()
    assert path.is_file() and path.parent.name == 'dbc'
    assert path.parent == dbc_module.dbc_dir()
    assert [m.name for m in load_dbc('tspace_sim_van.dbc').messages] == \
        [m.name for m in load_dbc(path).messages]


def test_vehicle_sample_round_trips_with_pedal_and_soc_in_percent_on_the_bus(db):
    frames = encode_vehicle_sample(db, SAMPLE, timestamp_s=1_790_000_000.25)
    assert [f.arbitration_id for f in frames] == [0x100, 0x110, 0x120]
    assert all(f.timestamp == 1_790_000_000.25 and f.dlc == 8 for f in frames)
    decoder = FrameDecoder(db)
    values = {}
    for frame in frames:
        values.update(decoder.decode(frame))
    assert values['AccelPedalPosition'] == pytest.approx(37.5)
    assert values['StateOfCharge'] == pytest.approx(81.25)
    assert values['VehicleSpeed'] == pytest.approx(53.21, abs=0.005)
    assert values['BatteryCurrent'] == pytest.approx(-42.5, abs=0.05)
    assert values['BatteryVoltage'] == pytest.approx(398.76, abs=0.01)
    assert values['MotorTorque'] == pytest.approx(-310.25)
    assert values['MotorSpeed'] == -1234
    assert values['BrakePressure'] == 0.0


def test_out_of_range_measurements_saturate_at_the_dbc_limits(db):
    sample = dict(SAMPLE, speed_kph=400.0, current_a=-5000.0, brake_bar=-3.0)
    values = {}
    for frame in encode_vehicle_sample(db, sample, 0.0):
        values.update(FrameDecoder(db).decode(frame))
    assert values['VehicleSpeed'] == pytest.approx(327.67)
    assert values['BatteryCurrent'] == pytest.approx(-3276.8)
    assert values['BrakePressure'] == 0.0


@pytest.mark.parametrize('key, value, message', [
    ('speed_kph', math.nan, 'finite'),
    ('voltage_v', math.inf, 'finite'),
    ('pedal', 37.5, 'fraction'),
    ('soc', 81.0, 'fraction'),
])
def test_bad_samples_raise(db, key, value, message):
    with pytest.raises(ValueError, match=message):
        encode_vehicle_sample(db, dict(SAMPLE, **{key: value}), 0.0)
    with pytest.raises(ValueError, match='lacks'):
        encode_vehicle_sample(db, {k: v for k, v in SAMPLE.items() if k != key}, 0.0)


def test_vcu_status_frame_carries_state_version_counter_and_faults(db):
    frame = encode_vcu_status(db, VcuState.DRIVE, active_map_version=123456, alive_counter=17,
                              faults={'over_current', 'map_invalid'}, timestamp_s=5.0)
    assert frame.arbitration_id == 0x200 and frame.timestamp == 5.0
    values = FrameDecoder(db).decode(frame)
    assert values['VcuState'] == VcuState.DRIVE
    assert values['ActiveMapVersion'] == 123456
    assert values['VcuAliveCounter'] == 1  # 17 modulo 16
    active = {name for name, signal in VCU_FAULTS.items() if values[signal]}
    assert active == {'over_current', 'map_invalid'}
    named = FrameDecoder(db, decode_choices=True).decode(frame)
    assert str(named['VcuState']) == 'DRIVE'


def test_vcu_status_rejects_unknown_faults_states_and_versions(db):
    with pytest.raises(ValueError, match='unknown faults'):
        encode_vcu_status(db, VcuState.READY, 0, 0, faults={'flux_capacitor'})
    with pytest.raises(ValueError):
        encode_vcu_status(db, 9, 0, 0)
    with pytest.raises(ValueError, match='VcuStatus'):
        encode_vcu_status(db, VcuState.READY, 2 ** 24, 0)


def test_vcu_diagnostics_frame(db):
    frame = encode_vcu_diagnostics(db, motor_temp_c=85.0, inverter_temp_c=-45.0,
                                   battery_temp_c=31.0, supply_voltage_v=13.8, timestamp_s=2.0)
    values = FrameDecoder(db).decode(frame)
    assert frame.arbitration_id == 0x300
    assert values['MotorTemperature'] == 85 and values['BatteryTemperature'] == 31
    assert values['InverterTemperature'] == -40  # saturated at the DBC's minimum
    assert values['SupplyVoltage12V'] == pytest.approx(13.8)
