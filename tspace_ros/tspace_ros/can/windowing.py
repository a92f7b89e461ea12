"""
From decoded CAN signals to fixed-rate observation windows.

``SignalMapping`` names the DBC signals that become our signals, each by its
(message, signal) pair, and converts them once, at the edge, into our units
(pedal: percent on the bus, fraction 0..1 here). ``WindowBuilder`` resamples
the asynchronous frames onto a fixed grid and cuts it into consecutive,
non-overlapping ``SignalWindow`` objects.

Routing: the builder is fed decoded frames that keep their DBC message
(``DecodedFrame``); a mapped signal is fed only by its own message's signal.
Real DBCs reuse signal names (``Checksum``, ``Counter``, ``Speed``), and a
signal of the same name in another message never reaches the mapping's signal.

Resampling: linear interpolation between the two samples of a signal that
bracket a grid point (a sample exactly on a grid point is taken as is). It
costs at most one frame period of latency and, unlike a zero-order hold, adds
no lag: 50 Hz frames resampled to 20 Hz keep their timing. The grid is anchored
at the first instant every mapped signal has a valid sample, and its points
are ``anchor + round(k * 1e9 / rate)`` ns (no drift). Windows carry the UTC
capture times of their first and last grid point.

Bad data is flagged, never passed on silently; every window holds finite
float32 values only:

- a value that is not a number (NaN, a named enum value), infinite, finite but
  outside float32's range after conversion, or outside the mapping's
  [minimum, maximum], is dropped from the interpolation (its neighbours bridge
  it, or the last good value is held, counted stale, if none follows) and
  counted, per signal and per reason (``INVALID_REASONS``), in the window whose
  grid interval it falls in: the window's ``flagged_signals`` names it;
- a signal without a sample after a grid point for ``stale_after_s`` while the
  stream goes on is held at its last value for that point and counted stale;
- a silence of the whole stream (or of one signal) longer than ``max_gap_s``
  drops the partial window and starts a new grid; samples older than their
  signal's previous sample are dropped as late.

Time: every input's capture time is checked, and an input that fails is
dropped and counted by reason (``REJECT_REASONS``), never raised:

- not an integer number of ns (NaN, inf, None, ...): ``bad_time``; before the
  Unix epoch: ``time_before_epoch``; after 2038-01-19 (beyond a ROS time):
  ``time_too_large``;
- older than the newest input by more than ``max_gap_s``: ``backwards``. Window
  stamps never go back: consecutive windows are strictly increasing in time.
  Only ``reset()`` (a new bag, a restarted simulation) lets time start over;
- newer than the newest input by more than ``max_gap_s``: a jump, held until
  the next input. If that one is within ``max_gap_s`` of the jump, the jump is
  real (the stream resumed after a silence): the grid restarts there and both
  inputs are taken. Otherwise the lone jump was a corrupt stamp and is dropped
  as ``time_jump``, so one bad stamp cannot tear the stream.
"""

from collections import deque
from dataclasses import dataclass, field, fields
import math
import numbers
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tspace_ros.can.dbc import Database, MSG_BATTERY_STATUS, MSG_VEHICLE_DYNAMICS
from tspace_ros.can.decoder import MAX_CAPTURE_TIME_NS
from tspace_ros.signals.window import NS_PER_S, SignalWindow

# The largest magnitude a window (float32) holds.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Why a value was flagged and dropped (WindowStats.invalid_reasons, WindowResult.invalid_reasons).
INVALID_NOT_A_NUMBER = 'not_a_number'  # NaN, or not a number at all
INVALID_INFINITE = 'infinite'  # +-inf as decoded
INVALID_FLOAT32_OVERFLOW = 'float32_overflow'  # finite, but beyond float32 after conversion
INVALID_OUT_OF_RANGE = 'out_of_range'  # outside the mapping's [minimum, maximum]
INVALID_REASONS = (INVALID_NOT_A_NUMBER, INVALID_INFINITE, INVALID_FLOAT32_OVERFLOW,
                   INVALID_OUT_OF_RANGE)

# Why an input was dropped whole (WindowStats.rejected).
REJECT_BAD_TIME = 'bad_time'
REJECT_BEFORE_EPOCH = 'time_before_epoch'
REJECT_TOO_LARGE = 'time_too_large'
REJECT_BACKWARDS = 'backwards'
REJECT_TIME_JUMP = 'time_jump'
REJECT_REASONS = (REJECT_BAD_TIME, REJECT_BEFORE_EPOCH, REJECT_TOO_LARGE, REJECT_BACKWARDS,
                  REJECT_TIME_JUMP)

