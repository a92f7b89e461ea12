"""
Benchmark: does the learning loop learn, seed after seed? N seeds of the main job's loop.

Each seed runs ``--episodes`` training laps and one evaluation lap of the cycle
(default WLTC class 3b, whole) through ``tspace_ros.training.loop.LearningLoop``:
the cores of the node suite without ROS, as fast as they go (about 200x real
time, against the suite's 20-40x). With ``--through-ros`` each seed runs the
real main job instead (``python -m tspace_ros.bringup``) and its summary.json
and episodes.json are read.

Per seed it prints the saving of the evaluation lap against the default map,
that saving as a share of the oracle's (the best fixed map the gate allows,
``tspace_ros.vehicle.oracle.cached_saving`` from ``--oracle-cache``; 'n/a' when
no result is cached there), the critic loss after each episode (from the 2nd
episode on: the first, the last, and the largest over the first), the
speed-error RMS, the updates and the wall time; then a summary: the smallest
and median saving, how many seeds reach 90 % of the oracle's saving, how many
are worse than the default map, and whether the critic loss stays bounded (never
more than 10x its value after the 2nd episode).

    source scripts/env.sh && python bench/learning_seeds.py --episodes 10 --jobs 2
    python bench/learning_seeds.py --lap-s 300 --seeds 0 1 -p trainer.min_samples=50
"""

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time


ORACLE_SHARE = 0.9          # a seed "reaches the oracle" at this share of its saving
LOSS_GROWTH_BOUND = 10.0    # critic loss bounded: at most this x its value after episode 2


