"""
The step reward: minus the battery energy, with optional shaping and penalties.

A step's reward is computed over the windows that follow its observation up to
and including the window that starts the next step (see ``tspace_ros.cruncher``).
The terms, each a contribution that is added to the reward:

- ``energy`` (always): minus the battery energy of the step's windows, Wh, from
  voltage x current (tspace's reward; ``signals.energy.electrical_energy_wh``).
- ``kinetic_shaping`` (``kinetic_energy_mass_kg`` > 0): potential-based shaping
  F = gamma * Phi(s') - Phi(s), Phi = the vehicle's kinetic energy (Wh) at the end
  of the observation window. By Ng, Harada and Russell (1999) it leaves the
  optimal policy unchanged, and it returns to the reward the energy that was only
  stored as speed, which removes most of the variance acceleration puts in the
  energy. Use the agent's discount as gamma; with gamma = 1 the terms of an
  episode that starts and ends at rest sum to zero.
- ``speed_tracking`` (``speed_tracking_weight`` > 0): minus weight x the mean
  squared difference, (km/h)^2, between the speed and a target speed signal over
  the step's samples. A step whose windows lack the target (or have it in another
  unit) gets no such term; the reason is appended to ``notes``.
- ``action`` (``action_weight`` > 0): minus weight x the squared L2 norm of the
  action (a zero action, as for a timed-out step, costs nothing).
- ``jerk`` (``jerk_weight`` > 0), a drivability term: minus weight x the mean
  squared jerk, (m/s^3)^2, of the speed signal over the step's samples (the
  windows joined in order; jerk is the second difference of the speed in m/s
  times the sample rate squared). A map that makes the pedal sharper or jerkier
  costs here. Differentiating twice amplifies measurement noise (white noise
  of s km/h adds about 6 (s / 3.6)^2 rate^4 to the mean): weigh it with
  noisy signals in mind. A step with fewer than 3 samples, or the speed in
  another unit, gets no such term; the reason is appended to ``notes``.
- ``band`` (``band_weight`` > 0), a drivability term: minus weight x the
  seconds the speed is outside +-``band_kph`` (default 2 km/h, the WLTP speed
  tolerance) of the target speed signal over the step's samples (samples
  outside / sample rate). Missing target: no term, as for ``speed_tracking``.

Both drivability terms are off by default (weight 0).

Numpy only.
"""

from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tspace_ros.signals.energy import electrical_energy_wh
from tspace_ros.signals.window import SignalWindow

KPH_PER_MPS = 3.6
J_PER_WH = 3600.0


