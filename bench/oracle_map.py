"""
Benchmark: the oracle, the best fixed torque map the safety gate allows, per drive cycle.

For each cycle, finds the map of the task's gate box with the least energy per
km that keeps the speed-error RMS within the main job's bound
(``tspace_ros.vehicle.oracle.run_oracle``: screening of every cell, then
coordinate descent and CMA-ES over the cells that matter most, ``--budget``
simulations for the search). Prints the default and the best map's energy per
km, the saving, the tracking error, the simulations and the time, and the
cells that matter most. With ``--relaxed`` the same search runs in a wider box
(``--relax-factor`` x the torque budget below the default, the budget above
it) and the line "gate takes X of Y %" says how much of the relaxed saving the
gate costs. With ``--cache-dir`` the results are written there as JSON (keyed
by vehicle, driver model and cycle) for the main job to read.

Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/oracle_map.py --cycles wltc3b --budget 200``.
"""

import argparse
import sys

from tspace_ros.task.contract import load_task
from tspace_ros.vehicle import CYCLE_NAMES, drive_cycle, load_vehicle_parameters
from tspace_ros.vehicle.oracle import (cycle_key, driver_key, load_result, OracleCacheError,
                                       run_oracle, save_result, speed_error_bound_kph)
from tspace_ros.vehicle.parameters import DRIVER_MODELS


def _cycles(text: str):
    names = [name.strip().lower() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in CYCLE_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f'unknown cycles {unknown}; known: '
                                         f'{", ".join(CYCLE_NAMES)}')
    return names


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
        return value
    return parse


def _cells(result, top: int) -> str:
    return ', '.join(f'{c["speed_kph"]:g} km/h pedal {c["pedal"]:g}: '
                     f'{c["delta_wh_per_km"]:+.2f}' for c in result.cells_that_matter[:top])


def _line(label: str, result) -> str:
    stages = ', '.join(f'{name} {count}' for name, count in result.evaluations_by_stage.items())
    return (f'    {label:8s} default {result.wh_per_km_default:.2f} Wh/km, best '
            f'{result.wh_per_km_best:.2f} Wh/km, saving {result.saving_pct:.2f} %, speed '
            f'error RMS {result.speed_error_rms_kph:.3f} km/h (default '
            f'{result.speed_error_rms_default_kph:.3f}, bound '
            f'{result.speed_error_bound_kph:g}), {result.evaluations} evaluations ({stages}), '
            f'{result.wall_s:.1f} s')


def main(argv=None) -> int:
    """Run the oracle on each cycle and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--cycles', type=_cycles, default=['wltc3b'],
                        help=f'comma-separated drive cycles ({",".join(CYCLE_NAMES)}); '
                        'default wltc3b')
    parser.add_argument('--budget', type=_positive(int), default=200,
                        help='simulations for the search of each box (coordinate + CMA-ES), '
                        'after the screening (default 200)')
    parser.add_argument('--seed', type=_positive(int), default=1, help='CMA-ES seed (>0)')
    parser.add_argument('--relaxed', action='store_true',
                        help='also search the relaxed box, to show what the gate costs')
    parser.add_argument('--relax-factor', type=float, default=2.0,
                        help='relaxed box: this x the torque budget below the default '
                        '(and the budget above it); default 2')
    parser.add_argument('--max-cells', type=_positive(int), default=16,
                        help='cells the search moves: those that matter most (default 16)')
    parser.add_argument('--top', type=_positive(int), default=5,
                        help='cells that matter to print (default 5)')
    parser.add_argument('--lap-s', type=_positive(float), default=None,
                        help='search on the first LAP_S seconds of each cycle (default: all)')
    parser.add_argument('--cache-dir', default=None,
                        help='write the results here as JSON (<vehicle>/<driver>/<cycle>.json)')
    parser.add_argument('--reuse', action='store_true',
                        help='with --cache-dir: print a cached result instead of searching')
    parser.add_argument('--driver', choices=DRIVER_MODELS, default=None,
                        help="the simulated driver (default: the vehicle file's)")
    parser.add_argument('--vehicle', default=None, help='vehicle file (default: sim_van)')
    parser.add_argument('--task', default=None, help="task file (default: the sim van's)")
    args = parser.parse_args(argv)
    if args.relax_factor < 1.0:
        parser.error('--relax-factor must be >= 1')
    if args.reuse and not args.cache_dir:
        parser.error('--reuse needs --cache-dir')
    params = load_vehicle_parameters(args.vehicle)
    task = load_task(args.task)
    driver = driver_key(params, args.driver)
    print(f'oracle: {task.vehicle_id}, driver {driver}, gate: torque budget '
          f'{task.torque_budget_nm:g} Nm, upper bound {task.upper_bound:g}; speed error bound '
          f'{speed_error_bound_kph():g} km/h; search budget {args.budget} evaluations per box, '
          f'seed {args.seed}, {args.max_cells} cells', flush=True)
    for name in args.cycles:
        duration = drive_cycle(name).truncated(args.lap_s).duration_s if args.lap_s \
            else drive_cycle(name).duration_s
        key = cycle_key(name, args.lap_s)
        print(f'  {key} ({duration:g} s)', flush=True)
        results = {}
        for box in ('gate', 'relaxed') if args.relaxed else ('gate',):
            result = None
            if args.reuse:
                try:
                    result = load_result(args.cache_dir, task.vehicle_id, key, driver, box)
                except OracleCacheError as error:
                    print(f'    cache: {error}; searching again', flush=True)
            if result is None:
                gate = results.get('gate')
                result = run_oracle(
                    params, task, name, args.budget, lap_s=args.lap_s, seed=args.seed,
                    relaxed_factor=args.relax_factor if box == 'relaxed' else None,
                    max_cells=args.max_cells, top_cells=max(args.top, 10),
                    search_cells=gate.searched_cells if gate is not None else None,
                    driver_model=args.driver)
                if box == 'relaxed' and gate is not None:
                    result.cells_that_matter = gate.cells_that_matter
                if args.cache_dir:
                    path = save_result(args.cache_dir, result)
                    print(f'    cached in {path}', flush=True)
            results[box] = result
            print(_line(box, result), flush=True)
            if box == 'gate':
                print(f'    cells that matter (change in Wh/km with the cell alone at its '
                      f'lower limit): {_cells(result, args.top)}', flush=True)
        if args.relaxed:
            gate, relaxed = results['gate'], results['relaxed']
            print(f'    gate takes {relaxed.saving_pct - gate.saving_pct:.2f} of '
                  f'{relaxed.saving_pct:.2f} % (relaxed box: {args.relax_factor:g} x '
                  f'{task.torque_budget_nm:g} Nm below the default, {task.torque_budget_nm:g} '
                  f'Nm above; same cells)', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
