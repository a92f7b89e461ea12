"""The main job's bringup runs the nodes, collects windows over ROS and writes results."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tspace_ros import bringup
from tspace_ros.signals.energy import electrical_energy_wh
from tspace_ros.signals.window import SignalWindow


def test_bringup_writes_windows_and_a_consistent_summary(tmp_path):
    # As scripts/run starts it: a process of its own.
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--windows', '6', '--period-s', '0.02',
         '--out', str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = tmp_path.iterdir()
    table = pq.read_table(run_dir / 'windows.parquet')
    summary = json.loads((run_dir / 'summary.json').read_text())
    spec = json.loads(table.schema.metadata[b'tspace_ros.observation_spec'])

    assert table.num_rows == summary['windows'] == 6
    assert table.column('step_index').to_pylist() == list(range(6))
    assert spec['units'] == ['km/h', '1', 'bar', 'A', 'V']
    assert str(table.schema.field('window_end').type) == 'timestamp[ns, tz=UTC]'
    rows = table.to_pylist()
    energy = sum(electrical_energy_wh(SignalWindow(
        r['vehicle_id'], r['driver_id'], '', r['step_index'], spec['sample_rate_hz'],
        spec['signals'], spec['units'], [r[s] for s in spec['signals']],
        0, round((spec['samples_per_window'] - 1) * 1e9 / spec['sample_rate_hz'])))
        for r in rows)
    assert summary['energy_wh'] == pytest.approx(energy, abs=1e-3)
    assert summary['energy_wh'] > 0 and summary['distance_km'] > 0
    assert 'tspace_ros run: 6 windows' in result.stdout and str(run_dir) in result.stdout


def test_bringup_rejects_nonsense_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bringup.main(['--windows', '0'])
    assert exit_info.value.code == 2
    assert 'must be positive' in capsys.readouterr().err
