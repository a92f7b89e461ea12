"""
From decoded CAN signals to fixed-rate observation windows.

``SignalMapping`` names the DBC signals that become our signals and converts
them once, at the edge, into our units (pedal: percent on the bus, fraction
0..1 here). ``WindowBuilder`` resamples the asynchronous frames onto a fixed
grid and cuts it into consecutive, non-overlapping ``SignalWindow`` objects.

Resampling: linear interpolation between the two samples of a signal that
bracket a grid point (a sample exactly on a grid point is taken as is). It
costs at most one frame period of latency and, unlike a zero-order hold, adds
no lag: 50 Hz frames resampled to 20 Hz keep their timing. The grid is anchored
at the first instant every mapped signal has a valid sample, and its points
are ``anchor + round(k * 1e9 / rate)`` ns (no drift). Windows carry the UTC
capture times of their first and last grid point.

Bad data is flagged, never passed on silently:

- NaN or out-of-range values (after conversion) are dropped from the
  interpolation (its neighbours bridge them) and counted, per signal, in the
  window whose grid interval they fall in;
- a signal without a sample after a grid point for ``stale_after_s`` while the
  stream goes on is held at its last value for that point and counted stale;
- a silence of the whole stream (or of one signal) longer than ``max_gap_s``,
  or a jump back in time by more than that, drops the partial window and starts
  a new grid; samples older than their signal's previous sample are dropped as
  late.
"""

from collections import deque
from dataclasses import dataclass, field
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tspace_ros.can.dbc import Database, MSG_BATTERY_STATUS, MSG_VEHICLE_DYNAMICS
from tspace_ros.signals.window import NS_PER_S, SignalWindow


@dataclass(frozen=True)
class MappedSignal:
    """
    One of our signals, taken from one DBC signal.

    Attributes
    ----------
    name, unit:
        Our signal name and unit (as in SignalWindow).
    message, signal:
        The DBC message and signal it comes from.
    factor, offset:
        Linear conversion: ours = factor x DBC value + offset.
    minimum, maximum:
        Valid range in our unit; values outside are flagged and dropped.

    """

    name: str
    unit: str
    message: str
    signal: str
    factor: float = 1.0
    offset: float = 0.0
    minimum: float = -math.inf
    maximum: float = math.inf

    def __post_init__(self):
        """Reject empty names, a zero or non-finite conversion and an empty range."""
        if not self.name or not self.message or not self.signal:
            raise ValueError(f'mapped signal needs a name, message and signal: {self}')
        if not (math.isfinite(self.factor) and self.factor != 0 and math.isfinite(self.offset)):
            raise ValueError(f'{self.name}: factor must be finite and non-zero, offset finite')
        if not self.minimum <= self.maximum:
            raise ValueError(f'{self.name}: valid range [{self.minimum}, {self.maximum}] '
                             'is empty')

    def convert(self, dbc_value: float) -> float:
        """Return the DBC value converted to our unit."""
        return self.factor * dbc_value + self.offset


