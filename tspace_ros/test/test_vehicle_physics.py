"""Simulated van physics: road load, power balance, battery, motor efficiency, grade."""

import math

import pytest

from tspace_ros.vehicle import (Battery, BatteryEmptyError, DriveCycle, Driveline, GradeProfile,
                                load_vehicle_parameters, LongitudinalVehicle, Motor,
                                VehicleSimulation)
from tspace_ros.vehicle.parameters import GRAVITY_M_S2

PARAMS = load_vehicle_parameters()
BODY, GEAR, MOTOR, BATTERY = PARAMS.body, PARAMS.driveline, PARAMS.motor, PARAMS.battery


def equivalent_mass_kg():
    """Return test mass plus wheel and motor inertia reflected to the wheel, kg."""
    rotating = BODY.wheel_inertia_kg_m2 + GEAR.motor_inertia_kg_m2 * GEAR.reduction_ratio ** 2
    return BODY.test_mass_kg + rotating / BODY.wheel_radius_m ** 2


def aero_n_per_m2_s2():
    """Return 0.5 rho c_d A, N / (m/s)^2."""
    return 0.5 * BODY.air_density_kg_m3 * BODY.drag_coefficient * BODY.frontal_area_m2


def test_coast_down_follows_the_road_load_formula():
    """Coasting from 100 km/h matches the closed-form solution of m dv/dt = -(F0 + F2 v^2)."""
    van = LongitudinalVehicle(BODY, GEAR, speed_m_s=100 / 3.6)
    mass = equivalent_mass_kg()
    a = BODY.rolling_resistance_coefficient * BODY.test_mass_kg * GRAVITY_M_S2 / mass
    b = aero_n_per_m2_s2() / mass
    v0 = 100 / 3.6
    phase = math.atan(v0 * math.sqrt(b / a))
    dt = 0.01
    for _ in range(2000):
        van.step(0.0, 0.0, dt)
    expected_20s = math.sqrt(a / b) * math.tan(phase - math.sqrt(a * b) * 20.0)
    assert van.speed_m_s == pytest.approx(expected_20s, rel=5e-4)
    # The initial deceleration is the road load over the equivalent mass (about 0.55 m/s^2).
    fresh = LongitudinalVehicle(BODY, GEAR, speed_m_s=v0)
    fresh.step(0.0, 0.0, 1e-4)
    assert (v0 - fresh.speed_m_s) / 1e-4 == pytest.approx(a + b * v0 * v0, rel=1e-9)
    stop_time = phase / math.sqrt(a * b)
    steps = 2000
    while van.speed_m_s > 0.0:
        van.step(0.0, 0.0, dt)
        steps += 1
    assert steps * dt == pytest.approx(stop_time, abs=0.05)
    assert van.speed_m_s == 0.0  # friction stops the van; it does not roll backwards


def test_constant_speed_power_balance():
    """At a steady 80 km/h the battery delivers road load through gear, motor losses and aux."""
    cycle = DriveCycle.from_arrays([0.0, 40.0, 200.0], [0.0, 80.0, 80.0])
    sim = VehicleSimulation(PARAMS, cycle)
    samples = [s for s in sim.advance(200.0) if s.t_s > 120.0]
    assert all(abs(s.speed_kph - 80.0) < 0.05 for s in samples)
    v = 80 / 3.6
    road_load_n = (BODY.rolling_resistance_coefficient * BODY.test_mass_kg * GRAVITY_M_S2 +
                   aero_n_per_m2_s2() * v * v)
    motor_nm = road_load_n * BODY.wheel_radius_m / (GEAR.reduction_ratio * GEAR.gear_efficiency)
    motor_rad_s = v / BODY.wheel_radius_m * GEAR.reduction_ratio
    losses_w = (MOTOR.copper_loss_w_per_nm2 * motor_nm ** 2 +
                MOTOR.iron_loss_w_s_per_rad * motor_rad_s +
                MOTOR.windage_loss_w_s3_per_rad3 * motor_rad_s ** 3 + MOTOR.constant_loss_w)
    expected_w = motor_nm * motor_rad_s + losses_w + BATTERY.auxiliary_power_w
    measured_w = sum(s.current_a * s.voltage_v for s in samples) / len(samples)
    assert measured_w == pytest.approx(expected_w, rel=2e-3)
    assert sum(s.motor_torque_nm for s in samples) / len(samples) == \
        pytest.approx(motor_nm, rel=2e-3)
    # Wheel power needs about 14 kW here; the drive is efficient at this point.
    assert road_load_n * v / expected_w > 0.85


def test_battery_voltage_sags_under_discharge_and_rises_under_charge():
    """Terminal voltage is OCV - R I; the current solves P = U_ocv I - R I^2."""
    battery = Battery(BATTERY, soc=0.5)
    ocv = battery.open_circuit_voltage_v()
    assert ocv == pytest.approx(BATTERY.cells_in_series * 3.73)  # table point at SOC 0.5
    expected_current = battery.current_for_power_a(60000.0)
    current, voltage = battery.step(60000.0, 1.0)
    assert current == expected_current
    assert current > 60000.0 / ocv and voltage < ocv - 5.0
    assert current * voltage == pytest.approx(60000.0, rel=1e-12)
    assert voltage == pytest.approx(ocv - BATTERY.internal_resistance_ohm * current)
    assert battery.soc == pytest.approx(0.5 - current / 3600.0 / BATTERY.capacity_ah)
    soc = battery.soc
    current, voltage = battery.step(-40000.0, 1.0)
    assert current < 0.0 and voltage > battery.open_circuit_voltage_v(soc) + 3.0
    assert current * voltage == pytest.approx(-40000.0, rel=1e-12)
    assert battery.soc > soc


