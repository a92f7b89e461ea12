"""Conversions between core windows and ObservationWindow messages are exact."""

from builtin_interfaces.msg import Time
import numpy as np
import pytest

from tspace_ros.episodes.records import EpisodeSummaryRecord, RecordError, TransitionRecord
from tspace_ros.nodes.messages import (episode_from_msg, episode_to_msg, time_from_ns,
                                       time_to_ns, transition_from_msg, window_from_msg,
                                       window_to_msg)
from tspace_ros.signals.synthetic import SyntheticDrive
from tspace_ros.signals.window import NS_PER_S, WindowError


def test_time_conversion_is_exact_to_the_nanosecond():
    ns = 1_790_000_123 * NS_PER_S + 987_654_321
    stamp = time_from_ns(ns)
    assert (stamp.sec, stamp.nanosec) == (1_790_000_123, 987_654_321)
    assert time_to_ns(stamp) == ns
    assert time_to_ns(Time(sec=5, nanosec=1)) == 5 * NS_PER_S + 1
    with pytest.raises(ValueError, match='before the epoch'):
        time_from_ns(-1)


def test_window_round_trips_through_its_message():
    window = SyntheticDrive(episode_id='ep-7', seed=1).window(1_790_000_000 * NS_PER_S)
    msg = window_to_msg(window)
    assert msg.header.stamp == msg.window_end
    assert msg.header.frame_id == 'base_link'
    assert len(msg.samples) == window.n_signals * window.n_samples
    back = window_from_msg(msg)
    for field in ('vehicle_id', 'driver_id', 'episode_id', 'step_index', 'sample_rate_hz',
                  'signal_names', 'units', 'start_ns', 'end_ns'):
        assert getattr(back, field) == getattr(window, field), field
    np.testing.assert_array_equal(back.samples, window.samples)


def test_message_whose_samples_do_not_fill_the_shape_is_rejected():
    msg = window_to_msg(SyntheticDrive().window(1_790_000_000 * NS_PER_S))
    msg.samples_per_signal = 29
    with pytest.raises(WindowError, match='do not fill'):
        window_from_msg(msg)


def _transition(step, **changes):
    rng = np.random.default_rng(step)
    values = {
        'vehicle_id': 'VIN1', 'driver_id': 'd1', 'episode_id': '20261121T000000.000Z',
        'episode_start_ns': 1_795_000_000_123_456_789, 'step_index': step,
        'state': rng.normal(size=90), 'action': rng.uniform(-1, 1, 68), 'action_row_start': 3,
        'action_row_count': 4, 'reward': -4.25, 'energy_wh': 4.25,
        'next_state': rng.normal(size=90), 'done': step == 2, 'timed_out': step == 1,
        'policy_version': 7 + step, 'state_stamp_ns': 1_795_000_001_500_000_000 + step,
        'next_state_stamp_ns': 1_795_000_003 * 10**9}
    values.update(changes)
    return TransitionRecord(**values)


def test_episode_and_its_transitions_round_trip_through_messages():
    transitions = [_transition(step) for step in range(3)]
    summary = EpisodeSummaryRecord(
        'VIN1', 'd1', '20261121T000000.000Z', 1_795_000_000_123_456_789,
        1_795_000_900_000_000_001, 3, -12.75, 12.75, 0.125, True, 7, 9, timed_out_steps=1)
    got_summary, got = episode_from_msg(episode_to_msg(summary, transitions, 5))
    assert got_summary == summary and got_summary.energy_per_km_wh == pytest.approx(102.0)
    assert len(got) == 3
    for want, have in zip(transitions, got):
        for field in ('state', 'action', 'next_state'):
            np.testing.assert_array_equal(getattr(have, field), getattr(want, field))
        assert have.key == want.key
        assert (have.reward, have.done, have.timed_out, have.policy_version,
                have.state_stamp_ns, have.next_state_stamp_ns) == \
            (want.reward, want.done, want.timed_out, want.policy_version,
             want.state_stamp_ns, want.next_state_stamp_ns)


def test_inconsistent_transitions_are_refused_with_the_reason():
    with pytest.raises(RecordError, match='state .90. and next_state .89.'):
        _transition(0, next_state=np.zeros(89))
    with pytest.raises(RecordError, match='action has non-finite'):
        _transition(0, action=np.full(68, np.nan))
    with pytest.raises(RecordError, match='must not be empty'):
        _transition(0, vehicle_id='')
    msg = episode_to_msg(EpisodeSummaryRecord('V', 'd', 'e', 0, 1, 1, 0.0, 0.0, 0.0, True, 0, 0),
                         [_transition(0)]).transitions[0]
    msg.reward = float('inf')
    with pytest.raises(RecordError, match='reward is not finite'):
        transition_from_msg(msg)
