"""The oracle: the best fixed map inside the gate, on a short lap of WLTC 3b."""

import json
import math

from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from tspace_ros.bringup import SPEED_ERROR_BOUND_KPH
from tspace_ros.task.contract import load_task
from tspace_ros.vehicle import drive_cycle, load_vehicle_parameters, VehicleSimulation
from tspace_ros.vehicle.oracle import (cached_saving, cell_impacts, cells_read, cma_search,
                                       coordinate_search, cycle_key, evaluate_map, lap,
                                       load_result, MapEvaluation, MapEvaluator,
                                       OracleCacheError, OracleResult, relaxed_box, result_path,
                                       run_oracle, save_result, speed_error_bound_kph,
                                       task_gate_box)

PARAMS = load_vehicle_parameters()
TASK = load_task()
DEFAULT = TASK.vehicle_default_map()
LAP_S = 150.0
LAP = drive_cycle('wltc3b').truncated(LAP_S)
N_ROWS, N_COLS = DEFAULT.shape


def _row(speed_kph: float) -> int:
    return int(np.flatnonzero(DEFAULT.speed_breakpoints_kph == speed_kph)[0])


def _col(pedal: float) -> int:
    return int(np.flatnonzero(np.isclose(DEFAULT.pedal_breakpoints, pedal))[0])


@pytest.fixture(scope='module')
def evaluator():
    """Return an evaluator of the lap."""
    return MapEvaluator(PARAMS, LAP, DEFAULT)


@pytest.fixture(scope='module')
def oracle():
    """Return the oracle's result on the lap with a small search budget."""
    return run_oracle(PARAMS, TASK, 'wltc3b', 30, lap_s=LAP_S, seed=3, max_cells=6)


# ---- the box ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_point_leaves_the_gate_box(data):
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=N_ROWS * N_COLS,
                                       max_size=N_ROWS * N_COLS)), dtype=bool)
    mask = mask.reshape(N_ROWS, N_COLS)
    mask[data.draw(st.integers(0, N_ROWS - 1)), data.draw(st.integers(0, N_COLS - 1))] = True
    box = task_gate_box(TASK, mask)
    x = np.array(data.draw(st.lists(st.floats(-3.0, 3.0), min_size=box.dim,
                                    max_size=box.dim)))
    proposed = box.to_map(x)
    gate = TASK.safety_gate()
    assert gate.check_full_map(proposed).ok, gate.check_full_map(proposed).message
    assert np.all(proposed.torque_nm >= DEFAULT.torque_nm - TASK.torque_budget_nm)
    assert np.all(proposed.torque_nm <= gate.upper_nm)
    np.testing.assert_array_equal(proposed.torque_nm[~mask], DEFAULT.torque_nm[~mask])
    inside = np.clip(x, 0.0, 1.0)
    np.testing.assert_allclose(box.to_x(proposed), inside, atol=1e-9)


def test_the_box_maps_its_ends_to_the_task_limits():
    box = task_gate_box(TASK)
    assert box.dim == N_ROWS * N_COLS
    np.testing.assert_array_equal(box.to_map(box.default_x).torque_nm, DEFAULT.torque_nm)
    np.testing.assert_allclose(box.to_map(np.zeros(box.dim)).torque_nm,
                               DEFAULT.torque_nm - TASK.torque_budget_nm)
    with pytest.raises(ValueError, match='NaN'):
        box.to_map(np.full(box.dim, math.nan))
    with pytest.raises(ValueError, match='values'):
        box.to_map(np.zeros(box.dim - 1))
    with pytest.raises(ValueError, match='outside'):
        task_gate_box(TASK, [(N_ROWS, 0)])


def test_the_relaxed_box_is_wider_than_the_gate():
    gate = task_gate_box(TASK)
    relaxed = task_gate_box(TASK, relaxed_factor=2.0)
    assert relaxed.name == 'relaxed'
    assert np.all(relaxed.lower_nm <= gate.lower_nm) and np.all(relaxed.upper_nm >= gate.upper_nm)
    assert np.all(relaxed.lower_nm < gate.lower_nm) and np.all(relaxed.upper_nm > gate.upper_nm)
    np.testing.assert_allclose(relaxed.upper_nm - DEFAULT.torque_nm, TASK.torque_budget_nm)
    assert np.all((0.0 < relaxed.default_x) & (relaxed.default_x < 1.0))
    with pytest.raises(ValueError, match='factor'):
        relaxed_box(DEFAULT, TASK.torque_budget_nm, TASK.upper_bound, factor=0.5)


# ---- evaluating ---------------------------------------------------------------------------

