"""
A synthetic, deterministic signal source for plumbing checks and demos.

It makes plausible vehicle signals (speed, pedal, brake, battery current and
voltage) from a smooth speed profile, without any vehicle model: the simulated
vehicle (``vehicle``) replaces it wherever physics matters. Deterministic for a
given seed, so tests can compare what they receive with what was made.
"""

from dataclasses import dataclass
import math

import numpy as np

from tspace_ros.signals.window import NS_PER_S, SignalWindow

SIGNALS = ('speed', 'pedal', 'brake', 'current', 'voltage')
UNITS = ('km/h', '1', 'bar', 'A', 'V')


@dataclass
class SyntheticDrive:
    """
    Cut a synthetic drive into consecutive windows.

    Attributes
    ----------
    vehicle_id, driver_id, episode_id:
        Ids stamped on every window.
    sample_rate_hz:
        Sampling rate, Hz (tspace's local path: 20).
    samples_per_window:
        Samples per signal and window (tspace's local path: 30, i.e. 1.5 s).
    seed:
        Seed of the measurement noise.

    """

    vehicle_id: str = 'SIM0000000000001'
    driver_id: str = 'driver0'
    episode_id: str = ''
    sample_rate_hz: float = 20.0
    samples_per_window: int = 30
    seed: int = 0

    def __post_init__(self):
        """Check the parameters and start at step 0."""
        if not (math.isfinite(self.sample_rate_hz) and self.sample_rate_hz > 0):
            raise ValueError(f'sample_rate_hz must be > 0, got {self.sample_rate_hz}')
        if self.samples_per_window < 1:
            raise ValueError(f'samples_per_window must be >= 1, got {self.samples_per_window}')
        self._rng = np.random.default_rng(self.seed)
        self.step_index = 0

    def window(self, end_ns: int) -> SignalWindow:
        """Return the next window, its newest sample captured at end_ns (UTC ns)."""
        n = self.samples_per_window
        period_s = 1.0 / self.sample_rate_hz
        first = self.step_index * n
        t = (first + np.arange(n)) * period_s
        # Speed: a smooth stop-and-go profile, 0..60 km/h over a 60 s cycle.
        speed = 30.0 * (1.0 - np.cos(2.0 * math.pi * t / 60.0))
        accel = 30.0 * (2.0 * math.pi / 60.0) * np.sin(2.0 * math.pi * t / 60.0) / 3.6  # m/s^2
        pedal = np.clip(0.15 + 0.6 * accel, 0.0, 1.0) * (accel > -0.05)
        brake = np.clip(-8.0 * accel, 0.0, None) * (accel < -0.05)
        # Battery current from a road-load balance of a 3.5 t van (no drivetrain
        # model: 90 % efficiency driving, 60 % recovered when braking).
        v = speed / 3.6
        force = 3500.0 * accel + 3500.0 * 9.81 * 0.01 + 0.5 * 1.2 * 1.4 * v * v
        power = force * v
        power = np.where(power > 0.0, power / 0.9, power * 0.6)
        current = power / 400.0 + self._rng.normal(0.0, 0.5, n)
        voltage = 400.0 - 0.08 * current  # open-circuit 400 V, 80 mOhm
        samples = np.vstack([speed, pedal, brake, current, voltage]).astype(np.float32)
        start_ns = end_ns - round((n - 1) * NS_PER_S / self.sample_rate_hz)
        window = SignalWindow(
            vehicle_id=self.vehicle_id, driver_id=self.driver_id, episode_id=self.episode_id,
            step_index=self.step_index, sample_rate_hz=self.sample_rate_hz,
            signal_names=SIGNALS, units=UNITS, samples=samples,
            start_ns=start_ns, end_ns=end_ns)
        self.step_index += 1
        return window
