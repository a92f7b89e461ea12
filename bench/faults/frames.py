"""
Fault class 'CAN frames': hostile frames through FrameDecoder and WindowBuilder.

A valid 50 Hz stream of the simulated van (shipped DBC, default SignalMapping)
runs throughout; after every cycle comes one hostile frame, one case: an id the
DBC lacks, a known id as an extended id, a wrong length or DLC, an error or
remote frame, a 64-byte FD frame, something that is no frame at all, a valid
frame with a capture time that is NaN, infinite, negative, huge, not a number,
far back or far ahead, or a known frame with a random or saturated payload.

Verdicts per case:

- clean rejection: the decoder rejected it (reason ``decoder:<counter>``), the
  window builder dropped its time (``window:<reason>``) or its late samples
  (``window:late``), or flagged its values (``flagged:<reason>``);
- accepted: decoded and taken with valid values (or of a message the windows do
  not read);
- escaped: an exception left the decoder, capture_time_ns or the builder;
- data lost: a window with a non-finite value or a value outside the mapping's
  limits, a bad value (not finite, beyond float32 or out of range, judged here
  independently) taken without being flagged, or a window that covers a bad
  value's capture time without naming its signal in ``flagged_signals``.

Run: ``cd bench && python -c "import faults.frames as m; print(m.run(2000, 0))"``.
"""

import math
import random
from typing import List, Tuple

import can
from faults import FaultTally
import numpy as np
from tspace_ros.can.dbc import load_dbc, MSG_BATTERY_STATUS, MSG_VEHICLE_DYNAMICS
from tspace_ros.can.decoder import capture_time_ns, FrameDecoder
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.can.windowing import FLOAT32_MAX, SignalMapping, WindowBuilder

NAME = 'CAN frames'
T0_S = 1_790_000_000.0
CYCLE_S = 0.02
KINDS = ('unknown_id', 'extended_known_id', 'wrong_length', 'dlc_mismatch', 'error_frame',
         'remote_frame', 'fd_64_bytes', 'not_a_frame', 'nan_time', 'inf_time',
         'negative_time', 'huge_time', 'time_not_a_number', 'far_back_time', 'far_ahead_time',
         'slightly_late_time', 'random_payload', 'saturated_payload', 'random_frame')


def _good(value, s) -> bool:
    """Whether a decoded value may enter a window (judged independently of the builder)."""
    if not isinstance(value, (int, float)):
        return False
    v = s.factor * float(value) + s.offset
    return math.isfinite(v) and abs(v) <= FLOAT32_MAX and s.minimum <= v <= s.maximum


