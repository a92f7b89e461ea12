"""
A ``get_signal`` result, from ragged one-second lists to timestamped samples.

The result (tspace's TBox upload) holds one timestamp per second,
``timestamps`` (another version: ``list_timestamps``), each ``YYMMDDhhmmssXX``
(XX: hundredths) in the vehicle's local time, and per signal one list of
numeric strings per second: ``list_speed_1s``, ``list_pedal_1s``,
``list_brake_pressure_1s``, ``list_current_1s``, ``list_voltage_1s`` (about
50 Hz, voltage sometimes 25 Hz, lists can be short) and ``list_gears`` (2 Hz).

``BatchDecoder.decode`` turns the seconds it has not seen into samples for
the window builder (``can.windowing.WindowBuilder``, which resamples them
onto the task's grid and flags every window that holds a bad value): the
samples of one second's list are spread evenly over that second. A
``SignalMapping`` whose message is ``get_signal`` names the list of each task
signal and converts it (pedal in percent on the cloud, 0..1 here).

Nothing is dropped silently; every problem is counted by reason
(``PROBLEMS``) and the last ones are kept as text for the diagnostics:

- a result that is not a mapping, without timestamps, too large: the batch;
- a timestamp that does not parse or is not a real local time: its second;
- seconds out of order within a batch are sorted (counted once per batch);
- a second already taken by an earlier batch (polls of the last 4 s overlap)
  is skipped (``already_taken``, not a problem); twice in one batch:
  ``duplicate``; older than the newest taken but never seen: ``late``; newer
  than now + ``max_clock_skew_s``: ``future``: dropped;
- a signal list missing, not a list, or with a number of seconds other than
  the timestamps': its seconds are missing (``missing_list``, ``ragged_seconds``);
- a value that is not a finite number: passed on as NaN, so that the window
  builder bridges and flags it (``non_numeric``);
- fill ratio: samples received over nominal (``nominal_rate_hz``) per signal.
"""

from collections import Counter, deque
from dataclasses import dataclass, field
import datetime
import math
from typing import Deque, Dict, List, Mapping, Optional, Tuple
import zoneinfo

from tspace_ros.can.decoder import DecodedFrame
from tspace_ros.can.windowing import MappedSignal, SignalMapping
from tspace_ros.cloud.remote_can import finite_or_none

MESSAGE = 'get_signal'
TIMESTAMP_KEYS = ('timestamps', 'list_timestamps')
NS_PER_S = 10 ** 9
MAX_SECONDS = 600            # seconds in one result
MAX_VALUES_PER_SECOND = 1000  # values in one signal's list of one second
PROBLEMS = ('not_a_mapping', 'no_timestamps', 'oversized', 'bad_timestamp', 'out_of_order',
            'duplicate', 'late', 'future', 'missing_list', 'ragged_seconds', 'non_numeric',
            'oversized_second')


def default_cloud_mapping() -> SignalMapping:
    """Return the mapping of tspace's get_signal lists to the task's signals."""
    return SignalMapping([
        MappedSignal('speed', 'km/h', MESSAGE, 'list_speed_1s', minimum=-50.0, maximum=250.0),
        MappedSignal('pedal', '1', MESSAGE, 'list_pedal_1s', factor=0.01, minimum=0.0,
                     maximum=1.0),
        MappedSignal('brake', 'bar', MESSAGE, 'list_brake_pressure_1s', minimum=0.0,
                     maximum=250.0),
        MappedSignal('current', 'A', MESSAGE, 'list_current_1s', minimum=-2000.0,
                     maximum=2000.0),
        MappedSignal('voltage', 'V', MESSAGE, 'list_voltage_1s', minimum=0.0, maximum=1000.0),
    ])


def parse_timestamp(text, zone: datetime.tzinfo) -> int:
    """
    Return a ``YYMMDDhhmmssXX`` local time as UTC ns; ValueError if it is not one.

    A local time that does not exist (skipped by a daylight-saving change) is refused;
    an ambiguous one (repeated) takes its first occurrence.
    """
    if not isinstance(text, str) or len(text) != 14 or not text.isdigit() or \
            not text.isascii():
        raise ValueError(f'timestamp {text!r:.40} is not YYMMDDhhmmssXX')
    year, month, day, hour, minute, second, hundredths = (
        int(text[i:i + 2]) for i in range(0, 14, 2))
    local = datetime.datetime(2000 + year, month, day, hour, minute, second,
                              hundredths * 10000, tzinfo=zone)
    utc = local.astimezone(datetime.timezone.utc)
    if utc.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise ValueError(f'timestamp {text} does not exist in {zone}')
    seconds = int(utc.replace(microsecond=0).timestamp())
    return seconds * NS_PER_S + utc.microsecond * 1000


@dataclass
class DecodedBatch:
    """What one get_signal result gave: samples to feed, seconds taken and problems."""

    samples: List[Tuple[int, DecodedFrame]] = field(default_factory=list)
    seconds: int = 0
    dropped_seconds: int = 0
    already_taken: int = 0
    problems: Counter = field(default_factory=Counter)
    fill_ratio: Dict[str, float] = field(default_factory=dict)


