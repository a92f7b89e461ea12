"""
The observation window: signals x samples at a fixed rate, with ids and UTC stamps.

This is the ROS-free twin of ``tspace_interfaces/msg/ObservationWindow``: the
core builds and checks windows, the nodes convert them to and from messages.
"""

from dataclasses import dataclass
import math
from typing import Sequence, Tuple

import numpy as np

NS_PER_S = 1_000_000_000


class WindowError(ValueError):
    """A window whose fields are inconsistent (shapes, rate, stamps, names)."""


@dataclass(frozen=True)
class SignalWindow:
    """
    A fixed-rate window of vehicle signals.

    Attributes
    ----------
    vehicle_id, driver_id, episode_id:
        Identity of the vehicle (VIN), driver and episode ('' outside an episode).
    step_index:
        Index of the window within its episode, from 0.
    sample_rate_hz:
        Sampling rate of every signal, Hz.
    signal_names, units:
        One name and one unit per signal (row of ``samples``).
    samples:
        float32 array of shape (n_signals, n_samples), oldest sample first.
    start_ns, end_ns:
        UTC capture times of the first and last sample, integer nanoseconds
        since the Unix epoch. ``end_ns - start_ns == (n_samples - 1) / rate``
        within one sample period / 1000.

    """

    vehicle_id: str
    driver_id: str
    episode_id: str
    step_index: int
    sample_rate_hz: float
    signal_names: Tuple[str, ...]
    units: Tuple[str, ...]
    samples: np.ndarray
    start_ns: int
    end_ns: int

    def __post_init__(self):
        """Normalise types and reject inconsistent windows with a WindowError."""
        samples = np.asarray(self.samples, dtype=np.float32)
        if samples.ndim != 2:
            raise WindowError(
                f'samples must be 2-D (signals x samples), got shape {samples.shape}')
        n_signals, n_samples = samples.shape
        names = tuple(self.signal_names)
        units = tuple(self.units)
        if len(names) != n_signals:
            raise WindowError(f'{len(names)} signal names for {n_signals} signal rows')
        if len(units) != n_signals:
            raise WindowError(f'{len(units)} units for {n_signals} signal rows')
        if len(set(names)) != len(names):
            raise WindowError(f'duplicate signal names in {names}')
        if any(not name for name in names):
            raise WindowError('signal names must not be empty')
        if n_samples < 1:
            raise WindowError('a window needs at least one sample per signal')
        rate = float(self.sample_rate_hz)
        if not math.isfinite(rate) or rate <= 0.0:
            raise WindowError(f'sample_rate_hz must be a positive finite number, got {rate}')
        if self.step_index < 0:
            raise WindowError(f'step_index must be >= 0, got {self.step_index}')
        expected_ns = round((n_samples - 1) * NS_PER_S / rate)
        tolerance_ns = max(1, round(NS_PER_S / rate / 1000))
        if abs((self.end_ns - self.start_ns) - expected_ns) > tolerance_ns:
            raise WindowError(
                f'window spans {self.end_ns - self.start_ns} ns but {n_samples} samples at '
                f'{rate} Hz span {expected_ns} ns')
        samples.setflags(write=False)
        object.__setattr__(self, 'samples', samples)
        object.__setattr__(self, 'signal_names', names)
        object.__setattr__(self, 'units', units)
        object.__setattr__(self, 'sample_rate_hz', rate)
        object.__setattr__(self, 'step_index', int(self.step_index))
        object.__setattr__(self, 'start_ns', int(self.start_ns))
        object.__setattr__(self, 'end_ns', int(self.end_ns))

    @property
    def n_signals(self) -> int:
        """Return the number of signals (rows)."""
        return self.samples.shape[0]

    @property
    def n_samples(self) -> int:
        """Return the number of samples per signal (columns)."""
        return self.samples.shape[1]

    @property
    def duration_s(self) -> float:
        """Return the time the window covers, s: n_samples / sample_rate_hz."""
        return self.n_samples / self.sample_rate_hz

    def signal(self, name: str) -> np.ndarray:
        """Return the samples of one signal by name (read-only view)."""
        try:
            return self.samples[self.signal_names.index(name)]
        except ValueError:
            raise KeyError(f'no signal {name!r} in window (have {list(self.signal_names)})') \
                from None

    def unit(self, name: str) -> str:
        """Return the unit of one signal by name."""
        return self.units[self.signal_names.index(name)]


def sample_times_ns(end_ns: int, n_samples: int, sample_rate_hz: float) -> Sequence[int]:
    """Return the UTC stamps (ns) of n samples at a rate, the last one at end_ns."""
    period = NS_PER_S / sample_rate_hz
    return [end_ns - round((n_samples - 1 - i) * period) for i in range(n_samples)]
