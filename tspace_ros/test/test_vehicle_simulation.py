"""The simulated van on drive cycles: tracking, energy, maps, samples, chunks, determinism."""

import dataclasses
import math

import numpy as np
import pytest

from tspace_ros.torque_map import SafetyGate
from tspace_ros.vehicle import (CYCLE_NAMES, drive_cycle, DriveCycle, DriveCycleError,
                                load_vehicle_parameters, SAMPLE_UNITS, VehicleConfigError,
                                VehicleSample, VehicleSimulation)
from tspace_ros.vehicle.default_map import COAST_PEDAL

PARAMS = load_vehicle_parameters()
DEFAULT_MAP = PARAMS.load_default_map()

# Bounds the driver and the van must meet on WLTC class 3b with the default map: speed
# tracking RMS error and largest error at any physics step (km/h), and battery energy per
# km of a 3.5 t electric van on WLTC (E-Transit: 68 kWh for 317-350 km = 194-215 Wh/km).
WLTC_RMS_ERROR_KPH = 1.5
WLTC_MAX_ERROR_KPH = 6.0
WH_PER_KM = (150.0, 400.0)


@pytest.fixture(scope='module')
def wltc_default():
    """Return the metrics of WLTC 3b with the default map."""
    return VehicleSimulation(PARAMS, 'wltc3b').run()


@pytest.fixture(scope='module')
def wltc_half_map():
    """Return the metrics of WLTC 3b with every torque of the default map halved."""
    half = DEFAULT_MAP.with_torque(DEFAULT_MAP.torque_nm * 0.5, policy_version=1)
    return VehicleSimulation(PARAMS, 'wltc3b', torque_map=half).run()


def test_driver_tracks_wltc_3b_with_plausible_energy(wltc_default):
    """The driver follows WLTC 3b closely and the van uses a van's energy per km."""
    m = wltc_default
    assert m.duration_s == pytest.approx(1800.0)
    assert m.rms_speed_error_kph < WLTC_RMS_ERROR_KPH
    assert m.max_speed_error_kph < WLTC_MAX_ERROR_KPH
    assert m.distance_km == pytest.approx(drive_cycle('wltc3b').distance_km, rel=0.01)
    assert WH_PER_KM[0] < m.energy_per_km_wh < WH_PER_KM[1]
    assert 0.0 < m.regenerated_wh < m.battery_energy_wh
    assert m.soc_end < m.soc_start
    assert m.real_time_factor > 1.0


def test_a_scaled_down_map_changes_pedal_use_and_energy(wltc_default, wltc_half_map):
    """Half the torque per pedal: the driver presses further, regenerates less, uses more."""
    default, half = wltc_default, wltc_half_map
    assert half.rms_speed_error_kph < WLTC_RMS_ERROR_KPH
    assert half.max_speed_error_kph < WLTC_MAX_ERROR_KPH
    # The driver's feed-forward goes through the CURRENT map, so tracking is as good as
    # with the default map (feedback alone would have to make up half the torque).
    assert half.rms_speed_error_kph < 1.1 * default.rms_speed_error_kph
    assert half.mean_pedal > default.mean_pedal + 0.04
    # Lift-off regeneration is halved too, so the friction brakes do more of the braking.
    assert half.regenerated_wh < default.regenerated_wh - 20.0
    assert half.friction_brake_wh > default.friction_brake_wh + 40.0
    assert half.battery_energy_wh > default.battery_energy_wh * 1.005


def test_more_lift_off_regeneration_within_the_gate_saves_energy(wltc_default):
    """What an agent may do (default - budget at low pedal) wins back friction braking."""
    gate = SafetyGate(DEFAULT_MAP)
    torque = DEFAULT_MAP.torque_nm.copy()
    low_pedal = np.asarray(DEFAULT_MAP.pedal_breakpoints) <= COAST_PEDAL
    torque[:, low_pedal] -= gate.torque_budget_nm
    stronger = DEFAULT_MAP.with_torque(torque, policy_version=1)
    assert gate.check_full_map(stronger).ok
    result = VehicleSimulation(PARAMS, 'wltc3b', torque_map=stronger).run()
    assert result.rms_speed_error_kph < WLTC_RMS_ERROR_KPH
    assert result.mean_pedal > wltc_default.mean_pedal  # pressing to hold off the regen
    assert result.regenerated_wh > wltc_default.regenerated_wh + 50.0
    assert result.friction_brake_wh < 0.7 * wltc_default.friction_brake_wh
    assert result.energy_per_km_wh < 0.99 * wltc_default.energy_per_km_wh


