"""
What the learning loop stores: transitions and episode summaries, ROS-free.

These are the plain-Python twins of ``tspace_interfaces/msg/Transition`` and
``EpisodeSummary``: the cruncher builds them, the storage pool keeps them, the
trainer samples them; the nodes convert them to and from messages.

A transition's natural key is ``(vehicle_id, driver_id, episode_start_ns,
step_index)``: storing the same key twice keeps one record (retries after a
lost acknowledgement never duplicate). All stamps are UTC, integer nanoseconds
since the Unix epoch; the site's time zone is metadata, never applied to data.
"""

from dataclasses import dataclass
import math
from typing import Tuple

import numpy as np

TransitionKey = Tuple[str, str, int, int]


class RecordError(ValueError):
    """A record whose fields are inconsistent (shapes, non-finite values, ids)."""


def _vector(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise RecordError(f'{name} has non-finite values')
    return array


@dataclass(frozen=True)
class TransitionRecord:
    """
    One step of an episode: (state, action, reward, next state, done) with ids and stamps.

    Attributes
    ----------
    vehicle_id, driver_id, episode_id:
        Who and which episode (episode_id is derived from episode_start_ns).
    episode_start_ns:
        UTC start of the episode, ns.
    step_index:
        Index of the step within the episode, from 0.
    state, next_state:
        float32 state vectors (the agent's view of the observation windows).
    action:
        float32, the policy's action (rows x pedal columns, row-major, in [-1, 1]);
        zeros for a step that timed out before an action took effect.
    action_row_start, action_row_count:
        The torque-map rows the action applied to.
    reward:
        The step's reward (minus energy in Wh, plus configured terms).
    energy_wh:
        Battery energy over the step's windows, Wh (negative when regenerating).
    done:
        True for the episode's last step.
    timed_out:
        True when the step exceeded its time bound (late inference or flash):
        stored for the record, left out of training by default.
    policy_version:
        Version of the policy that chose the action (0: none).
    state_stamp_ns, next_state_stamp_ns:
        UTC end of the observation windows behind state and next_state, ns.

    """

    vehicle_id: str
    driver_id: str
    episode_id: str
    episode_start_ns: int
    step_index: int
    state: np.ndarray
    action: np.ndarray
    action_row_start: int
    action_row_count: int
    reward: float
    energy_wh: float
    next_state: np.ndarray
    done: bool
    timed_out: bool
    policy_version: int
    state_stamp_ns: int
    next_state_stamp_ns: int

    def __post_init__(self):
        """Normalise types; RecordError for anything that cannot be a transition."""
        set_ = object.__setattr__
        set_(self, 'state', _vector(self.state, 'state'))
        set_(self, 'next_state', _vector(self.next_state, 'next_state'))
        set_(self, 'action', _vector(self.action, 'action'))
        if self.state.size == 0 or self.state.shape != self.next_state.shape:
            raise RecordError(f'state ({self.state.size}) and next_state '
                              f'({self.next_state.size}) must be non-empty and equally long')
        if self.action.size == 0:
            raise RecordError('action is empty')
        for name in ('reward', 'energy_wh'):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise RecordError(f'{name} is not finite: {value}')
            set_(self, name, value)
        for name in ('episode_start_ns', 'step_index', 'action_row_start', 'action_row_count',
                     'policy_version', 'state_stamp_ns', 'next_state_stamp_ns'):
            value = int(getattr(self, name))
            if value < 0:
                raise RecordError(f'{name} must be >= 0, got {value}')
            set_(self, name, value)
        if not self.vehicle_id or not self.driver_id or not self.episode_id:
            raise RecordError('vehicle_id, driver_id and episode_id must not be empty')
        set_(self, 'done', bool(self.done))
        set_(self, 'timed_out', bool(self.timed_out))

    @property
    def key(self) -> TransitionKey:
        """Return the natural key: vehicle, driver, episode start and step."""
        return (self.vehicle_id, self.driver_id, self.episode_start_ns, self.step_index)


@dataclass(frozen=True)
class EpisodeSummaryRecord:
    """
    The figures of a finished episode.

    ``valid`` is False for a discarded episode (its transitions are not kept).
    ``energy_wh`` and ``distance_km`` cover every window of the episode, whether
    or not a transition used it; ``total_reward`` sums the transitions' rewards.
    """

    vehicle_id: str
    driver_id: str
    episode_id: str
    episode_start_ns: int
    episode_end_ns: int
    step_count: int
    total_reward: float
    energy_wh: float
    distance_km: float
    valid: bool
    first_policy_version: int
    last_policy_version: int
    timed_out_steps: int = 0

    @property
    def energy_per_km_wh(self) -> float:
        """Return energy per distance, Wh/km (0 when no distance was driven)."""
        return self.energy_wh / self.distance_km if self.distance_km > 0 else 0.0

    @property
    def key(self) -> Tuple[str, str, int]:
        """Return the episode key: vehicle, driver and episode start."""
        return (self.vehicle_id, self.driver_id, self.episode_start_ns)