_HUGE = 1e308  # stands for an integer too large for a float (then flagged as an overflow)


def _real(owner: str, attr: str, value) -> float:
    """Return value as a float if it is a real number (not a bool); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f'{owner}: {attr} must be a number, got {type(value).__name__} '
                         f'{value!r:.60}')
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        raise ValueError(f'{owner}: {attr} {value!r:.60} is not a float') from None


# What the task needs from every vehicle: (our name, unit, what it is for).
TASK_SIGNALS = (('speed', 'km/h', 'state'), ('pedal', '1', 'state'), ('brake', 'bar', 'state'),
                ('current', 'A', 'reward'), ('voltage', 'V', 'reward'))


@dataclass(frozen=True)
class MappedSignal:
    """
    One of our signals, taken from one DBC signal of one DBC message.

    Attributes
    ----------
    name, unit:
        Our signal name and unit (as in SignalWindow); strings.
    message, signal:
        The DBC message and the signal in it that it comes from (the pair
        identifies it: the same signal name in another message is another
        signal).
    factor, offset:
        Linear conversion: ours = factor x DBC value + offset.
    minimum, maximum:
        Valid range in our unit (default: unlimited, but always within
        float32's range); values outside are flagged and dropped.

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
        """Reject non-string names, bad numbers, a zero or non-finite conversion, bad limits."""
        for attr in ('name', 'unit', 'message', 'signal'):
            value = getattr(self, attr)
            if not isinstance(value, str):
                raise ValueError(f'mapped signal {attr} must be a string, got '
                                 f'{type(value).__name__} {value!r:.60}')
        if not self.name or not self.message or not self.signal:
            raise ValueError(f'mapped signal needs a name, message and signal: {self}')
        for attr in ('factor', 'offset', 'minimum', 'maximum'):
            object.__setattr__(self, attr, _real(self.name, attr, getattr(self, attr)))
        if not (math.isfinite(self.factor) and self.factor != 0 and math.isfinite(self.offset)):
            raise ValueError(f'{self.name}: factor must be finite and non-zero, offset finite')
        if math.isnan(self.minimum) or math.isnan(self.maximum):
            raise ValueError(f'{self.name}: minimum and maximum must not be NaN')
        if not self.minimum <= self.maximum:
            raise ValueError(f'{self.name}: valid range [{self.minimum}, {self.maximum}] '
                             'is empty')

    def convert(self, dbc_value: float) -> float:
        """Return the DBC value converted to our unit."""
        return self.factor * dbc_value + self.offset


_FIELDS = tuple(f.name for f in fields(MappedSignal))


class SignalMapping:
    """The ordered set of our signals and where each comes from in the DBC."""

    def __init__(self, signals: Sequence[MappedSignal]):
        """Check that there is at least one signal and that names are unique."""
        self.signals: Tuple[MappedSignal, ...] = tuple(signals)
        if not self.signals:
            raise ValueError('a signal mapping needs at least one signal')
        for s in self.signals:
            if not isinstance(s, MappedSignal):
                raise ValueError(f'a signal mapping holds MappedSignal objects, got '
                                 f'{type(s).__name__}')
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
    def from_dicts(cls, items) -> 'SignalMapping':
        """
        Build a mapping from plain dicts (a parameter file) with MappedSignal's fields.

        ``items`` is what a YAML file loads to: a list of dicts with string keys
        among name, unit, message, signal (strings), factor, offset, minimum,
        maximum (numbers). Anything else (not a list, an entry that is not a
        dict, an unknown or missing key, a wrong type, a NaN limit) is a
        ValueError that says which entry is wrong, never another exception.
        """
        if not isinstance(items, (list, tuple)):
            raise ValueError(f'bad mapped signal list: expected a list of dicts with '
                             f'{", ".join(_FIELDS)}, got {type(items).__name__} {items!r:.80}')
        signals = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ValueError(f'bad mapped signal {index}: expected a dict with '
                                 f'{", ".join(_FIELDS)}, got {type(item).__name__} '
                                 f'{item!r:.80}')
            try:
                entry = dict(item)
                unknown = [k for k in entry if k not in _FIELDS]
                if unknown:
                    raise ValueError(f'unknown keys {[repr(k)[:40] for k in unknown]} '
                                     f'(known: {", ".join(_FIELDS)})')
                missing = [k for k in _FIELDS[:4] if k not in entry]
                if missing:
                    raise ValueError(f'missing keys {missing}')
                signals.append(MappedSignal(**entry))
            except (TypeError, ValueError) as error:
                raise ValueError(f'bad mapped signal {index} {item!r:.120}: {error}') from None
        return cls(signals)

    def check_task(self, required: Sequence[Tuple[str, str, str]] = None) -> None:
        """
        Raise ValueError naming every signal the task needs that the mapping lacks.

        ``required``: (name, unit, what it is for), by default TASK_SIGNALS: the
        state's speed, pedal and brake and the reward's current and voltage. A
        signal mapped in another unit is named too (conversions belong in the
        mapping's factor and offset).
        """
        have = {s.name: s.unit for s in self.signals}
        problems = []
        for name, unit, purpose in (required if required is not None else TASK_SIGNALS):
            if name not in have:
                problems.append(f"no '{name}' ({unit}, {purpose})")
            elif have[name] != unit:
                problems.append(f"'{name}' is in {have[name]!r}, the task needs {unit!r} "
                                '(convert with factor/offset)')
        if problems:
            raise ValueError('signal mapping lacks what the task needs: ' + '; '.join(problems))

    def check_against(self, db: Database) -> None:
        """
        Raise ValueError naming every mapped message or signal the DBC lacks.

        A signal must be in its own message: one of the same name in another
        message is not it (the error says where that name is found).
        """
        problems = []
        for s in self.signals:
            try:
                message = db.get_message_by_name(s.message)
            except KeyError:
                problems.append(f'{s.name}: no message {s.message!r}')
                continue
            if s.signal not in [signal.name for signal in message.signals]:
                elsewhere = sorted(m.name for m in db.messages
                                   if any(g.name == s.signal for g in m.signals))
                hint = f' (a signal of that name is in {", ".join(elsewhere)})' \
                    if elsewhere else ''
                problems.append(
                    f'{s.name}: message {s.message!r} has no signal {s.signal!r}{hint}')
        if problems:
            raise ValueError('signal mapping does not fit the DBC: ' + '; '.join(problems))


@dataclass(frozen=True)
class WindowResult:
    """
    A completed window and what was repaired in it.

    Attributes
    ----------
    window:
        The SignalWindow (signals x samples, our units, UTC stamps; finite).
    invalid_samples:
        Per signal name, invalid input values (not a number, infinite, beyond
        float32, out of range) dropped within the window's grid interval (only
        signals with a count > 0).
    stale_samples:
        Per signal name, grid points where the signal was held stale.
    completed_ns:
        Capture time (UTC ns) of the input sample that completed the window.
    invalid_reasons:
        The invalid values of ``invalid_samples`` by reason (INVALID_REASONS).

    """

    window: SignalWindow
    invalid_samples: Mapping[str, int]
    stale_samples: Mapping[str, int]
    completed_ns: int
    invalid_reasons: Mapping[str, int] = field(default_factory=dict)

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

    Every input is either accepted, rejected (counted by reason) or, at most
    one at a time, held as a possible jump in time (``time_jump_pending``):
    ``inputs == accepted + sum(rejected.values()) + pending``.

    Attributes
    ----------
    inputs:
        Calls to ``feed`` (one per decoded frame).
    accepted:
        Inputs whose capture time was taken (their values are then used,
        flagged, or dropped late).
    ignored:
        Accepted inputs of a DBC message the mapping does not read.
    rejected:
        Inputs dropped whole, by reason (REJECT_REASONS): a capture time that is
        not a time, too far back, or a lone jump forward.
    windows:
        Windows emitted.
    invalid, stale, late:
        Per signal name: invalid values dropped, grid points held stale,
        samples dropped for arriving older than the previous one.
    invalid_reasons:
        The invalid values by reason (INVALID_REASONS).
    gaps:
        Times the grid was restarted after a silence or a jump in time.
    dropped_windows, dropped_points:
        Partial windows discarded at a gap or reset, and the grid points they held.

    """

    inputs: int = 0
    accepted: int = 0
    ignored: int = 0
    rejected: Dict[str, int] = field(default_factory=dict)
    windows: int = 0
    invalid: Dict[str, int] = field(default_factory=dict)
    invalid_reasons: Dict[str, int] = field(default_factory=dict)
    stale: Dict[str, int] = field(default_factory=dict)
    late: Dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    dropped_windows: int = 0
    dropped_points: int = 0

    @property
    def rejected_inputs(self) -> int:
        """Return the number of inputs dropped whole (all reasons)."""
        return sum(self.rejected.values())

    def as_dict(self) -> dict:
        """Return the counters as plain values (for diagnostics and logs)."""
        return {'inputs': self.inputs, 'accepted': self.accepted, 'ignored': self.ignored,
                'rejected': dict(self.rejected), 'windows': self.windows,
                'invalid': dict(self.invalid), 'invalid_reasons': dict(self.invalid_reasons),
                'stale': dict(self.stale), 'late': dict(self.late), 'gaps': self.gaps,
                'dropped_windows': self.dropped_windows, 'dropped_points': self.dropped_points}


def _bump(counts: Dict[str, int], name: str, by: int = 1) -> None:
    counts[name] = counts.get(name, 0) + by


def _as_float(value) -> float:
    """Return a decoded value as a float: NaN for what is not a real number."""
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float: flagged as an overflow
            return _HUGE if value > 0 else -_HUGE
        except (TypeError, ValueError):
            return math.nan
    return math.nan


def _invalid_reason(raw: float, value: float) -> str:
    """Return why raw (as decoded) giving value (converted) was not taken."""
    if math.isnan(raw) or math.isnan(value):
        return INVALID_NOT_A_NUMBER
    if math.isinf(raw):
        return INVALID_INFINITE
    if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        return INVALID_FLOAT32_OVERFLOW
    return INVALID_OUT_OF_RANGE


class WindowBuilder:
    """
    Resample decoded signals onto a fixed-rate grid and cut it into windows.

    Feed it ``(capture_time_ns, DecodedFrame)`` per decoded frame, in capture
    order; it returns the windows each input completes. Defaults are tspace's
    local path: 20 Hz x 30 samples (1.5 s); its cloud path is 50 Hz x 200 (4 s).
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
        # DBC message -> ((DBC signal, ((row, factor, offset, low, high), ...)), ...):
        # low/high are the mapping's limits within float32's range.
        routes: Dict[str, Dict[str, list]] = {}
        for row, s in enumerate(self.mapping.signals):
            routes.setdefault(s.message, {}).setdefault(s.signal, []).append(
                (row, s.factor, s.offset, max(s.minimum, -FLOAT32_MAX),
                 min(s.maximum, FLOAT32_MAX)))
        self._routes: Dict[str, Tuple[Tuple[str, tuple], ...]] = {
            message: tuple((signal, tuple(targets)) for signal, targets in by_signal.items())
            for message, by_signal in routes.items()}
        self._clear_time()
        self._restart()

    def _clear_time(self) -> None:
        """Forget the stream's time: the newest input, each signal's last sample, the floor."""
        self._newest_ns: Optional[int] = None
        self._last_ns: List[Optional[int]] = [None] * len(self._names)
        self._floor_ns: Optional[int] = None  # end of the last window emitted
        self._pending_jump: Optional[tuple] = None  # (t, message, signals)

    def _restart(self) -> None:
        """Forget all samples and the grid (a new anchor comes with the next samples)."""
        n = len(self._names)
        self._history: List[deque] = [deque() for _ in range(n)]
        self._anchor_ns: Optional[int] = None
        self._k = 0
        self._start_window()

    def _start_window(self) -> None:
        self._buffer = np.empty((len(self._names), self.samples_per_window), dtype=np.float64)
        self._fill = 0
        self._window_invalid: Dict[str, int] = {}
        self._window_reasons: Dict[str, int] = {}
        self._window_stale: Dict[str, int] = {}
        self._pending_invalid: List[Tuple[int, int, str]] = []  # (capture ns, row, reason)

    def set_episode(self, episode_id: str, step_index: int = 0) -> None:
        """Stamp later windows with a new episode id, counting steps from step_index."""
        self.episode_id = episode_id
        self.step_index = int(step_index)

    def reset(self) -> None:
        """
        Drop the partial window, all samples and the stream's time.

        The next samples anchor a new grid; this is the only way windows may
        go back in time (a new bag, a restarted simulation).
        """
        self._drop_partial()
        self._clear_time()
        self._restart()

    @property
    def waiting_for(self) -> Tuple[str, ...]:
        """Return the signals without a valid sample yet (the grid starts once none)."""
        return tuple(n for n, h in zip(self._names, self._history) if not h)

    @property
    def time_jump_pending(self) -> bool:
        """Whether an input that jumped forward in time waits for the next to confirm it."""
        return self._pending_jump is not None

    def _drop_partial(self) -> None:
        if self._fill:
            self.stats.dropped_windows += 1
            self.stats.dropped_points += self._fill

    def _gap(self) -> None:
        self.stats.gaps += 1
        self._drop_partial()
        self._restart()

    def _reject(self, reason: str) -> List[WindowResult]:
        _bump(self.stats.rejected, reason)
        return []

    def _check_time(self, capture_time_ns) -> Optional[int]:
        """Return the capture time as int ns, or None after counting why it is not one."""
        t = capture_time_ns
        if isinstance(t, bool):
            t = None
        elif not isinstance(t, int):
            try:
                t = int(t) if math.isfinite(t) and float(t) == int(t) else None
            except (TypeError, ValueError, OverflowError):
                t = None
        if t is None:
            self._reject(REJECT_BAD_TIME)
        elif t < 0:
            self._reject(REJECT_BEFORE_EPOCH)
            t = None
        elif t > MAX_CAPTURE_TIME_NS:
            self._reject(REJECT_TOO_LARGE)
            t = None
        return t

    def feed(self, capture_time_ns: int, signals: Mapping[str, float]) -> List[WindowResult]:
        """
        Add the signals of one decoded frame, captured at capture_time_ns (UTC ns).

        ``signals`` is a DecodedFrame (``FrameDecoder.decode``): the signals and
        their DBC message (``signals.message``); only the mapping's signals of
        that message are read. TypeError if it has no message (a plain dict
        cannot say where its signals come from). Never raises for its values
        or its time: invalid ones are flagged or rejected and counted (see the
        module's docstring). Returns the windows completed by this input
        (usually none or one), oldest first.
        """
        message = getattr(signals, 'message', None)
        if not isinstance(message, str):
            raise TypeError('WindowBuilder.feed takes a DecodedFrame (FrameDecoder.decode): '
                            'the signals and the name of their DBC message, got '
                            f'{type(signals).__name__}')
        self.stats.inputs += 1
        t = capture_time_ns
        if type(t) is not int or not 0 <= t <= MAX_CAPTURE_TIME_NS:
            t = self._check_time(t)
            if t is None:
                return []
        newest = self._newest_ns
        if newest is not None:
            if t < newest - self.max_gap_ns:
                return self._reject(REJECT_BACKWARDS)
            if t > newest + self.max_gap_ns:
                return self._jump(t, message, signals)
            if self._pending_jump is not None:  # a lone jump: its stamp was corrupt
                self._pending_jump = None
                self._reject(REJECT_TIME_JUMP)
        return self._take(t, message, signals)

    def _jump(self, t: int, message: str, signals: Mapping) -> List[WindowResult]:
        """Hold an input that jumped forward; take it with the next if that one confirms it."""
        pending = self._pending_jump
        if pending is not None and abs(t - pending[0]) <= self.max_gap_ns:
            self._pending_jump = None
            self._gap()
            results = self._take(*pending)
            return results + self._take(t, message, signals)
        if pending is not None:
            self._reject(REJECT_TIME_JUMP)
        self._pending_jump = (t, message, signals)
        return []

    def _take(self, t: int, message: str, signals: Mapping) -> List[WindowResult]:
        """Use the values of an input whose time passed the checks."""
        stats = self.stats
        stats.accepted += 1
        entries = self._routes.get(message)
        if entries is None:
            stats.ignored += 1
        else:
            last_ns = self._last_ns
            for key, targets in entries:
                if key not in signals:
                    continue
                raw = signals[key]
                if type(raw) is not float:
                    raw = _as_float(raw)
                for row, factor, offset, low, high in targets:
                    last = last_ns[row]
                    if last is not None and t <= last:
                        _bump(stats.late, self._names[row])
                        continue
                    last_ns[row] = t
                    v = factor * raw + offset
                    if low <= v <= high:  # false for NaN
                        self._history[row].append((t, v))
                        continue
                    reason = _invalid_reason(raw, v)
                    _bump(stats.invalid, self._names[row])
                    _bump(stats.invalid_reasons, reason)
                    self._pending_invalid.append((t, row, reason))
        if self._newest_ns is None or t > self._newest_ns:
            self._newest_ns = t
        if self._anchor_ns is None:
            for history in self._history:  # before the anchor only the newest sample counts
                while len(history) > 1:
                    history.popleft()
            if not all(self._history):
                return []
            anchor = max(h[0][0] for h in self._history)
            if self._floor_ns is not None and anchor <= self._floor_ns:
                anchor = self._floor_ns + 1  # windows never go back in time
            self._anchor_ns = anchor
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
                for t_bad, row, reason in self._pending_invalid:
                    if t_bad <= t_k:
                        _bump(self._window_invalid, names[row])
                        _bump(self._window_reasons, reason)
                    else:
                        keep.append((t_bad, row, reason))
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
                              now_ns, dict(self._window_reasons))
        self.step_index += 1
        self.stats.windows += 1
        self._floor_ns = end_ns
        pending = self._pending_invalid
        self._start_window()
        self._pending_invalid = pending
        return result
