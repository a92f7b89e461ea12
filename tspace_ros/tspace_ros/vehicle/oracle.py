"""
The oracle: the best fixed torque map the safety gate allows, found by search.

What a learned map is measured against. A map is evaluated by driving a drive
cycle (or its first seconds, a lap) in a fresh ``VehicleSimulation``: energy
per km, speed-tracking error and the saving against the default map. The
search space is the gate's box: every cell between the task's lower and upper
limits (``torque_limits``: default - torque_budget_nm .. default + (upper_bound
- 1) x |default|), parameterised as x in [0, 1]^k over a chosen set of cells
(``GateBox``; ``relaxed_box`` is a wider box to show what the gate costs).
Every limit comes from the task contract; none is typed here.

The search (``run_oracle``) has three stages, each counted in evaluations
(simulations):

1. screening (``cell_impacts``): each cell alone at its lower limit, the
   change in Wh/km against the default. A cell the default drive never reads
   (``cells_read``: neither the VCU's lookup nor the driver's inversion of the
   map touches it) cannot change that drive, so its change is exactly zero
   and it is not simulated;
2. ``coordinate_search`` over the cells that matter most, each tried at a
   few levels, keeping improvements;
3. ``cma_search``: CMA-ES (the ``cma`` package) on the same cells, started
   from the coordinate result, seeded, with an evaluation budget.

A map whose speed-error RMS exceeds the bound (``SPEED_ERROR_BOUND_KPH`` of
the main job, ``tspace_ros.bringup``) is penalised: it always scores worse
than the default map, and it is never the result.

``OracleResult`` is JSON-able; ``save_result`` / ``load_result`` keep it under
a directory keyed by vehicle id, driver model and cycle (``result_path``), so
that the main job can read the oracle's saving (``cached_saving``) without
searching again. Files are plain JSON; a file that is not a valid result is an
``OracleCacheError`` naming it.
"""

import bisect
from dataclasses import asdict, dataclass, field
import json
import math
import os
import pathlib
import re
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from tspace_ros.torque_map import torque_limits, TorqueMap
from tspace_ros.vehicle.cycles import drive_cycle, DriveCycle
from tspace_ros.vehicle.parameters import check_driver_model, VehicleParameters
from tspace_ros.vehicle.simulation import VehicleSimulation

