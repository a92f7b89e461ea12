"""The simulated van on its CAN bus: frames, stamps, rates, and torque maps flashed over CAN."""

import numpy as np
import pytest

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.decoder import capture_time_ns, FrameDecoder
from tspace_ros.can.frames import VcuState
from tspace_ros.can.transfer import (decode_ack, TORQUE_RESOLUTION_NM, TorqueMapSender,
                                     TransferStatus)
from tspace_ros.torque_map import SafetyGate
from tspace_ros.vehicle import DriveCycle, load_vehicle_parameters, VehicleSimulation
from tspace_ros.vehicle.can_vehicle import AMBIENT_C, CanVehicle, SUPPLY_VOLTAGE_V

PARAMS = load_vehicle_parameters()
DEFAULT_MAP = PARAMS.load_default_map()
START_NS = 1_795_000_000_123_456_789  # not a whole second: stamps must keep the ns
DB = load_dbc()
# Half the DBC resolution of every decoded signal (physical units; pedal and SoC in %).
HALF_LSB = {'VehicleSpeed': 0.005, 'AccelPedalPosition': 0.005, 'BrakePressure': 0.005,
            'BatteryCurrent': 0.05, 'BatteryVoltage': 0.01, 'StateOfCharge': 0.005,
            'MotorTorque': 0.125, 'MotorSpeed': 0.5}
SIGNAL_OF = {'VehicleSpeed': ('speed_kph', 1.0), 'AccelPedalPosition': ('pedal', 100.0),
             'BrakePressure': ('brake_bar', 1.0), 'BatteryCurrent': ('current_a', 1.0),
             'BatteryVoltage': ('voltage_v', 1.0), 'StateOfCharge': ('soc', 100.0),
             'MotorTorque': ('motor_torque_nm', 1.0), 'MotorSpeed': ('motor_speed_rpm', 1.0)}


def vehicle(cycle='wltc3b', **kwargs):
    """Return a CanVehicle on the sim van at t = 0."""
    return CanVehicle(VehicleSimulation(PARAMS, cycle, default_map=DEFAULT_MAP),
                      DB, START_NS, **kwargs)


def decoded(frames):
    """Return [(name, signals, frame)] for frames (every one must decode)."""
    decoder = FrameDecoder(DB)
    result = []
    for frame in frames:
        named = decoder.decode_with_name(frame)
        assert named is not None, decoder.stats.last_rejection
        result.append((*named, frame))
    return result


def stamp_ns(t_s):
    """Return the UTC ns of simulated time t_s."""
    return START_NS + round(t_s * 1e9)


def lowered(rows, by_nm, version):
    """Return the default map with rows lowered by by_nm."""
    table = np.array(DEFAULT_MAP.torque_nm)
    table[rows] -= by_nm
    return DEFAULT_MAP.with_torque(table, policy_version=version)


def test_frames_decode_to_the_simulation_samples_stamped_start_plus_t():
    reference = VehicleSimulation(PARAMS, 'wltc3b', default_map=DEFAULT_MAP).advance(30.0)
    van = vehicle()
    frames = []
    for _ in range(30):
        frames += van.advance(1.0)
    assert van.t_s == pytest.approx(30.0) and van.utc_ns == stamp_ns(30.0)
    # python-can stamps are float s (0.24 us resolution at this epoch): compare in us.
    by_time = {}
    for name, signals, frame in decoded(frames):
        by_time.setdefault(round(capture_time_ns(frame) / 1000), {}).update(signals)
    assert len(reference) == 1500 and max(s.speed_kph for s in reference) > 10.0
    for sample in reference:
        signals = by_time[round(stamp_ns(sample.t_s) / 1000)]
        for signal, (field, scale) in SIGNAL_OF.items():
            assert signals[signal] == pytest.approx(getattr(sample, field) * scale,
                                                    abs=HALF_LSB[signal] + 1e-9), signal
    stamps = [frame.timestamp for frame in frames]
    assert stamps == sorted(stamps)
    assert abs(capture_time_ns(frames[0]) - stamp_ns(0.02)) < 1000
    assert abs(capture_time_ns(frames[-1]) - stamp_ns(30.0)) < 1000


