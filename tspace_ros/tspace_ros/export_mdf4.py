"""
A run's recorded signals as MDF4, the measurement format of INCA, CANape and asammdf.

``python -m tspace_ros.export_mdf4 BAG OUT.mf4`` reads the observation windows
of a recorded bag (``suite --record``, ``scripts/run --record``, the recorder
node) and writes their signals (speed, pedal, brake, current, voltage, or
whatever the windows carry) as MDF 4.10 channels with their units, on one time
base: the windows' own UTC capture times, the file's start time the first
sample's. Several vehicles' windows (namespaces) go to channel groups of their
own. Exit 2 with the reason for a bag it cannot read.
"""

import argparse
import datetime
import pathlib
import sys
from typing import Dict, List

import numpy as np

from tspace_ros.bags import BagError, read_bag, typestore_with_ours

WINDOW_TYPE = 'tspace_interfaces/msg/ObservationWindow'


class ExportError(ValueError):
    """A bag without windows, or one that cannot be read; the message says which."""


def export_windows(bag, out) -> dict:
    """Write the windows of a bag as MDF4; return what was written."""
    from asammdf import MDF, Signal
    try:
        store = typestore_with_ours()  # CDR read with rosbags: no ROS needed to export
        messages = read_bag(bag, typestore=store)
        series: Dict[str, Dict[str, List]] = {}
        units: Dict[str, Dict[str, str]] = {}
        for topic, msgtype, _, data in messages:
            if msgtype != WINDOW_TYPE:
                continue
            msg = store.deserialize_cdr(data, msgtype)
            n = int(msg.samples_per_signal)
            names = list(msg.signal_names)
            samples = np.asarray(msg.samples, dtype=np.float32)
            if n < 1 or samples.size != len(names) * n or len(msg.units) != len(names):
                raise ExportError(f'{bag}: {topic}: a window of {samples.size} samples does '
                                  f'not fill {len(names)} signals x {n} samples')
            start_ns = int(msg.window_start.sec) * 10 ** 9 + int(msg.window_start.nanosec)
            stamps = start_ns + np.round(np.arange(n) * 1e9 / float(msg.sample_rate_hz))
            group = series.setdefault(topic, {'t': []})
            group['t'].append(stamps.astype(np.int64))
            for name, unit, row in zip(names, msg.units, samples.reshape(len(names), n)):
                group.setdefault(name, []).append(np.asarray(row, dtype=np.float64))
                units.setdefault(topic, {})[name] = unit
    except BagError as error:
        raise ExportError(str(error)) from None
    if not series:
        raise ExportError(f'{bag}: no {WINDOW_TYPE} messages to export')
    first = min(int(np.concatenate(g['t']).min()) for g in series.values())
    mdf = MDF(version='4.10')
    mdf.header.start_time = datetime.datetime.fromtimestamp(first / 1e9, datetime.timezone.utc)
    written = {}
    for topic, group in sorted(series.items()):
        t = np.concatenate(group.pop('t'))
        order = np.argsort(t, kind='stable')
        seconds = (t[order] - first) / 1e9
        signals = [Signal(np.concatenate(values)[order], seconds, name=name,
                          unit=units[topic][name], comment=f'{topic}: {name}')
                   for name, values in group.items()]
        mdf.append(signals, comment=topic)
        written[topic] = {'samples': int(len(t)), 'channels': sorted(group)}
    mdf.save(str(out), overwrite=True)
    return {'bag': str(bag), 'out': str(out), 'start_utc':
            mdf.header.start_time.isoformat(), 'groups': written}


def main(argv=None) -> int:
    """Run the command line; return the exit code (0 written, 2 unusable input)."""
    parser = argparse.ArgumentParser(prog='python -m tspace_ros.export_mdf4',
                                     description="Write a recorded run's observation windows "
                                     'as an MDF4 file (INCA, CANape, asammdf).')
    parser.add_argument('bag', type=pathlib.Path)
    parser.add_argument('out', type=pathlib.Path)
    args = parser.parse_args(argv)
    try:
        result = export_windows(args.bag, args.out)
    except ExportError as error:
        print(f'export_mdf4: {error}', file=sys.stderr)
        return 2
    for topic, group in result['groups'].items():
        print(f'{topic}: {group["samples"]} samples of {", ".join(group["channels"])}')
    print(f'wrote {result["out"]} (start {result["start_utc"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
