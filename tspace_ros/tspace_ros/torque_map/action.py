"""
The agent's action on the torque map: which rows it changes and what it flashes.

An action changes ``rows_per_action`` (tspace: 4) consecutive speed rows around
the current speed: an array of rows_per_action x n_cols values in [-1, 1]
(tanh output; tspace: 4 x 17 = 68). The flashed torque is
``default + action x budget`` clipped to the safety gate's limits, so a map
made here always passes ``SafetyGate.check``.
"""

import math
from typing import Optional

import numpy as np

from tspace_ros.torque_map.map import ORIGIN_AGENT, TorqueMap
from tspace_ros.torque_map.safety_gate import torque_limits


def action_rows(top_speed_kph: float, n_rows: int, rows_per_action: Optional[int] = None) -> range:
    """
    Return the speed rows an action changes, for a window's top speed (km/h).

    tspace's rule: the first row is 0 below 20 km/h, 1 below 30 km/h, then one
    row more per 10 km/h (30..40 km/h: 2, ...). The range is clamped into the
    table (tspace computed row 16 of a 14-row map at high speed): the first row
    is at most n_rows - rows_per_action (None: the shipped task's). Negative
    speeds (reversing) give row 0.
    """
    if rows_per_action is None:
        rows_per_action = _shipped().rows_per_action
    if not math.isfinite(top_speed_kph):
        raise ValueError(f'top speed must be finite, got {top_speed_kph}')
    if not 1 <= rows_per_action <= n_rows:
        raise ValueError(f'rows_per_action must be 1..{n_rows}, got {rows_per_action}')
    first = max(0, math.floor(top_speed_kph / 10.0) - 1)
    first = min(first, n_rows - rows_per_action)
    return range(first, first + rows_per_action)


ACTION_SCALINGS = ('budget', 'limits')


def apply_action(default: TorqueMap, current: TorqueMap, action, row_start: int,
                 torque_budget_nm: Optional[float] = None,
                 upper_bound: Optional[float] = None, policy_version: int = 0,
                 scaling: Optional[str] = None) -> TorqueMap:
    """
    Return the map an action asks for: current, with rows from row_start replaced.

    action: rows_per_action x n_cols values (a flat array of a multiple of
    n_cols values is reshaped), clipped to [-1, 1]; NaN or infinite values
    raise ValueError (a broken policy must not reach the vehicle). New rows,
    with the safety gate's limits ``lower``, ``upper`` (``torque_limits``), by
    ``scaling``:

    - ``budget`` (tspace's): clip(default + action x torque_budget_nm, lower,
      upper). 0 is the default map; with upper_bound 1 (never above the
      default) every action above 0 gives the default: half of each action's
      range does nothing, and a learner there gets no gradient from it;
    - ``limits``: lower + (action + 1) / 2 x (upper - lower): the whole range
      [-1, 1] spans the gate's interval, -1 its lower and 1 its upper limit.

    The result has origin ORIGIN_AGENT and the given policy version. A limit or
    scaling left None is the shipped task's.
    """
    if torque_budget_nm is None:
        torque_budget_nm = _shipped().torque_budget_nm
    if upper_bound is None:
        upper_bound = _shipped().upper_bound
    if scaling is None:
        scaling = _shipped().action_scaling
    if scaling not in ACTION_SCALINGS:
        raise ValueError(f'scaling must be one of {ACTION_SCALINGS}, got {scaling!r}')
    if not default.same_breakpoints(current):
        raise ValueError('default and current maps have different breakpoints')
    n_rows, n_cols = default.shape
    a = np.asarray(action, dtype=np.float64)
    if a.ndim == 1 and a.size % n_cols == 0 and a.size:
        a = a.reshape(-1, n_cols)
    if a.ndim != 2 or a.shape[1] != n_cols or a.shape[0] < 1:
        raise ValueError(f'action must have shape (rows, {n_cols}), got {np.shape(action)}')
    if not np.all(np.isfinite(a)):
        raise ValueError('action contains NaN or infinite values')
    rows = slice(row_start, row_start + a.shape[0])
    if row_start < 0 or row_start + a.shape[0] > n_rows:
        raise ValueError(f'action rows {row_start}..{row_start + a.shape[0] - 1} outside the '
                         f'table of {n_rows} rows')
    base = default.torque_nm[rows]
    lower, upper = torque_limits(base, torque_budget_nm, upper_bound)
    table = np.array(current.torque_nm)
    a = np.clip(a, -1.0, 1.0)
    if scaling == 'limits':
        table[rows] = np.clip(lower + (a + 1.0) * 0.5 * (upper - lower), lower, upper)
    else:
        table[rows] = np.clip(base + a * torque_budget_nm, lower, upper)
    return current.with_torque(table, policy_version=policy_version, origin=ORIGIN_AGENT)


def _shipped():
    from tspace_ros.task.contract import shipped_task  # lazily: the task loads torque maps
    return shipped_task()
