"""
Benchmark: the simulated van on WLTC class 3b and NEDC, as fast as it runs.

For each cycle, runs the whole cycle ``--runs`` times (0.01 s physics step,
50 Hz signals, default map, one core) and prints the median real-time factor
(simulated time / wall time, with its spread), and the cycle's energy per km,
regenerated energy and speed-tracking errors, which do not change between
runs (the simulation is deterministic).

Run after ``scripts/bootstrap``: ``source scripts/env.sh && python bench/vehicle_sim.py``.
"""

import argparse
import statistics

from tspace_ros.vehicle import load_vehicle_parameters, VehicleSimulation


def bench_cycle(params, default_map, cycle: str, runs: int):
    """Run one cycle ``runs`` times; return (real-time factors, metrics of the last run)."""
    factors, metrics = [], None
    for _ in range(runs):
        sim = VehicleSimulation(params, cycle, default_map=default_map)
        metrics = sim.run()
        factors.append(metrics.real_time_factor)
    return factors, metrics


def main(argv=None) -> int:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--runs', type=int, default=5, help='runs per cycle (>0)')
    parser.add_argument('--vehicle', default=None, help='vehicle file (default: sim_van)')
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error('--runs must be positive')
    params = load_vehicle_parameters(args.vehicle)
    default_map = params.load_default_map()
    sim = params.simulation
    print(f'vehicle sim: {params.vehicle_id}, physics step {sim.physics_step_s} s, '
          f'signals {sim.signal_rate_hz:g} Hz, {args.runs} runs per cycle')
    for cycle in ('wltc3b', 'nedc'):
        factors, m = bench_cycle(params, default_map, cycle, args.runs)
        print(f'  {cycle:7s} {m.duration_s:6.0f} s  real-time factor median '
              f'{statistics.median(factors):7.0f} (min {min(factors):.0f}, max '
              f'{max(factors):.0f}) = {m.duration_s / statistics.median(factors):.2f} s per '
              f'cycle')
        print(f'          {m.distance_km:.3f} km  {m.battery_energy_wh:.1f} Wh  '
              f'{m.energy_per_km_wh:.1f} Wh/km  regenerated {m.regenerated_wh:.1f} Wh  '
              f'friction brakes {m.friction_brake_wh:.1f} Wh  speed error RMS '
              f'{m.rms_speed_error_kph:.3f} km/h, max {m.max_speed_error_kph:.2f} km/h')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