class _Run:
    """One run of the fault class: the stream, the decoder, the builder and the tally."""

    def __init__(self, cases: int, seed: int):
        self.rng = random.Random(seed)
        self.cases = cases
        self.db = load_dbc()
        self.mapping = SignalMapping.default()
        self.decoder = FrameDecoder(self.db)
        self.builder = WindowBuilder(self.mapping, sample_rate_hz=50.0, samples_per_window=10)
        self.tally = FaultTally(NAME)
        self.known = list(self.db.messages)
        self.rows = {}
        for s in self.mapping.signals:
            self.rows.setdefault(s.message, []).append(s)
        self.bad_taken: List[Tuple[int, str]] = []  # (capture ns, signal) of flagged values
        self.windows = 0
        self.last_end_ns = None

    def cycle(self, clock_s: float) -> list:
        rng = self.rng
        speed = 40.0 + 30.0 * math.sin(clock_s / 7.0)
        sample = {'speed_kph': speed, 'pedal': rng.uniform(0.0, 1.0),
                  'brake_bar': rng.uniform(0.0, 5.0), 'current_a': rng.uniform(-100, 200),
                  'voltage_v': rng.uniform(380.0, 400.0), 'soc': 0.5,
                  'motor_torque_nm': 0.0, 'motor_speed_rpm': 1000.0}
        frames = encode_vehicle_sample(self.db, sample, clock_s)
        for k, frame in enumerate(frames):
            frame.timestamp = clock_s + 0.001 * k
        return frames

    def hostile(self, kind: str, clock_s: float):
        rng = self.rng
        valid = self.cycle(clock_s)[rng.randrange(2)]  # dynamics or battery
        t = clock_s + 0.002
        valid.timestamp = t
        message = rng.choice(self.known)
        if kind == 'unknown_id':
            ids = {m.frame_id for m in self.known}
            frame_id = rng.choice([i for i in (0x7FF, 0x123, 0x555, 0x0) if i not in ids])
            return can.Message(timestamp=t, arbitration_id=frame_id, is_extended_id=False,
                               data=bytes(rng.randrange(256) for _ in range(8)))
        if kind == 'extended_known_id':
            valid.is_extended_id = True
            return valid
        if kind == 'wrong_length':
            n = rng.choice([0, 1, 4, 7, 12, 64])
            return can.Message(timestamp=t, arbitration_id=message.frame_id,
                               is_extended_id=False, data=bytes(n), dlc=n, check=False,
                               is_fd=n > 8)
        if kind == 'dlc_mismatch':
            valid.dlc = rng.choice([0, 3, 6, 15])
            return valid
        if kind == 'error_frame':
            return can.Message(timestamp=t, is_error_frame=True,
                               arbitration_id=message.frame_id, data=bytes(8))
        if kind == 'remote_frame':
            return can.Message(timestamp=t, is_remote_frame=True, is_extended_id=False,
                               arbitration_id=message.frame_id, dlc=8)
        if kind == 'fd_64_bytes':
            return can.Message(timestamp=t, arbitration_id=message.frame_id,
                               is_extended_id=False, is_fd=True,
                               data=bytes(rng.randrange(256) for _ in range(64)))
        if kind == 'not_a_frame':
            return rng.choice([None, 'not a frame', b'\x00' * 8, 42, object()])
        times = {'nan_time': math.nan, 'inf_time': rng.choice([math.inf, -math.inf]),
                 'negative_time': -rng.uniform(1e-6, 1e9),
                 'huge_time': rng.choice([2.0 ** 31, 1e20, 1e300, 2.0 ** 63]),
                 'time_not_a_number': rng.choice([None, 'noon', [1.0]]),
                 'far_back_time': clock_s - rng.uniform(1.0, 1e6),
                 'far_ahead_time': clock_s + rng.uniform(1.0, 1e6),
                 'slightly_late_time': clock_s - rng.uniform(0.021, 0.4)}
        if kind in times:
            valid.timestamp = times[kind]
            return valid
        if kind == 'random_payload':
            message = self.db.get_message_by_name(
                rng.choice([MSG_VEHICLE_DYNAMICS, MSG_BATTERY_STATUS]))
            return can.Message(timestamp=t, arbitration_id=message.frame_id,
                               is_extended_id=False,
                               data=bytes(rng.randrange(256) for _ in range(message.length)))
        if kind == 'saturated_payload':
            message = self.db.get_message_by_name(
                rng.choice([MSG_VEHICLE_DYNAMICS, MSG_BATTERY_STATUS]))
            fill = rng.choice([0xFF, 0x7F, 0x80])
            return can.Message(timestamp=t, arbitration_id=message.frame_id,
                               is_extended_id=False, data=bytes([fill] * message.length))
        n = rng.randrange(65)
        return can.Message(timestamp=rng.choice([t, math.nan, -t, t + 1e4]),
                           arbitration_id=rng.randrange(2 ** 29),
                           is_extended_id=rng.random() < 0.5,
                           is_error_frame=rng.random() < 0.1, is_remote_frame=rng.random() < 0.1,
                           is_fd=n > 8, data=bytes(rng.randrange(256) for _ in range(n)),
                           dlc=rng.choice([n, rng.randrange(65)]), check=False)

    def check_windows(self, results) -> None:
        """Count data lost in windows: non-finite, out of limits, or unflagged bad values."""
        for result in results:
            window = result.window
            samples = window.samples
            lost = not np.isfinite(samples).all()
            for row, s in enumerate(self.mapping.signals):
                if np.any(samples[row] < np.float32(s.minimum)) or \
                        np.any(samples[row] > np.float32(s.maximum)):
                    lost = True
            period = 1e9 / window.sample_rate_hz
            for t_bad, name in self.bad_taken:
                if window.start_ns - period < t_bad <= window.end_ns and \
                        name not in result.flagged_signals:
                    lost = True
            if self.last_end_ns is not None and window.start_ns <= self.last_end_ns:
                lost = True  # a window that goes back in time
            self.last_end_ns = window.end_ns
            self.windows += 1
            if lost:
                self.tally.lose()
        # Only capture times a later window may still cover are kept.
        if self.last_end_ns is not None:
            self.bad_taken = [(t, n) for t, n in self.bad_taken if t > self.last_end_ns - 1e9]

    def feed(self, frame):
        """Decode and window one frame; return (decoded or None, stamp, results)."""
        decoded = self.decoder.decode(frame)
        if decoded is None:
            return None, None, []
        stamp = capture_time_ns(frame)
        results = self.builder.feed(stamp, decoded)
        self.check_windows(results)
        return decoded, stamp, results

    def case(self, kind: str, clock_s: float) -> None:
        tally, stats, wstats = self.tally, self.decoder.stats, self.builder.stats
        frame = self.hostile(kind, clock_s)
        before = dict(stats.rejections)
        rejected_before = dict(wstats.rejected)
        invalid_before, late_before = dict(wstats.invalid_reasons), sum(wstats.late.values())
        accepted_before, ignored_before = wstats.accepted, wstats.ignored
        decoded, stamp, _ = self.feed(frame)
        if decoded is None:
            reason = [k for k, v in stats.rejections.items() if v != before.get(k, 0)]
            tally.reject('decoder:' + (reason[0] if len(reason) == 1 else 'UNCOUNTED'))
            return
        # Which of its mapped values are bad, judged here.
        bad = [s.name for s in self.rows.get(decoded.message, ())
               if s.signal in decoded and not _good(decoded[s.signal], s)]
        pending = self.builder.time_jump_pending
        if pending:  # settled by the next input
            for next_frame in self.cycle(clock_s + CYCLE_S / 2):
                self.feed(next_frame)
        taken = wstats.accepted > accepted_before and not (
            pending and wstats.rejected.get('time_jump', 0) >
            rejected_before.get('time_jump', 0))
        rejected = {k: v - rejected_before.get(k, 0) for k, v in wstats.rejected.items()
                    if v != rejected_before.get(k, 0)}
        invalid = {k: v - invalid_before.get(k, 0) for k, v in wstats.invalid_reasons.items()
                   if v != invalid_before.get(k, 0)}
        late = sum(wstats.late.values()) - late_before
        if not taken:
            tally.reject('window:' + (next(iter(rejected)) if rejected else 'UNCOUNTED'))
            return
        if invalid:
            self.bad_taken += [(stamp, name) for name in bad]
            tally.reject('flagged:' + '+'.join(sorted(invalid)))
            if sum(invalid.values()) < len(bad) and not late:
                tally.lose()  # a bad value taken without a flag
            return
        if late:
            tally.reject('window:late')
            return
        if bad:
            tally.lose()  # bad values taken, neither flagged nor dropped
        if wstats.ignored > ignored_before:
            tally.accept()  # a message the windows do not read
            return
        tally.accept()

    def run(self) -> FaultTally:
        clock_s = T0_S
        for _ in range(self.cases):
            clock_s += CYCLE_S
            kind = self.rng.choice(KINDS)
            try:
                for frame in self.cycle(clock_s):
                    self.feed(frame)
                self.case(kind, clock_s)
            except Exception as error:  # noqa: B902 - an escape is what this suite counts
                self.tally.escape(error)
        # The valid stream must have gone on through the hostile frames.
        expected = self.cases * CYCLE_S * self.builder.sample_rate_hz / \
            self.builder.samples_per_window
        if self.windows < 0.5 * expected:
            self.tally.lose(round(expected - self.windows))
        return self.tally


def run(cases: int, seed: int) -> FaultTally:
    """Feed `cases` hostile frames (random.Random(seed)) through decoder and windows."""
    return _Run(cases, seed).run()