@dataclass
class RewardConfig:
    """
    How the windows of a step become its reward (see the module docstring).

    Attributes
    ----------
    kinetic_energy_mass_kg:
        Vehicle mass for the kinetic-energy shaping, kg (0: no shaping).
    shaping_gamma:
        The discount of the shaping term, in [0, 1] (the agent's gamma: 0.99).
    speed_tracking_weight:
        Penalty per (km/h)^2 of mean squared speed error (0: off).
    action_weight:
        Penalty per unit of squared action norm (0: off).
    jerk_weight:
        Penalty per (m/s^3)^2 of mean squared jerk of the speed (0: off).
    band_weight:
        Penalty per second outside the speed band around the target (0: off).
    band_kph:
        Half-width of that band, km/h (> 0; 2.0: the WLTP tolerance).
    current_signal, voltage_signal:
        Battery current (A) and voltage (V) signals for the energy.
    speed_signal, target_speed_signal:
        Vehicle speed and its target, both km/h.

    """

    kinetic_energy_mass_kg: float = 0.0
    shaping_gamma: float = 0.99
    speed_tracking_weight: float = 0.0
    action_weight: float = 0.0
    jerk_weight: float = 0.0
    band_weight: float = 0.0
    band_kph: float = 2.0
    current_signal: str = 'current'
    voltage_signal: str = 'voltage'
    speed_signal: str = 'speed'
    target_speed_signal: str = 'target_speed'

    def __post_init__(self):
        """Reject values that cannot make a reward: ValueError naming the field."""
        for name in ('kinetic_energy_mass_kg', 'speed_tracking_weight', 'action_weight',
                     'jerk_weight', 'band_weight'):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        band = self.band_kph
        if not _is_number(band) or not math.isfinite(band) or band <= 0:
            raise ValueError(f'band_kph must be a finite number > 0, got {band!r}')
        gamma = self.shaping_gamma
        if not _is_number(gamma) or not 0.0 <= gamma <= 1.0:
            raise ValueError(f'shaping_gamma must be in [0, 1], got {gamma!r}')
        for name in ('current_signal', 'voltage_signal', 'speed_signal',
                     'target_speed_signal'):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f'{name} must be a non-empty signal name, got {value!r}')

    def potential_wh(self, window: SignalWindow) -> float:
        """Return Phi: the kinetic energy at the window's last sample, Wh (0 if shaping is off)."""
        if self.kinetic_energy_mass_kg == 0:
            return 0.0
        if window.unit(self.speed_signal) != 'km/h':
            raise ValueError(f'kinetic energy needs {self.speed_signal!r} in km/h, got '
                             f'{window.unit(self.speed_signal)!r}')
        speed_mps = float(window.signal(self.speed_signal)[-1]) / KPH_PER_MPS
        return 0.5 * self.kinetic_energy_mass_kg * speed_mps * speed_mps / J_PER_WH

    def compute(self, windows_of_step: Sequence[SignalWindow], prev_window: SignalWindow,
                action: Sequence[float],
                notes: Optional[List[str]] = None) -> Tuple[float, float, Dict[str, float]]:
        """
        Return (reward, energy_wh, terms) of one step.

        ``windows_of_step`` are the windows after the observation ``prev_window``,
        the last of them the next step's observation; ``action`` is the action that
        was applied (zeros when none took effect). ``terms`` maps each enabled term
        to its contribution (they sum to the reward). A term that cannot be computed
        for missing optional signals is left out and its reason appended to
        ``notes`` (when given). ValueError for windows without usable current,
        voltage or speed.
        """
        if not windows_of_step:
            raise ValueError('a step needs at least one window after its observation')
        energy_wh = sum(electrical_energy_wh(window, self.current_signal, self.voltage_signal)
                        for window in windows_of_step)
        terms = {'energy': -energy_wh}
        if self.kinetic_energy_mass_kg > 0:
            terms['kinetic_shaping'] = (self.shaping_gamma * self.potential_wh(windows_of_step[-1])
                                        - self.potential_wh(prev_window))
        if self.speed_tracking_weight > 0:
            error, problem = self._speed_error(windows_of_step)
            if problem:
                if notes is not None:
                    notes.append(problem)
            else:
                terms['speed_tracking'] = -self.speed_tracking_weight * error
        if self.action_weight > 0:
            values = np.asarray(action, dtype=np.float64).reshape(-1)
            terms['action'] = -self.action_weight * float(np.dot(values, values))
        if self.jerk_weight > 0:
            jerk, problem = self._mean_squared_jerk(windows_of_step)
            if problem:
                if notes is not None:
                    notes.append(problem)
            else:
                terms['jerk'] = -self.jerk_weight * jerk
        if self.band_weight > 0:
            seconds, problem = self._outside_band_s(windows_of_step)
            if problem:
                if notes is not None:
                    notes.append(problem)
            else:
                terms['band'] = -self.band_weight * seconds
        return float(sum(terms.values())), float(energy_wh), terms

    def _speed_errors(self, windows: Sequence[SignalWindow],
                      term: str) -> Tuple[Optional[np.ndarray], str]:
        """Return (speed - target per sample, km/h; '') or (None, why it cannot be had)."""
        errors = []
        for window in windows:
            for name in (self.speed_signal, self.target_speed_signal):
                if name not in window.signal_names:
                    return None, (f'window {window.step_index} has no {name!r} signal: '
                                  f'{term} term left out')
                if window.unit(name) != 'km/h':
                    return None, (f'window {window.step_index} has {name!r} in '
                                  f'{window.unit(name)!r}, not km/h: {term} term left out')
            errors.append(window.signal(self.speed_signal).astype(np.float64)
                          - window.signal(self.target_speed_signal))
        return np.concatenate(errors), ''

    def _speed_error(self, windows: Sequence[SignalWindow]) -> Tuple[float, str]:
        """Return (mean squared speed error (km/h)^2, '') or (0, why it cannot be had)."""
        errors, problem = self._speed_errors(windows, 'speed tracking')
        if errors is None:
            return 0.0, problem
        return float(np.square(errors).mean()), ''

    def _outside_band_s(self, windows: Sequence[SignalWindow]) -> Tuple[float, str]:
        """Return (seconds outside +-band_kph of the target, '') or (0, why not)."""
        errors, problem = self._speed_errors(windows, 'band')
        if errors is None:
            return 0.0, problem
        outside = int(np.count_nonzero(np.abs(errors) > self.band_kph))
        return outside / float(windows[0].sample_rate_hz), ''

    def _mean_squared_jerk(self, windows: Sequence[SignalWindow]) -> Tuple[float, str]:
        """Return (mean squared jerk of the speed, (m/s^3)^2, '') or (0, why not)."""
        speeds = []
        for window in windows:
            if self.speed_signal not in window.signal_names or \
                    window.unit(self.speed_signal) != 'km/h':
                return 0.0, (f'window {window.step_index} has no {self.speed_signal!r} '
                             f'signal in km/h: jerk term left out')
            speeds.append(window.signal(self.speed_signal).astype(np.float64))
        speed_mps = np.concatenate(speeds) / KPH_PER_MPS
        if speed_mps.size < 3:
            return 0.0, (f'window {windows[0].step_index}: {speed_mps.size} speed sample(s), '
                         f'jerk needs 3: jerk term left out')
        rate = float(windows[0].sample_rate_hz)
        jerk = np.diff(speed_mps, n=2) * rate * rate
        return float(np.square(jerk).mean()), ''


def _is_number(value) -> bool:
    """Return True for an int or float (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and \
        not isinstance(value, bool)
