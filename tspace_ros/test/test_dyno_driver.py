"""The dyno driver keeps the WLTP band, feels the default map, acts only on what it perceives."""

import copy
import dataclasses

import numpy as np
import pytest

from tspace_ros.vehicle.cycles import drive_cycle, DriveCycle, SpeedTrace
from tspace_ros.vehicle.driver import Driver
from tspace_ros.vehicle.dyno_driver import DynoDriver, ToleranceBand
from tspace_ros.vehicle.parameters import (load_vehicle_parameters, vehicle_config_path,
                                           vehicle_parameters_from_dict, VehicleConfigError)
from tspace_ros.vehicle.simulation import VehicleSimulation
import yaml

PARAMS = load_vehicle_parameters()
DEFAULT = PARAMS.load_default_map()
DATA = yaml.safe_load(vehicle_config_path('sim_van').read_text())
LOW_PHASE = drive_cycle('wltc3b').truncated(589.0)  # WLTC class 3b, low phase
SHORT = drive_cycle('wltc3b').truncated(120.0)


def traction_scaled(factor):
    """Return the default map with every positive (traction) cell times factor."""
    torque = DEFAULT.torque_nm
    return DEFAULT.with_torque(np.where(torque > 0.0, torque * factor, torque))


def simulation(cycle, model, torque_map=None, params=PARAMS):
    """Return a simulation of cycle with the given driver model and active map."""
    sim = VehicleSimulation(params, cycle, default_map=DEFAULT, driver_model=model)
    if torque_map is not None:
        sim.vcu.set_map(torque_map)
    return sim


def driver_on_map(cls, torque_map, cycle):
    """Return a driver of class cls whose VCU has torque_map active, in a fresh simulation."""
    sim = simulation(cycle, 'pi', torque_map)
    return cls(PARAMS.driver, sim.trace, sim.vehicle, sim.vcu, PARAMS.brakes, sim.physics_step_s)


def reference_band_kph(cycle, t, speed_kph=2.0, time_s=1.0):
    """Return the band at t from a dense resampling of the trace (independent of the code)."""
    grid = np.linspace(t - time_s, t + time_s, 2001)
    values = np.interp(grid, cycle.time_s, cycle.speed_kph)
    return values.min() - speed_kph, values.max() + speed_kph


# ---- the tolerance band ---------------------------------------------------------------------

def test_tolerance_band_is_min_and_max_of_the_trace_over_plus_minus_one_second():
    cycle = DriveCycle.from_arrays([0, 1, 2, 3, 4, 5], [0, 0, 10, 20, 20, 5])
    band = ToleranceBand(SpeedTrace(cycle), 2.0, 1.0)
    assert band.limits_kph(2.0) == pytest.approx((-2.0, 22.0))     # samples 1..3: 0..20
    assert band.limits_kph(2.5) == pytest.approx((3.0, 22.0))      # 1.5 s: 5, 3.5 s: 20
    assert band.limits_kph(4.5) == pytest.approx((3.0, 22.0))      # 3.5 s: 20 .. 5 s on: 5
    for t in np.linspace(-1.0, 6.0, 57):
        assert band.limits_kph(t) == pytest.approx(reference_band_kph(cycle, t), abs=1e-9)
    assert band.contains(2.5, 4.0 / 3.6) and not band.contains(2.5, 2.9 / 3.6)
    # A repeating trace wraps: near the end the next lap's start counts.
    repeating = ToleranceBand(SpeedTrace(cycle, repeat=True), 2.0, 1.0)
    assert repeating.limits_kph(5.5) == pytest.approx((-2.0, 14.5))  # 4.5 s: 12.5, 5 s: 0
    for t in np.linspace(0.0, 5.0, 41):  # within the first lap it is the plain band
        low, high = repeating.limits_kph(t)
        if t + 1.0 < 5.0:
            assert (low, high) == pytest.approx(reference_band_kph(cycle, t), abs=1e-9)


# ---- the dyno driver on the cycle -----------------------------------------------------------

def test_dyno_driver_keeps_within_the_wltp_band_on_the_default_map():
    sim = simulation(LOW_PHASE, 'dyno')
    assert isinstance(sim.driver, DynoDriver)
    samples = sim.advance(LOW_PHASE.duration_s)
    outside = sum(not sim.band.contains(s.t_s, s.speed_kph / 3.6) for s in samples)
    metrics = sim.metrics
    assert metrics.outside_band_s == pytest.approx(outside / sim.signal_rate_hz)
    assert metrics.outside_band_s <= 0.02 * metrics.duration_s
    # Independently of ToleranceBand, on a 1 s grid:
    for s in samples[::50]:
        low, high = reference_band_kph(LOW_PHASE, s.t_s)
        assert low - 0.05 <= s.speed_kph <= high + 0.05, s
    assert metrics.rms_speed_error_kph < 1.0
    assert 0.98 < metrics.distance_km / LOW_PHASE.distance_km < 1.02


