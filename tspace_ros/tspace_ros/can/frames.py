"""
Encoders of the frames the simulated vehicle sends: drive signals, VCU status, diagnostics.

Plain keys in SI-like units of our own (km/h, pedal and state of charge as
fractions 0..1, bar, A, V, Nm, rpm) are converted once here to the bus units
of the DBC (pedal and state of charge in percent). All bit packing is done by
cantools. Measured values outside a signal's DBC range saturate at its limits
(as a real ECU's signal would); non-finite values raise ValueError.
"""

from enum import IntEnum
import math
from typing import Iterable, List, Mapping

import can

from tspace_ros.can.dbc import (Database, MSG_BATTERY_STATUS, MSG_MOTOR_STATUS,
                                MSG_VCU_DIAGNOSTICS, MSG_VCU_STATUS, MSG_VEHICLE_DYNAMICS)

# The keys of a vehicle sample, with their units.
VEHICLE_SAMPLE_KEYS = {
    'speed_kph': 'km/h', 'pedal': '1', 'brake_bar': 'bar', 'current_a': 'A',
    'voltage_v': 'V', 'soc': '1', 'motor_torque_nm': 'Nm', 'motor_speed_rpm': 'rpm'}

# Our fault names -> VcuStatus fault-bit signals.
VCU_FAULTS = {
    'motor_over_temp': 'FaultMotorOverTemp', 'inverter_over_temp': 'FaultInverterOverTemp',
    'battery_over_temp': 'FaultBatteryOverTemp', 'over_current': 'FaultOverCurrent',
    'pedal_implausible': 'FaultPedalImplausible', 'can_timeout': 'FaultCanTimeout',
    'map_invalid': 'FaultMapInvalid'}


class VcuState(IntEnum):
    """Operating state of the VCU (the DBC's VcuState value table)."""

    INIT = 0
    STANDBY = 1
    READY = 2
    DRIVE = 3
    MAP_UPDATE = 4
    FAULT = 5


def _frame(db: Database, name: str, values: Mapping[str, float], timestamp_s: float,
           saturate: bool) -> can.Message:
    """Encode one message by name with cantools; saturate values at the DBC limits."""
    message = db.get_message_by_name(name)
    if saturate:
        clipped = {}
        for signal in message.signals:
            value = values[signal.name]
            if signal.minimum is not None:
                value = max(value, signal.minimum)
            if signal.maximum is not None:
                value = min(value, signal.maximum)
            clipped[signal.name] = value
        values = clipped
    data = message.encode(values, strict=True)
    return can.Message(timestamp=timestamp_s, arbitration_id=message.frame_id,
                       is_extended_id=message.is_extended_frame, data=data, dlc=len(data))


def _finite(values: Mapping[str, float], keys: Iterable[str]) -> dict:
    """Return float values for keys; ValueError for a missing or non-finite one."""
    result = {}
    for key in keys:
        if key not in values:
            raise ValueError(f'sample lacks {key!r} (needs {sorted(keys)})')
        value = float(values[key])
        if not math.isfinite(value):
            raise ValueError(f'{key} must be finite, got {value}')
        result[key] = value
    return result


def _fraction(name: str, value: float) -> float:
    """Check a fraction 0..1 (a percent value here is a unit error) and return it."""
    if not -1e-9 <= value <= 1.0 + 1e-9:
        raise ValueError(f'{name} is a fraction 0..1, got {value} (percent given?)')
    return value


def encode_vehicle_sample(db: Database, sample: Mapping[str, float],
                          timestamp_s: float) -> List[can.Message]:
    """
    Encode one sample of the drive signals as its three 50 Hz frames.

    ``sample`` holds VEHICLE_SAMPLE_KEYS: speed_kph (km/h), pedal (0..1),
    brake_bar (bar), current_a (A, + = discharge), voltage_v (V), soc (0..1),
    motor_torque_nm (Nm, signed), motor_speed_rpm (rpm, signed). Returns the
    VehicleDynamics, BatteryStatus and MotorStatus frames, stamped timestamp_s
    (s since the Unix epoch, UTC).
    """
    s = _finite(sample, VEHICLE_SAMPLE_KEYS)
    pedal = _fraction('pedal', s['pedal'])
    soc = _fraction('soc', s['soc'])
    return [
        _frame(db, MSG_VEHICLE_DYNAMICS, {
            'VehicleSpeed': s['speed_kph'], 'AccelPedalPosition': 100.0 * pedal,
            'BrakePressure': s['brake_bar']}, timestamp_s, saturate=True),
        _frame(db, MSG_BATTERY_STATUS, {
            'BatteryCurrent': s['current_a'], 'BatteryVoltage': s['voltage_v'],
            'StateOfCharge': 100.0 * soc}, timestamp_s, saturate=True),
        _frame(db, MSG_MOTOR_STATUS, {
            'MotorTorque': s['motor_torque_nm'], 'MotorSpeed': s['motor_speed_rpm']},
            timestamp_s, saturate=True),
    ]


def encode_vcu_status(db: Database, state: int, active_map_version: int, alive_counter: int,
                      faults: Iterable[str] = (), timestamp_s: float = 0.0,
                      map_checksum: int = 0, map_fallback: bool = False) -> can.Message:
    """
    Encode the 10 Hz VcuStatus frame.

    state: a VcuState; active_map_version: 0..2**24-1; alive_counter: taken
    modulo 16; faults: names from VCU_FAULTS that are active; map_checksum: the
    CRC-16 of the whole active map (``whole_map_checksum``); map_fallback: the
    VCU went back to its default map on its own. ValueError for an unknown
    state or fault, or a version out of range.
    """
    faults = set(faults)
    unknown = faults - set(VCU_FAULTS)
    if unknown:
        raise ValueError(f'unknown faults {sorted(unknown)} (known: {sorted(VCU_FAULTS)})')
    values = {'VcuState': int(VcuState(state)), 'VcuAliveCounter': int(alive_counter) % 16,
              'ActiveMapVersion': int(active_map_version),
              'ActiveMapChecksum': int(map_checksum) & 0xFFFF, 'MapFallback': int(map_fallback)}
    values.update({signal: int(name in faults) for name, signal in VCU_FAULTS.items()})
    try:
        return _frame(db, MSG_VCU_STATUS, values, timestamp_s, saturate=False)
    except Exception as error:  # cantools raises EncodeError for out-of-range values
        raise ValueError(f'cannot encode VcuStatus: {error}') from None


def encode_vcu_diagnostics(db: Database, motor_temp_c: float, inverter_temp_c: float,
                           battery_temp_c: float, supply_voltage_v: float,
                           timestamp_s: float = 0.0) -> can.Message:
    """Encode the 1 Hz VcuDiagnostics frame: temperatures (degC) and the 12 V supply (V)."""
    s = _finite({'motor': motor_temp_c, 'inverter': inverter_temp_c,
                 'battery': battery_temp_c, 'supply': supply_voltage_v},
                ('motor', 'inverter', 'battery', 'supply'))
    return _frame(db, MSG_VCU_DIAGNOSTICS, {
        'MotorTemperature': s['motor'], 'InverterTemperature': s['inverter'],
        'BatteryTemperature': s['battery'], 'SupplyVoltage12V': s['supply']},
        timestamp_s, saturate=True)
