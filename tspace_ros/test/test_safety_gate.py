"""The safety gate's rules, the action's rows and apply_action, whose maps always pass."""

import math

import numpy as np
import pytest
from torque_map_support import tspace_like_map

from tspace_ros.torque_map import (action_rows, apply_action, DEFAULT_PEDAL_BREAKPOINTS,
                                   GateRule, SafetyGate, torque_limits, TorqueMap)
from tspace_ros.torque_map.map import ORIGIN_AGENT


@pytest.fixture
def default():
    """Return a 14 x 17 default map spanning about -2300..4400 Nm."""
    return tspace_like_map()


def with_values(base, changes):
    """Return base with {(row, col): torque} changed."""
    table = np.array(base.torque_nm)
    for (r, c), value in changes.items():
        table[r, c] = value
    return base.with_torque(table)


def test_the_default_and_a_lowered_action_pass(default):
    gate = SafetyGate(default)
    assert gate.check(default, default, 0, 4).ok
    table = np.array(default.torque_nm)
    table[3:7] -= 250.0
    result = gate.check(default.with_torque(table), default, 3, 4)
    assert result.ok and result.failures == () and result.message == ''


def test_shape_rule(default):
    gate = SafetyGate(default)
    other_pedals = np.array(DEFAULT_PEDAL_BREAKPOINTS)
    other_pedals[1] = 0.03
    moved = TorqueMap(default.speed_breakpoints_kph, other_pedals, default.torque_nm)
    assert gate.check(moved, default, 0, 4).rules == (GateRule.SHAPE,)
    small = TorqueMap(default.speed_breakpoints_kph[:10], DEFAULT_PEDAL_BREAKPOINTS,
                      default.torque_nm[:10])
    result = gate.check(small, default, 0, 4)
    assert result.rules == (GateRule.SHAPE,) and '(10, 17)' in result.message
    assert gate.check(default, small, 0, 4).rules == (GateRule.SHAPE,)
    assert gate.check_full_map(small).rules == (GateRule.SHAPE,)


def test_finite_rule(default):
    # TorqueMap itself refuses NaN; the gate checks again in case one slipped past it.
    broken = with_values(default, {})
    table = np.array(default.torque_nm)
    table[2, 5] = math.nan
    object.__setattr__(broken, 'torque_nm', table)
    result = SafetyGate(default).check(broken, default, 0, 4)
    assert result.rules == (GateRule.FINITE,)
    assert 'row 2 (10 km/h), column 5' in result.message


def test_lower_limit_rule(default):
    gate = SafetyGate(default, torque_budget_nm=250.0)
    value = default.torque_nm[1, 10] - 250.5
    result = gate.check(with_values(default, {(1, 10): value}), default, 0, 4)
    assert result.rules == (GateRule.BELOW_LOWER,)
    assert 'row 1 (7 km/h), column 10' in result.message


def test_upper_limit_rule(default):
    gate = SafetyGate(default, upper_bound=1.0)
    result = gate.check(with_values(default, {(2, 16): default.torque_nm[2, 16] + 1.0}),
                        default, 0, 4)
    assert result.rules == (GateRule.ABOVE_UPPER,)


def test_upper_bound_for_regenerating_and_driving_defaults():
    speeds, pedals = (0.0, 50.0), (0.0, 1.0)
    default = TorqueMap(speeds, pedals, [[-2000.0, 4000.0], [-2000.0, 4000.0]])

    def rules(gate, regen, drive):
        proposed = default.with_torque([[regen, drive], [-2000.0, 4000.0]])
        return gate.check(proposed, default, 0, 1).rules

    strict = SafetyGate(default, upper_bound=1.0, rows_per_action=1)
    assert rules(strict, -2250.0, 3750.0) == ()  # the whole budget down
    assert rules(strict, -1999.0, 4000.0) == (GateRule.ABOVE_UPPER,)  # less regeneration
    assert rules(strict, -2000.0, 4001.0) == (GateRule.ABOVE_UPPER,)  # more drive torque
    assert rules(strict, -2251.0, 4000.0) == (GateRule.BELOW_LOWER,)
    # 1.1: 10 % of the magnitude more torque on either side (less regeneration).
    loose = SafetyGate(default, upper_bound=1.1, rows_per_action=1)
    assert rules(loose, -1800.0, 4400.0) == ()
    assert rules(loose, -1799.0, 4400.0) == (GateRule.ABOVE_UPPER,)
    assert rules(loose, -1800.0, 4401.0) == (GateRule.ABOVE_UPPER,)
    lower, upper = torque_limits(default.torque_nm, 250.0, 1.1)
    np.testing.assert_allclose(lower, [[-2250.0, 3750.0]] * 2)
    np.testing.assert_allclose(upper, [[-1800.0, 4400.0]] * 2)