def test_samples_have_the_signal_rate_fields_and_units():
    """50 Hz records with every documented field and a unit for each."""
    sim = VehicleSimulation(PARAMS, 'wltc3b')
    samples = sim.advance(30.0)
    assert len(samples) == 1500
    assert [s.t_s for s in samples[:3]] == pytest.approx([0.02, 0.04, 0.06])
    assert samples[-1].t_s == pytest.approx(30.0) and sim.t_s == pytest.approx(30.0)
    assert set(SAMPLE_UNITS) == set(VehicleSample._fields)
    assert samples[0]._asdict().keys() == SAMPLE_UNITS.keys()
    last = samples[-1]
    assert last.target_speed_kph == pytest.approx(drive_cycle('wltc3b').speed_kph[30])
    assert 0.0 <= min(s.pedal for s in samples) and max(s.pedal for s in samples) <= 1.0
    assert max(s.brake_bar for s in samples) == pytest.approx(15.0)  # held at the start
    assert max(s.speed_kph for s in samples) > 10.0
    assert last.motor_speed_rpm == pytest.approx(
        last.speed_kph / 3.6 / PARAMS.body.wheel_radius_m * 10.5 * 60 / (2 * math.pi), rel=0.01)
    # Energy from the samples (as the window reward computes it) matches the metric.
    energy_wh = sum(s.current_a * s.voltage_v for s in samples) / 50.0 / 3600.0
    assert energy_wh == pytest.approx(sim.metrics.battery_energy_wh, rel=0.02)


def test_chunked_advance_equals_one_run():
    """Many uneven advance() calls give exactly the samples and metrics of one call."""
    whole = VehicleSimulation(PARAMS, 'nedc')
    expected = whole.advance(60.0)
    chunked = VehicleSimulation(PARAMS, 'nedc')
    samples, rng = [], np.random.default_rng(1)
    while chunked.t_s < 60.0 - 1e-9:
        samples += chunked.advance(min(float(rng.uniform(0.001, 0.7)), 60.0 - chunked.t_s))
    assert samples == expected
    strip = {'wall_time_s': 0.0, 'real_time_factor': 0.0}
    assert dataclasses.replace(chunked.metrics, **strip) == \
        dataclasses.replace(whole.metrics, **strip)


def test_measurement_noise_is_seeded_and_leaves_the_physics_alone():
    """Same seed, same noisy samples; another seed differs; metrics ignore the noise."""
    noisy = dataclasses.replace(PARAMS, simulation=dataclasses.replace(
        PARAMS.simulation, speed_noise_kph=0.3, current_noise_a=2.0, voltage_noise_v=0.5))
    first = VehicleSimulation(noisy, 'wltc3a', seed=4)
    second = VehicleSimulation(noisy, 'wltc3a', seed=4)
    other = VehicleSimulation(noisy, 'wltc3a', seed=5)
    clean = VehicleSimulation(PARAMS, 'wltc3a')
    a, b, c, d = (sim.advance(40.0) for sim in (first, second, other, clean))
    assert a == b and a != c and a != d
    assert [s.pedal for s in a] == [s.pedal for s in d]
    assert first.metrics.battery_energy_wh == clean.metrics.battery_energy_wh