DRIVER_NAME = 'trace_pi'
"""The key of the PI driver (on the trace, inverting the map): the default driver model."""
RESULT_LAYOUT = 1
"""Version of the JSON layout of ``OracleResult``."""
DEFAULT_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Levels (x, 0 = lower limit, 1 = upper limit) coordinate_search tries per cell."""
PENALTY_WH_PER_KM_PER_KPH = 100.0
"""How much worse than the default map a map scores per km/h of RMS error over the bound."""

_KEY = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
Cell = Tuple[int, int]


class OracleCacheError(ValueError):
    """A cached oracle result that cannot be read (names the file and what is wrong)."""


def speed_error_bound_kph() -> float:
    """Return the RMS speed error a map must keep within, km/h (the main job's bound)."""
    from tspace_ros.bringup import SPEED_ERROR_BOUND_KPH  # lazily: bringup composes the job
    return float(SPEED_ERROR_BOUND_KPH)


# ---- evaluating a map ----------------------------------------------------------------------

class MapEvaluation(NamedTuple):
    """The figures of one map on one cycle; saving is the fraction of the default's Wh/km."""

    energy_per_km_wh: float
    speed_error_rms_kph: float
    distance_km: float
    saving: float


def lap(cycle: Union[str, DriveCycle], lap_s: Optional[float] = None) -> DriveCycle:
    """Return a drive cycle by name (or as given), cut to its first lap_s seconds if given."""
    trace = drive_cycle(cycle) if isinstance(cycle, str) else cycle
    return trace if lap_s is None else trace.truncated(lap_s)


def cycle_key(name: str, lap_s: Optional[float] = None) -> str:
    """Return the name a cycle (or its first lap_s seconds) has in results and the cache."""
    return str(name) if lap_s is None else f'{name}_first{float(lap_s):g}s'


def driver_key(params: VehicleParameters, driver_model: Optional[str] = None) -> str:
    """
    Return the cache key of a driver model (None: the vehicle's): trace_pi for pi, else its name.

    Results depend on the driver: the pi driver meets the trace whatever the
    map, the dyno driver feels the map within the cycle's tolerance band.
    """
    model = check_driver_model(params.driver.model if driver_model is None else driver_model)
    return DRIVER_NAME if model == 'pi' else model


def simulate(params: VehicleParameters, cycle: DriveCycle, torque_map: TorqueMap,
             default_map: TorqueMap, driver_model: Optional[str] = None) -> Dict[str, float]:
    """
    Drive one lap of the cycle with torque_map in a fresh simulation; return ``between``'s figures.

    The lap is measured as the main job measures its laps (``tspace_ros.bringup``):
    a van that repeats the cycle, from its start for the cycle's duration.
    """
    sim = VehicleSimulation(params, cycle, default_map=default_map, repeat_cycle=True,
                            driver_model=driver_model)
    sim.vcu.set_map(torque_map)
    start = sim.odometer()
    sim.run(cycle.duration_s)
    return VehicleSimulation.between(start, sim.odometer())


def evaluate_map(params: VehicleParameters, cycle: Union[str, DriveCycle],
                 torque_map: TorqueMap, default_map: TorqueMap,
                 default_wh_per_km: Optional[float] = None,
                 driver_model: Optional[str] = None) -> MapEvaluation:
    """
    Return a map's figures on a cycle, its saving against the default map's Wh/km.

    default_wh_per_km: the default map's figure if known (else it is simulated).
    """
    trace = lap(cycle)
    figures = simulate(params, trace, torque_map, default_map, driver_model)
    if default_wh_per_km is None:
        default_wh_per_km = simulate(params, trace, default_map, default_map,
                                     driver_model)['energy_per_km_wh']
    wh = figures['energy_per_km_wh']
    return MapEvaluation(wh, figures['speed_error_rms_kph'], figures['distance_km'],
                         1.0 - wh / default_wh_per_km)


class MapEvaluator:
    """
    Evaluates maps on one cycle, counting simulations (a map seen before is not driven again).

    ``default`` holds the default map's figures (the first simulation).
    """

    def __init__(self, params: VehicleParameters, cycle: Union[str, DriveCycle],
                 default_map: TorqueMap, driver_model: Optional[str] = None):
        """Simulate the default map once (driver_model None: the vehicle's driver)."""
        self.params = params
        self.driver_model = driver_model
        self.cycle = lap(cycle)
        self.default_map = default_map
        self.evaluations = 0
        self._seen: Dict[bytes, MapEvaluation] = {}
        figures = self._simulate(default_map)
        self.default = MapEvaluation(figures['energy_per_km_wh'],
                                     figures['speed_error_rms_kph'], figures['distance_km'], 0.0)
        self._seen[self._key(default_map)] = self.default

    @staticmethod
    def _key(torque_map: TorqueMap) -> bytes:
        return np.ascontiguousarray(torque_map.torque_nm).tobytes()

    def _simulate(self, torque_map: TorqueMap) -> Dict[str, float]:
        self.evaluations += 1
        return simulate(self.params, self.cycle, torque_map, self.default_map,
                        self.driver_model)

    def __call__(self, torque_map: TorqueMap) -> MapEvaluation:
        """Return the map's figures (MapEvaluation)."""
        key = self._key(torque_map)
        if key not in self._seen:
            figures = self._simulate(torque_map)
            wh = figures['energy_per_km_wh']
            self._seen[key] = MapEvaluation(wh, figures['speed_error_rms_kph'],
                                            figures['distance_km'],
                                            1.0 - wh / self.default.energy_per_km_wh)
        return self._seen[key]

    def objective(self, evaluation: MapEvaluation, bound_kph: float) -> float:
        """
        Return the score to minimise: Wh/km, or a penalty if the tracking bound is broken.

        A map over the bound scores worse than the default map, the more the
        further it is over.
        """
        excess = evaluation.speed_error_rms_kph - bound_kph
        if not math.isfinite(evaluation.energy_per_km_wh) or not excess <= 0.0:
            excess = excess if math.isfinite(excess) else 1e3
            return max(self.default.energy_per_km_wh, evaluation.energy_per_km_wh) + \
                PENALTY_WH_PER_KM_PER_KPH * (1.0 + max(excess, 0.0))
        return evaluation.energy_per_km_wh


# ---- the box the search moves in -----------------------------------------------------------

def _cells(shape: Tuple[int, int], cells) -> Tuple[Cell, ...]:
    if cells is None:
        return tuple((r, c) for r in range(shape[0]) for c in range(shape[1]))
    array = np.asarray(cells)
    if array.dtype == bool:
        if array.shape != shape:
            raise ValueError(f"a cell mask must have the map's shape {shape}, got {array.shape}")
        return tuple((int(r), int(c)) for r, c in np.argwhere(array))
    chosen = tuple((int(r), int(c)) for r, c in cells)
    for r, c in chosen:
        if not (0 <= r < shape[0] and 0 <= c < shape[1]):
            raise ValueError(f'cell ({r}, {c}) outside the map of shape {shape}')
    if len(set(chosen)) != len(chosen):
        raise ValueError('cells must not repeat')
    return chosen


@dataclass(frozen=True, eq=False)
class GateBox:
    """
    Torque maps as points x in [0, 1]^k: cell i at lower + x_i (upper - lower).

    (Computed from the default, so ``to_map(default_x)`` is the default map exactly.)

    Cells outside ``cells`` keep the default's torque. ``lower`` and
    ``upper`` are whole tables (Nm); ``name`` is 'gate' or 'relaxed'.
    """

    default_map: TorqueMap
    lower_nm: np.ndarray
    upper_nm: np.ndarray
    cells: Tuple[Cell, ...]
    name: str = 'gate'

    def __post_init__(self):
        """Check the limits against the default map and the cells."""
        shape = self.default_map.shape
        lower = np.array(self.lower_nm, dtype=np.float64)
        upper = np.array(self.upper_nm, dtype=np.float64)
        if lower.shape != shape or upper.shape != shape:
            raise ValueError(f"limits must have the map's shape {shape}")
        if not (np.all(lower < upper) and np.all(np.isfinite(lower)) and
                np.all(np.isfinite(upper))):
            raise ValueError('every lower limit must be finite and below its upper limit')
        default = self.default_map.torque_nm
        if np.any(default < lower) or np.any(default > upper):
            raise ValueError('the default map must lie inside the box')
        lower.setflags(write=False)
        upper.setflags(write=False)
        object.__setattr__(self, 'lower_nm', lower)
        object.__setattr__(self, 'upper_nm', upper)
        object.__setattr__(self, 'cells', _cells(shape, self.cells))
        if not self.cells:
            raise ValueError('a box needs at least one cell')

    @property
    def dim(self) -> int:
        """Return k, the number of cells the box moves."""
        return len(self.cells)

    def _index(self):
        rows, cols = zip(*self.cells)
        return np.array(rows), np.array(cols)

    def to_map(self, x) -> TorqueMap:
        """Return the map of a point x (clipped into [0, 1]^k); ValueError if not finite."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self.dim:
            raise ValueError(f'x must have {self.dim} values, got {x.size}')
        if not np.all(np.isfinite(x)):
            raise ValueError('x contains NaN or infinite values')
        rows, cols = self._index()
        low, high = self.lower_nm[rows, cols], self.upper_nm[rows, cols]
        table = np.array(self.default_map.torque_nm)
        # Measured from the default, so that the default's point gives it to the bit.
        default = table[rows, cols]
        offset = (np.clip(x, 0.0, 1.0) - (default - low) / (high - low)) * (high - low)
        table[rows, cols] = np.clip(default + offset, low, high)
        return self.default_map.with_torque(table)

    def to_x(self, torque_map: TorqueMap) -> np.ndarray:
        """Return the point of a map's cells (clipped into [0, 1]^k)."""
        rows, cols = self._index()
        low, high = self.lower_nm[rows, cols], self.upper_nm[rows, cols]
        return np.clip((torque_map.torque_nm[rows, cols] - low) / (high - low), 0.0, 1.0)

    @property
    def default_x(self) -> np.ndarray:
        """Return the point of the default map."""
        return self.to_x(self.default_map)

    def with_cells(self, cells) -> 'GateBox':
        """Return the same limits over other cells."""
        return GateBox(self.default_map, self.lower_nm, self.upper_nm, cells, self.name)


def gate_box(default_map: TorqueMap, torque_budget_nm: float, upper_bound: float,
             cells=None) -> GateBox:
    """
    Return the safety gate's box over cells (None: all; a bool mask or (row, col) pairs).

    Pass the task's limits: ``gate_box(task.vehicle_default_map(),
    task.torque_budget_nm, task.upper_bound)`` (``task_gate_box``).
    """
    lower, upper = torque_limits(default_map.torque_nm, torque_budget_nm, upper_bound)
    return GateBox(default_map, lower, upper, cells, 'gate')


def relaxed_box(default_map: TorqueMap, torque_budget_nm: float, upper_bound: float,
                factor: float = 2.0, cells=None) -> GateBox:
    """
    Return a box wider than the gate's, to show what the gate costs.

    Each cell between default - factor x budget and default + budget (or the
    gate's limit where that is wider). factor must be >= 1.
    """
    if not (math.isfinite(factor) and factor >= 1.0):
        raise ValueError(f'factor must be >= 1, got {factor}')
    lower, upper = torque_limits(default_map.torque_nm, torque_budget_nm, upper_bound)
    default = default_map.torque_nm
    return GateBox(default_map, np.minimum(lower, default - factor * torque_budget_nm),
                   np.maximum(upper, default + torque_budget_nm), cells, 'relaxed')


def task_gate_box(task, cells=None, relaxed_factor: Optional[float] = None) -> GateBox:
    """Return the box of a TaskContract's gate (relaxed_factor given: the relaxed box)."""
    default = task.vehicle_default_map()
    if relaxed_factor is None:
        return gate_box(default, task.torque_budget_nm, task.upper_bound, cells)
    return relaxed_box(default, task.torque_budget_nm, task.upper_bound, relaxed_factor, cells)


# ---- which cells matter --------------------------------------------------------------------

def cells_read(params: VehicleParameters, cycle: Union[str, DriveCycle],
               default_map: TorqueMap, torque_map: Optional[TorqueMap] = None,
               lowering_only: bool = False, driver_model: Optional[str] = None) -> np.ndarray:
    """
    Return a bool mask of the cells a drive with torque_map (default: the default) depends on.

    A cell outside the mask is not read, so a map that differs from this one
    only there drives the cycle step for step the same. Conservative: for
    each lookup of the VCU the two speed rows around the speed and the two
    pedal columns around the pedal; for each inversion by the driver those
    rows and columns 0 up to two past the pedal it found (all when the map
    does not reach the torque).

    lowering_only: the cells whose value, if lowered alone, can change the
    drive. Lowering a column the inversion passed over keeps it below the
    torque asked for, so of an inversion only column 0 (the lift-off torque)
    and the columns around the pedal found count.
    """
    torque_map = default_map if torque_map is None else torque_map
    trace = lap(cycle)
    sim = VehicleSimulation(params, trace, default_map=default_map, repeat_cycle=True,
                            driver_model=driver_model)
    sim.vcu.set_map(torque_map)
    speeds = torque_map.speed_breakpoints_kph.tolist()
    pedals = torque_map.pedal_breakpoints.tolist()
    n_rows, n_cols = len(speeds), len(pedals)
    lookups = set()
    inversions = set()
    vcu = sim.vcu
    lookup, invert = vcu.map_torque_nm, vcu.pedal_for_torque

    def row(speed_kph: float) -> int:
        return min(max(bisect.bisect_right(speeds, speed_kph) - 1, 0), n_rows - 2)

    def tracked_lookup(speed_kph: float, pedal: float) -> float:
        column = min(max(bisect.bisect_right(pedals, pedal) - 1, 0), n_cols - 2)
        lookups.add((row(speed_kph), column))
        return lookup(speed_kph, pedal)

    def tracked_invert(speed_kph: float, wheel_torque_nm: float):
        pedal, lift_off = invert(speed_kph, wheel_torque_nm)
        # Columns up to `found` (or all, pedal 1) were compared; the result came from
        # the two below it (one more on each side for rounding at a breakpoint).
        found = n_cols if pedal >= 1.0 else bisect.bisect_right(pedals, pedal)
        inversions.add((row(speed_kph), found))
        return pedal, lift_off

    vcu.map_torque_nm, vcu.pedal_for_torque = tracked_lookup, tracked_invert
    sim.run(trace.duration_s)
    mask = np.zeros((n_rows, n_cols), dtype=bool)
    for i, j in lookups:
        mask[i:i + 2, j:j + 2] = True
    for i, found in inversions:
        mask[i:i + 2, 0] = True
        if found < n_cols:
            mask[i:i + 2, max(found - 2, 0):found + 1] = True
        if not lowering_only:
            mask[i:i + 2, :found + 1] = True
    return mask


@dataclass(frozen=True)
class CellImpact:
    """The change one cell alone at its lower limit makes on the cycle (against the default)."""

    row: int
    col: int
    speed_kph: float
    pedal: float
    delta_wh_per_km: float
    speed_error_rms_kph: float
    simulated: bool = True


def cell_impacts(evaluator: MapEvaluator, box: GateBox,
                 read_mask: Optional[np.ndarray] = None) -> List[CellImpact]:
    """
    Return, for each of the box's cells, the change in Wh/km when it alone is at its lower limit.

    Sorted by how much it matters (largest |change| first). read_mask (see
    ``cells_read``): cells outside it are not simulated, their change is 0.
    """
    default = box.default_map
    impacts = []
    for index, (r, c) in enumerate(box.cells):
        speed = float(default.speed_breakpoints_kph[r])
        pedal = float(default.pedal_breakpoints[c])
        if read_mask is not None and not read_mask[r, c]:
            impacts.append(CellImpact(r, c, speed, pedal, 0.0,
                                      evaluator.default.speed_error_rms_kph, simulated=False))
            continue
        x = box.default_x
        x[index] = 0.0
        result = evaluator(box.to_map(x))
        impacts.append(CellImpact(r, c, speed, pedal, result.energy_per_km_wh -
                                  evaluator.default.energy_per_km_wh,
                                  result.speed_error_rms_kph))
    return sorted(impacts, key=lambda i: (-abs(i.delta_wh_per_km), i.row, i.col))


# ---- the searches --------------------------------------------------------------------------

@dataclass
class SearchOutcome:
    """The best point a search found, its figures and score, and the simulations it used."""

    x: np.ndarray
    evaluation: MapEvaluation
    objective: float
    evaluations: int


def _bound(bound_kph: Optional[float]) -> float:
    return speed_error_bound_kph() if bound_kph is None else float(bound_kph)


def coordinate_search(evaluator: MapEvaluator, box: GateBox, x0=None,
                      levels: Sequence[float] = DEFAULT_LEVELS,
                      max_evaluations: Optional[int] = None, bound_kph: Optional[float] = None,
                      passes: int = 1) -> SearchOutcome:
    """
    Try each cell (in the box's order) at each level, keeping every improvement.

    x0: the start (default: the default map). Stops after max_evaluations
    new simulations (None: no limit) or ``passes`` sweeps.
    """
    bound = _bound(bound_kph)
    x = box.default_x if x0 is None else np.clip(np.asarray(x0, dtype=np.float64), 0.0, 1.0)
    start = evaluator.evaluations
    best = evaluator(box.to_map(x))
    best_score = evaluator.objective(best, bound)

    def spent() -> bool:
        return max_evaluations is not None and evaluator.evaluations - start >= max_evaluations

    for _ in range(passes):
        for index in range(box.dim):
            for level in levels:
                if spent():
                    break
                if abs(level - x[index]) < 1e-12:
                    continue
                trial = x.copy()
                trial[index] = level
                result = evaluator(box.to_map(trial))
                score = evaluator.objective(result, bound)
                if score < best_score:
                    x, best, best_score = trial, result, score
    return SearchOutcome(x, best, best_score, evaluator.evaluations - start)


def cma_search(evaluator: MapEvaluator, box: GateBox, x0=None, max_evaluations: int = 100,
               seed: int = 1, sigma0: float = 0.2, bound_kph: Optional[float] = None,
               popsize: Optional[int] = None) -> SearchOutcome:
    """
    Run CMA-ES (the ``cma`` package) on the box from x0, within [0, 1]^k.

    x0: the start (default: the default map), e.g. coordinate_search's
    result. At most max_evaluations simulations; seeded (seed >= 1).
    Returns the point with the best score seen, never worse than x0.
    """
    import cma  # lazily: only the oracle needs it

    bound = _bound(bound_kph)
    x = box.default_x if x0 is None else np.clip(np.asarray(x0, dtype=np.float64), 0.0, 1.0)
    start = evaluator.evaluations
    best = evaluator(box.to_map(x))
    best_x, best_score = x, evaluator.objective(best, bound)
    if box.dim < 2 or max_evaluations < 2:
        return SearchOutcome(best_x, best, best_score, evaluator.evaluations - start)
    options = {'bounds': [0.0, 1.0], 'seed': int(seed), 'verbose': -9, 'verb_log': 0,
               'verb_disp': 0, 'maxfevals': int(max_evaluations)}
    if popsize is not None:
        options['popsize'] = int(popsize)
    strategy = cma.CMAEvolutionStrategy(x.tolist(), float(sigma0), options)
    while not strategy.stop() and evaluator.evaluations - start < max_evaluations:
        room = max_evaluations - (evaluator.evaluations - start)
        candidates = strategy.ask()
        scores = []
        for point in candidates:
            if room <= 0:
                scores.append(best_score + PENALTY_WH_PER_KM_PER_KPH)  # not simulated
                continue
            before = evaluator.evaluations
            point = np.clip(np.asarray(point, dtype=np.float64), 0.0, 1.0)
            result = evaluator(box.to_map(point))
            room -= evaluator.evaluations - before
            score = evaluator.objective(result, bound)
            scores.append(score)
            if score < best_score:
                best_x, best, best_score = point, result, score
        strategy.tell(candidates, scores)
    return SearchOutcome(best_x, best, best_score, evaluator.evaluations - start)


# ---- the result and its cache --------------------------------------------------------------

@dataclass
class OracleResult:
    """
    The oracle's answer for one cycle and one box (JSON-able: ``to_dict`` / ``from_dict``).

    saving: fraction of the default's Wh/km the best map saves (0.025 =
    2.5 %). torque_nm with the breakpoints is the best map. cells_that_matter:
    the screening's top cells (row, col, speed_kph, pedal, delta_wh_per_km).
    evaluations: simulations in all (screen + coordinate + cma).
    torque_budget_nm, upper_bound: the task's gate the box came from.
    """

    vehicle_id: str
    cycle: str
    driver: str
    box: str
    torque_budget_nm: float
    upper_bound: float
    wh_per_km_default: float
    wh_per_km_best: float
    saving: float
    speed_error_rms_kph: float
    speed_error_rms_default_kph: float
    speed_error_bound_kph: float
    evaluations: int
    evaluations_by_stage: Dict[str, int]
    wall_s: float
    seed: int
    searched_cells: List[List[int]]
    speed_breakpoints_kph: List[float]
    pedal_breakpoints: List[float]
    torque_nm: List[List[float]]
    cells_that_matter: List[Dict[str, float]] = field(default_factory=list)
    layout: int = RESULT_LAYOUT

    @property
    def saving_pct(self) -> float:
        """Return the saving in percent."""
        return 100.0 * self.saving

    def best_map(self) -> TorqueMap:
        """Return the best map as a TorqueMap."""
        return TorqueMap(self.speed_breakpoints_kph, self.pedal_breakpoints, self.torque_nm,
                         self.vehicle_id, 0, 1)

    def to_dict(self) -> dict:
        """Return plain JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> 'OracleResult':
        """Build a result from ``to_dict`` output; ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f'an oracle result is a JSON object, got {type(data).__name__}')
        names = set(cls.__dataclass_fields__)
        missing, unknown = sorted(names - set(data) - {'cells_that_matter', 'layout'}), \
            sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f'missing keys {missing}, unknown keys {unknown}')
        if data.get('layout', RESULT_LAYOUT) != RESULT_LAYOUT:
            raise ValueError(f'layout {data.get("layout")!r}, this code reads {RESULT_LAYOUT}')
        for key in ('torque_budget_nm', 'upper_bound', 'wh_per_km_default', 'wh_per_km_best',
                    'saving', 'speed_error_rms_kph', 'speed_error_rms_default_kph',
                    'speed_error_bound_kph', 'wall_s'):
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value):
                raise ValueError(f'{key} must be a finite number, got {value!r:.80}')
        for key in ('vehicle_id', 'cycle', 'driver', 'box'):
            if not isinstance(data[key], str):
                raise ValueError(f'{key} must be a string, got {data[key]!r:.80}')
        if not isinstance(data['evaluations'], int) or isinstance(data['evaluations'], bool):
            raise ValueError(f'evaluations must be an integer, got {data["evaluations"]!r:.80}')
        result = cls(**data)
        result.best_map()  # the map must be a valid TorqueMap (TorqueMapError is a ValueError)
        return result


