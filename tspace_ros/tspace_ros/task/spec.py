"""
The observation specification stored with the data, derived from what the agent really uses.

A pool's files carry it (``tspace_ros.observation_spec``) so that anyone reading
the data later knows what a state and an action are. It comes from the agent's
state signals (``agents.vehicle_policy.DEFAULT_STATE_SIGNALS``: name, unit,
scale) and the window and action shapes, never from a separate list that can
drift from them.
"""

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from tspace_ros.agents.vehicle_policy import DEFAULT_STATE_SIGNALS

SAMPLE_RATE_HZ = 20.0
SAMPLES_PER_WINDOW = 30
ACTION_SHAPE = (4, 17)
TORQUE_BUDGET_NM = 250.0


def observation_spec(samples_per_window: int = SAMPLES_PER_WINDOW,
                     sample_rate_hz: float = SAMPLE_RATE_HZ,
                     action_shape: Sequence[int] = ACTION_SHAPE, recent_actions: int = 0,
                     torque_budget_nm: float = TORQUE_BUDGET_NM,
                     signals: Optional[Mapping[str, Tuple[str, float]]] = None,
                     site: str = '', time_zone: str = 'UTC') -> Dict[str, Any]:
    """Return the observation specification of states and actions as stored (JSON types)."""
    signals = dict(signals or DEFAULT_STATE_SIGNALS)
    rows, columns = (int(v) for v in action_shape)
    return {
        'signals': list(signals),
        'units': [unit for unit, _ in signals.values()],
        'scales': [float(scale) for _, scale in signals.values()],
        'sample_rate_hz': float(sample_rate_hz),
        'samples_per_window': int(samples_per_window),
        'window_duration_s': samples_per_window / sample_rate_hz,
        'state_layout': ('signals x samples, signal-major (signal 0 samples first), each '
                         'divided by its scale; then the last recent_actions actions, '
                         'newest last'),
        'recent_actions': int(recent_actions),
        'state_size': len(signals) * int(samples_per_window) + int(recent_actions) * rows *
        columns,
        'action_shape': [rows, columns],
        'action_unit': f'1: -1..1 of the torque budget ({torque_budget_nm:g} Nm) per cell',
        'reward_unit': 'Wh',
        'site': site,
        'time_zone': time_zone,
    }
