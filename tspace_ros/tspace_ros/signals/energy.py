"""
Energy and distance over an observation window.

tspace's reward is minus the window's electrical energy: Wh = sum(U x I) / 3600 /
sample rate. Both are computed here once, with units checked, so that every
consumer (reward, monitoring, the main job's report) agrees.
"""

import numpy as np

from tspace_ros.signals.window import SignalWindow


def electrical_energy_wh(window: SignalWindow, current: str = 'current',
                         voltage: str = 'voltage') -> float:
    """
    Return the battery energy drawn over the window, Wh (negative when regenerating).

    Each sample stands for one sample period: E = sum(U_i * I_i) / rate / 3600.
    """
    if window.unit(current) != 'A' or window.unit(voltage) != 'V':
        raise ValueError(f'energy needs current in A and voltage in V, got '
                         f'{window.unit(current)!r} and {window.unit(voltage)!r}')
    power_w = window.signal(current).astype(np.float64) * window.signal(voltage)
    return float(power_w.sum() / window.sample_rate_hz / 3600.0)


def distance_km(window: SignalWindow, speed: str = 'speed') -> float:
    """Return the distance driven over the window, km, from a speed signal in km/h."""
    if window.unit(speed) != 'km/h':
        raise ValueError(f'distance needs speed in km/h, got {window.unit(speed)!r}')
    return float(window.signal(speed).astype(np.float64).sum() / window.sample_rate_hz / 3600.0)