def result_path(cache_dir: Union[str, os.PathLike], vehicle_id: str, cycle: str,
                driver: str = DRIVER_NAME, box: str = 'gate') -> pathlib.Path:
    """Return <cache_dir>/<vehicle_id>/<driver>/<cycle>.json (another box: <cycle>.<box>.json)."""
    for what, value in (('vehicle_id', vehicle_id), ('cycle', cycle), ('driver', driver),
                        ('box', box)):
        if not isinstance(value, str) or not _KEY.match(value):
            raise ValueError(f'{what} must be letters, digits, _ . - (a file name), got '
                             f'{value!r}')
    suffix = '.json' if box == 'gate' else f'.{box}.json'
    return pathlib.Path(cache_dir) / vehicle_id / driver / f'{cycle}{suffix}'


def save_result(cache_dir: Union[str, os.PathLike], result: OracleResult) -> pathlib.Path:
    """Write a result as JSON (atomically) under its key; return the path."""
    path = result_path(cache_dir, result.vehicle_id, result.cycle, result.driver, result.box)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f'.tmp{os.getpid()}')
    temporary.write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False) + '\n',
                         encoding='utf-8')
    os.replace(temporary, path)
    return path


def load_result(cache_dir: Union[str, os.PathLike], vehicle_id: str, cycle: str,
                driver: str = DRIVER_NAME, box: str = 'gate') -> Optional[OracleResult]:
    """Return the cached result of a key, None if there is none; OracleCacheError if unreadable."""
    path = result_path(cache_dir, vehicle_id, cycle, driver, box)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise OracleCacheError(f'{path}: cannot read the oracle result: {error}') from None
    try:
        result = OracleResult.from_dict(json.loads(text))
    except ValueError as error:  # json.JSONDecodeError and TorqueMapError are ValueErrors
        raise OracleCacheError(f'{path}: not a valid oracle result: {error}') from None
    key = (result.vehicle_id, result.cycle, result.driver, result.box)
    if key != (vehicle_id, cycle, driver, box):
        raise OracleCacheError(f'{path}: holds the result of {key}, not of '
                               f'{(vehicle_id, cycle, driver, box)}')
    return result


