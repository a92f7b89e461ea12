"""Conversions between core windows and ObservationWindow messages are exact."""

from builtin_interfaces.msg import Time
import numpy as np
import pytest

from tspace_ros.nodes.messages import time_from_ns, time_to_ns, window_from_msg, window_to_msg
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