def test_tolerance_absorbs_float32_round_trips(default):
    gate = SafetyGate(default)
    lower, upper = torque_limits(default.torque_nm, 250.0, 1.0)
    as_float32 = default.with_torque(lower.astype(np.float32).astype(np.float64))
    assert gate.check_full_map(as_float32).ok
    over = default.with_torque(upper + 2e-3)
    assert gate.check_full_map(over).rules == (GateRule.ABOVE_UPPER,)


@pytest.mark.parametrize('row_count', [0, 5])
def test_row_count_rule(default, row_count):
    result = SafetyGate(default, rows_per_action=4).check(default, default, 0, row_count)
    assert result.rules == (GateRule.ROW_COUNT,)


@pytest.mark.parametrize('row_start', [-1, 11, 14])
def test_row_range_rule(default, row_start):
    result = SafetyGate(default).check(default, default, row_start, 4)
    assert result.rules == (GateRule.ROW_RANGE,)
    assert 'outside the table of 14 rows' in result.message


def test_rows_outside_the_range_must_equal_the_current_map(default):
    gate = SafetyGate(default)
    current = with_values(default, {(9, 3): default.torque_nm[9, 3] - 100.0})
    # Rows 0..3 change; row 9 differs from the current map (it reverts to the default).
    proposed = with_values(default, {(1, 1): default.torque_nm[1, 1] - 10.0})
    result = gate.check(proposed, current, 0, 4)
    assert result.rules == (GateRule.ROWS_OUTSIDE_CHANGED,) and '[9]' in result.message
    proposed = with_values(current, {(1, 1): default.torque_nm[1, 1] - 10.0})
    assert gate.check(proposed, current, 0, 4).ok


def test_every_failed_rule_is_reported(default):
    gate = SafetyGate(default)
    proposed = with_values(default, {(0, 0): default.torque_nm[0, 0] - 300.0,
                                     (13, 16): default.torque_nm[13, 16] + 5.0})
    result = gate.check(proposed, default, 12, 5)
    assert set(result.rules) == {GateRule.ROW_COUNT, GateRule.ROW_RANGE,
                                 GateRule.BELOW_LOWER, GateRule.ABOVE_UPPER}
    assert all(text for _, text in result.failures)


def test_gate_parameters_are_checked(default):
    with pytest.raises(ValueError, match='torque_budget_nm'):
        SafetyGate(default, torque_budget_nm=0.0)
    with pytest.raises(ValueError, match='upper_bound'):
        SafetyGate(default, upper_bound=math.nan)
    with pytest.raises(ValueError, match='the default must pass'):
        SafetyGate(default, upper_bound=0.95)
    with pytest.raises(ValueError, match='upper_bound'):
        apply_action(default, default, np.zeros((4, 17)), 0, upper_bound=0.9)
    with pytest.raises(ValueError, match='rows_per_action'):
        SafetyGate(default, rows_per_action=15)


@pytest.mark.parametrize('speed_kph, first_row', [
    (0.0, 0), (19.9, 0), (20.0, 1), (29.9, 1), (30.0, 2), (45.0, 3), (125.0, 10),
    (1000.0, 10), (-3.0, 0)])
def test_action_rows_on_the_14_row_map(speed_kph, first_row):
    assert action_rows(speed_kph, 14) == range(first_row, first_row + 4)


def test_action_rows_clamps_where_tspace_overran_and_checks_inputs():
    assert action_rows(125.0, 21) == range(11, 15)  # the 21-row variant has room
    assert action_rows(170.0, 14).stop == 14  # tspace computed row 16 here
    assert action_rows(50.0, 14, rows_per_action=1) == range(4, 5)
    with pytest.raises(ValueError):
        action_rows(math.nan, 14)
    with pytest.raises(ValueError):
        action_rows(50.0, 3, rows_per_action=4)