def cached_saving(cache_dir: Union[str, os.PathLike], vehicle_id: str, cycle: str,
                  driver: str = DRIVER_NAME) -> Optional[float]:
    """Return the oracle's cached saving (fraction) under the gate, None if not computed."""
    result = load_result(cache_dir, vehicle_id, cycle, driver)
    return None if result is None else result.saving


# ---- the whole oracle ----------------------------------------------------------------------

def search_box(evaluator: MapEvaluator, box: GateBox, budget: int, seed: int = 1,
               coordinate_share: float = 0.4, levels: Sequence[float] = DEFAULT_LEVELS,
               bound_kph: Optional[float] = None) -> Tuple[SearchOutcome, Dict[str, int]]:
    """
    Search a box: coordinate_search with coordinate_share of budget, then CMA-ES with the rest.

    Returns the best outcome and the simulations of each stage.
    """
    if budget < 1:
        raise ValueError(f'budget must be >= 1 evaluation, got {budget}')
    coordinate = coordinate_search(evaluator, box, levels=levels, bound_kph=bound_kph,
                                   max_evaluations=max(1, int(round(budget * coordinate_share))))
    rest = budget - coordinate.evaluations
    if rest >= 2:
        final = cma_search(evaluator, box, coordinate.x, max_evaluations=rest, seed=seed,
                           bound_kph=bound_kph)
    else:
        final = SearchOutcome(coordinate.x, coordinate.evaluation, coordinate.objective, 0)
    if coordinate.objective < final.objective:  # cma_search never loses x0; belt and braces
        final = SearchOutcome(coordinate.x, coordinate.evaluation, coordinate.objective,
                              final.evaluations)
    return final, {'coordinate': coordinate.evaluations, 'cma': final.evaluations}


