"""The learning loop without ROS (training.loop) and its bench (bench/learning_seeds.py)."""

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tspace_ros.training.loop import (LearningLoop, LoopConfigError, NODE_DEFAULTS,
                                      suite_parameters)

BENCH = pathlib.Path(__file__).resolve().parents[2] / 'bench' / 'learning_seeds.py'
LAP_S = 120.0
FAST = {'trainer': {'min_samples': 20, 'batch_size': 16}}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope='module')
def run():
    """Two training laps and an evaluation lap of 120 s, every admitted map kept."""
    loop = LearningLoop('ddpg', lap_s=LAP_S, seed=3, params_overrides=FAST,
                        keep_flashed_maps=True)
    episodes = loop.run(2)
    yield loop, episodes
    loop.close()


def test_an_episode_gives_finite_figures(run):
    loop, episodes = run
    assert [e['kind'] for e in episodes] == ['train', 'train', 'eval']
    for figures in episodes:
        for key in ('energy_per_km_wh', 'distance_km', 'speed_error_rms_kph', 'total_reward',
                    'wall_s', 'real_time_factor'):
            assert _finite(figures[key]), (key, figures[key])
        assert figures['steps'] > 20 and figures['distance_km'] > 0.3
        assert figures['speed_error_rms_kph'] < 2.0
    assert _finite(episodes[-1]['critic_loss'])
    baseline = loop.baseline()
    assert baseline['duration_s'] == pytest.approx(LAP_S)
    # The same lap: the distance driven barely depends on the map.
    assert episodes[-1]['distance_km'] == pytest.approx(baseline['distance_km'], rel=0.01)
    result = loop.result()
    assert _finite(result['energy_saving'])


def test_every_flashed_map_passed_the_gate(run):
    loop, _ = run
    assert loop.gate_checks > 0 and loop.flashed_maps
    assert loop.gate_checks == len(loop.flashed_maps) + loop.gate_rejections
    fresh = loop.task.safety_gate(resolution_nm=loop.gate.resolution_nm)
    for torque_map in loop.flashed_maps:
        verdict = fresh.check_full_map(torque_map)
        assert verdict.ok, verdict.message
    # What the van's VCU applies is what the bridge (behind the gate) last sent.
    assert np.array_equal(loop.vehicle.active_map.torque_nm, loop.bridge.active_map.torque_nm)
    accepted = loop.flash_results.get('NONE', 0)
    assert accepted == len(loop.flashed_maps)      # every admitted map acknowledged
    assert loop.vehicle.receiver.stats['fallbacks'] == 0


def test_the_trainer_trains_once_min_samples_is_reached(run):
    loop, episodes = run
    assert episodes[0]['updates'] > 0                # 38 transitions >= min_samples 20
    assert loop.trainer.update_count == sum(e['updates'] for e in episodes)
    assert episodes[-1]['updates'] == 0              # no training after the evaluation lap
    # The agent acts with the policy the trainer published after each lap.
    assert episodes[1]['policy_version'] == episodes[0]['update_count']
    assert episodes[2]['policy_version'] == episodes[1]['update_count']
    assert len(loop.source) == sum(e['steps'] - e['timed_out_steps'] for e in episodes)


def test_no_update_before_min_samples():
    loop = LearningLoop('ddpg', lap_s=LAP_S, seed=0,
                        params_overrides={'trainer': {'min_samples': 10_000}})
    try:
        figures = loop.run_episode()
    finally:
        loop.close()
    assert figures['updates'] == 0 and loop.trainer.update_count == 0


def test_a_seed_gives_the_same_run_twice(run):
    """Same seed, same figures: the van, the noise, the weights and the sampling are seeded."""
    loop, episodes = run
    again = LearningLoop('ddpg', lap_s=LAP_S, seed=3, params_overrides=FAST)
    try:
        repeat = again.run(2)
    finally:
        again.close()
    for first, second in zip(episodes, repeat):
        for key in ('energy_per_km_wh', 'total_reward', 'steps', 'updates'):
            assert first[key] == second[key], key
        assert first['critic_loss'] == pytest.approx(second['critic_loss'], rel=1e-5)


