"""WindowBuilder: known signal traces in, exact windows out; bad data flagged; gaps."""

import math

import can
import cantools
import numpy as np
import pytest

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.decoder import capture_time_ns, DecodedFrame, FrameDecoder
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.can.windowing import MappedSignal, SignalMapping, WindowBuilder

T0 = 1_790_000_000_000_000_000  # UTC ns
MS = 1_000_000


def trace(t_s):
    """Return the DBC values of linear test traces at t_s seconds after T0."""
    return {'VehicleSpeed': 10.0 + 2.0 * t_s, 'AccelPedalPosition': 20.0 + 10.0 * t_s,
            'BrakePressure': 0.5 * t_s, 'BatteryCurrent': 100.0 - 4.0 * t_s,
            'BatteryVoltage': 400.0 - 1.0 * t_s}


def expected(t_s):
    """Return our (signal, value) rows for the traces: pedal as a fraction."""
    v = trace(np.asarray(t_s, dtype=np.float64))
    return np.vstack([v['VehicleSpeed'], v['AccelPedalPosition'] / 100.0, v['BrakePressure'],
                      v['BatteryCurrent'], v['BatteryVoltage']])


DYNAMICS = ('VehicleSpeed', 'AccelPedalPosition', 'BrakePressure')
BATTERY = ('BatteryCurrent', 'BatteryVoltage')


def dynamics(**values):
    """Return a decoded VehicleDynamics frame with the given signals."""
    return DecodedFrame('VehicleDynamics', values)


def battery(**values):
    """Return a decoded BatteryStatus frame with the given signals."""
    return DecodedFrame('BatteryStatus', values)


def drive(builder, duration_s, start_ms=0, skip=lambda t_ms, frame: False, edit=None):
    """
    Feed 50 Hz frames of the traces; return the windows.

    Two frames per cycle like the shipped DBC: dynamics at 20 ms x i, battery
    1 ms later. skip(t_ms, frame) drops a frame; edit(t_ms, values) may change one.
    """
    results = []
    messages = {'dynamics': 'VehicleDynamics', 'battery': 'BatteryStatus'}
    for i in range(round(duration_s * 50)):
        for frame, offset_ms, keys in (('dynamics', 0, DYNAMICS), ('battery', 1, BATTERY)):
            t_ms = start_ms + 20 * i + offset_ms
            if skip(t_ms, frame):
                continue
            values = {k: v for k, v in trace(t_ms / 1000.0).items() if k in keys}
            if edit is not None:
                edit(t_ms, values)
            results += builder.feed(T0 + t_ms * MS, DecodedFrame(messages[frame], values))
    return results


@pytest.mark.parametrize('rate_hz, n_samples', [(20.0, 30), (50.0, 200)])
def test_linear_traces_give_exact_windows_stamps_and_ids(rate_hz, n_samples):
    builder = WindowBuilder(sample_rate_hz=rate_hz, samples_per_window=n_samples,
                            vehicle_id='VIN1', driver_id='drv', episode_id='ep7', step_index=3)
    duration_s = 2 * n_samples / rate_hz + 0.1
    results = drive(builder, duration_s)
    assert len(results) == 2
    period_ns = round(1e9 / rate_hz)
    anchor = T0 + 1 * MS  # the first instant both frames have a sample
    for j, result in enumerate(results):
        window = result.window
        assert result.clean and result.flagged_signals == ()
        assert window.signal_names == ('speed', 'pedal', 'brake', 'current', 'voltage')
        assert window.units == ('km/h', '1', 'bar', 'A', 'V')
        assert (window.vehicle_id, window.driver_id, window.episode_id) == \
            ('VIN1', 'drv', 'ep7')
        assert window.step_index == 3 + j
        assert window.sample_rate_hz == rate_hz and window.samples.shape == (5, n_samples)
        first = anchor + j * n_samples * period_ns
        assert window.start_ns == first
        assert window.end_ns == first + (n_samples - 1) * period_ns
        grid_s = (first - T0 + np.arange(n_samples) * period_ns) / 1e9
        np.testing.assert_allclose(window.samples, expected(grid_s), rtol=1e-6, atol=1e-5)
    # Consecutive and non-overlapping: the next window starts one period later.
    assert results[1].window.start_ns - results[0].window.end_ns == period_ns
    assert builder.stats.windows == 2 and builder.stats.gaps == 0


