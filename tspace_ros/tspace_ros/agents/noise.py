"""
Exploration noise for deterministic policies (numpy, seeded, TF-free).

Both kinds draw ``sample()`` of shape (action_dim,) or ``sample(n)`` of shape
(n, action_dim), in the actor's action units ([-1, 1] before clipping). Their
state (process value and generator state) round-trips through ``get_state`` /
``set_state`` as plain JSON-able values, so a resumed agent explores exactly as
it would have.
"""

import math
from typing import Any, Dict, Optional

import numpy as np

NOISE_KINDS = ('ou', 'gaussian')


class OrnsteinUhlenbeckNoise:
    """
    Temporally correlated noise: dx = theta (mu - x) dt + sigma sqrt(dt) N(0, 1).

    tspace's settings are the defaults: sigma 0.2, theta 0.15, dt 0.01. The
    process starts (and restarts on ``reset``) at mu; its stationary standard
    deviation is about sigma / sqrt(2 theta) (0.37 here) and the correlation
    between successive samples is 1 - theta dt. ``sample(n)`` runs n
    independent processes (one per row of a batch); a new n restarts them at mu.
    """

    def __init__(self, action_dim: int, sigma: float = 0.2, theta: float = 0.15,
                 dt: float = 0.01, mu: float = 0.0, seed: Optional[int] = None):
        if action_dim < 1 or sigma < 0 or theta < 0 or dt <= 0:
            raise ValueError('need action_dim >= 1, sigma >= 0, theta >= 0 and dt > 0')
        self.action_dim = int(action_dim)
        self.sigma, self.theta, self.dt, self.mu = float(sigma), float(theta), float(dt), float(mu)
        self._rng = np.random.default_rng(seed)
        self._x = np.full(self.action_dim, self.mu)

    def reset(self) -> None:
        """Restart the process at mu (call at the start of every episode)."""
        self._x = np.full(self._x.shape, self.mu)

    def sample(self, n: Optional[int] = None) -> np.ndarray:
        """Advance the process one step; return x, shape (action_dim,) or (n, action_dim)."""
        shape = (self.action_dim,) if n is None else (int(n), self.action_dim)
        if self._x.shape != shape:
            self._x = np.full(shape, self.mu)
        self._x = (self._x + self.theta * (self.mu - self._x) * self.dt
                   + self.sigma * math.sqrt(self.dt) * self._rng.standard_normal(shape))
        return self._x.copy()

    def get_state(self) -> Dict[str, Any]:
        """Return the process value and the generator state as JSON-able values."""
        return {'x': self._x.tolist(), 'rng': self._rng.bit_generator.state}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""
        self._x = np.asarray(state['x'], dtype=np.float64)
        self._rng.bit_generator.state = state['rng']


class GaussianNoise:
    """Independent N(0, sigma^2) noise for every action element and step (no state but the rng)."""

    def __init__(self, action_dim: int, sigma: float = 0.1, seed: Optional[int] = None):
        if action_dim < 1 or sigma < 0:
            raise ValueError('need action_dim >= 1 and sigma >= 0')
        self.action_dim = int(action_dim)
        self.sigma = float(sigma)
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Do nothing: the noise has no memory."""

    def sample(self, n: Optional[int] = None) -> np.ndarray:
        """Return noise of shape (action_dim,) or (n, action_dim)."""
        shape = (self.action_dim,) if n is None else (int(n), self.action_dim)
        return self.sigma * self._rng.standard_normal(shape)

    def get_state(self) -> Dict[str, Any]:
        """Return the generator state as JSON-able values."""
        return {'rng': self._rng.bit_generator.state}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""
        self._rng.bit_generator.state = state['rng']


def make_noise(kind: str, action_dim: int, sigma: float, theta: float = 0.15,
               dt: float = 0.01, seed: Optional[int] = None):
    """Return OrnsteinUhlenbeckNoise (kind 'ou') or GaussianNoise (kind 'gaussian')."""
    if kind == 'ou':
        return OrnsteinUhlenbeckNoise(action_dim, sigma=sigma, theta=theta, dt=dt, seed=seed)
    if kind == 'gaussian':
        return GaussianNoise(action_dim, sigma=sigma, seed=seed)
    raise ValueError(f'noise kind must be one of {NOISE_KINDS}, got {kind!r}')
