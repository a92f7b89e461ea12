"""SignalWindow: the core observation window checks its own consistency."""

import numpy as np
import pytest

from tspace_ros.signals.synthetic import SIGNALS, SyntheticDrive, UNITS
from tspace_ros.signals.window import NS_PER_S, sample_times_ns, SignalWindow, WindowError

END_NS = 1_790_000_000 * NS_PER_S  # a UTC instant in 2026


def make(samples=None, rate=20.0, names=('speed', 'pedal'), units=('km/h', '1'),
         start_ns=None, end_ns=END_NS, step_index=0):
    samples = np.zeros((2, 30), np.float32) if samples is None else samples
    n = np.asarray(samples).shape[-1]
    if start_ns is None:
        start_ns = end_ns - round((n - 1) * NS_PER_S / rate)
    return SignalWindow('VIN1', 'driver1', 'ep1', step_index, rate, names, units, samples,
                        start_ns, end_ns)


def test_valid_window_exposes_shape_duration_and_signals():
    samples = np.arange(60, dtype=np.float32).reshape(2, 30)
    window = make(samples)
    assert (window.n_signals, window.n_samples) == (2, 30)
    assert window.duration_s == pytest.approx(1.5)
    np.testing.assert_array_equal(window.signal('pedal'), samples[1])
    assert window.unit('speed') == 'km/h'
    assert window.samples.dtype == np.float32
    with pytest.raises(ValueError):
        window.samples[0, 0] = 1.0  # windows are immutable


@pytest.mark.parametrize('kwargs, message', [
    ({'samples': np.zeros(30, np.float32)}, '2-D'),
    ({'names': ('speed',), 'units': ('km/h',)}, 'signal names'),
    ({'units': ('km/h',)}, 'units'),
    ({'names': ('speed', 'speed')}, 'duplicate'),
    ({'names': ('speed', '')}, 'empty'),
    ({'samples': np.zeros((2, 0), np.float32), 'start_ns': END_NS}, 'at least one sample'),
    ({'rate': 0.0, 'start_ns': END_NS}, 'positive'),
    ({'rate': float('nan'), 'start_ns': END_NS}, 'positive'),
    ({'start_ns': END_NS - NS_PER_S}, 'span'),
    ({'step_index': -1}, 'step_index'),
])
def test_inconsistent_windows_are_rejected_with_the_reason(kwargs, message):
    with pytest.raises(WindowError, match=message):
        make(**kwargs)


def test_unknown_signal_lookup_names_the_available_signals():
    with pytest.raises(KeyError, match="'brake'.*speed"):
        make().signal('brake')


def test_sample_times_end_at_the_window_end_at_the_sample_period():
    times = sample_times_ns(END_NS, 30, 20.0)
    assert times[-1] == END_NS
    assert np.all(np.diff(times) == NS_PER_S // 20)


def test_synthetic_drive_makes_consecutive_consistent_windows():
    drive = SyntheticDrive(sample_rate_hz=50.0, samples_per_window=200, seed=3)
    first = drive.window(END_NS)
    second = drive.window(END_NS + 4 * NS_PER_S)
    assert (first.step_index, second.step_index) == (0, 1)
    assert first.signal_names == SIGNALS and first.units == UNITS
    assert first.samples.shape == (5, 200)
    assert np.all(first.signal('speed') >= 0.0)
    assert np.all((first.signal('pedal') >= 0.0) & (first.signal('pedal') <= 1.0))
    # the profile continues from one window to the next (no restart at t=0)
    assert second.signal('speed')[0] != first.signal('speed')[0]
    again = SyntheticDrive(sample_rate_hz=50.0, samples_per_window=200, seed=3).window(END_NS)
    np.testing.assert_array_equal(first.samples, again.samples)


def test_synthetic_drive_rejects_bad_parameters():
    with pytest.raises(ValueError, match='sample_rate_hz'):
        SyntheticDrive(sample_rate_hz=0.0)
    with pytest.raises(ValueError, match='samples_per_window'):
        SyntheticDrive(samples_per_window=0)
