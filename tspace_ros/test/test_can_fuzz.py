"""
Property-based tests of the frame decoder and the window builder (hypothesis).

Arbitrary frames (ids, lengths 0..64, flags, payloads, capture times NaN, inf,
negative, huge, or jumping back and forth) through FrameDecoder and
WindowBuilder with the shipped DBC: no exception escapes, every rejected frame
is counted under one reason, every input is accepted, rejected or held, every
window is finite, within the mapping's limits, flags every signal an invalid
value fell in, and windows follow each other in time. Also arbitrary decoded
values through a mapping without limits, and SignalMapping.from_dicts over
arbitrary JSON-like data.
"""

import math

import can
from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.decoder import capture_time_ns, DecodedFrame, FrameDecoder
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.can.windowing import (FLOAT32_MAX, MappedSignal, SignalMapping,
                                      WindowBuilder)

DB = load_dbc()
MAPPING = SignalMapping.default()
KNOWN = sorted((m.frame_id, bool(m.is_extended_frame), m.length) for m in DB.messages)
T0_S = 1_790_000_000.0
CYCLE_S = 0.02  # the valid stream's period (50 Hz)
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RARE = st.sampled_from([False] * 9 + [True])

# A frame's time: relative to the stream's clock (mostly small, sometimes jumps), or
# an absolute value that is no capture time at all (or barely one).
TIMES = st.one_of(
    st.floats(min_value=-0.02, max_value=0.02).map(lambda d: ('rel', d)),
    st.floats(min_value=-5.0, max_value=5.0).map(lambda d: ('rel', d)),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 1e20, 2.0 ** 31,
                     2.0 ** 31 - 1, 1e300]).map(lambda t: ('abs', t)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda t: ('abs', t)),
    st.sampled_from([None, 'noon', True]).map(lambda t: ('abs', t)))


@st.composite
def hostile_frames(draw):
    """Return (time spec, can.Message kwargs) of one arbitrary frame."""
    kind = draw(st.sampled_from(['known', 'known', 'good', 'random']))
    if kind == 'good':
        index = draw(st.integers(0, 2))
        sample = {'speed_kph': draw(st.floats(-60.0, 300.0)), 'pedal': draw(st.floats(0, 1)),
                  'brake_bar': draw(st.floats(0.0, 300.0)),
                  'current_a': draw(st.floats(-3000.0, 3000.0)),
                  'voltage_v': draw(st.floats(0.0, 1200.0)), 'soc': 0.5,
                  'motor_torque_nm': 0.0, 'motor_speed_rpm': 0.0}
        frame = encode_vehicle_sample(DB, sample, 0.0)[index]
        fid, ext, data = frame.arbitration_id, frame.is_extended_id, bytes(frame.data)
    elif kind == 'known':
        fid, ext, length = draw(st.sampled_from(KNOWN))
        length = draw(st.one_of(st.just(length), st.integers(0, 64)))
        data = draw(st.binary(min_size=length, max_size=length))
    else:
        fid = draw(st.integers(0, 2 ** 29 - 1))
        ext = draw(st.booleans())
        data = draw(st.binary(min_size=0, max_size=64))
    dlc = draw(st.one_of(st.just(len(data)), st.integers(0, 64)))
    kwargs = {'arbitration_id': fid, 'is_extended_id': ext, 'data': data, 'dlc': dlc,
              'is_error_frame': draw(RARE), 'is_remote_frame': draw(RARE),
              'is_fd': draw(st.booleans()), 'bitrate_switch': draw(RARE),
              'error_state_indicator': draw(RARE), 'check': False}
    return draw(TIMES), kwargs


def _rows_by_message(mapping):
    rows = {}
    for row, s in enumerate(mapping.signals):
        rows.setdefault(s.message, []).append((row, s))
    return rows