def test_window_is_completed_by_the_first_frame_past_its_last_grid_point():
    builder = WindowBuilder()  # 20 Hz x 30
    results = drive(builder, 1.6)
    end_ms = 1 + 29 * 50  # last grid point at 1451 ms
    # Dynamics frames come at 1460 ms (past it), battery frames at 1461 ms: the latter
    # completes the window.
    assert results[0].window.end_ns == T0 + end_ms * MS
    assert results[0].completed_ns == T0 + 1461 * MS


def test_interpolation_is_linear_not_a_hold():
    # A grid point between two samples gets the value on the line between them.
    builder = WindowBuilder(sample_rate_hz=100.0, samples_per_window=3)
    builder.feed(T0, dynamics(VehicleSpeed=0.0, AccelPedalPosition=0.0, BrakePressure=0.0))
    builder.feed(T0, battery(BatteryCurrent=0.0, BatteryVoltage=300.0))
    builder.feed(T0 + 40 * MS, dynamics(VehicleSpeed=40.0, AccelPedalPosition=80.0,
                                        BrakePressure=4.0))
    (result,) = builder.feed(T0 + 40 * MS + 1, battery(BatteryCurrent=-40.0,
                                                       BatteryVoltage=340.0))
    np.testing.assert_allclose(result.window.signal('speed'), [0.0, 10.0, 20.0])
    np.testing.assert_allclose(result.window.signal('pedal'), [0.0, 0.2, 0.4])
    np.testing.assert_allclose(result.window.signal('voltage'), [300.0, 310.0, 320.0])


def test_pedal_percent_on_the_bus_becomes_a_fraction_through_the_dbc():
    db = load_dbc()
    decoder = FrameDecoder(db)
    builder = WindowBuilder(samples_per_window=2)
    sample = {'speed_kph': 36.0, 'pedal': 0.42, 'brake_bar': 0.0, 'current_a': 20.0,
              'voltage_v': 390.0, 'soc': 0.5, 'motor_torque_nm': 0.0, 'motor_speed_rpm': 0.0}
    results = []
    for i in range(10):
        for frame in encode_vehicle_sample(db, sample, 1_790_000_000.0 + 0.02 * i):
            results += builder.feed(capture_time_ns(frame), decoder.decode(frame))
    assert results
    window = results[0].window
    assert window.unit('pedal') == '1'
    np.testing.assert_allclose(window.signal('pedal'), 0.42, rtol=1e-6)
    np.testing.assert_allclose(window.signal('speed'), 36.0, rtol=1e-6)


def test_nan_and_out_of_range_values_are_flagged_dropped_and_bridged():
    def corrupt(t_ms, values):
        if t_ms in (400, 1460) and 'VehicleSpeed' in values:
            values['VehicleSpeed'] = math.nan
        if t_ms == 441 and 'BatteryCurrent' in values:
            values['BatteryCurrent'] = 'CHARGING'  # not a number at all
        if t_ms == 500 and 'AccelPedalPosition' in values:
            values['AccelPedalPosition'] = 150.0  # 1.5 after conversion: out of [0, 1]

    builder = WindowBuilder()
    results = drive(builder, 3.1, edit=corrupt)
    first, second = results[0], results[1]
    assert first.invalid_samples == {'speed': 1, 'pedal': 1, 'current': 1}
    assert first.flagged_signals == ('speed', 'pedal', 'current') and not first.clean
    # 1460 ms lies after the first window's last grid point (1451 ms): the second's.
    assert second.invalid_samples == {'speed': 1} and second.stale_samples == {}
    assert builder.stats.invalid == {'speed': 2, 'pedal': 1, 'current': 1}
    # The neighbours bridge the dropped values: the window still matches the traces.
    grid_s = (1 * MS + np.arange(30) * 50 * MS) / 1e9
    np.testing.assert_allclose(first.window.samples, expected(grid_s), rtol=1e-6, atol=1e-5)
    assert np.all(np.isfinite(first.window.samples))