class SignalMapping:
    """The ordered set of our signals and where each comes from in the DBC."""

    def __init__(self, signals: Sequence[MappedSignal]):
        """Check that there is at least one signal and that names are unique."""
        self.signals: Tuple[MappedSignal, ...] = tuple(signals)
        if not self.signals:
            raise ValueError('a signal mapping needs at least one signal')
        names = [s.name for s in self.signals]
        if len(set(names)) != len(names):
            raise ValueError(f'duplicate signal names in {names}')

    @property
    def names(self) -> Tuple[str, ...]:
        """Return our signal names, in window row order."""
        return tuple(s.name for s in self.signals)

    @property
    def units(self) -> Tuple[str, ...]:
        """Return our units, in window row order."""
        return tuple(s.unit for s in self.signals)

    @property
    def messages(self) -> frozenset:
        """Return the names of the DBC messages the mapping reads."""
        return frozenset(s.message for s in self.signals)

    @classmethod
    def default(cls) -> 'SignalMapping':
        """
        Return the mapping for the shipped DBC (tspace_sim_van.dbc).

        speed (km/h), pedal (fraction 0..1 from %), brake (bar), current (A,
        + = discharge) and voltage (V): the signals of the synthetic source and
        of tspace's observation, plus current and voltage for the reward.
        """
        return cls([
            MappedSignal('speed', 'km/h', MSG_VEHICLE_DYNAMICS, 'VehicleSpeed',
                         minimum=-50.0, maximum=250.0),
            MappedSignal('pedal', '1', MSG_VEHICLE_DYNAMICS, 'AccelPedalPosition',
                         factor=0.01, minimum=0.0, maximum=1.0),
            MappedSignal('brake', 'bar', MSG_VEHICLE_DYNAMICS, 'BrakePressure',
                         minimum=0.0, maximum=250.0),
            MappedSignal('current', 'A', MSG_BATTERY_STATUS, 'BatteryCurrent',
                         minimum=-2000.0, maximum=2000.0),
            MappedSignal('voltage', 'V', MSG_BATTERY_STATUS, 'BatteryVoltage',
                         minimum=0.0, maximum=1000.0),
        ])

    @classmethod
    def from_dicts(cls, items: Iterable[Mapping]) -> 'SignalMapping':
        """Build a mapping from plain dicts (parameter files) with MappedSignal's fields."""
        signals = []
        for item in items:
            try:
                signals.append(MappedSignal(**dict(item)))
            except TypeError as error:
                raise ValueError(f'bad mapped signal {dict(item)}: {error}') from None
        return cls(signals)

    def check_against(self, db: Database) -> None:
        """Raise ValueError naming every mapped message or signal the DBC lacks."""
        problems = []
        for s in self.signals:
            try:
                message = db.get_message_by_name(s.message)
            except KeyError:
                problems.append(f'{s.name}: no message {s.message!r}')
                continue
            if s.signal not in [signal.name for signal in message.signals]:
                problems.append(f'{s.name}: message {s.message!r} has no signal {s.signal!r}')
        if problems:
            raise ValueError('signal mapping does not fit the DBC: ' + '; '.join(problems))


@dataclass(frozen=True)
class WindowResult:
    """
    A completed window and what was repaired in it.

    Attributes
    ----------
    window:
        The SignalWindow (signals x samples, our units, UTC stamps).
    invalid_samples:
        Per signal name, NaN or out-of-range input values dropped within the
        window's grid interval (only signals with a count > 0).
    stale_samples:
        Per signal name, grid points where the signal was held stale.
    completed_ns:
        Capture time (UTC ns) of the input sample that completed the window.

    """

    window: SignalWindow
    invalid_samples: Mapping[str, int]
    stale_samples: Mapping[str, int]
    completed_ns: int

    @property
    def flagged_signals(self) -> Tuple[str, ...]:
        """Return the names of signals with invalid or stale samples, in window order."""
        return tuple(n for n in self.window.signal_names
                     if n in self.invalid_samples or n in self.stale_samples)

    @property
    def clean(self) -> bool:
        """Whether no sample of the window was flagged."""
        return not self.invalid_samples and not self.stale_samples


@dataclass
class WindowStats:
    """
    Counters of a WindowBuilder (since its creation).

    Attributes
    ----------
    inputs:
        Calls to ``feed`` (one per decoded frame).
    windows:
        Windows emitted.
    invalid, stale, late:
        Per signal name: NaN or out-of-range values dropped, grid points held
        stale, samples dropped for arriving older than the previous one.
    gaps:
        Times the grid was restarted after a silence or a jump in time.
    dropped_windows, dropped_points:
        Partial windows discarded at a gap, and the grid points they held.

    """

    inputs: int = 0
    windows: int = 0
    invalid: Dict[str, int] = field(default_factory=dict)
    stale: Dict[str, int] = field(default_factory=dict)
    late: Dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    dropped_windows: int = 0
    dropped_points: int = 0

    def as_dict(self) -> dict:
        """Return the counters as plain values (for diagnostics and logs)."""
        return {'inputs': self.inputs, 'windows': self.windows, 'invalid': dict(self.invalid),
                'stale': dict(self.stale), 'late': dict(self.late), 'gaps': self.gaps,
                'dropped_windows': self.dropped_windows, 'dropped_points': self.dropped_points}