def parse_args(argv):
    """Parse the command line; argparse exits with code 2 and a message on a bad one."""
    from tspace_ros.training.loop import ALGORITHMS
    from tspace_ros.vehicle import CYCLE_NAMES
    from tspace_ros.vehicle.oracle import default_cache_dir
    from tspace_ros.vehicle.parameters import DRIVER_MODELS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--algorithm', choices=ALGORITHMS, default='td3',
                        help='agent (default td3, as the main job)')
    parser.add_argument('--episodes', type=int, default=10,
                        help='training episodes per seed before the evaluation (default 10)')
    parser.add_argument('--cycle', choices=CYCLE_NAMES, default='wltc3b',
                        help='drive cycle (default wltc3b)')
    parser.add_argument('--lap-s', type=float, default=None,
                        help='drive only the first LAP_S seconds of the cycle per lap '
                        '(default: the whole cycle)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4],
                        help='seeds (default 0 1 2 3 4)')
    parser.add_argument('-p', '--param', action='append', default=[],
                        metavar='NODE.NAME=VALUE',
                        help='override a node parameter, e.g. -p trainer.min_samples=200 '
                        '(YAML value; nodes vehicle_sim, can_bridge, agent, cruncher, trainer)')
    parser.add_argument('--driver', choices=DRIVER_MODELS, default=None,
                        help="the van's driver model (VehicleSimulation driver_model; "
                        "default: the simulator's)")
    parser.add_argument('--through-ros', action='store_true',
                        help='run the real main job (python -m tspace_ros.bringup) per seed')
    parser.add_argument('--oracle-cache', default=str(default_cache_dir()),
                        help="the oracle's result cache, as bench/oracle_map.py and the main "
                        'job keep it (default $TSPACE_ORACLE_CACHE or '
                        '~/.cache/tspace_ros/oracle)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='seeds run in parallel, one process each, 1 TF thread per '
                        'process when > 1 (default 1)')
    parser.add_argument('--json', type=pathlib.Path, default=None,
                        help='also write every figure to this JSON file')
    parser.add_argument('--timeout-s', type=float, default=7200.0,
                        help='--through-ros: give up on a seed after this much wall time')
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f'--episodes must be >= 1, got {args.episodes}')
    if args.lap_s is not None and not args.lap_s > 0:
        parser.error(f'--lap-s must be > 0, got {args.lap_s}')
    if args.jobs < 1:
        parser.error(f'--jobs must be >= 1, got {args.jobs}')
    if len(set(args.seeds)) != len(args.seeds) or any(s < 0 for s in args.seeds):
        parser.error(f'--seeds must be distinct integers >= 0, got {args.seeds}')
    try:
        args.overrides = parse_overrides(args.param)
        if not args.through_ros:
            from tspace_ros.training.loop import suite_parameters
            suite_parameters(args.algorithm, args.cycle, args.lap_s or 0.0, 0, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    return args


def parse_overrides(items):
    """Turn 'node.name=value' strings into {node: {name: value}} (values read as YAML)."""
    from tspace_ros.bounded_yaml import load_bounded, YamlBoundsError
    overrides = {}
    for item in items:
        key, sep, text = item.partition('=')
        node, dot, name = key.partition('.')
        if not sep or not dot or not node or not name:
            raise ValueError(f'-p {item!r}: expected NODE.NAME=VALUE')
        try:
            overrides.setdefault(node, {})[name] = load_bounded(text, f'override {key}',
                                                                max_bytes=64 << 10)
        except YamlBoundsError as error:
            raise ValueError(str(error)) from None
    return overrides


# ---- one seed ----------------------------------------------------------------------------------

def _single_thread():
    """Give TensorFlow (and BLAS) one thread in this process; call before importing TF."""
    for name in ('TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS', 'OMP_NUM_THREADS',
                 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[name] = '1'
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def run_seed_loop(job: dict) -> dict:
    """Run one seed through LearningLoop; return its result (JSON-able)."""
    if job.get('single_thread'):
        _single_thread()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from tspace_ros.training.loop import LearningLoop
    started = time.perf_counter()
    loop = LearningLoop(job['algorithm'], job['cycle'], job['lap_s'], job['seed'],
                        job['overrides'], job['driver'])
    try:
        loop.run(job['episodes'])
        result = loop.result()
    finally:
        loop.close()
    result['wall_s'] = time.perf_counter() - started
    result['vehicle_id'] = loop.task.vehicle_id
    return result


def run_seed_ros(job: dict) -> dict:
    """Run one seed through the real main job (bringup); return its figures like the loop's."""
    with tempfile.TemporaryDirectory(prefix='learning_seeds_') as tmp:
        command = [sys.executable, '-m', 'tspace_ros.bringup', '--seed', str(job['seed']),
                   '--episodes', str(job['episodes']), '--algorithm', job['algorithm'],
                   '--cycle', job['cycle'], '--out', tmp, '--no-progress',
                   '--timeout-s', str(job['timeout_s'])]
        if job['lap_s']:
            command += ['--lap-s', str(job['lap_s'])]
        if job['driver'] is not None:
            command += ['--driver', job['driver']]
        for node, values in job['overrides'].items():
            for name, value in values.items():
                command += ['-p', f'{node}.{name}={json.dumps(value)}']
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode not in (0, 3):
            raise RuntimeError(f'seed {job["seed"]}: the main job exited {done.returncode}:\n'
                               f'{done.stdout[-2000:]}{done.stderr[-2000:]}')
        run_dir = max(pathlib.Path(tmp).iterdir())
        summary = json.loads((run_dir / 'summary.json').read_text())
        episodes = json.loads((run_dir / 'episodes.json').read_text())
    for figures in episodes:
        figures.setdefault('updates', None)
        figures.setdefault('update_count', None)
    from tspace_ros.task.contract import load_task
    return {'algorithm': job['algorithm'], 'cycle': job['cycle'], 'lap_s': summary['lap_s'],
            'seed': job['seed'], 'default': summary['default'], 'episodes': episodes,
            'learned': summary['learned'], 'energy_saving': summary['energy_saving'],
            'flashes': summary.get('flashes'), 'wall_s': wall,
            'vehicle_id': load_task().vehicle_id}


# ---- figures -----------------------------------------------------------------------------------

def critic_trend(episodes):
    """Return (losses per training episode, after ep 2, last, max / after ep 2, bounded)."""
    losses = [e.get('critic_loss') for e in episodes if e.get('kind') == 'train']
    losses = [float(x) if x is not None else math.nan for x in losses]
    if len(losses) < 2 or not math.isfinite(losses[1]) or losses[1] <= 0:
        return losses, None, (losses[-1] if losses else None), None, None
    later = losses[1:]
    peak = max(later) if all(math.isfinite(x) for x in later) else math.inf
    ratio = peak / losses[1]
    return losses, losses[1], losses[-1], ratio, ratio <= LOSS_GROWTH_BOUND


def oracle_saving(cache_dir, vehicle_id, cycle, lap_s, driver):
    """Return (the oracle's cached saving as a fraction or None, why not)."""
    if not cache_dir:
        return None, 'no --oracle-cache'
    from tspace_ros.vehicle import load_vehicle_parameters
    from tspace_ros.vehicle.oracle import cached_saving, cycle_key, driver_key, OracleCacheError
    try:
        saving = cached_saving(cache_dir, vehicle_id, cycle_key(cycle, lap_s),
                               driver_key(load_vehicle_parameters(), driver))
    except (OracleCacheError, ValueError) as error:
        return None, str(error)
    return saving, '' if saving is not None else 'not cached'


def _fmt(value, spec='.3g', none='n/a'):
    return none if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def seed_line(result: dict, oracle) -> str:
    """Return one seed's line."""
    final, default = result['learned'], result['default']
    saving = result['energy_saving']
    share = 100 * saving / oracle if oracle else None
    losses, first, last, ratio, _ = critic_trend(result['episodes'])
    train = [e for e in result['episodes'] if e.get('kind') == 'train']
    updates = sum(e['updates'] for e in train if e.get('updates') is not None) \
        if any(e.get('updates') is not None for e in train) else None
    return (f'  seed {result["seed"]:>3}: eval {final["energy_per_km_wh"]:.2f} Wh/km vs default '
            f'{default["energy_per_km_wh"]:.2f}: saving {100 * saving:+.2f} %, '
            f'{_fmt(share, ".0f")}{"" if share is None else " %"} of the oracle; critic loss '
            f'after ep 2 {_fmt(first)}, last {_fmt(last)}, max/ep2 {_fmt(ratio)} '
            f'[{" ".join(_fmt(x) for x in losses)}]; speed error RMS '
            f'{final["speed_error_rms_kph"]:.2f} km/h; {_fmt(updates, "d")} updates; '
            f'{result["wall_s"]:.0f} s')


def summary_line(results, oracle) -> str:
    """Return the summary over seeds."""
    savings = [r['energy_saving'] for r in results]
    reach = 'n/a' if not oracle else \
        f'{sum(s >= ORACLE_SHARE * oracle for s in savings)}/{len(savings)}'
    worse = sum(s < 0 for s in savings)
    bounded = [critic_trend(r['episodes'])[4] for r in results]
    known = [b for b in bounded if b is not None]
    bound_text = 'n/a' if not known else \
        f'{"yes" if all(known) else "no"} ({sum(known)}/{len(known)} seeds within ' \
        f'{LOSS_GROWTH_BOUND:g}x of ep 2)'
    return (f'summary: saving min {100 * min(savings):+.2f} %, median '
            f'{100 * statistics.median(savings):+.2f} %; seeds >= {100 * ORACLE_SHARE:.0f} % of '
            f'the oracle ({_fmt(None if not oracle else 100 * oracle, ".2f")} %): {reach}; '
            f'worse than default: {worse}/{len(savings)}; critic loss bounded: {bound_text}')


def main(argv=None) -> int:
    """Run the seeds; print a line per seed and the summary."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    how = 'the main job (ROS)' if args.through_ros else 'the learning loop (no ROS)'
    lap = f'first {args.lap_s:g} s of {args.cycle}' if args.lap_s else f'whole {args.cycle}'
    print(f'learning seeds: {args.algorithm}, {args.episodes} training episodes + 1 evaluation '
          f'on the {lap}, seeds {" ".join(map(str, args.seeds))}, through {how}, '
          f'{args.jobs} job(s); overrides {args.overrides or "none"}', flush=True)
    jobs = [{'algorithm': args.algorithm, 'cycle': args.cycle, 'lap_s': args.lap_s,
             'seed': seed, 'episodes': args.episodes, 'overrides': args.overrides,
             'driver': args.driver, 'timeout_s': args.timeout_s,
             'single_thread': args.jobs > 1} for seed in args.seeds]
    run = run_seed_ros if args.through_ros else run_seed_loop
    started = time.perf_counter()
    results = []
    oracle = None
    oracle_why = ''

    def report(result):
        nonlocal oracle, oracle_why
        if not results:
            oracle, oracle_why = oracle_saving(args.oracle_cache, result['vehicle_id'],
                                               args.cycle, args.lap_s, args.driver)
            text = f'{100 * oracle:.2f} %' if oracle is not None else f'n/a ({oracle_why})'
            print(f'  default {result["default"]["energy_per_km_wh"]:.2f} Wh/km; oracle '
                  f'saving {text}', flush=True)
        results.append(result)
        print(seed_line(result, oracle), flush=True)

    try:
        if args.jobs == 1:
            for job in jobs:
                report(run(job))
        else:
            context = multiprocessing.get_context('spawn')
            with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
                futures = [pool.submit(run, job) for job in jobs]
                for future in concurrent.futures.as_completed(futures):
                    report(future.result())
    except (RuntimeError, ValueError) as error:
        print(f'learning seeds failed: {error}', file=sys.stderr)
        return 1
    results.sort(key=lambda r: r['seed'])
    print(summary_line(results, oracle))
    print(f'  {len(results)} seeds in {time.perf_counter() - started:.0f} s wall')
    if args.json is not None:
        args.json.write_text(json.dumps({'oracle_saving': oracle, 'results': results},
                                        indent=1, default=str) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