def test_a_silent_signal_is_held_and_counted_stale():
    # Battery frames stop from 300 ms to 600 ms (0.3 s > stale_after_s = 0.2 s).
    builder = WindowBuilder(stale_after_s=0.2, max_gap_s=0.5)
    results = drive(builder, 1.6, skip=lambda t, frame: frame == 'battery' and 300 < t < 600)
    (result,) = results
    stale = result.stale_samples
    assert set(stale) == {'current', 'voltage'} and stale['current'] == stale['voltage']
    assert result.flagged_signals == ('current', 'voltage')
    assert builder.stats.stale == stale and builder.stats.gaps == 0
    # Held points carry the last value before the silence (281 ms), the others the trace.
    window = result.window
    times_ms = 1 + 50 * np.arange(30)
    held = window.signal('current') == np.float32(trace(0.281)['BatteryCurrent'])
    assert held.sum() == stale['current']
    assert np.all((times_ms[held] > 300) & (times_ms[held] < 600))
    np.testing.assert_allclose(window.signal('speed'), expected(times_ms / 1000.0)[0],
                               rtol=1e-6)


def test_a_silence_longer_than_the_gap_limit_restarts_the_grid():
    builder = WindowBuilder(max_gap_s=0.5)
    results = drive(builder, 1.0)  # 20 grid points of a 30-point window, no window yet
    assert results == []
    # One second of silence, then frames again from 2000 ms.
    results = drive(builder, 1.6, start_ms=2000)
    assert builder.stats.gaps == 1
    assert builder.stats.dropped_windows == 1 and builder.stats.dropped_points == 20
    (result,) = results
    assert result.window.start_ns == T0 + 2001 * MS  # the new anchor
    assert result.window.step_index == 0  # the dropped window took no step
    grid_s = (2001 * MS + np.arange(30) * 50 * MS) / 1e9
    np.testing.assert_allclose(result.window.samples, expected(grid_s), rtol=1e-6, atol=1e-5)


def test_one_signal_silent_past_the_gap_limit_restarts_and_waits_for_it():
    builder = WindowBuilder(stale_after_s=0.2, max_gap_s=0.5)
    results = drive(builder, 3.0, skip=lambda t, frame: frame == 'battery' and t > 200)
    assert results == []
    assert builder.stats.gaps == 1 and builder.stats.dropped_windows == 1
    assert builder.waiting_for == ('current', 'voltage')


def test_a_jump_back_in_time_is_rejected_and_late_samples_are_dropped():
    builder = WindowBuilder()
    drive(builder, 0.5)
    # A frame older than its signal's previous one (but within the gap limit) is late.
    builder.feed(T0 + 100 * MS, dynamics(VehicleSpeed=1.0))
    assert builder.stats.late == {'speed': 1} and builder.stats.gaps == 0
    # A jump back by more than the gap limit is dropped and counted: windows never go back.
    builder.feed(T0 - 10_000 * MS, dynamics(VehicleSpeed=1.0))
    assert builder.stats.rejected == {'backwards': 1}
    assert builder.stats.gaps == 0 and builder.stats.late == {'speed': 1}
    # The stream goes on where it was.
    results = drive(builder, 1.5, start_ms=500)
    assert [r.window.start_ns for r in results] == [T0 + 1 * MS]
    assert builder.stats.gaps == 0 and results[0].clean


def test_set_episode_and_reset():
    builder = WindowBuilder(samples_per_window=10, episode_id='a')
    results = drive(builder, 0.6)
    assert [r.window.episode_id for r in results] == ['a']
    builder.set_episode('b', step_index=0)
    builder.reset()
    assert builder.stats.dropped_windows == 1  # the partial window at reset
    results = drive(builder, 0.6, start_ms=1000)
    assert [(r.window.episode_id, r.window.step_index) for r in results] == [('b', 0)]
    assert results[0].window.start_ns == T0 + 1001 * MS