def choose_cells(impacts: Sequence[CellImpact], max_cells: int,
                 min_delta_wh_per_km: float = 1e-3) -> List[Cell]:
    """Return the cells that matter most (|change| >= min_delta_wh_per_km), at most max_cells."""
    chosen = [(i.row, i.col) for i in impacts if abs(i.delta_wh_per_km) >= min_delta_wh_per_km]
    return chosen[:max_cells]


def screen(evaluator: MapEvaluator, task, cells=None) -> List[CellImpact]:
    """Return the cell_impacts of the task's gate box over cells (None: all) on the cycle."""
    read = cells_read(evaluator.params, evaluator.cycle, evaluator.default_map, lowering_only=True,
                      driver_model=evaluator.driver_model)
    return cell_impacts(evaluator, task_gate_box(task, cells), read)


def run_oracle(params: VehicleParameters, task, cycle: str, budget: int, *,
               lap_s: Optional[float] = None, seed: int = 1,
               relaxed_factor: Optional[float] = None,
               max_cells: int = 16, top_cells: int = 10, screen_cells=None,
               search_cells: Optional[Sequence[Sequence[int]]] = None,
               bound_kph: Optional[float] = None, coordinate_share: float = 0.4,
               progress: Optional[Callable[[str], None]] = None,
               driver_model: Optional[str] = None) -> OracleResult:
    """
    Find the best fixed map of a task's box on a cycle (or its first lap_s seconds).

    budget: simulations for the search (coordinate + CMA-ES); the default map
    and the screening come on top (``evaluations_by_stage``). The search
    moves the max_cells cells that matter most (``screen`` over screen_cells,
    None: all), or search_cells if given (no screening: e.g. the cells of the
    gate's result, for the relaxed box). relaxed_factor given: search the
    relaxed box instead of the gate's.
    """
    started = time.perf_counter()
    bound = _bound(bound_kph)
    say = progress or (lambda text: None)
    evaluator = MapEvaluator(params, lap(cycle, lap_s), task.vehicle_default_map(),
                             driver_model)
    stages = {'default': evaluator.evaluations, 'screen': 0}
    impacts: List[CellImpact] = []
    if search_cells is None:
        say('screening the cells')
        impacts = screen(evaluator, task, screen_cells)
        stages['screen'] = evaluator.evaluations - stages['default']
        cells = choose_cells(impacts, max_cells)
    else:
        cells = [(int(r), int(c)) for r, c in search_cells]
    if not cells:
        raise ValueError('no cell changes the energy on this cycle: nothing to search')
    box = task_gate_box(task, cells, relaxed_factor)
    say(f'searching {len(cells)} cells of the {box.name} box')
    best, search_stages = search_box(evaluator, box, budget, seed, coordinate_share,
                                     bound_kph=bound)
    stages.update(search_stages)
    best_map = box.to_map(best.x)
    return OracleResult(
        vehicle_id=task.vehicle_id, cycle=cycle_key(cycle, lap_s),
        driver=driver_key(params, driver_model),
        box=box.name, torque_budget_nm=float(task.torque_budget_nm),
        upper_bound=float(task.upper_bound), wh_per_km_default=evaluator.default.energy_per_km_wh,
        wh_per_km_best=best.evaluation.energy_per_km_wh, saving=best.evaluation.saving,
        speed_error_rms_kph=best.evaluation.speed_error_rms_kph,
        speed_error_rms_default_kph=evaluator.default.speed_error_rms_kph,
        speed_error_bound_kph=bound, evaluations=evaluator.evaluations,
        evaluations_by_stage=stages, wall_s=time.perf_counter() - started, seed=int(seed),
        searched_cells=[[r, c] for r, c in cells],
        speed_breakpoints_kph=best_map.speed_breakpoints_kph.tolist(),
        pedal_breakpoints=best_map.pedal_breakpoints.tolist(),
        torque_nm=best_map.torque_nm.tolist(),
        cells_that_matter=[{'row': i.row, 'col': i.col, 'speed_kph': i.speed_kph,
                            'pedal': i.pedal, 'delta_wh_per_km': i.delta_wh_per_km}
                           for i in impacts[:top_cells]])