def test_a_traction_side_map_change_changes_acceleration_and_energy_with_dyno_not_with_pi():
    def figures(model, factor):
        sim = simulation(LOW_PHASE, model, traction_scaled(factor))
        speeds = np.array([s.speed_kph for s in sim.advance(LOW_PHASE.duration_s)])
        return sim.metrics.energy_per_km_wh, speeds

    pi_default, pi_speeds = figures('pi', 1.0)
    pi_sharp, pi_sharp_speeds = figures('pi', 1.2)
    dyno_default, dyno_speeds = figures('dyno', 1.0)
    dyno_sharp, dyno_sharp_speeds = figures('dyno', 1.2)
    assert abs(pi_sharp / pi_default - 1.0) < 1e-4
    assert np.max(np.abs(pi_sharp_speeds - pi_speeds)) < 0.05
    assert dyno_sharp / dyno_default - 1.0 > 0.005  # sharper: ahead of the trace, more energy
    assert np.max(dyno_sharp_speeds - dyno_speeds) > 1.0


def test_dyno_driver_presses_by_the_default_feel_not_by_inverting_the_current_map():
    # Same trace, same speeds: the dyno driver's pedal does not depend on the active map,
    # the pi driver's does (it inverts it: less pedal on a sharper map).
    sharp = traction_scaled(1.3)
    dyno_default, dyno_sharp = (driver_on_map(DynoDriver, m, SHORT) for m in (DEFAULT, sharp))
    pi_default, pi_sharp = (driver_on_map(Driver, m, SHORT) for m in (DEFAULT, sharp))
    speeds = np.interp(np.arange(1100, 2500) * 0.01, SHORT.time_s, SHORT.speed_kph) / 3.6
    for k, v in enumerate(speeds, start=1100):
        t = k * 0.01
        assert dyno_default.update(t, v, 0.01) == dyno_sharp.update(t, v, 0.01)
        pi_default.update(t, v, 0.01)
        pi_sharp.update(t, v, 0.01)
    assert dyno_default.pedal > 0.1
    assert pi_sharp.pedal < pi_default.pedal - 0.01
    # In the van: one second into the first acceleration the sharper map pulls ahead with
    # dyno (more acceleration for the same situation), not with pi.

    def speed_after(model, torque_map, t_s=16.0):
        sim = simulation(SHORT, model, torque_map)
        sim.run(t_s)
        return sim.speed_kph

    assert speed_after('dyno', sharp) > speed_after('dyno', DEFAULT) + 0.3
    assert speed_after('pi', sharp) == pytest.approx(speed_after('pi', DEFAULT), abs=0.02)


# ---- perception ----------------------------------------------------------------------------

def cruise_driver():
    """Return a dyno driver on a steady 50 km/h trace."""
    cycle = DriveCycle.from_arrays([0.0, 100.0], [50.0, 50.0])
    return driver_on_map(DynoDriver, DEFAULT, cycle)


def drive(driver, speeds, t0=0.0, dt=0.01):
    """Feed speeds (m/s) one step each from t0; return the pedal after each."""
    return [driver.update(t0 + k * dt, v, dt)[0] for k, v in enumerate(speeds)]


def test_a_speed_error_below_the_threshold_gets_no_correction():
    target = 50.0 / 3.6
    below = cruise_driver()
    pedals = drive(below, [target - 0.8 / 3.6] * 300)  # 0.8 km/h slow: below 1 km/h
    assert not below.correcting and below.wanted_acceleration_m_s2 == 0.0
    assert below.acceleration_correction_m_s2 == 0.0
    above = cruise_driver()
    drive(above, [target - 1.5 / 3.6] * 300)  # 1.5 km/h slow: acted on
    assert above.correcting and above.wanted_acceleration_m_s2 > 0.2
    assert above.pedal > pedals[-1] + 0.005
    # Hysteresis: once acting, it goes on until within the release threshold.
    drive(above, [target - 0.6 / 3.6] * 100, t0=3.0)
    assert above.correcting
    drive(above, [target - 0.2 / 3.6] * 100, t0=4.0)
    assert not above.correcting


def test_an_acceleration_difference_below_the_jnd_gets_no_correction():
    target = 50.0 / 3.6

    def ramp(acceleration):
        driver = cruise_driver()
        drive(driver, [target - 0.2] * 300)  # settle: 0.72 km/h slow, not acted on
        drive(driver, [target - 0.2 + acceleration * k * 0.01 for k in range(200)], t0=3.0)
        assert abs(target - (target - 0.2 + acceleration * 2.0)) < 0.25  # still unperceived
        return driver

    gentle = ramp(0.05)  # 0.05 m/s^2 more than expected: below the 0.08 m/s^2 JND
    assert gentle.perceived_acceleration_m_s2 == pytest.approx(0.05, abs=0.01)
    assert gentle.acceleration_correction_m_s2 == 0.0 and not gentle.correcting
    felt = ramp(0.2)
    assert felt.perceived_acceleration_m_s2 == pytest.approx(0.2, abs=0.01)
    assert felt.acceleration_correction_m_s2 == pytest.approx(-0.5 * (0.2 - 0.08), abs=0.01)
    assert felt.pedal < gentle.pedal