def test_status_and_diagnostics_rates_counter_and_time_order():
    van = vehicle()
    frames = []
    while van.t_s < 10.0 - 1e-9:  # chunks that do not line up with any period
        frames += van.advance(min(0.37, 10.0 - van.t_s))
    rows = decoded(frames)
    names = [name for name, _, _ in rows]
    assert names.count('VehicleDynamics') == names.count('MotorStatus') == 500
    status = [(s, f) for name, s, f in rows if name == 'VcuStatus']
    diagnostics = [(s, f) for name, s, f in rows if name == 'VcuDiagnostics']
    assert len(status) == 100 and len(diagnostics) == 10
    for i, (signals, frame) in enumerate(status):
        assert abs(capture_time_ns(frame) - stamp_ns(0.1 * (i + 1))) < 1000
        assert signals['VcuAliveCounter'] == i % 16
        assert signals['VcuState'] == VcuState.DRIVE and signals['ActiveMapVersion'] == 0
        assert not any(v for k, v in signals.items() if k.startswith('Fault'))
    for i, (signals, frame) in enumerate(diagnostics):
        assert abs(capture_time_ns(frame) - stamp_ns(i + 1.0)) < 1000
        assert signals['SupplyVoltage12V'] == pytest.approx(SUPPLY_VOLTAGE_V, abs=0.05)
        for key in ('MotorTemperature', 'InverterTemperature', 'BatteryTemperature'):
            assert AMBIENT_C - 1 <= signals[key] <= AMBIENT_C + 40
    stamps = [frame.timestamp for frame in frames]
    assert stamps == sorted(stamps)
    # At one instant: drive signals, then status, then diagnostics.
    assert names[-5:] == ['VehicleDynamics', 'BatteryStatus', 'MotorStatus', 'VcuStatus',
                          'VcuDiagnostics']


def test_temperatures_rise_with_driving_losses():
    van = vehicle()
    van.advance(300.0)
    assert van.motor_thermal.temperature_c > AMBIENT_C + 1.0
    assert van.inverter_thermal.temperature_c > AMBIENT_C + 1.0
    assert AMBIENT_C < van.battery_thermal.temperature_c < AMBIENT_C + 5.0


def test_cycle_end_reports_ready_and_metrics():
    short = DriveCycle.from_arrays([0.0, 2.0, 4.0], [0.0, 10.0, 0.0])
    van = vehicle(short)
    states = [s['VcuState'] for name, s, _ in decoded(van.advance(5.0)) if name == 'VcuStatus']
    assert van.finished and van.metrics.duration_s == pytest.approx(5.0)
    assert states[:39] == [VcuState.DRIVE] * 39 and set(states[39:]) == {VcuState.READY}


def test_flash_within_the_gate_is_accepted_and_the_vcu_drives_with_it():
    van = vehicle()
    van.advance(2.0)
    proposed = lowered(slice(3, 7), 100.0, version=5)
    assert SafetyGate(DEFAULT_MAP).check(proposed, van.active_map, 3, 4).ok
    sender = TorqueMapSender(DB)
    transfer = sender.prepare(proposed, 3, 4, transfer_id=1, map_version=5)
    (ack,) = van.receive(transfer.frames, van.t_s)
    sender.commit_sent(0.0)
    outcome = sender.on_frame(ack)
    assert outcome.status == TransferStatus.ACCEPTED, van.receiver.last_message
    assert outcome.active_map_version == 5 and van.active_version == 5
    assert abs(capture_time_ns(ack) - stamp_ns(2.0)) < 1000
    vcu = van.sim.vcu
    assert vcu.active_map is van.active_map and vcu.map_version == 5
    np.testing.assert_array_equal(vcu.active_map.torque_nm, transfer.flashed_map.torque_nm)
    speed = float(DEFAULT_MAP.speed_breakpoints_kph[4])
    assert vcu.map_torque_nm(speed, 1.0) == transfer.flashed_map.torque_nm[4, -1]
    versions = [s['ActiveMapVersion'] for name, s, _ in decoded(van.advance(0.5))
                if name == 'VcuStatus']
    assert versions == [5] * 5


