"""
The safety gate: the rules every torque map must pass before it is flashed.

tspace's rule: flashed = default + action x budget, clipped to
[default - budget, default x upper_bound]. Taken literally, ``default x
upper_bound`` turns around for negative (regenerating) defaults: with
upper_bound 1.1 it would demand *more* regeneration than the default. Here the
upper limit is ``default + (upper_bound - 1) x |default|``: upper_bound 1.0
never allows more torque than the default (less drive torque or more
regeneration only), 1.1 allows 10 % of the default's magnitude more torque on
either side. upper_bound must be >= 1: the default map itself must pass the
gate, since the VCU falls back to it and the rows an action leaves alone keep
it (below 1 every row of the default would be out of bounds).

Rules (``GateRule``) a proposed map must pass against the default and the
current map, for an action on rows [row_start, row_start + row_count):

- SHAPE: same breakpoints (speed rows, pedal columns) as the default;
- FINITE: every value finite;
- BELOW_LOWER / ABOVE_UPPER: every value within the limits above;
- ROW_COUNT: 1 <= row_count <= rows_per_action;
- ROW_RANGE: the rows lie inside the table;
- ROWS_OUTSIDE_CHANGED: rows outside the range equal the current map's (within the
  tolerance).

A tolerance (default 1e-3 Nm) absorbs float32 rounding of maps that travel
as ROS messages.

``admit`` is the one way to the vehicle. It checks the proposal with the rules
above, then builds the map the vehicle will hold: the *current* map with only
the action's rows taken from the proposal (the client's other rows are
checked, never used), those rows quantized to the vehicle link's resolution
(``resolution_nm``, e.g. 0.5 Nm on the CAN transfer) by rounding to the
nearest step that stays inside the limits, and checks that map's values again
with no tolerance at all: what passes the gate is within the limits on the
bus too. Its origin is the gate's verdict, never the client's word:
ORIGIN_DEFAULT exactly when the table equals the default's, else ORIGIN_AGENT.
"""

from dataclasses import dataclass
from enum import Enum
import math
from typing import Optional, Tuple

import numpy as np

from tspace_ros.torque_map.map import ORIGIN_AGENT, ORIGIN_DEFAULT, TorqueMap

# Float noise allowed in the strict check of an admitted map, Nm (not a tolerance).
_EXACT_NM = 1e-9


class GateRule(str, Enum):
    """Codes of the safety-gate rules (stable strings for logs and results)."""

    SHAPE = 'shape'
    FINITE = 'finite'
    BELOW_LOWER = 'below_lower_limit'
    ABOVE_UPPER = 'above_upper_limit'
    ROW_COUNT = 'row_count'
    ROW_RANGE = 'row_range'
    ROWS_OUTSIDE_CHANGED = 'rows_outside_changed'