def test_mapping_is_configurable_and_checked_against_the_dbc():
    db = load_dbc()
    SignalMapping.default().check_against(db)
    mapping = SignalMapping.from_dicts([
        {'name': 'speed_mps', 'unit': 'm/s', 'message': 'VehicleDynamics',
         'signal': 'VehicleSpeed', 'factor': 1 / 3.6},
        {'name': 'soc', 'unit': '1', 'message': 'BatteryStatus', 'signal': 'StateOfCharge',
         'factor': 0.01, 'minimum': 0.0, 'maximum': 1.0},
    ])
    mapping.check_against(db)
    assert mapping.names == ('speed_mps', 'soc') and mapping.units == ('m/s', '1')
    builder = WindowBuilder(mapping, sample_rate_hz=10.0, samples_per_window=2)
    builder.feed(T0, dynamics(VehicleSpeed=36.0, Unmapped=1.0))
    builder.feed(T0, battery(StateOfCharge=50.0))
    builder.feed(T0 + 100 * MS, dynamics(VehicleSpeed=72.0))
    (result,) = builder.feed(T0 + 100 * MS + 1, battery(StateOfCharge=50.0))
    np.testing.assert_allclose(result.window.signal('speed_mps'), [10.0, 20.0], rtol=1e-6)
    np.testing.assert_allclose(result.window.signal('soc'), [0.5, 0.5])
    with pytest.raises(ValueError, match="no signal 'Nope'"):
        SignalMapping([MappedSignal('x', '1', 'VehicleDynamics', 'Nope')]).check_against(db)
    with pytest.raises(ValueError, match="no message 'Nope'"):
        SignalMapping([MappedSignal('x', '1', 'Nope', 'VehicleSpeed')]).check_against(db)
    with pytest.raises(ValueError, match='bad mapped signal'):
        SignalMapping.from_dicts([{'name': 'x', 'colour': 'red'}])
    with pytest.raises(ValueError, match='duplicate'):
        SignalMapping([MappedSignal('x', '1', 'A', 'B'), MappedSignal('x', '1', 'A', 'C')])
    with pytest.raises(ValueError, match='non-zero'):
        MappedSignal('x', '1', 'A', 'B', factor=0.0)
    with pytest.raises(ValueError, match='stale_after_s'):
        WindowBuilder(stale_after_s=1.0, max_gap_s=0.5)


# Two messages that both carry a 'Speed' and a 'Counter' (as production DBCs do).
SAME_NAMES_DBC = '\n'.join([
    'VERSION ""', 'NS_ :', 'BS_:', 'BU_: A B',
    'BO_ 256 WheelSpeeds: 8 A',
    ' SG_ Speed : 0|16@1+ (0.01,0) [0|655.35] "km/h" B',
    ' SG_ Counter : 16|4@1+ (1,0) [0|15] "" B',
    ' SG_ WheelOnly : 20|4@1+ (1,0) [0|15] "" B',
    'BO_ 512 MotorStatus: 8 A',
    ' SG_ Speed : 0|16@1- (1,0) [-32768|32767] "rpm" B',
    ' SG_ Counter : 16|4@1+ (1,0) [0|15] "" B', ''])


def test_signals_are_routed_by_message_and_signal_never_by_name_alone():
    same = cantools.database.load_string(SAME_NAMES_DBC, database_format='dbc')
    mapping = SignalMapping([
        MappedSignal('speed', 'km/h', 'WheelSpeeds', 'Speed', minimum=0.0, maximum=300.0),
        MappedSignal('motor_rpm', 'rpm', 'MotorStatus', 'Speed'),
        MappedSignal('counter', '1', 'WheelSpeeds', 'Counter')])
    mapping.check_against(same)
    decoder = FrameDecoder(same)
    builder = WindowBuilder(mapping, sample_rate_hz=50.0, samples_per_window=10)
    wheel = same.get_message_by_name('WheelSpeeds')
    motor = same.get_message_by_name('MotorStatus')
    results = []
    for i in range(40):
        t_s = 1_790_000_000.0 + 0.02 * i
        # The motor's Speed (rpm, thousands) and Counter would wreck the wheel speed
        # (km/h, < 300: out of range) and the wheel counter if routed by name.
        frames = [can.Message(timestamp=t_s, arbitration_id=256, is_extended_id=False,
                              data=wheel.encode({'Speed': 30.0, 'Counter': i % 4,
                                                 'WheelOnly': 0})),
                  can.Message(timestamp=t_s + 0.001, arbitration_id=512, is_extended_id=False,
                              data=motor.encode({'Speed': 3000, 'Counter': 15}))]
        for frame in frames:
            results += builder.feed(capture_time_ns(frame), decoder.decode(frame))
    assert len(results) >= 3
    for result in results:
        assert result.clean, result.invalid_samples
        np.testing.assert_allclose(result.window.signal('speed'), 30.0)
        np.testing.assert_allclose(result.window.signal('motor_rpm'), 3000.0)
        assert result.window.signal('counter').max() <= 3.0
    assert builder.stats.invalid == {} and builder.stats.late == {}
    # A mapped signal must be in its own message, not merely somewhere in the DBC.
    with pytest.raises(ValueError, match=r"'MotorStatus' has no signal 'WheelOnly' "
                                         r'\(a signal of that name is in WheelSpeeds\)'):
        SignalMapping([MappedSignal('w', '1', 'MotorStatus', 'WheelOnly')]).check_against(same)
    # A plain dict cannot say which message its signals come from.
    with pytest.raises(TypeError, match='DecodedFrame'):
        builder.feed(T0, {'Speed': 1.0})


