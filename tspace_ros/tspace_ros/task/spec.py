"""
The observation specification stored with the data, derived from the task contract.

A pool's files carry it (``tspace_ros.observation_spec``) so that anyone reading
the data later knows what a state and an action are. It comes from the task
contract (``task.contract``): the state's signals (name, unit, scale), the
window and action shapes and the gate's budget, never from a separate list that
can drift from them.
"""

from typing import Any, Dict

STATE_LAYOUT = ('signals x samples, signal-major (signal 0 samples first), each divided by '
                'its scale; then the last recent_actions actions, newest last')


def observation_spec(task=None, site: str = '', time_zone: str = 'UTC') -> Dict[str, Any]:
    """
    Return the observation specification of ``task``'s states and actions (JSON types).

    ``task``: a ``TaskContract`` (None: the shipped simulated van's).
    """
    if task is None:
        from tspace_ros.task.contract import load_task
        task = load_task()
    signals = task.state_signals
    rows, columns = task.action_shape
    return {
        'signals': list(signals),
        'units': [unit for unit, _ in signals.values()],
        'scales': [float(scale) for _, scale in signals.values()],
        'sample_rate_hz': float(task.sample_rate_hz),
        'samples_per_window': int(task.samples_per_window),
        'window_duration_s': task.window_duration_s,
        'state_layout': STATE_LAYOUT,
        'recent_actions': int(task.recent_actions),
        'state_size': task.state_dim,
        'action_shape': [rows, columns],
        'action_unit': f'1: -1..1 of the torque budget ({task.torque_budget_nm:g} Nm) per cell',
        'reward_unit': 'Wh',
        'site': site,
        'time_zone': time_zone,
    }
