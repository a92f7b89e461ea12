"""VCU: map interpolation, gear and envelope limiting, map changes; the default map."""

import math
import random

import numpy as np
import pytest

from tspace_ros.torque_map import (DEFAULT_PEDAL_BREAKPOINTS, DEFAULT_SPEED_BREAKPOINTS_KPH,
                                   TorqueMap, TorqueMapError)
from tspace_ros.vehicle import Driveline, load_vehicle_parameters, Motor, Vcu
from tspace_ros.vehicle.default_map import design_default_map, LIFT_OFF_REGEN_NM

PARAMS = load_vehicle_parameters()
DEFAULT_MAP = PARAMS.load_default_map()
RATIO, EFFICIENCY = PARAMS.driveline.reduction_ratio, PARAMS.driveline.gear_efficiency


def make_vcu(torque_map=DEFAULT_MAP):
    """Return a VCU for the sim van with ``torque_map`` as its default."""
    return Vcu(torque_map, Motor(PARAMS.motor), Driveline(PARAMS.driveline))


def uniform_map(torque_nm):
    """Return a map with the default breakpoints and one torque everywhere."""
    return DEFAULT_MAP.with_torque(np.full(DEFAULT_MAP.shape, float(torque_nm)), 7)


def motor_rad_s(speed_kph):
    """Return the motor speed, rad/s, at a vehicle speed."""
    return speed_kph / 3.6 / PARAMS.body.wheel_radius_m * RATIO


def test_interpolation_is_the_torque_maps_bilinear_one():
    """The VCU's fast interpolation equals TorqueMap.torque, inside and outside the table."""
    rng = random.Random(3)
    table = np.array(DEFAULT_MAP.torque_nm) + np.arange(17) * 7.0 - np.arange(14)[:, None] * 11
    vcu = make_vcu(DEFAULT_MAP.with_torque(table))
    points = [(rng.uniform(-10, 140), rng.uniform(-0.1, 1.1)) for _ in range(500)]
    points += [(s, p) for s in DEFAULT_SPEED_BREAKPOINTS_KPH for p in DEFAULT_PEDAL_BREAKPOINTS]
    for speed, pedal in points:
        assert vcu.map_torque_nm(speed, pedal) == pytest.approx(
            vcu.active_map.torque(speed, pedal), abs=1e-9)
    row = vcu.map_row_nm(33.0)
    assert row == pytest.approx([vcu.active_map.torque(33.0, p)
                                 for p in DEFAULT_PEDAL_BREAKPOINTS])


def test_motor_torque_is_map_torque_through_the_reduction():
    """Traction divides by ratio x efficiency, regeneration multiplies by efficiency / ratio."""
    vcu = make_vcu()
    speed = 30.0
    for pedal in (0.0, 0.05, 0.3, 0.6):
        axle = vcu.map_torque_nm(speed, pedal)
        expected = axle / (RATIO * EFFICIENCY) if axle >= 0 else axle * EFFICIENCY / RATIO
        assert vcu.motor_torque_nm(pedal, speed, motor_rad_s(speed)) == pytest.approx(expected)
    assert vcu.map_torque_nm(30.0, 0.0) == pytest.approx(-LIFT_OFF_REGEN_NM)


def test_envelope_limits_what_the_map_asks():
    """A map beyond the motor is clipped to peak torque, peak power and the regen limits."""
    motor = PARAMS.motor
    strong = make_vcu()
    strong.set_map(uniform_map(20000.0))
    assert strong.motor_torque_nm(1.0, 20.0, motor_rad_s(20.0)) == motor.peak_torque_nm
    w = motor_rad_s(100.0)
    assert strong.motor_torque_nm(1.0, 100.0, w) * w == pytest.approx(motor.peak_power_w)
    assert strong.motor_torque_nm(1.0, 160.0, motor_rad_s(160.0)) == 0.0  # above max speed
    strong.set_map(uniform_map(-20000.0))
    assert strong.motor_torque_nm(0.0, 20.0, motor_rad_s(20.0)) == -motor.regen_peak_torque_nm
    assert strong.motor_torque_nm(0.0, 100.0, w) * w == pytest.approx(-motor.regen_peak_power_w)


def test_set_map_reset_and_version():
    """set_map activates a map with the same breakpoints; reset returns to the default."""
    vcu = make_vcu()
    assert vcu.map_version == 0 and vcu.active_map is vcu.default_map
    vcu.set_map(uniform_map(100.0))
    assert vcu.map_version == 7 and vcu.map_torque_nm(55.0, 0.5) == pytest.approx(100.0)
    vcu.reset_to_default()
    assert vcu.map_version == 0
    assert vcu.map_torque_nm(30.0, 0.0) == pytest.approx(-LIFT_OFF_REGEN_NM)
    assert vcu.map_changes == 2
    other = TorqueMap((0.0, 60.0, 120.0), (0.0, 1.0), [[0, 1], [0, 1], [0, 1]])
    with pytest.raises(TorqueMapError, match='breakpoints'):
        vcu.set_map(other)
    with pytest.raises(TorqueMapError, match='TorqueMap'):
        vcu.set_map(DEFAULT_MAP.to_dict())
    assert vcu.map_version == 0


def test_pedal_for_torque_inverts_the_map():
    """The driver's inversion finds the pedal that gives a torque; 0 and 1 at the ends."""
    vcu = make_vcu()
    rng = random.Random(5)
    for _ in range(200):
        speed = rng.uniform(0, 130)
        row = vcu.map_row_nm(speed)
        torque = rng.uniform(row[0] + 1, row[-1] - 1)
        pedal, lift_off = vcu.pedal_for_torque(speed, torque)
        assert lift_off == pytest.approx(row[0])
        assert vcu.map_torque_nm(speed, pedal) == pytest.approx(torque, abs=1e-6)
    assert vcu.pedal_for_torque(50.0, -5000.0)[0] == 0.0
    assert vcu.pedal_for_torque(50.0, 1e5)[0] == 1.0


def test_default_map_file_is_the_designed_map_and_fits_the_envelope():
    """The shipped map is 14 x 17, spans -800..4400 Nm and stays inside the envelope."""
    assert DEFAULT_MAP.to_dict() == design_default_map(PARAMS).to_dict()
    assert DEFAULT_MAP.shape == (14, 17)
    assert DEFAULT_MAP.speed_breakpoints_kph.tolist() == list(DEFAULT_SPEED_BREAKPOINTS_KPH)
    assert DEFAULT_MAP.pedal_breakpoints.tolist() == list(DEFAULT_PEDAL_BREAKPOINTS)
    assert DEFAULT_MAP.torque_nm.min() == pytest.approx(-LIFT_OFF_REGEN_NM)
    assert DEFAULT_MAP.torque_nm.max() == pytest.approx(4400.0, abs=5.0)
    assert np.all(np.diff(DEFAULT_MAP.torque_nm, axis=1) >= 0)  # more pedal, more torque
    vcu = make_vcu()
    for speed in DEFAULT_SPEED_BREAKPOINTS_KPH:
        for pedal in DEFAULT_PEDAL_BREAKPOINTS:
            axle = DEFAULT_MAP.torque(speed, pedal)
            unclipped = axle / (RATIO * EFFICIENCY) if axle >= 0 else axle * EFFICIENCY / RATIO
            clipped = vcu.motor_torque_nm(pedal, speed, motor_rad_s(speed))
            assert math.isclose(clipped, unclipped, abs_tol=0.01), (speed, pedal)
