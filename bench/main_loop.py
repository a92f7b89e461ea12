"""
Whole-loop real-time factor of the main job (scripts/run).

Runs the main job (the whole node suite in one process on the simulated van)
on a lap of the cycle at several requested real-time factors and prints what
it achieved: simulated seconds per wall second while driving (median over the
episodes of a lap's simulated time by its wall time) and over the whole run
(training and start-up included), transitions per lap and the share of steps that timed out.

    python bench/main_loop.py --lap-s 300 --factors 20 40 80
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time


def run(factor: float, lap_s: float, episodes: int, out: pathlib.Path) -> dict:
    """Run the main job once; return its figures."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--episodes', str(episodes),
         '--lap-s', str(lap_s), '--real-time-factor', str(factor), '--out', str(out),
         '--no-progress', '-p', 'trainer.min_samples=50'],
        capture_output=True, text=True)
    wall_s = time.monotonic() - started
    if result.returncode not in (0, 3):
        raise RuntimeError(f'the main job failed at {factor}x:\n{result.stdout}{result.stderr}')
    run_dir = max(out.iterdir())
    summary = json.loads((run_dir / 'summary.json').read_text())
    episodes_data = json.loads((run_dir / 'episodes.json').read_text())
    steps = sum(e['steps'] for e in episodes_data)
    timed_out = sum(e.get('timed_out_steps', 0) for e in episodes_data)
    driving = sorted(e['real_time_factor'] for e in episodes_data)[len(episodes_data) // 2]
    return {'requested': factor, 'overall': summary['simulated_s'] / wall_s,
            'driving': driving, 'wall_s': wall_s,
            'steps_per_lap': steps / len(episodes_data),
            'timed_out_share': timed_out / max(steps + timed_out, 1)}


def main(argv=None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--lap-s', type=float, default=300.0, help='simulated s per lap')
    parser.add_argument('--episodes', type=int, default=1, help='training episodes per run')
    parser.add_argument('--factors', type=float, nargs='+', default=[20.0, 40.0, 80.0],
                        help='requested real-time factors')
    args = parser.parse_args(argv)
    print(f'main job, {args.episodes} training episode(s) + 1 evaluation of '
          f'{args.lap_s:g} s each')
    print(f'{"requested":>10} {"achieved":>9} {"incl. start":>12} {"wall s":>8} '
          f'{"steps/lap":>10} {"timed out":>10}')
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            figures = run(factor, args.lap_s, args.episodes, pathlib.Path(tmp) / str(factor))
            print(f'{factor:>9g}x {figures["driving"]:>8.1f}x {figures["overall"]:>11.1f}x '
                  f'{figures["wall_s"]:>8.1f} {figures["steps_per_lap"]:>10.0f} '
                  f'{100 * figures["timed_out_share"]:>9.1f}%')
    return 0


if __name__ == '__main__':
    sys.exit(main())