def test_a_message_the_mapping_does_not_read_is_ignored_and_counted():
    builder = WindowBuilder()
    builder.feed(T0, DecodedFrame('MotorStatus', {'VehicleSpeed': 999.0, 'MotorSpeed': 1}))
    assert builder.stats.ignored == 1 and builder.stats.invalid == {}
    assert builder.waiting_for == builder.mapping.names


F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize('bad, reason', [
    (math.inf, 'infinite'), (-math.inf, 'infinite'), (math.nan, 'not_a_number'),
    ('CHARGING', 'not_a_number'), (None, 'not_a_number'),
    (1e39, 'float32_overflow'), (-3.5e38, 'float32_overflow'), (10 ** 400, 'float32_overflow')])
def test_non_finite_and_float32_overflow_values_are_flagged_without_limits(bad, reason):
    # No minimum/maximum: only finiteness and float32's range guard the window.
    mapping = SignalMapping([MappedSignal('x', '1', 'M', 'X'), MappedSignal('y', '1', 'M', 'Y')])
    builder = WindowBuilder(mapping, sample_rate_hz=100.0, samples_per_window=5)
    results = []
    for i in range(12):
        x = bad if i == 3 else float(i)
        results += builder.feed(T0 + i * 10 * MS, DecodedFrame('M', {'X': x, 'Y': -1.0}))
    first, second = results[0], results[1]
    assert first.flagged_signals == ('x',) and first.invalid_samples == {'x': 1}
    assert first.invalid_reasons == {reason: 1}
    assert second.clean
    assert builder.stats.invalid == {'x': 1} and builder.stats.invalid_reasons == {reason: 1}
    for result in results:
        assert np.all(np.isfinite(result.window.samples))
    # The neighbours (2.0 at 20 ms and 4.0 at 40 ms) bridge the dropped value.
    np.testing.assert_allclose(first.window.signal('x'), [0.0, 1.0, 2.0, 3.0, 4.0])


def test_a_finite_value_that_overflows_in_conversion_or_leaves_the_range_is_flagged():
    mapping = SignalMapping([
        MappedSignal('big', '1', 'M', 'B', factor=1e30),
        MappedSignal('ranged', '1', 'M', 'R', minimum=-10.0, maximum=10.0)])
    builder = WindowBuilder(mapping, sample_rate_hz=100.0, samples_per_window=4)
    results = []
    for i in range(10):
        big, ranged = (1e10, 11.0) if i == 2 else (1.0, 0.0)
        results += builder.feed(T0 + i * 10 * MS, DecodedFrame('M', {'B': big, 'R': ranged}))
    assert results[0].flagged_signals == ('big', 'ranged')
    assert results[0].invalid_reasons == {'float32_overflow': 1, 'out_of_range': 1}
    assert builder.stats.invalid_reasons == {'float32_overflow': 1, 'out_of_range': 1}
    assert all(np.all(np.isfinite(r.window.samples)) for r in results)
    np.testing.assert_allclose(results[0].window.signal('big'), 1e30, rtol=1e-6)


