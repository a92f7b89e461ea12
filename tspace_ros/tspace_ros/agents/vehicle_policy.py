"""
The agent's view of the vehicle: window -> state vector, action -> torque map rows.

TF-free (numpy only), shared by the vehicle-side agent node and the trainer so
both build states and maps the same way.

State: the state signals of an observation window (tspace: speed, pedal, brake;
current and voltage are for the reward only), each divided by its scale, flattened
signal-major (signal 0's samples, then signal 1's, ...), optionally followed by
the last ``recent_actions`` actions (newest last) so that the problem stays Markov
when a map takes effect a window or more after it was chosen.

Action: ``rows_per_action`` x pedal columns values in [-1, 1] (tspace: 4 x 17 =
68), applied to the rows around the window's top speed (``action_rows``):
flashed torque = default + action x budget, within the safety gate's limits.
"""

from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Optional, Sequence, Tuple

import numpy as np

from tspace_ros.signals.window import SignalWindow
from tspace_ros.task.contract import shipped_task
from tspace_ros.torque_map.action import action_rows, apply_action
from tspace_ros.torque_map.map import TorqueMap


class StateError(ValueError):
    """A window that cannot become a state (missing signal, wrong unit or shape)."""


@dataclass
class StateBuilder:
    """
    Build the agent's state vector from observation windows.

    Attributes
    ----------
    Every attribute left None is the shipped task contract's
    (``task.contract.shipped_task``); a node builds it from its own task with
    ``TaskContract.state_builder()``.

    samples_per_window:
        Samples per signal the windows must have (tspace local: 30).
    action_dim:
        Length of one action (rows_per_action x pedal columns).
    recent_actions:
        How many past actions to append to the state (0: none).
    signals:
        State signal name -> (unit, scale).

    """

    samples_per_window: Optional[int] = None
    action_dim: Optional[int] = None
    recent_actions: Optional[int] = None
    signals: Optional[Dict[str, Tuple[str, float]]] = None

    def __post_init__(self):
        """Fill what is None from the shipped task; check the sizes; zero past actions."""
        if None in (self.samples_per_window, self.action_dim, self.recent_actions,
                    self.signals):
            task = shipped_task()
            for name, value in (('samples_per_window', task.samples_per_window),
                                ('action_dim', task.action_dim),
                                ('recent_actions', task.recent_actions),
                                ('signals', task.state_signals)):
                if getattr(self, name) is None:
                    setattr(self, name, value)
        self.signals = dict(self.signals)
        if self.samples_per_window < 1 or self.action_dim < 1 or self.recent_actions < 0:
            raise ValueError('samples_per_window and action_dim must be >= 1, '
                             'recent_actions >= 0')
        for name, (_, scale) in self.signals.items():
            if not scale > 0:
                raise ValueError(f'scale of {name!r} must be > 0, got {scale}')
        self._past: Deque[np.ndarray] = deque(maxlen=max(self.recent_actions, 1))
        self.reset()

    @property
    def state_dim(self) -> int:
        """Return the length of the state vector."""
        return len(self.signals) * self.samples_per_window + \
            self.recent_actions * self.action_dim

    def reset(self) -> None:
        """Forget past actions (at the start of an episode)."""
        self._past.clear()
        for _ in range(self.recent_actions):
            self._past.append(np.zeros(self.action_dim, np.float32))

    def remember(self, action: Sequence[float]) -> None:
        """Record the action applied after the latest state (for the next states)."""
        if self.recent_actions:
            self._past.append(np.asarray(action, np.float32).reshape(self.action_dim))

    def state(self, window: SignalWindow) -> np.ndarray:
        """Return the state vector (float32, state_dim) for a window; StateError if unfit."""
        if window.n_samples != self.samples_per_window:
            raise StateError(f'window has {window.n_samples} samples per signal, the '
                             f'policy expects {self.samples_per_window}')
        parts = []
        for name, (unit, scale) in self.signals.items():
            if name not in window.signal_names:
                raise StateError(f'window lacks signal {name!r} '
                                 f'(has {list(window.signal_names)})')
            if window.unit(name) != unit:
                raise StateError(f'signal {name!r} is in {window.unit(name)!r}, '
                                 f'expected {unit!r}')
            parts.append(window.signal(name) / np.float32(scale))
        if self.recent_actions:
            parts.extend(self._past)
        state = np.concatenate(parts).astype(np.float32)
        if not np.all(np.isfinite(state)):
            raise StateError('state has non-finite values')
        return state


@dataclass
class ActionMapper:
    """Turn an action into the map the bridge is asked to flash (None: the shipped task's)."""

    default_map: TorqueMap
    torque_budget_nm: Optional[float] = None
    upper_bound: Optional[float] = None
    rows_per_action: Optional[int] = None
    scaling: Optional[str] = None     # torque_map.apply_action's: budget or limits

    def __post_init__(self):
        """Fill the limits left None from the shipped task contract."""
        task = shipped_task() if None in (self.torque_budget_nm, self.upper_bound,
                                          self.rows_per_action, self.scaling) else None
        for name in ('torque_budget_nm', 'upper_bound', 'rows_per_action'):
            if getattr(self, name) is None:
                setattr(self, name, getattr(task, name))
        if self.scaling is None:
            self.scaling = task.action_scaling

    @property
    def action_dim(self) -> int:
        """Return the length of an action: rows_per_action x pedal columns."""
        return self.rows_per_action * self.default_map.shape[1]

    def to_map(self, action: Sequence[float], top_speed_kph: float, current: TorqueMap,
               policy_version: int) -> Tuple[TorqueMap, int, int]:
        """
        Return (map, row_start, row_count) for an action at a window's top speed.

        ValueError for an action of the wrong length or with non-finite values:
        such an action is never turned into a map.
        """
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.size != self.action_dim:
            raise ValueError(f'action has {values.size} values, expected {self.action_dim}')
        if not np.all(np.isfinite(values)):
            raise ValueError('action has non-finite values')
        rows = action_rows(top_speed_kph, self.default_map.shape[0], self.rows_per_action)
        proposed = apply_action(
            self.default_map, current,
            values.reshape(self.rows_per_action, self.default_map.shape[1]), rows.start,
            self.torque_budget_nm, self.upper_bound, policy_version, self.scaling)
        return proposed, rows.start, len(rows)