def test_battery_ocv_interpolates_its_table_and_overload_is_an_error():
    """OCV is linear between table points; more than U^2 / 4R cannot be delivered."""
    battery = Battery(BATTERY, soc=0.55)
    n = BATTERY.cells_in_series
    assert battery.open_circuit_voltage_v() == pytest.approx(n * (3.73 + 3.80) / 2)
    assert battery.open_circuit_voltage_v(1.0) == pytest.approx(n * 4.17)
    with pytest.raises(BatteryEmptyError, match='cannot deliver'):
        battery.step(battery.max_discharge_power_w() * 1.01, 0.01)
    empty = Battery(BATTERY, soc=0.0)
    with pytest.raises(BatteryEmptyError, match='empty'):
        empty.step(1000.0, 1.0)


def test_motor_efficiency_depends_on_torque_and_speed():
    """Light load at high speed and peak torque near standstill waste energy."""
    motor = Motor(MOTOR)

    def rad_s(rpm):
        return rpm * 2 * math.pi / 60

    good = motor.efficiency(150.0, rad_s(6700))
    assert 0.95 < good < 0.98
    assert motor.efficiency(10.0, rad_s(9500)) < good - 0.1
    assert motor.efficiency(430.0, rad_s(500)) < good - 0.25
    assert motor.efficiency(-150.0, rad_s(6700)) > 0.95  # regeneration
    # The same 20 kW of shaft power costs different electrical power at two operating points.
    high_torque = motor.electrical_power_w(200.0, 100.0)
    low_torque = motor.electrical_power_w(20.0, 1000.0)
    assert high_torque > 20000 and low_torque > 20000 and abs(high_torque - low_torque) > 500
    assert motor.loss_w(0.0, 0.0) == 0.0


def test_motor_envelope_is_torque_then_power_limited():
    """Peak torque below base speed, constant power above, nothing above max speed."""
    motor = Motor(MOTOR)
    base = MOTOR.peak_power_w / MOTOR.peak_torque_nm
    assert motor.max_torque_nm(0.5 * base) == MOTOR.peak_torque_nm
    assert motor.max_torque_nm(2 * base) * 2 * base == pytest.approx(MOTOR.peak_power_w)
    assert motor.max_torque_nm(MOTOR.max_speed_rpm * math.pi / 30 + 1) == 0.0
    assert motor.min_torque_nm(10.0) == -MOTOR.regen_peak_torque_nm
    assert motor.min_torque_nm(1000.0) * 1000.0 == pytest.approx(-MOTOR.regen_peak_power_w)
    assert motor.limit_torque_nm(1e4, 10.0) == MOTOR.peak_torque_nm
    assert motor.limit_torque_nm(-1e4, 10.0) == -MOTOR.regen_peak_torque_nm
    assert motor.limit_torque_nm(100.0, 10.0) == 100.0


def test_driveline_loses_energy_in_both_directions():
    """Traction delivers less than motor x ratio; regeneration returns less to the motor."""
    gear = Driveline(GEAR)
    assert gear.wheel_torque_nm(100.0) == pytest.approx(100 * 10.5 * 0.975)
    assert gear.wheel_torque_nm(-100.0) == pytest.approx(-100 * 10.5 / 0.975)
    for torque in (-2000.0, 0.0, 3000.0):
        assert gear.wheel_torque_nm(gear.motor_torque_nm(torque)) == pytest.approx(torque)


def test_uphill_costs_energy_and_a_profile_matches_a_constant_grade():
    """A 4 % climb needs more energy than the flat; a flat-valued profile equals a constant."""
    cycle = DriveCycle.from_arrays([0.0, 20.0, 60.0, 80.0], [0.0, 50.0, 50.0, 0.0])
    flat = VehicleSimulation(PARAMS, cycle).run()
    climb = VehicleSimulation(PARAMS, cycle, grade=0.04).run()
    profile = VehicleSimulation(PARAMS, cycle, grade=GradeProfile([0.0, 5000.0], [0.04, 0.04]))
    profiled = profile.run()
    lift_wh = BODY.test_mass_kg * GRAVITY_M_S2 * math.sin(math.atan(0.04)) * \
        climb.distance_km * 1000 / 3600
    assert climb.battery_energy_wh - flat.battery_energy_wh > lift_wh
    assert climb.rms_speed_error_kph < 1.5
    assert profiled.battery_energy_wh == pytest.approx(climb.battery_energy_wh, rel=1e-9)
    downhill = VehicleSimulation(PARAMS, cycle, grade=-0.04).run()
    assert downhill.battery_energy_wh < 0.0  # regenerates more than it uses


def test_van_holds_at_standstill_on_a_grade_unless_driven():
    """With the brakes applied the van neither rolls back nor creeps forward."""
    van = LongitudinalVehicle(BODY, GEAR)
    van.set_grade(0.10)
    for _ in range(100):
        van.step(0.0, 4200.0, 0.01)
    assert van.speed_m_s == 0.0 and van.distance_m == 0.0
    van.set_grade(-0.10)
    van.step(0.0, 0.0, 0.01)
    assert van.speed_m_s > 0.0  # downhill without brakes it rolls forward
    with pytest.raises(ValueError, match='strictly'):
        GradeProfile([0.0, 10.0, 5.0], [0.0, 0.01, 0.02])