def test_the_default_map_evaluates_to_the_main_jobs_lap_figures(evaluator):
    # A lap as the main job measures its baseline: a van repeating the cycle, odometer to
    # odometer over the lap's duration (the learned saving is against this figure).
    sim = VehicleSimulation(PARAMS, LAP, repeat_cycle=True)
    reading = sim.odometer()
    sim.run(LAP.duration_s)
    metrics = sim.between(reading, sim.odometer())
    figures = evaluate_map(PARAMS, LAP, DEFAULT, DEFAULT)
    assert figures.energy_per_km_wh == pytest.approx(metrics['energy_per_km_wh'], rel=1e-12)
    assert figures.speed_error_rms_kph == pytest.approx(metrics['speed_error_rms_kph'],
                                                        rel=1e-12)
    assert figures.distance_km == pytest.approx(metrics['distance_km'], rel=1e-12)
    assert figures.saving == pytest.approx(0.0, abs=1e-12)
    assert evaluator.default == figures


def test_the_bound_is_the_main_jobs_and_breaking_it_scores_worse_than_the_default(evaluator):
    assert speed_error_bound_kph() == SPEED_ERROR_BOUND_KPH
    default = evaluator.default
    cheap_but_late = MapEvaluation(default.energy_per_km_wh * 0.5, SPEED_ERROR_BOUND_KPH + 0.01,
                                   default.distance_km, 0.5)
    assert evaluator.objective(cheap_but_late, SPEED_ERROR_BOUND_KPH) > \
        evaluator.objective(default, SPEED_ERROR_BOUND_KPH)
    broken = MapEvaluation(math.nan, math.nan, 0.0, math.nan)
    assert evaluator.objective(broken, SPEED_ERROR_BOUND_KPH) > default.energy_per_km_wh


# ---- searching ----------------------------------------------------------------------------

def test_a_small_search_beats_the_default_within_the_bound_and_the_gate(oracle):
    assert oracle.cycle == cycle_key('wltc3b', LAP_S)
    assert oracle.wh_per_km_best < oracle.wh_per_km_default
    assert oracle.saving > 0.0
    assert oracle.speed_error_rms_kph <= SPEED_ERROR_BOUND_KPH
    best = oracle.best_map()
    verdict = TASK.safety_gate().check_full_map(best)
    assert verdict.ok, verdict.message
    stages = oracle.evaluations_by_stage
    assert stages['coordinate'] + stages['cma'] <= 30
    assert oracle.evaluations == sum(stages.values())
    # The figures are the map's own: a fresh simulation of the best map gives them again.
    again = evaluate_map(PARAMS, LAP, best, DEFAULT)
    assert again.energy_per_km_wh == pytest.approx(oracle.wh_per_km_best, rel=1e-12)
    assert again.saving == pytest.approx(oracle.saving, rel=1e-9)


def test_coordinate_and_cma_search_improve_and_cma_is_seeded(evaluator):
    box = task_gate_box(TASK, [(_row(20.0), 0), (_row(30.0), 0), (_row(10.0), 0)])
    coordinate = coordinate_search(evaluator, box, levels=(0.0, 0.5, 1.0))
    assert coordinate.objective < evaluator.default.energy_per_km_wh
    runs = [cma_search(evaluator, box, coordinate.x, max_evaluations=12, seed=5)
            for _ in range(2)]
    for run in runs:
        assert run.objective <= coordinate.objective and run.evaluations <= 12
    np.testing.assert_array_equal(runs[0].x, runs[1].x)


# ---- which cells matter -------------------------------------------------------------------

def test_a_low_speed_lift_off_cell_matters_more_than_a_high_pedal_cell(evaluator):
    lift_off, high_pedal = (_row(20.0), _col(0.0)), (_row(20.0), _col(0.62))
    box = task_gate_box(TASK, [high_pedal, lift_off])
    impacts = cell_impacts(evaluator, box)
    assert [(i.row, i.col) for i in impacts] == [lift_off, high_pedal]
    assert abs(impacts[0].delta_wh_per_km) > 10 * abs(impacts[1].delta_wh_per_km)
    assert impacts[0].delta_wh_per_km < 0.0  # more regeneration, less energy


def test_a_cell_the_lap_never_reads_changes_nothing_and_is_not_simulated(evaluator):
    read = cells_read(PARAMS, LAP, DEFAULT, lowering_only=True)
    assert read[_row(20.0), 0] and not read.all()
    unread = tuple(int(v) for v in np.argwhere(~read)[0])
    box = task_gate_box(TASK, [unread])
    assert evaluator(box.to_map([0.0])) == evaluator.default
    before = evaluator.evaluations
    impacts = cell_impacts(evaluator, box, read)
    assert evaluator.evaluations == before
    assert impacts[0].delta_wh_per_km == 0.0 and not impacts[0].simulated


# ---- the cache ----------------------------------------------------------------------------

def test_the_cache_round_trips_as_json(oracle, tmp_path):
    path = save_result(tmp_path, oracle)
    assert path == result_path(tmp_path, TASK.vehicle_id, oracle.cycle, 'trace_pi')
    assert json.loads(path.read_text())['saving'] == oracle.saving
    loaded = load_result(tmp_path, TASK.vehicle_id, oracle.cycle)
    assert loaded == OracleResult.from_dict(oracle.to_dict()) == oracle
    assert cached_saving(tmp_path, TASK.vehicle_id, oracle.cycle) == oracle.saving
    assert load_result(tmp_path, TASK.vehicle_id, 'nedc') is None
    assert cached_saving(tmp_path, 'OTHERVAN', oracle.cycle) is None