@dataclass(frozen=True)
class GateResult:
    """
    The gate's verdict on a proposed map.

    Attributes
    ----------
    failures:
        (rule, human-readable message) for every rule that failed; empty if ok.

    """

    failures: Tuple[Tuple[GateRule, str], ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every rule passed."""
        return not self.failures

    @property
    def rules(self) -> Tuple[GateRule, ...]:
        """Return the codes of the failed rules."""
        return tuple(rule for rule, _ in self.failures)

    @property
    def message(self) -> str:
        """Return all failure messages in one line ('' if ok)."""
        return '; '.join(f'{rule.value}: {text}' for rule, text in self.failures)


def torque_limits(default_nm: np.ndarray, torque_budget_nm: float,
                  upper_bound: float) -> Tuple[np.ndarray, np.ndarray]:
    """
    Return (lower, upper) torque limits, Nm, for default torques (any shape).

    lower = default - budget; upper = default + (upper_bound - 1) x |default|.
    ValueError unless torque_budget_nm > 0 and upper_bound >= 1 (both finite).
    """
    if not (math.isfinite(torque_budget_nm) and torque_budget_nm > 0):
        raise ValueError(f'torque_budget_nm must be > 0, got {torque_budget_nm}')
    if not (math.isfinite(upper_bound) and upper_bound >= 1.0):
        raise ValueError(f'upper_bound must be >= 1 (the default must pass), got {upper_bound}')
    default = np.asarray(default_nm, dtype=np.float64)
    return default - torque_budget_nm, default + (upper_bound - 1.0) * np.abs(default)


class SafetyGate:
    """Check proposed torque maps against the default map's limits."""

    def __init__(self, default_map: TorqueMap, torque_budget_nm: Optional[float] = None,
                 upper_bound: Optional[float] = None, rows_per_action: Optional[int] = None,
                 tolerance_nm: float = 1e-3, resolution_nm: float = 0.0):
        """
        Fix the default map and the limits.

        torque_budget_nm: how far below the default a value may go, Nm (> 0).
        upper_bound: see the module docstring (>= 1; 1.0 = never above the
        default). rows_per_action: most rows one action may change.
        resolution_nm: the vehicle link's torque step (0: values travel exact).
        A limit left None is the shipped task contract's (a node passes its own
        task's: ``TaskContract.safety_gate``).
        """
        if None in (torque_budget_nm, upper_bound, rows_per_action):
            from tspace_ros.task.contract import shipped_task
            task = shipped_task()
            torque_budget_nm = task.torque_budget_nm if torque_budget_nm is None \
                else torque_budget_nm
            upper_bound = task.upper_bound if upper_bound is None else upper_bound
            rows_per_action = task.rows_per_action if rows_per_action is None \
                else rows_per_action
        if not (math.isfinite(resolution_nm) and resolution_nm >= 0):
            raise ValueError(f'resolution_nm must be >= 0, got {resolution_nm}')
        if not (math.isfinite(tolerance_nm) and tolerance_nm >= 0):
            raise ValueError(f'tolerance_nm must be >= 0, got {tolerance_nm}')
        self.resolution_nm = float(resolution_nm)
        if not 1 <= rows_per_action <= default_map.shape[0]:
            raise ValueError(f'rows_per_action must be 1..{default_map.shape[0]}, '
                             f'got {rows_per_action}')
        self.default_map = default_map
        self.torque_budget_nm = float(torque_budget_nm)
        self.upper_bound = float(upper_bound)
        self.rows_per_action = int(rows_per_action)
        self.tolerance_nm = float(tolerance_nm)
        self.lower_nm, self.upper_nm = torque_limits(default_map.torque_nm,
                                                     self.torque_budget_nm, self.upper_bound)

    def _shape_failure(self, candidate: TorqueMap, what: str) -> Optional[str]:
        if candidate.shape != self.default_map.shape:
            return (f'{what} map has shape {candidate.shape}, the default '
                    f'{self.default_map.shape}')
        if not candidate.same_breakpoints(self.default_map):
            return f'{what} map has other breakpoints than the default'
        return None

    def _place(self, row: int, col: int) -> str:
        speed = self.default_map.speed_breakpoints_kph[row]
        pedal = self.default_map.pedal_breakpoints[col]
        return f'row {row} ({speed:g} km/h), column {col} (pedal {pedal:g})'

    def _value_failures(self, torque: np.ndarray, tolerance_nm: Optional[float] = None) -> list:
        tolerance = self.tolerance_nm if tolerance_nm is None else tolerance_nm
        failures = []
        finite = np.isfinite(torque)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            failures.append((GateRule.FINITE, f'{int((~finite).sum())} non-finite values, '
                             f'first at {self._place(r, c)}'))
        safe = np.where(finite, torque, 0.0)
        below = finite & (safe < self.lower_nm - tolerance)
        if below.any():
            excess = np.where(below, self.lower_nm - safe, 0.0)
            r, c = np.unravel_index(np.argmax(excess), excess.shape)
            failures.append((GateRule.BELOW_LOWER, (
                f'{int(below.sum())} values below default - {self.torque_budget_nm:g} Nm; '
                f'worst {safe[r, c]:.3f} Nm < {self.lower_nm[r, c]:.3f} Nm at '
                f'{self._place(r, c)}')))
        above = finite & (safe > self.upper_nm + tolerance)
        if above.any():
            excess = np.where(above, safe - self.upper_nm, 0.0)
            r, c = np.unravel_index(np.argmax(excess), excess.shape)
            failures.append((GateRule.ABOVE_UPPER, (
                f'{int(above.sum())} values above default + ({self.upper_bound:g} - 1) x '
                f'|default|; worst {safe[r, c]:.3f} Nm > {self.upper_nm[r, c]:.3f} Nm at '
                f'{self._place(r, c)}')))
        return failures

    def check(self, proposed: TorqueMap, current: TorqueMap, row_start: int,
              row_count: int) -> GateResult:
        """
        Check a map proposed by an action on rows [row_start, row_start + row_count).

        current: the map the VCU applies now. Returns every failed rule.
        """
        failures = []
        n_rows = self.default_map.shape[0]
        if not 1 <= row_count <= self.rows_per_action:
            failures.append((GateRule.ROW_COUNT, (
                f'{row_count} rows changed, an action changes 1..{self.rows_per_action}')))
        range_ok = 0 <= row_start and row_start + row_count <= n_rows
        if not range_ok:
            failures.append((GateRule.ROW_RANGE, (
                f'rows {row_start}..{row_start + row_count - 1} outside the table of '
                f'{n_rows} rows')))
        shape_failures = [(GateRule.SHAPE, text) for text in (
            self._shape_failure(proposed, 'proposed'), self._shape_failure(current, 'current'))
            if text]
        failures.extend(shape_failures)
        if shape_failures:
            return GateResult(tuple(failures))
        torque = np.asarray(proposed.torque_nm, dtype=np.float64)
        failures.extend(self._value_failures(torque))
        if range_ok and row_count >= 0:
            outside = np.ones(n_rows, dtype=bool)
            outside[row_start:row_start + row_count] = False
            same = np.abs(torque - current.torque_nm) <= self.tolerance_nm
            changed = outside & ~np.all(same, axis=1)
            if changed.any():
                failures.append((GateRule.ROWS_OUTSIDE_CHANGED, (
                    f'rows {np.flatnonzero(changed).tolist()} differ from the current map '
                    f'outside rows {row_start}..{row_start + row_count - 1}')))
        return GateResult(tuple(failures))

    def check_full_map(self, proposed: TorqueMap) -> GateResult:
        """Check a whole map (e.g. restoring the default): shape, finiteness and limits only."""
        text = self._shape_failure(proposed, 'proposed')
        if text:
            return GateResult(((GateRule.SHAPE, text),))
        return GateResult(tuple(self._value_failures(
            np.asarray(proposed.torque_nm, dtype=np.float64))))

    def quantize(self, torque_nm: np.ndarray, rows: slice) -> np.ndarray:
        """
        Return rows of a table rounded to resolution_nm, kept inside the limits.

        Each value goes to the nearest multiple of the resolution; one that
        would land beyond a limit goes one step inwards instead (where the
        limits leave no multiple between them, it stays outside and the
        strict check refuses it). Without a resolution (a link that carries
        exact values, XCP's float32) a value is only brought onto a limit it
        passes by no more than the check's tolerance (float32 rounding of a
        value at the limit); others are returned as they are.
        """
        values = np.asarray(torque_nm, dtype=np.float64)
        if self.resolution_nm == 0:
            lower, upper = self.lower_nm[rows], self.upper_nm[rows]
            tolerance = self.tolerance_nm
            values = np.where((values < lower) & (values >= lower - tolerance), lower, values)
            return np.where((values > upper) & (values <= upper + tolerance), upper, values)
        step = self.resolution_nm
        lower, upper = self.lower_nm[rows], self.upper_nm[rows]
        q = np.round(values / step) * step
        q = np.where(q < lower - _EXACT_NM, q + step, q)
        return np.where(q > upper + _EXACT_NM, q - step, q)

    def admit(self, proposed: TorqueMap, current: TorqueMap, row_start: int,
              row_count: int) -> Tuple[GateResult, Optional[TorqueMap]]:
        """
        Return (verdict, the map to send) for an action on rows [row_start, +row_count).

        The map to send is None unless every rule passed; see the module
        docstring for how it is built and checked.
        """
        verdict = self.check(proposed, current, row_start, row_count)
        if not verdict.ok:
            return verdict, None
        rows = slice(row_start, row_start + row_count)
        table = np.array(current.torque_nm, dtype=np.float64)
        table[rows] = self.quantize(np.asarray(proposed.torque_nm)[rows], rows)
        failures = self._value_failures(table, _EXACT_NM)
        if failures:
            return GateResult(tuple(
                (rule, f'after quantization to {self.resolution_nm:g} Nm: {text}')
                for rule, text in failures)), None
        origin = ORIGIN_DEFAULT if np.array_equal(table, self.default_map.torque_nm) \
            else ORIGIN_AGENT
        return verdict, current.with_torque(table, proposed.policy_version, origin)