def test_the_pedal_moves_smoothly_within_its_rate():
    sim = simulation(SHORT, 'dyno')
    pedals = np.array([s.pedal for s in sim.advance(SHORT.duration_s)])
    period = 1.0 / sim.signal_rate_hz
    assert np.max(np.abs(np.diff(pedals))) <= PARAMS.driver.pedal_rate_per_s * period + 1e-9
    assert np.all((pedals >= 0.0) & (pedals <= 1.0))


# ---- selection and validation ---------------------------------------------------------------

def with_driver(**changes):
    """Return the shipped data with driver keys changed."""
    data = copy.deepcopy(DATA)
    data['driver'].update(changes)
    return data


def test_the_model_comes_from_the_driver_section_or_the_keyword():
    params = vehicle_parameters_from_dict(with_driver(model='dyno'))
    assert params.driver.model == 'dyno'
    assert isinstance(VehicleSimulation(params, SHORT, default_map=DEFAULT).driver, DynoDriver)
    assert isinstance(VehicleSimulation(params, SHORT, default_map=DEFAULT,
                                        driver_model='pi').driver, Driver)
    assert PARAMS.driver.model == 'pi'
    assert type(VehicleSimulation(PARAMS, SHORT, default_map=DEFAULT).driver) is Driver


@pytest.mark.parametrize('changes, message', [
    ({'model': 'robot'}, r"driver\.model: expected one of \['pi', 'dyno'\], got 'robot'"),
    ({'model': 3}, r'driver\.model: expected one of'),
    ({'dyno_speed_threshold_kph': -1.0}, r'driver\.dyno_speed_threshold_kph: expected a number'),
    ({'dyno_band_speed_kph': 0.0}, r'driver\.dyno_band_speed_kph: expected a number in \(0'),
    ({'dyno_acceleration_filter_s': float('nan')}, r'driver\.dyno_acceleration_filter_s'),
    ({'dyno_speed_release_kph': 1.5}, r'driver\.dyno_speed_release_kph: expected at most'),
    ({'dyno_speed_threshold_kph': 2.5}, r'driver\.dyno_speed_threshold_kph: expected less'),
    ({'dyno_gain': 1.0}, r"unknown key\(s\) \['dyno_gain'\]"),
])
def test_bad_driver_values_name_the_key(changes, message):
    with pytest.raises(VehicleConfigError, match=message) as error:
        vehicle_parameters_from_dict(with_driver(**changes), source='van.yaml')
    assert isinstance(error.value, ValueError) and 'van.yaml' in str(error.value)


def test_a_bad_model_is_refused_when_building_the_simulation_or_the_parameters():
    with pytest.raises(ValueError, match=r"driver_model: expected one of \['pi', 'dyno'\]"):
        VehicleSimulation(PARAMS, SHORT, default_map=DEFAULT, driver_model='PI')
    with pytest.raises(ValueError, match=r'driver\.model'):
        dataclasses.replace(PARAMS.driver, model='dyn')


# ---- model pi is today's driver --------------------------------------------------------------

# The first 120 s of WLTC 3b with the shipped van and default map, recorded with the driver
# as it was before the dyno model existed (50 Hz samples).
PI_PEDAL_SUM = 792.1182839538651
PI_WEIGHTED_PEDAL_SUM = 1804097.2148337727
PI_BRAKE_SUM = 25511.679189765695
PI_ENERGY_WH = 95.44840337333505
PI_PEDAL_EVERY_250 = [
    0.0, 0.0, 0.398454867877, 0.221028777406, 0.262505972245, 0.276055332697,
    0.142140628772, 0.038913991784, 0.110126897772, 0.115813978003, 0.156981333509,
    0.222589010523, 0.191076273371, 0.4032980155, 0.25373229901, 0.115353321717,
    0.109931941364, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_model_pi_reproduces_the_driver_as_it_was():
    explicit = vehicle_parameters_from_dict(with_driver(model='pi'))
    runs = []
    for sim in (VehicleSimulation(PARAMS, SHORT, default_map=DEFAULT),
                VehicleSimulation(explicit, SHORT, default_map=DEFAULT),
                VehicleSimulation(PARAMS, SHORT, default_map=DEFAULT, driver_model='pi')):
        samples = sim.advance(SHORT.duration_s)
        runs.append(([s.pedal for s in samples], [s.brake_bar for s in samples],
                     sim.metrics.battery_energy_wh))
    assert runs[0] == runs[1] == runs[2]
    pedals, brakes, energy = runs[0]
    assert sum(pedals) == pytest.approx(PI_PEDAL_SUM, rel=1e-12)
    assert sum(i * p for i, p in enumerate(pedals)) == pytest.approx(PI_WEIGHTED_PEDAL_SUM,
                                                                     rel=1e-12)
    assert sum(brakes) == pytest.approx(PI_BRAKE_SUM, rel=1e-12)
    assert energy == pytest.approx(PI_ENERGY_WH, rel=1e-12)
    assert [round(p, 12) for p in pedals[250::250]] == pytest.approx(PI_PEDAL_EVERY_250,
                                                                     abs=2e-12)
