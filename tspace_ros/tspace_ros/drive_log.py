"""
A vehicle's drive log as training data: frames -> windows -> transitions in a pool.

``python -m tspace_ros.drive_log LOG --pool DIR`` reads a CAN log (ASC, BLF,
candump ``.log``, TRC, CSV, MF4: python-can's readers), decodes it with the
vehicle's DBC and signal mapping exactly as the CAN bridge does, cuts windows,
and turns them into transitions with the default map's actions (all zeros: the
vehicle drove its own map) through the cruncher, so rewards and states are those
of a live run. The whole log is one episode, stored valid in the pool (Parquet
by default); the trainer's offline mode then learns from it. It prints what it
read and rejected, and exits 2 with the reason for a log, DBC, mapping or pool it
cannot use.
"""

import argparse
import datetime
import json
import pathlib
import sys
from typing import Optional

import numpy as np

from tspace_ros.bounded_yaml import read_bounded
from tspace_ros.can.dbc import DbcError, load_dbc_with_warnings
from tspace_ros.can.decoder import capture_time_ns, FrameDecoder
from tspace_ros.can.log_bus import LogBusError, open_log_reader
from tspace_ros.can.windowing import SignalMapping, WindowBuilder
from tspace_ros.cruncher.core import (AgentActionRecord, Cruncher, CruncherConfig,
                                      EpisodeEventRecord)
from tspace_ros.episodes.control import episode_id_for
from tspace_ros.storage import open_pool, PoolConfig, StorageError
from tspace_ros.task.contract import load_task
from tspace_ros.torque_map.action import action_rows


class DriveLogError(ValueError):
    """A log, DBC, mapping or pool that cannot be used; the message says which and why."""


def replay_into_pool(log, pool_root, dbc=None, dbc_strict: bool = True, mapping_file=None,
                     vehicle_id: str = 'LOGGED-VEHICLE', driver_id: str = 'driver0',
                     task_file: Optional[str] = None) -> dict:
    """
    Turn one log into one stored episode; return what was read, built and stored.

    The windows, states and actions follow the task contract of ``task_file``
    (None: the shipped simulated van's); the actions are the default map's (zero).
    """
    try:
        task = load_task(task_file)
        db, warnings = load_dbc_with_warnings(dbc, dbc_strict)
        mapping = SignalMapping.default() if not mapping_file else \
            SignalMapping.from_dicts(read_bounded(mapping_file, 'signal mapping file'))
        mapping.check_against(db)
        mapping.check_task(task.required_signals)
        reader = open_log_reader(log)
    except (DbcError, LogBusError, OSError, ValueError) as error:
        raise DriveLogError(str(error)) from None
    decoder = FrameDecoder(db)
    builder = WindowBuilder(mapping, task.sample_rate_hz, task.samples_per_window, vehicle_id,
                            driver_id)
    cruncher = Cruncher(CruncherConfig.for_task(task))
    transitions, episode_id, start_ns, last_end = [], '', 0, 0
    unreadable = 0
    while True:
        try:
            frame = next(reader)
        except StopIteration:
            break
        except Exception:  # noqa: B902 - a corrupt record ends the log, counted
            unreadable += 1
            break
        decoded = decoder.decode(frame)
        if decoded is None:
            continue
        for result in builder.feed(capture_time_ns(frame), decoded):
            window = result.window
            if not episode_id:
                start_ns = window.start_ns
                episode_id = episode_id_for(start_ns)
                builder.set_episode(episode_id, window.step_index + 1)
                cruncher.on_event(EpisodeEventRecord(
                    EpisodeEventRecord.STARTED, vehicle_id, driver_id, episode_id, start_ns,
                    start_ns))
                continue  # windows of the episode start with the next one
            transitions += cruncher.on_window(window)
            rows = action_rows(float(np.max(window.signal('speed'))),
                               task.default_map.shape[0], task.rows_per_action)
            transitions += cruncher.on_action(AgentActionRecord(
                vehicle_id, episode_id, window.step_index, window.end_ns,
                np.zeros(task.action_dim, np.float32), rows.start, len(rows), 0,
                True, active_since_ns=start_ns))
            last_end = window.end_ns
    if not episode_id or not last_end:
        raise DriveLogError(f'{log}: no complete window: {decoder.stats.decoded} of '
                            f'{decoder.stats.frames} frames decoded, waiting for '
                            f'{", ".join(builder.waiting_for) or "more data"}')
    cruncher.on_event(EpisodeEventRecord(EpisodeEventRecord.STORED, vehicle_id, driver_id,
                                         episode_id, last_end, start_ns, last_end))
    finished = cruncher.finished() + cruncher.flush()
    try:
        with open_pool(PoolConfig(root=str(pool_root), spec=task.observation_spec())) as pool:
            stored = pool.append(transitions + [t for _, ts in finished for t in ts])
            for summary, _ in finished:
                pool.end_episode(summary)
            stats = pool.stats()
    except StorageError as error:
        raise DriveLogError(str(error)) from None
    return {'log': str(log), 'frames': decoder.stats.frames, 'decoded': decoder.stats.decoded,
            'rejected': decoder.stats.rejections, 'unreadable_records': unreadable,
            'dbc_warnings': len(warnings), 'windows': builder.stats.windows,
            'dropped_windows': builder.stats.dropped_windows,
            'episode_id': episode_id, 'transitions_stored': stored,
            'episodes': [s.episode_id for s, _ in finished if s.valid],
            'pool_records': stats['records'], 'pool': str(pool_root),
            'start_utc': datetime.datetime.fromtimestamp(
                start_ns // 10 ** 9, datetime.timezone.utc).isoformat()}


def main(argv=None) -> int:
    """Run the command line; return the exit code (0 stored, 2 unusable input)."""
    parser = argparse.ArgumentParser(
        prog='python -m tspace_ros.drive_log',
        description='Turn a CAN log (ASC, BLF, candump .log, TRC, CSV, MF4) into windows and '
                    'transitions with the default map, stored as one episode in a pool.')
    parser.add_argument('log', type=pathlib.Path)
    parser.add_argument('--pool', type=pathlib.Path, required=True,
                        help='the pool directory (Parquet); created if missing')
    parser.add_argument('--dbc', help="the vehicle's DBC (default: the simulated van's)")
    parser.add_argument('--dbc-non-strict', action='store_true',
                        help='load the DBC non-strict (production DBCs often need it)')
    parser.add_argument('--mapping', help='signal mapping YAML (default: the sim van)')
    parser.add_argument('--task', help="the vehicle's task file: signals, window, default map "
                        "(default: the simulated van's config/vehicles/sim_van_task.yaml)")
    parser.add_argument('--vehicle-id', default='LOGGED-VEHICLE')
    parser.add_argument('--driver-id', default='driver0')
    args = parser.parse_args(argv)
    try:
        result = replay_into_pool(args.log, args.pool, args.dbc, not args.dbc_non_strict,
                                  args.mapping, args.vehicle_id, args.driver_id, args.task)
    except DriveLogError as error:
        print(f'drive_log: {error}', file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
