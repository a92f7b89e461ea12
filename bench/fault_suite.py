"""
Benchmark: the fault suite. Hostile and broken inputs, class by class, and what became of them.

Each module of ``bench/faults/`` tries one class of inputs (CAN frames, HMI
datagrams, policy blobs, parameter files, bags, pool files, ...) and counts
the cases tried, the clean rejections (a clear error or a counted, diagnosed
refusal), the inputs taken, the exceptions that escaped the boundary and the
data lost or silently changed. A class whose module is missing is listed as
such. The test suite runs bounded versions of the same properties
(hypothesis); long runs belong here.

Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/fault_suite.py [--cases N] [--seed S]
[--only frames,bags]``.
Exits 1 when any case escaped or lost data.
"""

import argparse
import importlib
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

CLASSES = (  # module, default cases
    ('frames', 20000), ('hmi', 2000), ('blobs', 300), ('configs', 300), ('bags', 300),
    ('pool_files', 200), ('processes', 6),
)


def main(argv=None) -> int:
    """Run every fault class and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--cases', type=int, default=0,
                        help='cases per class (default: each class its own)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--only', default='', help='comma-separated class modules')
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(',') if name}
    rows, bad = [], False
    for module_name, default_cases in CLASSES:
        if only and module_name not in only:
            continue
        try:
            module = importlib.import_module(f'faults.{module_name}')
        except ImportError as error:
            rows.append((module_name, None, f'not available: {error}', 0.0))
            continue
        started = time.perf_counter()
        tally = module.run(args.cases or default_cases, args.seed)
        rows.append((module_name, tally, '', time.perf_counter() - started))
        bad |= bool(tally.escaped or tally.data_lost)
    print(f'{"class":<22}{"cases":>8}{"rejected":>10}{"accepted":>10}{"escaped":>9}'
          f'{"lost":>7}{"s":>8}')
    for module_name, tally, note, seconds in rows:
        if tally is None:
            print(f'{module_name:<22}{note}')
            continue
        print(f'{tally.name:<22}{tally.cases:>8}{tally.clean_rejections:>10}'
              f'{tally.accepted:>10}{tally.escaped:>9}{tally.data_lost:>7}{seconds:>8.1f}')
    for module_name, tally, _, _ in rows:
        if tally is not None and tally.reasons:
            top = sorted(tally.reasons.items(), key=lambda kv: -kv[1])[:6]
            print(f'  {tally.name}: ' + ', '.join(f'{k} {v}' for k, v in top))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