def test_the_parameters_are_the_suites():
    p = suite_parameters('ddpg', 'wltc3b', 0.0, 7)
    assert p['trainer']['gamma'] == 0.9 and p['trainer']['reward_scale'] == 0.1
    assert p['trainer']['grad_clip_norm'] is None     # unset: the algorithm's default
    assert p['trainer']['min_samples'] == 500 and p['trainer']['seed'] == 7
    assert p['agent']['mode'] == 'train' and p['agent']['noise_sigma'] == 0.3
    assert p['vehicle_sim']['step_s'] == 0.5 and p['vehicle_sim']['repeat_cycle'] is True
    assert p['cruncher']['max_step_windows'] == 3
    r = suite_parameters('rdpg', overrides={'trainer': {'batch_size': 4}})
    assert r['trainer']['updates_per_episode'] == 10 and r['trainer']['batch_size'] == 4
    with pytest.raises(LoopConfigError, match='bogus'):
        suite_parameters(overrides={'trainer': {'bogus': 1}})
    with pytest.raises(LoopConfigError, match='unknown nodes'):
        suite_parameters(overrides={'nobody': {'x': 1}})
    with pytest.raises(LoopConfigError, match='algorithm'):
        suite_parameters('ppo')


def test_the_agent_config_is_the_trainer_nodes():
    from tspace_ros.agents import registry
    loop = LearningLoop('ddpg', lap_s=LAP_S, params_overrides={'trainer': {'tau': 0.01}})
    try:
        config = loop.trainer.agent.config
    finally:
        loop.close()
    expected = registry.config_from_options(registry.get('ddpg'), lambda name: {
        'gamma': 0.9, 'tau': 0.01, 'actor_lr': 0.001, 'critic_lr': 0.001,
        'reward_scale': 0.1, 'batch_size': 256, 'seed': 0}.get(name))
    assert config == expected


def test_the_layering_matches_the_suite():
    """The loop reads the parameter files as tspace_ros.suite does (same files, same order)."""
    suite = pytest.importorskip('tspace_ros.suite')
    from tspace_ros.training.loop import load_parameter_files, parameter_files
    expected = suite.load_parameter_files([suite.params_file_path(),
                                           suite.link_params_path('can'),
                                           suite.config_path('agents', 'ddpg.yaml')])
    assert load_parameter_files(parameter_files('ddpg')) == expected


def test_the_declared_defaults_are_the_nodes():
    """NODE_DEFAULTS holds what each node declares (checked on the nodes themselves)."""
    rclpy = pytest.importorskip('rclpy')
    from tspace_ros.nodes.agent import Agent
    from tspace_ros.nodes.can_bridge import CanBridge
    from tspace_ros.nodes.cruncher import CruncherNode
    from tspace_ros.nodes.storage import StorageNode
    from tspace_ros.nodes.trainer import TrainerNode
    from tspace_ros.nodes.vehicle_sim import VehicleSim
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        for name, kind in (('vehicle_sim', VehicleSim), ('can_bridge', CanBridge),
                           ('agent', Agent), ('cruncher', CruncherNode),
                           ('storage', StorageNode), ('trainer', TrainerNode)):
            node = kind(context=context, namespace='/loop_test')
            try:
                for parameter, default in NODE_DEFAULTS[name].items():
                    assert node.get_parameter(parameter).value == default, (name, parameter)
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def _bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize('args, message', [
    (('--algorithm', 'ppo'), "invalid choice: 'ppo'"),
    (('--episodes', '0'), '--episodes must be >= 1'),
    (('-p', 'trainer.min_samples'), 'expected NODE.NAME=VALUE'),
    (('-p', 'trainer.bogus=1'), 'trainer.bogus: not a parameter'),
    (('--cycle', 'ftp75'), "invalid choice: 'ftp75'"),
])
def test_the_bench_says_what_is_wrong(args, message):
    done = _bench(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
