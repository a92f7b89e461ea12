"""
The main job end to end, and the single-process suite's clean shutdown.

The job runs as scripts/run starts it (a process of its own) on a short lap so
that the test stays quick; the learning itself (energy saved on the whole WLTC)
is the job's own verdict, printed and in summary.json, and reported in the
README. Here: everything the run promises is on disk and consistent.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest

from tspace_ros import bringup
from tspace_ros.bags import bag_info
from tspace_ros.storage import open_pool, PoolConfig
from tspace_ros.vehicle import load_vehicle_parameters
from tspace_ros.vehicle.parameters import load_torque_map


def test_the_main_job_learns_on_laps_and_writes_its_results(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--episodes', '2', '--lap-s', '150',
         '--real-time-factor', '40', '--out', str(tmp_path / 'runs'), '--no-progress',
         '--record', '--driver', 'dyno', '--oracle', 'search', '--oracle-budget', '8',
         '-p', 'trainer.min_samples=20', '-p', 'trainer.batch_size=32'],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, 'TSPACE_ORACLE_CACHE': str(tmp_path / 'oracle')})
    output = result.stdout + result.stderr
    (run_dir,) = [p for p in (tmp_path / 'runs').iterdir() if p.is_dir()]
    summary = json.loads((run_dir / 'summary.json').read_text())
    episodes = json.loads((run_dir / 'episodes.json').read_text())
    # The verdict: exit code 0 exactly when the learned map saves energy within the bound.
    assert result.returncode == (0 if summary['learned_uses_less_energy'] and
                                 summary['tracking_within_bound'] else 3), output
    assert summary['energy_saving'] == pytest.approx(
        1 - summary['learned']['energy_per_km_wh'] / summary['default']['energy_per_km_wh'])
    assert 'learned map' in result.stdout and str(run_dir) in result.stdout
    # The dyno driver drove, and the oracle on this lap and driver was searched and cached.
    oracle = summary['oracle']
    assert summary['driver'] == 'dyno' and oracle['driver'] == 'dyno'
    assert oracle['status'] == 'searched' and pathlib.Path(oracle['path']).is_file()
    assert oracle['wh_per_km_default'] == pytest.approx(summary['default']['energy_per_km_wh'],
                                                        rel=1e-9)
    if oracle['saving'] > 0:
        assert oracle['share'] == pytest.approx(summary['energy_saving'] / oracle['saving'])
        assert f'reached {100 * oracle["share"]:.0f} % of it' in result.stdout

    # Two training episodes and the evaluation, each a whole lap with transitions.
    assert [e['kind'] for e in episodes] == ['train', 'train', 'eval']
    for episode in episodes:
        assert episode['distance_km'] > 0.5 and episode['steps'] > 20
        assert episode['speed_error_rms_kph'] < summary['speed_error_bound_kph']
        # The windows' energy (cruncher) agrees with the van's own within a few percent.
        assert episode['windows_energy_per_km_wh'] == pytest.approx(
            episode['energy_per_km_wh'], rel=0.08)
    # The trainer trained after the first episode: the later ones ran its policy.
    assert episodes[0]['policy_version'] == 0
    trainer_log = ''.join(p.read_text()[-3000:] for p in (run_dir / 'logs').rglob('*.log'))
    assert episodes[1]['policy_version'] > 0, (episodes, trainer_log, output[-2000:])
    assert episodes[2]['policy_version'] >= episodes[1]['policy_version']

    # The pool holds every transition of both stored training episodes and the evaluation.
    with open_pool(PoolConfig(root=str(run_dir / 'pool'))) as pool:
        stats = pool.stats()
        assert stats['episodes_valid'] == 3
        assert stats['records'] == sum(e['steps'] for e in episodes)
    # The recording: every transition the pool holds, the windows and the raw CAN frames.
    (bag,) = (run_dir / 'bags').iterdir()
    info = bag_info(bag)
    counts = {topic.rsplit('/', 1)[-1] if 'can/frames' not in topic else 'frames': n
              for topic, n in info['counts'].items()}
    assert counts['transitions'] == stats['records']
    assert counts['window'] >= sum(e['steps'] for e in episodes)
    assert counts['frames'] > counts['window']
    # Checkpoints, TensorBoard events, the learned map and the report.
    assert (run_dir / 'checkpoints' / 'trainer.json').is_file()
    assert list((run_dir / 'tensorboard').glob('events.out.tfevents.*'))
    default = load_vehicle_parameters().load_default_map()
    learned = load_torque_map(run_dir / 'learned_map.yaml')
    assert learned.shape == default.shape
    assert np.all(learned.torque_nm <= default.torque_nm + 0.25)  # the gate's upper bound
    assert not np.allclose(learned.torque_nm, default.torque_nm)
    image = matplotlib.image.imread(run_dir / 'report.png')
    assert image.shape[0] > 400 and image.shape[1] > 600
    # The bridge put the default map back when the suite shut down.
    logs = ''.join(p.read_text() for p in (run_dir / 'logs').rglob('*.log'))
    assert 'default map restored' in logs


def test_the_main_job_runs_the_loop_over_the_simulated_cloud(tmp_path):
    """--link cloud: HTTPS with a token, the HMI over MQTT/TLS, the van's clock on /clock."""
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--link', 'cloud', '--episodes', '1',
         '--lap-s', '150', '--out', str(tmp_path), '--no-progress',
         '-p', 'trainer.min_samples=3', '-p', 'trainer.batch_size=4'],
        capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run_dir / 'summary.json').is_file(), output[-3000:]
    summary = json.loads((run_dir / 'summary.json').read_text())
    episodes = json.loads((run_dir / 'episodes.json').read_text())
    assert result.returncode == (0 if summary['learned_uses_less_energy'] and
                                 summary['tracking_within_bound'] else 3), output[-3000:]
    assert 'HTTPS, token' in result.stdout and 'MQTT/TLS' in result.stdout
    assert [e['kind'] for e in episodes] == ['train', 'eval']
    default = summary['default']
    for episode in episodes:
        # Each lap is measured on the van exactly: it parks at the lap's end.
        assert episode['distance_km'] == pytest.approx(default['distance_km'], rel=0.03)
        assert episode['speed_error_rms_kph'] < summary['speed_error_bound_kph']
        assert episode['steps'] >= 3, episodes
    # Elastic steps over seconds-long flashes (3 s, then a read of 2.5 s to see the new
    # map): steps of 10-30 s of driving, most of them ended by their flash, not timed out
    # (with the CAN link's bound of 3 windows nearly all would be).
    assert sum(e['timed_out_steps'] for e in episodes) * 2 <= \
        sum(e['steps'] for e in episodes), episodes
    # The trainer trained on the first lap; the evaluation ran its policy.
    assert episodes[1]['policy_version'] > 0, output[-3000:]
    flashes = summary['flashes']
    assert flashes['protocol'] == 'cloud' and flashes['acknowledged'] >= 4
    link, van = flashes['cloud']['link'], flashes['cloud']['van']
    # Every set_torque the bridge sent, the van answered, once (never retried); one may
    # still be on its way when the figures are taken.
    sent = sum(v for k, v in link.items() if k.startswith('set_torque_code_'))
    answered = sum(v for k, v in van.items() if k.startswith('set_torque_'))
    assert answered - 1 <= sent <= answered, (link, van)
    assert sent - 1 <= flashes['acknowledged'] + flashes['failed'] <= sent, flashes
    assert link['get_signal_code_0'] > 20 and link.get('seconds_missed', 0) <= 10, link
    # The servers (their logs copied) are gone; the secrets were never in the run.
    assert (run_dir / 'logs' / 'mqtt_mqtt.log').is_file()
    everything = ''.join(p.read_text(errors='replace') for p in run_dir.rglob('*')
                         if p.is_file() and p.suffix in ('.json', '.log', '.yaml'))
    assert 'BEGIN PRIVATE KEY' not in everything and 'aws_secret_access_key' not in everything