class BatchDecoder:
    """Decode get_signal results of one vehicle, remembering the seconds it took."""

    def __init__(self, mapping: Optional[SignalMapping] = None, time_zone: str = 'UTC',
                 nominal_rate_hz: float = 50.0, max_clock_skew_s: float = 5.0,
                 remember_seconds: int = 3600):
        """
        Take the mapping, the site's time zone, the nominal rate and the allowed skew.

        The mapping reads message get_signal; the time zone is an IANA name; a
        second may be max_clock_skew_s in the future (the vehicle's clock skew).
        ValueError for an unknown time zone or a mapping of another message.
        """
        self.mapping = mapping or default_cloud_mapping()
        others = self.mapping.messages - {MESSAGE}
        if others:
            raise ValueError(f'a cloud signal mapping reads message {MESSAGE!r}, not '
                             f'{sorted(others)}')
        try:
            self.zone = zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f'unknown time zone {time_zone!r}: {error}') from None
        if not (math.isfinite(nominal_rate_hz) and nominal_rate_hz > 0):
            raise ValueError(f'nominal_rate_hz must be > 0, got {nominal_rate_hz}')
        if not (math.isfinite(max_clock_skew_s) and max_clock_skew_s >= 0):
            raise ValueError(f'max_clock_skew_s must be >= 0, got {max_clock_skew_s}')
        self.nominal_rate_hz = float(nominal_rate_hz)
        self.max_skew_ns = round(max_clock_skew_s * NS_PER_S)
        self.problems: Counter = Counter()
        self.last_problems: Deque[str] = deque(maxlen=8)
        self.newest_ns: Optional[int] = None
        self._seen: Deque[int] = deque(maxlen=remember_seconds)
        self._seen_set = set()
        self.received: Counter = Counter()
        self.nominal: Counter = Counter()

    def _problem(self, batch: DecodedBatch, reason: str, text: str, count: int = 1) -> None:
        batch.problems[reason] += count
        self.problems[reason] += count
        self.last_problems.append(f'{reason}: {text}')

    def _remember(self, second_ns: int) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(second_ns)
        self._seen_set.add(second_ns)

    def decode(self, result, now_ns: int) -> DecodedBatch:
        """Return the samples of the seconds of ``result`` not taken before; never raises."""
        batch = DecodedBatch()
        if not isinstance(result, Mapping):
            self._problem(batch, 'not_a_mapping', f'result is a {type(result).__name__}')
            return batch
        stamps = next((result[k] for k in TIMESTAMP_KEYS if k in result), None)
        if not isinstance(stamps, list) or not stamps:
            self._problem(batch, 'no_timestamps', f'no list in {"/".join(TIMESTAMP_KEYS)}')
            return batch
        if len(stamps) > MAX_SECONDS:
            self._problem(batch, 'oversized', f'{len(stamps)} seconds, at most {MAX_SECONDS}')
            return batch
        seconds = []
        for index, text in enumerate(stamps):
            try:
                seconds.append((parse_timestamp(text, self.zone), index))
            except (ValueError, OverflowError) as error:
                self._problem(batch, 'bad_timestamp', str(error))
        if any(a[0] >= b[0] for a, b in zip(seconds, seconds[1:])):
            self._problem(batch, 'out_of_order', 'timestamps not increasing: sorted')
            seconds.sort()
        lists = {}
        for signal in self.mapping.signals:
            values = result.get(signal.signal)
            if not isinstance(values, list):
                self._problem(batch, 'missing_list', f'{signal.signal} missing')
                continue
            if len(values) != len(stamps):
                self._problem(batch, 'ragged_seconds', f'{signal.signal} has {len(values)} '
                              f'seconds, timestamps {len(stamps)}')
            lists[signal] = values
        merged: Dict[int, Dict[str, float]] = {}
        previous = None
        for second_ns, index in seconds:
            if second_ns == previous:
                self._problem(batch, 'duplicate', f'second {stamps[index]} twice in a batch')
                batch.dropped_seconds += 1
                continue
            if second_ns in self._seen_set:  # overlapping polls: expected, not a problem
                batch.already_taken += 1
                continue
            if self.newest_ns is not None and second_ns < self.newest_ns:
                self._problem(batch, 'late', f'second {stamps[index]} older than the newest')
                batch.dropped_seconds += 1
                continue
            if second_ns > now_ns + self.max_skew_ns:
                self._problem(batch, 'future', f'second {stamps[index]} is in the future')
                batch.dropped_seconds += 1
                continue
            previous = second_ns
            self._take_second(batch, lists, index, second_ns, merged)
            self._remember(second_ns)
            self.newest_ns = second_ns if self.newest_ns is None else \
                max(self.newest_ns, second_ns)
            batch.seconds += 1
        batch.samples = [(t, DecodedFrame(MESSAGE, merged[t])) for t in sorted(merged)]
        batch.fill_ratio = self.fill_ratio()
        return batch

    def fill_ratio(self) -> Dict[str, float]:
        """Return the samples received over nominal, per signal, so far (0 before any)."""
        return {s.name: (self.received[s.name] / self.nominal[s.name]
                         if self.nominal[s.name] else 0.0)
                for s in self.mapping.signals}

    def _take_second(self, batch: DecodedBatch, lists: Mapping[MappedSignal, list],
                     index: int, second_ns: int, merged: Dict[int, Dict[str, float]]) -> None:
        nominal = round(self.nominal_rate_hz)
        for signal, per_second in lists.items():
            self.nominal[signal.name] += nominal
            values = per_second[index] if index < len(per_second) else None
            if not isinstance(values, list) or not values:
                continue
            if len(values) > MAX_VALUES_PER_SECOND:
                self._problem(batch, 'oversized_second',
                              f'{signal.signal}: {len(values)} values in one second')
                continue
            n = len(values)
            self.received[signal.name] += min(n, nominal)
            bad = 0
            for i, raw in enumerate(values):
                value = finite_or_none(raw)
                if value is None:
                    bad += 1
                    value = math.nan
                t = second_ns + (i * NS_PER_S) // n
                merged.setdefault(t, {})[signal.signal] = value
            if bad:
                self._problem(batch, 'non_numeric', f'{signal.signal}: {bad} values', bad)