def test_apply_action_is_default_plus_action_times_budget_clipped(default):
    action = np.zeros((4, 17))
    action[0, :] = -1.0
    action[1, :] = -0.5
    action[2, :] = 0.8  # above the default: clipped to the default (upper_bound 1.0)
    action[3, :] = -7.0  # clipped to -1
    new = apply_action(default, default, action, 5, policy_version=12, scaling='budget')
    d = default.torque_nm
    np.testing.assert_allclose(new.torque_nm[5], d[5] - 250.0)
    np.testing.assert_allclose(new.torque_nm[6], d[6] - 125.0)
    np.testing.assert_allclose(new.torque_nm[7], d[7])
    np.testing.assert_allclose(new.torque_nm[8], d[8] - 250.0)
    np.testing.assert_array_equal(new.torque_nm[:5], d[:5])
    np.testing.assert_array_equal(new.torque_nm[9:], d[9:])
    assert (new.policy_version, new.origin) == (12, ORIGIN_AGENT)
    flat = apply_action(default, default, action.ravel(), 5, policy_version=12,
                        scaling='budget')
    np.testing.assert_array_equal(flat.torque_nm, new.torque_nm)


def test_apply_action_with_limits_scaling_spans_the_gates_interval(default):
    # -1 the lower limit, 1 the upper (here the default), 0 half way: no dead half.
    action = np.zeros((4, 17))
    action[0, :] = -1.0
    action[1, :] = 1.0
    action[2, :] = 0.5
    action[3, :] = 9.0  # clipped to 1
    new = apply_action(default, default, action, 5, scaling='limits')
    d = default.torque_nm
    np.testing.assert_allclose(new.torque_nm[5], d[5] - 250.0)
    np.testing.assert_allclose(new.torque_nm[6], d[6])
    np.testing.assert_allclose(new.torque_nm[7], d[7] - 62.5)
    np.testing.assert_allclose(new.torque_nm[8], d[8])
    np.testing.assert_array_equal(new.torque_nm[:5], d[:5])
    # Every step of the action moves the torque (budget scaling: nothing above 0).
    up = apply_action(default, default, np.full((4, 17), 0.2), 5, scaling='limits')
    more = apply_action(default, default, np.full((4, 17), 0.6), 5, scaling='limits')
    assert np.all(more.torque_nm[5:9] > up.torque_nm[5:9])
    flat_up = apply_action(default, default, np.full((4, 17), 0.2), 5, scaling='budget')
    flat_more = apply_action(default, default, np.full((4, 17), 0.6), 5, scaling='budget')
    np.testing.assert_array_equal(flat_up.torque_nm, flat_more.torque_nm)
    with pytest.raises(ValueError, match='scaling must be one of'):
        apply_action(default, default, action, 5, scaling='log')


def test_apply_action_rejects_broken_actions(default):
    action = np.zeros((4, 17))
    action[2, 3] = math.nan
    with pytest.raises(ValueError, match='NaN'):
        apply_action(default, default, action, 0)
    with pytest.raises(ValueError, match='shape'):
        apply_action(default, default, np.zeros((4, 16)), 0)
    with pytest.raises(ValueError, match='outside the table'):
        apply_action(default, default, np.zeros((4, 17)), 11)


@pytest.mark.parametrize('upper_bound', [1.0, 1.2])
def test_apply_action_always_passes_the_gate(default, upper_bound):
    rng = np.random.default_rng(7)
    gate = SafetyGate(default, torque_budget_nm=250.0, upper_bound=upper_bound)
    current = default
    for step in range(300):
        rows = action_rows(rng.uniform(-10.0, 200.0), 14)
        action = rng.normal(0.0, 1.5, (4, 17))  # often beyond [-1, 1]
        proposed = apply_action(default, current, action, rows.start, 250.0, upper_bound,
                                policy_version=step)
        result = gate.check(proposed, current, rows.start, len(rows))
        assert result.ok, result.message
        current = proposed
    assert not np.array_equal(current.torque_nm, default.torque_nm)