def test_a_signal_only_ever_non_finite_never_enters_a_window():
    mapping = SignalMapping([MappedSignal('x', '1', 'M', 'X'), MappedSignal('y', '1', 'M', 'Y')])
    builder = WindowBuilder(mapping, sample_rate_hz=100.0, samples_per_window=5)
    results = []
    for i in range(100):
        results += builder.feed(T0 + i * 10 * MS, DecodedFrame('M', {'X': math.inf, 'Y': 1.0}))
    assert results == [] and builder.waiting_for == ('x',)
    assert builder.stats.invalid == {'x': 100}


@pytest.mark.parametrize('stamp, reason', [
    (math.nan, 'bad_time'), (math.inf, 'bad_time'), (-math.inf, 'bad_time'),
    (None, 'bad_time'), ('soon', 'bad_time'), (1.5, 'bad_time'), (True, 'bad_time'),
    (-1, 'time_before_epoch'), (-T0, 'time_before_epoch'),
    (2 ** 63, 'time_too_large'), (1e30, 'time_too_large')])
def test_bad_capture_times_are_counted_rejections_never_exceptions(stamp, reason):
    builder = WindowBuilder(samples_per_window=10)
    results = drive(builder, 0.2)
    assert builder.feed(stamp, dynamics(VehicleSpeed=math.nan)) == []
    assert builder.stats.rejected == {reason: 1} and builder.stats.invalid == {}
    results += drive(builder, 0.6, start_ms=200)
    assert len(results) == 1 and results[0].clean
    stats = builder.stats
    assert stats.inputs == stats.accepted + stats.rejected_inputs
    assert stats.as_dict()['rejected'] == {reason: 1}


def test_a_lone_jump_forward_in_time_is_dropped_not_a_restart():
    builder = WindowBuilder(samples_per_window=10)
    results = drive(builder, 0.3)
    # One frame stamped an hour ahead: if it restarted the grid, every later frame
    # would be a jump back in time.
    builder.feed(T0 + 3_600_000 * MS, dynamics(VehicleSpeed=50.0, AccelPedalPosition=0.0,
                                               BrakePressure=0.0))
    assert builder.time_jump_pending
    results += drive(builder, 0.5, start_ms=300)
    assert builder.stats.rejected == {'time_jump': 1} and builder.stats.gaps == 0
    assert not builder.time_jump_pending
    assert len(results) == 1 and results[0].clean
    grid_s = (1 * MS + np.arange(10) * 50 * MS) / 1e9
    np.testing.assert_allclose(results[0].window.samples, expected(grid_s), rtol=1e-6,
                               atol=1e-5)


def test_windows_never_go_back_in_time_until_reset():
    builder = WindowBuilder(samples_per_window=5)
    results = drive(builder, 1.0, start_ms=10_000)
    # The clock restarts ten seconds earlier: dropped and counted, windows stay monotonic.
    results += drive(builder, 1.0, start_ms=0)
    assert builder.stats.rejected == {'backwards': 100}
    starts = [r.window.start_ns for r in results]
    ends = [r.window.end_ns for r in results]
    assert all(s > e for s, e in zip(starts[1:], ends[:-1]))
    builder.reset()  # the one way back (a new bag, a restarted simulation)
    (first, *_) = drive(builder, 1.0, start_ms=0)
    assert first.window.start_ns == T0 + 1 * MS


@pytest.mark.parametrize('items', [
    None, 'speed', 42, 3.5, {'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S'},
    [1], [None], ['speed'], [[('name', 'x')]], [{}], [{1: 2}],
    [{'name': 'x', 'unit': '1', 'message': 'M'}],
    [{'name': 5, 'unit': '1', 'message': 'M', 'signal': 'S'}],
    [{'name': 'x', 'unit': None, 'message': 'M', 'signal': 'S'}],
    [{'name': 'x', 'unit': '1', 'message': ['M'], 'signal': 'S'}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'factor': '0.01'}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'factor': True}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'factor': 10 ** 400}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'offset': math.inf}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'minimum': math.nan}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'maximum': math.nan}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'maximum': {'a': 1}}],
    [{'name': 'x', 'unit': '1', 'message': 'M', 'signal': 'S', 'minimum': 2, 'maximum': 1}],
])
def test_hostile_mapping_files_are_a_clear_value_error(items):
    with pytest.raises(ValueError, match='bad mapped signal'):
        SignalMapping.from_dicts(items)