def test_drive_cycles_come_from_the_regulation_tables():
    """WLTC class 3a/3b and NEDC have their published length, top speed and distance."""
    assert CYCLE_NAMES == ('wltc3b', 'wltc3a', 'nedc')
    time_s, speed_kph = drive_cycle('wltc3b')
    assert time_s.shape == speed_kph.shape == (1801,) and time_s[-1] == 1800.0
    assert speed_kph.max() == pytest.approx(131.3)
    assert drive_cycle('wltc3b').distance_km == pytest.approx(23.27, abs=0.02)
    assert drive_cycle('wltc3a').duration_s == 1800.0
    assert not np.array_equal(drive_cycle('wltc3a').speed_kph, speed_kph)
    nedc = drive_cycle('NEDC')
    assert nedc.time_s.size == 1180 and nedc.speed_kph.max() == 120.0
    assert nedc.distance_km == pytest.approx(11.0, rel=0.01)


def test_unknown_cycles_and_bad_traces_are_clear_errors():
    """An unknown name lists the known ones; an inconsistent trace says what is wrong."""
    with pytest.raises(DriveCycleError, match=r"unknown drive cycle 'ftp75'.*wltc3b, wltc3a"):
        drive_cycle('ftp75')
    with pytest.raises(DriveCycleError, match='unknown drive cycle'):
        VehicleSimulation(PARAMS, 'wltc4')
    with pytest.raises(DriveCycleError, match='increase strictly'):
        DriveCycle.from_arrays([0.0, 2.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(DriveCycleError, match='>= 0'):
        DriveCycle.from_arrays([0.0, 1.0], [0.0, -1.0])


def test_the_trace_is_interpolated_in_time_and_can_repeat():
    """Targets between 1 Hz samples are linear; with repeat_cycle the cycle starts again."""
    cycle = DriveCycle.from_arrays([0.0, 10.0, 20.0], [0.0, 36.0, 0.0])
    sim = VehicleSimulation(PARAMS, cycle, repeat_cycle=True)
    samples = sim.advance(25.0)
    by_time = {round(s.t_s, 2): s.target_speed_kph for s in samples}
    assert by_time[2.5] == pytest.approx(9.0) and by_time[15.0] == pytest.approx(18.0)
    assert by_time[25.0] == pytest.approx(18.0)  # 5 s into the second lap
    assert not sim.finished
    once = VehicleSimulation(PARAMS, cycle)
    once.run()
    assert once.finished and once.metrics.rms_speed_error_kph < 1.5


def test_signal_rate_must_fit_the_physics_step():
    """A signal period that is not a whole number of physics steps is refused."""
    with pytest.raises(VehicleConfigError, match='signal_rate_hz'):
        VehicleSimulation(PARAMS, 'nedc', signal_rate_hz=30.0)
    twenty = VehicleSimulation(PARAMS, 'nedc', signal_rate_hz=20.0)
    assert len(twenty.advance(3.0)) == 60


def driver_variant(**changes):
    """Return the sim van with some driver parameters changed."""
    return dataclasses.replace(PARAMS, driver=dataclasses.replace(PARAMS.driver, **changes))


def test_driver_preview_reaction_time_and_rate_limits_act():
    """Preview improves tracking, reaction delay worsens it; pedal and brake rates are bounded."""
    def rms(params):
        sim = VehicleSimulation(params, 'wltc3b')
        sim.advance(600.0)
        return sim.metrics.rms_speed_error_kph

    nominal = rms(PARAMS)
    assert rms(driver_variant(preview_s=0.0)) > 1.3 * nominal
    assert rms(driver_variant(reaction_time_s=0.0)) < 0.7 * nominal
    samples = VehicleSimulation(PARAMS, 'wltc3b').advance(600.0)
    period = 1 / PARAMS.simulation.signal_rate_hz
    pedal_steps = [abs(b.pedal - a.pedal) for a, b in zip(samples, samples[1:])]
    brake_steps = [abs(b.brake_bar - a.brake_bar) for a, b in zip(samples, samples[1:])]
    assert max(pedal_steps) <= PARAMS.driver.pedal_rate_per_s * period + 1e-9
    assert max(brake_steps) <= PARAMS.driver.brake_rate_bar_per_s * period + 1e-9
    assert max(pedal_steps) > 0.5 * PARAMS.driver.pedal_rate_per_s * period  # limit is reached