@pytest.mark.parametrize('content', [
    b'\x80\x04\x95 not json (a pickle, say)', b'{"saving": 0.02', b'[1, 2, 3]',
    b'{"saving": 0.02}', 'NaN torque', 'another key'])
def test_a_corrupt_cache_file_is_a_clear_error(oracle, tmp_path, content):
    path = result_path(tmp_path, TASK.vehicle_id, oracle.cycle)
    path.parent.mkdir(parents=True)
    if content == 'NaN torque':
        data = oracle.to_dict()
        data['torque_nm'][0][0] = math.nan
        content = json.dumps(data).encode()
    elif content == 'another key':
        content = json.dumps({**oracle.to_dict(), 'cycle': 'nedc'}).encode()
    path.write_bytes(content)
    with pytest.raises(OracleCacheError, match=str(path).replace('.', r'\.')):
        load_result(tmp_path, TASK.vehicle_id, oracle.cycle)


def test_cache_keys_are_plain_file_names(tmp_path):
    for bad in ('../elsewhere', '', 'a/b', '.hidden'):
        with pytest.raises(ValueError, match='file name'):
            result_path(tmp_path, bad, 'wltc3b')
    assert lap('wltc3b', LAP_S).duration_s == LAP_S


# ---- what the main job reports ------------------------------------------------------------

def test_the_run_reference_reads_the_cache_names_stale_results_and_searches(tmp_path):
    from tspace_ros.vehicle.oracle import driver_key, run_reference
    baseline = evaluate_map(PARAMS, LAP, DEFAULT, DEFAULT).energy_per_km_wh
    lap_s = LAP.duration_s
    off = run_reference('off', tmp_path, PARAMS, TASK, 'wltc3b', lap_s, baseline, 0.01)
    assert off['status'] == 'off' and 'saving' not in off
    missing = run_reference('cached', tmp_path, PARAMS, TASK, 'wltc3b', lap_s, baseline, 0.01)
    assert missing['status'] == 'not computed' and 'saving' not in missing
    searched = run_reference('search', tmp_path, PARAMS, TASK, 'wltc3b', lap_s, baseline,
                             0.01, budget=24)
    assert searched['status'] == 'searched' and searched['saving'] > 0
    assert searched['share'] == pytest.approx(0.01 / searched['saving'])
    assert searched['wh_per_km_default'] == pytest.approx(baseline, rel=1e-12)
    again = run_reference('cached', tmp_path, PARAMS, TASK, 'wltc3b', lap_s, baseline, 0.01)
    assert again['status'] == 'cached' and again['saving'] == searched['saving']
    # Another driver is another key; a baseline that moved makes the cached result stale.
    assert driver_key(PARAMS, 'dyno') == 'dyno' and driver_key(PARAMS) == 'trace_pi'
    other = run_reference('cached', tmp_path, PARAMS, TASK, 'wltc3b', lap_s, baseline, 0.01,
                          driver_model='dyno')
    assert other['status'] == 'not computed' and other['driver'] == 'dyno'
    stale = run_reference('cached', tmp_path, PARAMS, TASK, 'wltc3b', lap_s, baseline * 1.01,
                          0.01)
    assert stale['status'] == 'stale' and 'saving' not in stale and 'search again' in \
        stale['reason']
    with pytest.raises(ValueError, match='oracle mode'):
        run_reference('always', tmp_path, PARAMS, TASK, 'wltc3b', lap_s, baseline, 0.01)


def test_the_shipped_result_is_current_and_read_when_the_cache_has_none(tmp_path):
    # The shipped whole-cycle result must still match the simulator: its default-map
    # energy is the van's own on WLTC 3b (else run bench/oracle_map.py and ship it again).
    from tspace_ros.vehicle.oracle import run_reference, shipped_dir
    shipped = load_result(shipped_dir(), TASK.vehicle_id, 'wltc3b')
    assert shipped is not None and shipped.box == 'gate' and shipped.saving > 0.02
    baseline = evaluate_map(PARAMS, 'wltc3b', DEFAULT, DEFAULT).energy_per_km_wh
    assert shipped.wh_per_km_default == pytest.approx(baseline, rel=1e-9)
    best = evaluate_map(PARAMS, 'wltc3b', shipped.best_map(), DEFAULT)
    assert best.energy_per_km_wh == pytest.approx(shipped.wh_per_km_best, rel=1e-9)
    assert TASK.safety_gate().check_full_map(shipped.best_map()).failures == ()
    report = run_reference('cached', tmp_path, PARAMS, TASK, 'wltc3b', None, baseline, 0.0125)
    assert report['status'] == 'shipped' and report['share'] == pytest.approx(
        0.0125 / shipped.saving)