def test_the_suite_shuts_down_cleanly_on_sigterm(tmp_path):
    log_path = tmp_path / 'suite.log'
    with open(log_path, 'w') as log:
        process = subprocess.Popen(
            [sys.executable, '-m', 'tspace_ros.suite', '--namespace', 'SUITE_TEST',
             # A cycle long enough that the van still drives (and answers the bridge's
             # restore) when a loaded machine needs long for the first three flashes.
             '-p', f'storage.root={tmp_path / "pool"}', '-p', 'vehicle_sim.cycle_end_s=600.0'],
            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: '5 nodes active' in log_path.read_text() or
                        process.poll() is not None, 120), log_path.read_text()
        # Let the van drive and the agent flash a few maps, then stop it as systemd would.
        assert wait_for(lambda: 'policy ddpg version 0 installed' in log_path.read_text(), 60)
        assert wait_for(lambda: 'VCU: transfer 3: accepted' in log_path.read_text(), 60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert 'tspace_ros suite: shutting down' in output
    assert 'deactivating: default map restored' in output  # while the van still answered
    assert 'pool closed' in output
    assert output.index('agent: deactivate done') < output.index('can_bridge: deactivate done')


def test_bringup_rejects_nonsense_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bringup.main(['--episodes', '0'])
    assert exit_info.value.code == 2
    assert '--episodes must be >= 1' in capsys.readouterr().err
    assert bringup.main(['--out', '/tmp/tspace-bad', '-p', 'agent']) == 2
    assert 'expected NODE.NAME=VALUE' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bringup.main(['--link', 'cloud', '--flash-protocol', 'xcp'])
    assert '--flash-protocol is for --link can' in capsys.readouterr().err
    assert bringup.parse_args(['--link', 'cloud']).real_time_factor == \
        bringup.CLOUD_REAL_TIME_FACTOR
    assert bringup.parse_args([]).real_time_factor == bringup.REAL_TIME_FACTOR


def wait_for(predicate, timeout_s: float) -> bool:
    """Poll predicate() (a file or a process, no ROS) until it holds or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_run_that_did_not_train_says_so_and_exits_4(tmp_path):
    # A 60 s lap gives about 20 transitions: min_samples 500 is never reached.
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--episodes', '1', '--lap-s', '60',
         '--out', str(tmp_path), '--no-progress', '--oracle', 'off'],
        capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert 'NOT TRAINED: 0 updates' in result.stdout and 'min_samples 500' in result.stdout
    assert 'critic loss none yet (no update)' in result.stdout
    assert 'less energy)' not in result.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['trained'] is False and summary['trainer']['update_count'] == 0


def test_the_parked_van_is_charged_back_to_its_first_laps_charge():
    from tspace_ros.vehicle import drive_cycle, VehicleSimulation
    sim = VehicleSimulation(load_vehicle_parameters(), drive_cycle('wltc3b').truncated(120),
                            repeat_cycle=True)

    class Van(bringup._Charger):
        pass
    van = Van()
    van.sim = sim
    start = sim.battery.soc
    van.recharge()
    sim.run(120.0)
    assert sim.battery.soc < start
    van.recharge()
    assert sim.battery.soc == start


def test_a_failed_start_says_why_once(tmp_path):
    # A wrong value for a node: the console names the node and its reason, no traceback.
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--episodes', '1', '--lap-s', '60',
         '--out', str(tmp_path), '--no-progress', '--oracle', 'off',
         '-p', 'cruncher.max_step_windows=0', '-p', 'vehicle_sim.driver_model=robot'],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'startup failed: vehicle_sim could not be configured: configure failed: cannot ' \
        'build the simulated vehicle' in result.stderr and 'robot' in result.stderr
    assert 'startup failed: startup failed' not in result.stderr
    assert 'Traceback' not in result.stderr
    # A node of the chain: the manager stops the chain; the node's own reason is shown.
    result = subprocess.run(
        [sys.executable, '-m', 'tspace_ros.bringup', '--episodes', '1', '--lap-s', '60',
         '--out', str(tmp_path), '--no-progress', '--oracle', 'off',
         '-p', 'cruncher.max_step_windows=0'],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert '(cruncher: ' in result.stderr and 'max_step_windows' in result.stderr, \
        result.stderr
    assert 'startup failed: startup failed' not in result.stderr
