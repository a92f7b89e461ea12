"""
Running observation normalisation and reward scaling (numpy, TF-free).

``ObservationNormalizer`` keeps a running mean and variance per state element
(Welford / Chan et al. parallel update, float64) and maps a state to
``clip((x - mean) / sqrt(var + epsilon), -clip, clip)``. ``RewardScaler``
multiplies rewards by a fixed factor and optionally divides them by their
running standard deviation (no centring: shifting rewards would change which
policy is optimal when episodes terminate). Both keep their state as plain
arrays (``get_state`` / ``set_state``), so it goes into ``.npz`` checkpoints.
"""

from typing import Dict, Optional

import numpy as np


class RunningMeanStd:
    """Running mean and (population) variance of vectors of a fixed shape."""

    def __init__(self, shape=()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 0.0

    def update(self, batch) -> None:
        """Merge a batch of shape (n, *shape) into the statistics."""
        batch = np.asarray(batch, np.float64).reshape((-1,) + self.mean.shape)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, float(n)
            return
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total

    def get_state(self) -> Dict[str, np.ndarray]:
        """Return mean, var and count as arrays."""
        return {'mean': self.mean.copy(), 'var': self.var.copy(),
                'count': np.float64(self.count)}

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        """Restore what ``get_state`` returned."""
        mean = np.asarray(state['mean'], np.float64)
        if mean.shape != self.mean.shape:
            raise ValueError(f'state shape {mean.shape} does not match {self.mean.shape}')
        self.mean, self.var = mean.copy(), np.asarray(state['var'], np.float64).copy()
        self.count = float(state['count'])


class ObservationNormalizer:
    """
    Standardise states with running statistics, then clip.

    Before any update the mapping is the identity (then clipped). ``update``
    takes states (n, state_dim); ``normalize`` takes (state_dim,) or
    (n, state_dim) and returns float32 of the same shape.
    """

    def __init__(self, state_dim: int, clip: Optional[float] = 5.0, epsilon: float = 1e-8):
        self.stats = RunningMeanStd((state_dim,))
        self.clip, self.epsilon = clip, epsilon

    def update(self, states) -> None:
        """Merge states (n, state_dim) into the statistics."""
        self.stats.update(states)

    def normalize(self, states) -> np.ndarray:
        """Return the standardised, clipped states as float32."""
        x = np.asarray(states, np.float64)
        if self.stats.count > 0:
            x = (x - self.stats.mean) / np.sqrt(self.stats.var + self.epsilon)
        if self.clip is not None:
            x = np.clip(x, -self.clip, self.clip)
        return x.astype(np.float32)

    def get_state(self) -> Dict[str, np.ndarray]:
        """Return the statistics as arrays."""
        return self.stats.get_state()

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        """Restore what ``get_state`` returned."""
        self.stats.set_state(state)


class RewardScaler:
    """
    Scale rewards: ``scale * r``, or ``scale * r / sqrt(var(r) + epsilon)`` with ``running``.

    ``update`` takes rewards (n,); ``scale_rewards`` returns float32 of the same shape.
    """

    def __init__(self, scale: float = 1.0, running: bool = False, epsilon: float = 1e-8):
        self.scale, self.running, self.epsilon = float(scale), bool(running), epsilon
        self.stats = RunningMeanStd(())

    def update(self, rewards) -> None:
        """Merge rewards (n,) into the statistics (only used when ``running``)."""
        if self.running:
            self.stats.update(rewards)

    def scale_rewards(self, rewards) -> np.ndarray:
        """Return the scaled rewards as float32."""
        r = np.asarray(rewards, np.float64) * self.scale
        if self.running and self.stats.count > 0:
            r = r / np.sqrt(self.stats.var + self.epsilon)
        return r.astype(np.float32)

    def get_state(self) -> Dict[str, np.ndarray]:
        """Return the statistics as arrays."""
        return self.stats.get_state()

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        """Restore what ``get_state`` returned."""
        self.stats.set_state(state)