def test_the_vcu_bounds_are_exact_and_the_gate_quantizes_inside_them():
    # Rounded to the nearest bus step, the default map lands up to 0.25 Nm above itself
    # (the upper limit): the VCU refuses that. Quantized by the gate, it is accepted.
    van = vehicle()
    nearest = TorqueMapSender(DB).prepare(DEFAULT_MAP, 0, 14, transfer_id=2, map_version=1)
    (ack,) = van.receive(nearest.frames)
    assert decode_ack(DB, ack).status == TransferStatus.OUT_OF_BOUNDS
    assert 'above the upper limit' in van.receiver.last_message
    gate = SafetyGate(DEFAULT_MAP, resolution_nm=TORQUE_RESOLUTION_NM)
    inside = DEFAULT_MAP.with_torque(gate.quantize(DEFAULT_MAP.torque_nm, slice(0, 14)), 1)
    assert not np.array_equal(inside.torque_nm, DEFAULT_MAP.torque_nm)
    transfer = TorqueMapSender(DB).prepare(inside, 0, 14, transfer_id=3, map_version=1)
    (ack,) = van.receive(transfer.frames)
    assert decode_ack(DB, ack).status == TransferStatus.ACCEPTED, van.receiver.last_message


@pytest.mark.parametrize('rows, change_nm, where', [
    (slice(3, 7), -300.0, 'below the lower limit'),   # more than the 250 Nm budget
    (slice(10, 14), 10.0, 'above the upper limit'),   # above the default (upper_bound 1)
])
def test_out_of_bounds_map_is_refused_and_the_vcu_keeps_its_map(rows, change_nm, where):
    van = vehicle()
    van.advance(1.0)
    proposed = lowered(rows, -change_nm, version=9)
    transfer = TorqueMapSender(DB).prepare(proposed, rows.start, 4, transfer_id=3,
                                           map_version=9)
    (ack,) = van.receive(transfer.frames)
    outcome = decode_ack(DB, ack)
    assert outcome.status == TransferStatus.OUT_OF_BOUNDS
    assert outcome.active_map_version == 0 and van.active_version == 0
    assert van.sim.vcu.active_map is DEFAULT_MAP and van.sim.vcu.map_changes == 0
    assert where in van.receiver.last_message and '68 values' in van.receiver.last_message


def test_open_transfer_reports_map_update_then_times_out_in_simulated_time():
    van = vehicle(transfer_timeout_s=1.0)
    transfer = TorqueMapSender(DB).prepare(lowered(slice(0, 4), 50.0, 2), 0, 4, 4, 2)
    assert van.receive(transfer.segment_frames) == []
    assert van.state == VcuState.MAP_UPDATE
    states = [s['VcuState'] for name, s, _ in decoded(van.advance(0.5)) if name == 'VcuStatus']
    assert set(states) == {VcuState.MAP_UPDATE}
    assert van.poll() == []
    van.advance(0.6)
    (ack,) = van.poll()
    assert decode_ack(DB, ack).status == TransferStatus.TIMED_OUT
    assert abs(capture_time_ns(ack) - stamp_ns(1.1)) < 1000
    assert van.state == VcuState.DRIVE and van.acks_sent == 1


def test_frames_other_than_transfers_are_ignored_and_bad_arguments_refused():
    van = vehicle()
    frames = van.advance(0.1)
    assert van.receive(frames) == [] and van.frames_received == len(frames)
    with pytest.raises(ValueError, match='start_utc_ns'):
        CanVehicle(VehicleSimulation(PARAMS), DB, -1)
    with pytest.raises(ValueError, match='status_rate_hz'):
        CanVehicle(VehicleSimulation(PARAMS), DB, 0, status_rate_hz=0.0)
    with pytest.raises(ValueError, match='torque_budget_nm'):
        CanVehicle(VehicleSimulation(PARAMS), DB, 0, torque_budget_nm=0.0)