def _bump(counts: Dict[str, int], name: str, by: int = 1) -> None:
    counts[name] = counts.get(name, 0) + by


class WindowBuilder:
    """
    Resample decoded signals onto a fixed-rate grid and cut it into windows.

    Feed it ``(capture_time_ns, {DBC signal name: value})`` per decoded frame,
    in capture order; it returns the windows each input completes. Defaults are
    tspace's local path: 20 Hz x 30 samples (1.5 s); its cloud path is 50 Hz x
    200 (4 s).
    """

    def __init__(self, mapping: Optional[SignalMapping] = None, sample_rate_hz: float = 20.0,
                 samples_per_window: int = 30, vehicle_id: str = '', driver_id: str = '',
                 episode_id: str = '', step_index: int = 0, max_gap_s: float = 0.5,
                 stale_after_s: float = 0.2):
        """
        Configure the grid and the ids stamped on every window.

        max_gap_s: a silence (or time jump) longer than this restarts the grid.
        stale_after_s: how long past a grid point to wait for a signal's next
        sample before holding its last value; must be below max_gap_s.
        """
        self.mapping = mapping or SignalMapping.default()
        if not (math.isfinite(sample_rate_hz) and sample_rate_hz > 0):
            raise ValueError(f'sample_rate_hz must be > 0, got {sample_rate_hz}')
        if samples_per_window < 1:
            raise ValueError(f'samples_per_window must be >= 1, got {samples_per_window}')
        if not 0 < stale_after_s < max_gap_s:
            raise ValueError(f'need 0 < stale_after_s ({stale_after_s}) < max_gap_s '
                             f'({max_gap_s})')
        self.sample_rate_hz = float(sample_rate_hz)
        self.samples_per_window = int(samples_per_window)
        self.vehicle_id, self.driver_id, self.episode_id = vehicle_id, driver_id, episode_id
        self.step_index = int(step_index)
        self.max_gap_ns = round(max_gap_s * NS_PER_S)
        self.stale_after_ns = round(stale_after_s * NS_PER_S)
        self.stats = WindowStats()
        self._period_ns = NS_PER_S / self.sample_rate_hz
        self._names = self.mapping.names
        self._units = self.mapping.units
        # DBC signal name -> [(row, factor, offset, minimum, maximum)].
        self._routes: Dict[str, List[tuple]] = {}
        for row, s in enumerate(self.mapping.signals):
            self._routes.setdefault(s.signal, []).append(
                (row, s.factor, s.offset, s.minimum, s.maximum))
        self._restart()

    def _restart(self) -> None:
        """Forget all samples and the grid (a new anchor comes with the next samples)."""
        n = len(self._names)
        self._history: List[deque] = [deque() for _ in range(n)]
        self._last_ns: List[Optional[int]] = [None] * n
        self._newest_ns: Optional[int] = None
        self._anchor_ns: Optional[int] = None
        self._k = 0
        self._start_window()

    def _start_window(self) -> None:
        self._buffer = np.empty((len(self._names), self.samples_per_window), dtype=np.float64)
        self._fill = 0
        self._window_invalid: Dict[str, int] = {}
        self._window_stale: Dict[str, int] = {}
        self._pending_invalid: List[Tuple[int, int]] = []  # (capture ns, row)

    def set_episode(self, episode_id: str, step_index: int = 0) -> None:
        """Stamp later windows with a new episode id, counting steps from step_index."""
        self.episode_id = episode_id
        self.step_index = int(step_index)

    def reset(self) -> None:
        """Drop the partial window and all samples; the next samples anchor a new grid."""
        self._drop_partial()
        self._restart()

    @property
    def waiting_for(self) -> Tuple[str, ...]:
        """Return the signals without a valid sample yet (the grid starts once none)."""
        return tuple(n for n, h in zip(self._names, self._history) if not h)

    def _drop_partial(self) -> None:
        if self._fill:
            self.stats.dropped_windows += 1
            self.stats.dropped_points += self._fill

    def _gap(self) -> None:
        self.stats.gaps += 1
        self._drop_partial()
        self._restart()

    def feed(self, capture_time_ns: int, signals: Mapping[str, float]) -> List[WindowResult]:
        """
        Add the signals of one decoded frame, captured at capture_time_ns (UTC ns).

        Keys that the mapping does not read are ignored. Returns the windows
        completed by this input (usually none or one), oldest first.
        """
        stats = self.stats
        stats.inputs += 1
        t = int(capture_time_ns)
        newest = self._newest_ns
        if newest is not None and abs(t - newest) > self.max_gap_ns:
            self._gap()
        routes = self._routes
        for key, value in signals.items():
            targets = routes.get(key)
            if targets is None:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):  # e.g. a named enum value: flagged invalid
                value = math.nan
            for row, factor, offset, minimum, maximum in targets:
                last = self._last_ns[row]
                if last is not None and t <= last:
                    _bump(stats.late, self._names[row])
                    continue
                self._last_ns[row] = t
                v = factor * value + offset
                if not minimum <= v <= maximum:  # also false for NaN
                    _bump(stats.invalid, self._names[row])
                    self._pending_invalid.append((t, row))
                    continue
                self._history[row].append((t, v))
        if self._newest_ns is None or t > self._newest_ns:
            self._newest_ns = t
        if self._anchor_ns is None:
            for history in self._history:  # before the anchor only the newest sample counts
                while len(history) > 1:
                    history.popleft()
            if not all(self._history):
                return []
            self._anchor_ns = max(h[0][0] for h in self._history)
        return self._advance(t)

    def _advance(self, now_ns: int) -> List[WindowResult]:
        """Finalize every grid point that the samples so far determine."""
        results = []
        names = self._names
        n_rows = len(names)
        column = [0.0] * n_rows
        while True:
            t_k = self._anchor_ns + round(self._k * self._period_ns)
            stale_rows = []
            for row in range(n_rows):
                history = self._history[row]
                while len(history) >= 2 and history[1][0] <= t_k:
                    history.popleft()
                t0, v0 = history[0]
                if t0 == t_k:
                    column[row] = v0
                elif len(history) >= 2:
                    t1, v1 = history[1]
                    column[row] = v0 + (v1 - v0) * ((t_k - t0) / (t1 - t0))
                elif self._newest_ns - t_k >= self.stale_after_ns:
                    if t_k - t0 > self.max_gap_ns:  # this signal went silent: restart
                        self._gap()
                        return results
                    column[row] = v0
                    stale_rows.append(row)
                else:
                    return results  # wait for this signal's next sample
            for row in stale_rows:
                _bump(self.stats.stale, names[row])
                _bump(self._window_stale, names[row])
            if self._pending_invalid:
                keep = []
                for t_bad, row in self._pending_invalid:
                    if t_bad <= t_k:
                        _bump(self._window_invalid, names[row])
                    else:
                        keep.append((t_bad, row))
                self._pending_invalid = keep
            self._buffer[:, self._fill] = column
            self._fill += 1
            self._k += 1
            if self._fill == self.samples_per_window:
                results.append(self._emit(t_k, now_ns))

    def _emit(self, end_ns: int, now_ns: int) -> WindowResult:
        n = self.samples_per_window
        first_k = self._k - n
        start_ns = self._anchor_ns + round(first_k * self._period_ns)
        window = SignalWindow(
            vehicle_id=self.vehicle_id, driver_id=self.driver_id, episode_id=self.episode_id,
            step_index=self.step_index, sample_rate_hz=self.sample_rate_hz,
            signal_names=self._names, units=self._units, samples=self._buffer,
            start_ns=start_ns, end_ns=end_ns)
        result = WindowResult(window, dict(self._window_invalid), dict(self._window_stale),
                              now_ns)
        self.step_index += 1
        self.stats.windows += 1
        pending = self._pending_invalid
        self._start_window()
        self._pending_invalid = pending
        return result