class Shadow:
    """
    An independent account of what the builder must flag.

    For every input the builder took (its accepted count says so), each mapped
    value is late (not newer than its signal's previous sample), invalid (not a
    finite number within the limits and float32) or good.
    """

    def __init__(self, mapping, builder):
        self.mapping = mapping
        self.builder = builder
        self.rows = _rows_by_message(mapping)
        self.last_t = {}
        self.invalid_at = []  # (capture ns, signal name) of every invalid value taken
        self.held = None  # the input the builder holds as a possible jump
        self.windows = []

    def counts(self):
        stats = self.builder.stats
        return (stats.accepted, dict(stats.invalid), dict(stats.late))

    def take(self, t, frame, invalid, late):
        for row, s in self.rows.get(frame.message, ()):
            if s.signal not in frame:
                continue
            if s.name in self.last_t and t <= self.last_t[s.name]:
                late[s.name] = late.get(s.name, 0) + 1
                continue
            self.last_t[s.name] = t
            if not is_good(s, frame[s.signal]):
                invalid[s.name] = invalid.get(s.name, 0) + 1
                self.invalid_at.append((t, s.name))

    def feed(self, t, frame):
        """Feed the builder; check its counts and its windows against the shadow."""
        before = self.counts()
        stats = self.builder.stats
        results = self.builder.feed(t, frame)
        after = self.counts()
        taken = after[0] - before[0]
        assert taken in (0, 1, 2)
        inputs = [] if taken == 0 else [(t, frame)] if taken == 1 else [self.held, (t, frame)]
        if taken == 2 or (taken == 0 and not self.builder.time_jump_pending):
            self.held = None
        if taken == 0 and self.builder.time_jump_pending:
            self.held = (t, frame)
        invalid, late = {}, {}
        for item in inputs:
            self.take(*item, invalid, late)
        delta_invalid = {k: v - before[1].get(k, 0) for k, v in after[1].items()
                         if v != before[1].get(k, 0)}
        delta_late = {k: v - before[2].get(k, 0) for k, v in after[2].items()
                      if v != before[2].get(k, 0)}
        assert delta_invalid == invalid and delta_late == late
        assert stats.inputs == (stats.accepted + stats.rejected_inputs +
                                int(self.builder.time_jump_pending))
        for result in results:
            self.check_window(result)
        self.windows += results
        return results

    def check_window(self, result):
        window = result.window
        samples = window.samples
        assert samples.dtype == np.float32 and np.isfinite(samples).all()
        for row, s in enumerate(self.mapping.signals):
            low, high = max(s.minimum, -FLOAT32_MAX), min(s.maximum, FLOAT32_MAX)
            assert np.all((samples[row] >= np.float32(low)) & (samples[row] <= np.float32(high)))
        period = round(1e9 / window.sample_rate_hz)  # int ns: 1.8e18 ns is beyond float's
        for t_bad, name in self.invalid_at:
            if window.start_ns - period < t_bad <= window.end_ns:
                assert name in result.flagged_signals, (t_bad, name, result)
        if self.windows:
            assert window.start_ns > self.windows[-1].window.end_ns
        assert window.end_ns >= window.start_ns


def is_good(s: MappedSignal, value) -> bool:
    """Whether a decoded value may enter a window (the independent rule)."""
    if not isinstance(value, (int, float)):  # bool is an int: True is 1
        return False
    try:
        v = s.factor * float(value) + s.offset
    except OverflowError:
        return False
    return (math.isfinite(v) and -FLOAT32_MAX <= v <= FLOAT32_MAX and
            s.minimum <= v <= s.maximum)


def background(clock_s, speed_kph):
    """Return the VehicleDynamics and BatteryStatus frames of a valid sample at clock_s."""
    sample = {'speed_kph': speed_kph, 'pedal': 0.2, 'brake_bar': 0.0, 'current_a': 50.0,
              'voltage_v': 400.0, 'soc': 0.5, 'motor_torque_nm': 0.0, 'motor_speed_rpm': 0.0}
    dynamics, battery, _ = encode_vehicle_sample(DB, sample, clock_s)
    battery.timestamp = clock_s + 0.001
    return [(None, dynamics), (None, battery)]


@FUZZ
@given(st.lists(hostile_frames(), min_size=10, max_size=200))
def test_arbitrary_frames_never_raise_are_counted_and_windows_stay_honest(frames):
    # A valid 50 Hz stream (two frames a cycle) with one arbitrary frame after each cycle.
    decoder = FrameDecoder(DB)
    builder = WindowBuilder(MAPPING, sample_rate_hz=50.0, samples_per_window=5)
    shadow = Shadow(MAPPING, builder)
    clock = T0_S
    stream = []
    for i, ((spec, value), kwargs) in enumerate(frames):
        clock += CYCLE_S
        stream += background(clock, 10.0 + i % 7)
        frame = can.Message(timestamp=0.0, **kwargs)
        frame.timestamp = clock + 0.002 + value if spec == 'rel' else value
        stream.append((spec, frame))
    for i in range(100):  # then 2 s of the valid stream alone: it must give windows again
        clock += CYCLE_S
        stream += background(clock, 20.0 + i % 5)
    for _, frame in stream:
        stats = decoder.stats
        rejected, decoded = sum(stats.rejections.values()), stats.decoded
        result = decoder.decode(frame)
        if result is None:  # rejected: counted under exactly one reason
            assert sum(stats.rejections.values()) == rejected + 1
            assert stats.decoded == decoded and stats.last_rejection
            continue
        assert stats.decoded == decoded + 1
        assert sum(stats.rejections.values()) == rejected
        assert isinstance(result, DecodedFrame) and result.message in DB._name_to_message
        stamp = capture_time_ns(frame)
        assert isinstance(stamp, int) and stamp >= 0
        shadow.feed(stamp, result)
    assert decoder.stats.frames == len(stream)
    assert decoder.stats.rejected == sum(decoder.stats.rejections.values())
    assert shadow.windows, builder.stats  # the stream goes on through the hostile frames


