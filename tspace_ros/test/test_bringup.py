"""The main job: the simulated van and the bridge as processes, windows and figures on disk."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tspace_ros import bringup
from tspace_ros.vehicle import drive_cycle


def test_bringup_drives_the_cycle_flashes_a_map_and_writes_consistent_results(tmp_path):
    # As scripts/run starts it: a process of its own (which starts the nodes' processes).
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--duration-s', '45',
         '--real-time-factor', '15', '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    table = pq.read_table(run_dir / 'windows.parquet')
    summary = json.loads((run_dir / 'summary.json').read_text())
    spec = json.loads(table.schema.metadata[b'tspace_ros.observation_spec'])

    # 45 s of 1.5 s windows, none lost on the way (the first may start late).
    assert summary['windows'] == table.num_rows and 27 <= table.num_rows <= 30
    steps = table.column('step_index').to_pylist()
    assert steps == list(range(steps[0], steps[0] + len(steps)))
    assert spec['units'] == ['km/h', '1', 'bar', 'A', 'V']
    assert str(table.schema.field('window_end').type) == 'timestamp[ns, tz=UTC]'
    # The windows follow the drive cycle's speed trace.
    cycle = drive_cycle('wltc3b')
    start_ns = table.column('window_end')[0].value - 1_450_000_000
    ends_s = (np.array([t.value for t in table.column('window_end')]) - start_ns) / 1e9
    speeds = np.array([row[-1] for row in table.column('speed').to_pylist()])
    assert np.abs(speeds - np.interp(ends_s, cycle.time_s, cycle.speed_kph)).max() < 5.0
    # The van's figures and the flash through the gate to the simulated VCU.
    assert summary['simulated_s'] == pytest.approx(45.0, abs=1.0)
    assert summary['distance_km'] > 0.05 and summary['speed_error_rms_kph'] < 1.5
    assert summary['flash']['success'] and summary['flash']['policy_version'] == 1
    assert 'flash: accepted' in result.stdout and str(run_dir) in result.stdout
    assert (run_dir / 'vehicle_sim.log').is_file() and (run_dir / 'can_bridge.log').is_file()
    assert 'default map restored' in (run_dir / 'can_bridge.log').read_text()


def test_bringup_rejects_nonsense_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bringup.main(['--timeout-s', '0'])
    assert exit_info.value.code == 2
    assert '--timeout-s positive' in capsys.readouterr().err
