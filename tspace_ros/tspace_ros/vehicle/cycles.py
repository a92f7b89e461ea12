"""
Drive cycles: the regulation's speed traces, from the ``wltp`` package.

``wltc3b`` and ``wltc3a`` are the WLTC class 3 cycles (UN GTR 15; 1800 s,
1 Hz), ``nedc`` the NEDC (UN ECE R83/R101; 1180 s, 1 Hz). The tables come from
``wltp.cycles`` as published; none is typed in here.
"""

import bisect
import math
from typing import NamedTuple, Sequence

import numpy as np
import wltp.cycles.class3
import wltp.cycles.nedc


class DriveCycleError(ValueError):
    """An unknown drive cycle name or an inconsistent speed trace."""


_CYCLES = {'wltc3b': lambda: wltp.cycles.class3.class_data_b()['cycle'],
           'wltc3a': lambda: wltp.cycles.class3.class_data_a()['cycle'],
           'nedc': lambda: wltp.cycles.nedc.cycle_data()['cycle']}
CYCLE_NAMES = tuple(_CYCLES)
"""The names drive_cycle() knows."""


class DriveCycle(NamedTuple):
    """
    A speed trace: ``time_s`` (n,) strictly increasing from 0, ``speed_kph`` (n,) >= 0.

    Unpacks as ``time_s, speed_kph = cycle``.
    """

    time_s: np.ndarray
    speed_kph: np.ndarray

    @property
    def duration_s(self) -> float:
        """Return the time the trace spans, s."""
        return float(self.time_s[-1])

    @property
    def distance_km(self) -> float:
        """Return the distance the trace asks for, km (trapezoid over the samples)."""
        t, v = self.time_s, self.speed_kph
        return float(np.sum((t[1:] - t[:-1]) * (v[1:] + v[:-1]) * 0.5) / 3600.0)

    def truncated(self, end_s: float) -> 'DriveCycle':
        """Return the first end_s seconds of the trace (the whole trace if it is shorter)."""
        if not end_s > 0:
            raise DriveCycleError(f'a truncated cycle needs end_s > 0, got {end_s}')
        if end_s >= self.duration_s:
            return self
        keep = self.time_s < end_s
        return DriveCycle.from_arrays(
            np.append(self.time_s[keep], end_s),
            np.append(self.speed_kph[keep], np.interp(end_s, self.time_s, self.speed_kph)))

    @classmethod
    def from_arrays(cls, time_s: Sequence[float], speed_kph: Sequence[float]) -> 'DriveCycle':
        """Return a checked cycle from times (s) and speeds (km/h); DriveCycleError if wrong."""
        t = np.array(time_s, dtype=np.float64)
        v = np.array(speed_kph, dtype=np.float64)
        if t.ndim != 1 or t.shape != v.shape or t.size < 2:
            raise DriveCycleError(f'a drive cycle needs equal 1-D time and speed arrays of at '
                                  f'least 2 samples, got shapes {t.shape} and {v.shape}')
        if t[0] != 0.0 or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
            raise DriveCycleError('drive cycle times must increase strictly from 0 s')
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise DriveCycleError('drive cycle speeds must be finite and >= 0 km/h')
        t.setflags(write=False)
        v.setflags(write=False)
        return cls(t, v)


def drive_cycle(name: str) -> DriveCycle:
    """
    Return a regulation drive cycle by name: 'wltc3b', 'wltc3a' or 'nedc'.

    Time (s) and speed (km/h) at 1 Hz. DriveCycleError for unknown names.
    """
    key = str(name).lower()
    if key not in _CYCLES:
        raise DriveCycleError(f'unknown drive cycle {name!r}; known cycles: '
                              f'{", ".join(CYCLE_NAMES)}')
    speed = np.asarray(_CYCLES[key](), dtype=np.float64)
    return DriveCycle.from_arrays(np.arange(speed.size, dtype=np.float64), speed)


class SpeedTrace:
    """
    A drive cycle as a function of time: linear between samples, in m/s.

    Before 0 s the first speed holds; after the end the last speed holds,
    or with ``repeat`` the cycle starts again. Plain Python floats: it is
    read several times per physics step.
    """

    def __init__(self, cycle: DriveCycle, repeat: bool = False):
        """Keep the cycle's samples as lists (speed in m/s)."""
        self.cycle = cycle
        self.repeat = repeat
        self._t = [float(t) for t in cycle.time_s]
        self._v = [float(v) / 3.6 for v in cycle.speed_kph]
        self.duration_s = self._t[-1]
        steps = np.diff(cycle.time_s)
        self._uniform_step = float(steps[0]) if np.allclose(steps, steps[0], rtol=0,
                                                            atol=1e-12) else None

    def speed_m_s(self, t_s: float) -> float:
        """Return the target speed, m/s, at time t_s."""
        times, speeds = self._t, self._v
        if t_s >= self.duration_s:
            if not self.repeat:
                return speeds[-1]
            t_s = math.fmod(t_s, self.duration_s)
        if t_s <= 0.0:
            return speeds[0]
        step = self._uniform_step
        if step is not None:
            i = int(t_s / step)
            if i >= len(times) - 1:
                i = len(times) - 2
            f = (t_s - i * step) / step
        else:
            i = bisect.bisect_right(times, t_s) - 1
            f = (t_s - times[i]) / (times[i + 1] - times[i])
        return speeds[i] + (speeds[i + 1] - speeds[i]) * f