GOOD = st.floats(min_value=-50.0, max_value=50.0)
HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-2 ** 70, max_value=2 ** 70), st.just(10 ** 400),
    st.sampled_from([math.nan, math.inf, -math.inf, 3.5e38, -3.5e38, FLOAT32_MAX, None,
                     'CHARGING', True, 150.0, -1e6]))
VALUES = st.one_of(GOOD, GOOD, GOOD, HOSTILE)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(['A', 'A', 'B', 'C']), st.integers(1, 40),
                          st.fixed_dictionaries({'X': VALUES, 'Y': VALUES},
                                                optional={'Z': VALUES})),
                min_size=10, max_size=300),
       st.sampled_from([1.0, 1e-30, 1e30, -2.5]))
def test_arbitrary_values_never_enter_a_window_unflagged_or_non_finite(inputs, factor):
    # 'Y' in two messages, one signal each: only A's may reach 'ay'. No limits on 'ax'.
    mapping = SignalMapping([MappedSignal('ax', '1', 'A', 'X', factor=factor),
                             MappedSignal('ay', '1', 'A', 'Y', minimum=-100.0, maximum=100.0),
                             MappedSignal('by', '1', 'B', 'Y')])
    builder = WindowBuilder(mapping, sample_rate_hz=100.0, samples_per_window=4)
    shadow = Shadow(mapping, builder)
    t = 1_790_000_000 * 10 ** 9
    for message, step_ms, values in inputs:
        t += step_ms * 1_000_000
        shadow.feed(t, DecodedFrame(message, values))
    stats = builder.stats
    assert stats.rejected == {} and stats.inputs == len(inputs)
    assert sum(stats.invalid.values()) == sum(stats.invalid_reasons.values())
    assert stats.ignored == sum(1 for message, _, _ in inputs if message == 'C')


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) |
    st.floats(allow_nan=True, allow_infinity=True),
    lambda children: st.lists(children, max_size=4) |
    st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20)
FIELD_VALUES = st.one_of(JSON, st.text(min_size=1, max_size=8),
                         st.floats(allow_nan=True, allow_infinity=True))
NEAR_VALID = st.fixed_dictionaries(
    {'name': st.one_of(st.sampled_from(['a', 'b']), FIELD_VALUES),
     'unit': st.one_of(st.just('1'), FIELD_VALUES),
     'message': st.one_of(st.just('M'), FIELD_VALUES),
     'signal': st.one_of(st.just('S'), FIELD_VALUES)},
    optional={'factor': FIELD_VALUES, 'offset': FIELD_VALUES, 'minimum': FIELD_VALUES,
              'maximum': FIELD_VALUES, 'colour': FIELD_VALUES})


@FUZZ
@given(st.one_of(JSON, st.lists(st.one_of(NEAR_VALID, JSON), max_size=4),
                 st.lists(NEAR_VALID, min_size=1, max_size=3)))
def test_signal_mapping_from_arbitrary_json_like_data_is_valid_or_a_value_error(items):
    try:
        mapping = SignalMapping.from_dicts(items)
    except ValueError:
        return
    for s in mapping.signals:
        assert all(isinstance(x, str) for x in (s.name, s.unit, s.message, s.signal))
        assert math.isfinite(s.factor) and s.factor != 0 and math.isfinite(s.offset)
        assert s.minimum <= s.maximum  # never NaN
    WindowBuilder(mapping)  # a mapping that loads builds a window builder


def test_the_shadow_catches_a_value_that_slips_through():
    # The fuzz oracle itself: a builder that took an infinite value unflagged fails it.
    mapping = SignalMapping([MappedSignal('x', '1', 'M', 'X')])
    builder = WindowBuilder(mapping, sample_rate_hz=100.0, samples_per_window=2)
    shadow = Shadow(mapping, builder)
    builder._routes['M'] = (('X', ((0, 1.0, 0.0, -math.inf, math.inf),)),)  # no guard
    shadow.feed(10 ** 18, DecodedFrame('M', {'X': 1.0}))
    with pytest.raises(AssertionError):
        shadow.feed(10 ** 18 + 10 ** 7, DecodedFrame('M', {'X': math.inf}))
