"""The agent's view of the vehicle: states from windows, maps from actions."""

import numpy as np
import pytest

from tspace_ros.agents.vehicle_policy import ActionMapper, StateBuilder, StateError
from tspace_ros.signals.synthetic import SyntheticDrive
from tspace_ros.signals.window import NS_PER_S, SignalWindow
from tspace_ros.torque_map import SafetyGate
from tspace_ros.vehicle import load_vehicle_parameters

DEFAULT = load_vehicle_parameters().load_default_map()


def window():
    return SyntheticDrive(seed=2).window(1_790_000_000 * NS_PER_S)


def test_state_is_scaled_state_signals_signal_major():
    builder = StateBuilder()
    w = window()
    state = builder.state(w)
    assert state.shape == (90,) and builder.state_dim == 90 and state.dtype == np.float32
    np.testing.assert_allclose(state[:30], w.signal('speed') / 120.0, rtol=1e-6)
    np.testing.assert_allclose(state[30:60], w.signal('pedal'), rtol=1e-6)
    np.testing.assert_allclose(state[60:90], w.signal('brake') / 50.0, rtol=1e-6)


def test_recent_actions_follow_the_signals_newest_last_and_reset():
    builder = StateBuilder(action_dim=3, recent_actions=2)
    assert builder.state_dim == 96
    np.testing.assert_array_equal(builder.state(window())[90:], np.zeros(6))
    builder.remember([1, 2, 3])
    builder.remember([4, 5, 6])
    builder.remember([7, 8, 9])
    np.testing.assert_array_equal(builder.state(window())[90:], [4, 5, 6, 7, 8, 9])
    builder.reset()
    np.testing.assert_array_equal(builder.state(window())[90:], np.zeros(6))


def test_unfit_windows_are_refused_with_the_reason():
    w = window()
    with pytest.raises(StateError, match='expects 20'):
        StateBuilder(samples_per_window=20).state(w)
    renamed = SignalWindow(w.vehicle_id, w.driver_id, '', 0, w.sample_rate_hz,
                           ('velocity',) + w.signal_names[1:], w.units, w.samples,
                           w.start_ns, w.end_ns)
    with pytest.raises(StateError, match="lacks signal 'speed'"):
        StateBuilder().state(renamed)
    wrong_unit = SignalWindow(w.vehicle_id, w.driver_id, '', 0, w.sample_rate_hz,
                              w.signal_names, ('m/s',) + w.units[1:], w.samples,
                              w.start_ns, w.end_ns)
    with pytest.raises(StateError, match="'m/s'"):
        StateBuilder().state(wrong_unit)


def test_actions_become_gate_passing_maps_on_the_rows_around_the_speed():
    mapper = ActionMapper(DEFAULT)
    gate = SafetyGate(DEFAULT)
    rng = np.random.default_rng(0)
    for speed in (0.0, 19.9, 35.0, 77.0, 125.0):
        action = rng.uniform(-1.5, 1.5, mapper.action_dim)
        proposed, start, count = mapper.to_map(action, speed, DEFAULT, policy_version=4)
        assert count == 4 and 0 <= start <= DEFAULT.shape[0] - 4
        assert gate.check(proposed, DEFAULT, start, count).ok
        assert proposed.policy_version == 4
    _, start, _ = mapper.to_map(np.zeros(68), 35.0, DEFAULT, 1)
    assert start == 2  # 30..40 km/h: the third row group (tspace's rule)


def test_broken_actions_never_become_maps():
    mapper = ActionMapper(DEFAULT)
    with pytest.raises(ValueError, match='non-finite'):
        mapper.to_map(np.full(68, np.nan), 30.0, DEFAULT, 1)
    with pytest.raises(ValueError, match='expected 68'):
        mapper.to_map(np.zeros(67), 30.0, DEFAULT, 1)