# ---- what the main job reports -------------------------------------------------------------

ORACLE_MODES = ('cached', 'search', 'off')
# The cached default-map energy must equal the run's own baseline on the lap within this
# fraction; otherwise the vehicle, its task or the simulator changed since the search.
STALE_TOLERANCE = 1e-3


def default_cache_dir() -> pathlib.Path:
    """Return the oracle cache: $TSPACE_ORACLE_CACHE, or $XDG_CACHE_HOME/tspace_ros/oracle."""
    if os.environ.get('TSPACE_ORACLE_CACHE'):
        return pathlib.Path(os.environ['TSPACE_ORACLE_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return pathlib.Path(base) / 'tspace_ros' / 'oracle'


def shipped_dir() -> Optional[pathlib.Path]:
    """Return the oracle results shipped with the package (config/oracle), None if absent."""
    from tspace_ros.task.files import config_path, VehicleConfigError
    try:
        return config_path('oracle', 'README.md').parent
    except VehicleConfigError:
        return None


def run_reference(mode: str, cache_dir: Union[str, os.PathLike], params: VehicleParameters,
                  task, cycle: str, lap_s: Optional[float], baseline_wh_per_km: float,
                  learned_saving: float, budget: int = 120,
                  progress: Optional[Callable[[str], None]] = None,
                  driver_model: Optional[str] = None) -> dict:
    """
    Return the oracle's figures for a run: its saving and the share of it the run reached.

    mode ``cached`` reads the cache only; ``search`` reads it and, when there is
    no usable result, runs ``run_oracle`` (``budget`` simulations) and caches it;
    ``off`` reports nothing. The cache is ``cache_dir``, then the results shipped
    in ``config/oracle`` (``shipped_dir``). The dict has ``status`` (``cached``,
    ``shipped``, ``searched``,
    ``not computed``, ``stale``, ``unreadable`` or ``off``), a ``reason`` when
    there is no figure, and with a figure: ``saving``, ``wh_per_km_best``,
    ``share`` (learned saving / oracle saving; None if the oracle saves
    nothing), ``path`` and ``evaluations``. A cached result is stale when its
    default-map energy differs from the run's own baseline on the same lap (the
    simulator, vehicle or task changed): it is not used.
    """
    if mode not in ORACLE_MODES:
        raise ValueError(f'oracle mode must be one of {ORACLE_MODES}, got {mode!r}')
    if mode == 'off':
        return {'status': 'off', 'reason': 'not asked for'}
    key = cycle_key(cycle, lap_s)
    driver = driver_key(params, driver_model)
    path = result_path(cache_dir, task.vehicle_id, key, driver)
    report: dict = {'cycle': key, 'driver': driver, 'path': str(path),
                    'cache_dir': str(cache_dir)}
    result, status = None, 'cached'
    try:
        result = load_result(cache_dir, task.vehicle_id, key, driver)
        if result is None:   # the results shipped with the package (config/oracle/)
            shipped = shipped_dir()
            result = load_result(shipped, task.vehicle_id, key, driver) if shipped else None
            if result is not None:
                status = 'shipped'
                report['path'] = str(result_path(shipped, task.vehicle_id, key, driver))
    except OracleCacheError as error:
        report.update(status='unreadable', reason=str(error))
    if result is not None and abs(result.wh_per_km_default / baseline_wh_per_km - 1.0) \
            > STALE_TOLERANCE:
        report.update(status='stale', reason=(
            f'the cached default map used {result.wh_per_km_default:.2f} Wh/km, this run '
            f'{baseline_wh_per_km:.2f}: search again'))
        result = None
    if result is None and mode == 'search':
        result = run_oracle(params, task, cycle, budget, lap_s=lap_s, progress=progress,
                            driver_model=driver_model)
        save_result(cache_dir, result)
        status = 'searched'
        report.pop('reason', None)
    if result is None:
        report.setdefault('status', 'not computed')
        report.setdefault('reason', 'no cached result')
        return report
    share = learned_saving / result.saving if result.saving > 0 else None
    report.update(status=status, saving=result.saving, wh_per_km_best=result.wh_per_km_best,
                  wh_per_km_default=result.wh_per_km_default, share=share,
                  evaluations=result.evaluations)
    return report
