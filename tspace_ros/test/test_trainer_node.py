"""
The trainer node in its own process, offline: a pool on disk in, a policy and a checkpoint out.

The test writes a small pool of transitions, starts the trainer in offline mode on
it, and checks that it publishes a verified policy after the requested updates,
writes a checkpoint and TensorBoard events, and that a second trainer on the same
checkpoint directory resumes from it.
"""

from lifecycle_msgs.msg import Transition as LifecycleTransition
import numpy as np
import pytest
from ros_test_support import NodeProcess, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.msg import PolicyUpdate, TrainerStatus

from tspace_ros.agents.policy_exchange import PolicyBlob
from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.nodes.qos import POLICY_UPDATE_QOS
from tspace_ros.storage import open_pool, PoolConfig

NS = 'trainer_test'
TIMEOUT_S = 90.0


def write_pool(root):
    rng = np.random.default_rng(0)
    start = 1_795_000_000_000_000_000
    records = [TransitionRecord(
        'VIN-T', 'd1', 'ep0', start, step, rng.uniform(0, 1, 90), rng.uniform(-1, 1, 68), 2, 4,
        -5.0, 5.0, rng.uniform(0, 1, 90), step == 199, False, 0,
        start + step * 10**9, start + (step + 1) * 10**9) for step in range(200)]
    with open_pool(PoolConfig(root=str(root))) as pool:
        pool.append(records)
        pool.end_episode(EpisodeSummaryRecord('VIN-T', 'd1', 'ep0', start, start + 200 * 10**9,
                                              200, -1000.0, 1000.0, 4.0, True, 0, 0))


def run_trainer(tmp_path, name, updates, source=None, total=None):
    where = ['-p', f'pool_root:={tmp_path / "pool"}'] if source is None else \
        ['-p', f'sample_source:={source}']
    args = ['-r', f'__ns:=/{NS}', '-r', f'__node:={name}', '-p', 'mode:=offline', *where,
            '-p', f'offline_updates:={updates}',
            '-p', f'checkpoint_dir:={tmp_path / "checkpoints"}',
            '-p', f'log_dir:={tmp_path / "tensorboard"}', '-p', 'batch_size:=16']
    with NodeProcess('tspace_ros.nodes.trainer', tmp_path / f'{name}.log', args) as process, \
            RosContext() as ros:
        probe = ros.node('trainer_probe', NS)
        policies, statuses = [], []
        probe.create_subscription(PolicyUpdate, 'policy/update', policies.append,
                                  POLICY_UPDATE_QOS)
        probe.create_subscription(TrainerStatus, 'trainer/status', statuses.append, 10)
        node = LifecycleDriver(ros, f'{NS}/{name}')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: statuses and
                          statuses[-1].update_count >= (total or updates), TIMEOUT_S), \
            process.output()
        assert spin_until(ros.executor, lambda: policies and
                          policies[-1].version == statuses[-1].update_count, TIMEOUT_S)
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
        assert node.transition(LifecycleTransition.TRANSITION_CLEANUP)
        return policies, statuses, process.output()


def test_offline_training_from_a_pool_publishes_checkpoints_and_resumes(tmp_path):
    write_pool(tmp_path / 'pool')
    policies, statuses, output = run_trainer(tmp_path, 'trainer', 30)
    # The initial policy at activation, then the trained one; both verified blobs.
    assert [p.version for p in policies][0] == 0 and policies[-1].version == 30
    blob = PolicyBlob.from_msg(policies[-1], expected_algorithm='ddpg')
    assert (blob.state_dim, blob.action_dim) == (90, 68) and blob.model_format == 'tflite'
    assert statuses[-1].buffer_size == 200 and np.isfinite(statuses[-1].critic_loss)
    assert 'offline training: 30 updates' in output
    assert (tmp_path / 'checkpoints' / 'trainer.json').is_file()
    assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
    # A new trainer on the same checkpoints resumes: its versions continue from 30.
    policies, statuses, output = run_trainer(tmp_path, 'trainer_again', 20)
    assert policies[0].version == 30 and policies[-1].version == 50
    assert '30 updates so far, policy version 30' in output


def test_offline_mode_without_a_pool_fails_configure_with_the_reason(tmp_path):
    with NodeProcess('tspace_ros.nodes.trainer', tmp_path / 'bad.log', [
            '-r', f'__ns:=/{NS}_bad', '-p', 'mode:=offline']) as process, \
            RosContext() as ros:
        node = LifecycleDriver(ros, f'{NS}_bad/trainer')
        assert not node.transition(LifecycleTransition.TRANSITION_CONFIGURE)
    assert "parameter 'pool_root': offline mode needs the pool" in process.output()


def test_every_agent_option_reaches_the_agent_config(tmp_path):
    import rclpy
    from rclpy.parameter import Parameter

    from tspace_ros.agents import registry
    from tspace_ros.agents.ddpg import TD3_OPTIONS
    from tspace_ros.nodes.trainer import TrainerNode
    rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
    try:
        # Unset options keep each algorithm's defaults: td3's are DDPG's with TD3's on.
        for name in registry.names():
            node = TrainerNode(f'trainer_{name}_defaults', namespace=NS,
                               parameter_overrides=[Parameter('algorithm', value=name)])
            try:
                assert node.agent_config() == registry.get(name).default_config()
            finally:
                node.destroy_node()
        assert registry.get('td3').default_config().twin_critics
        # Every field of every algorithm's config is a parameter (seed: the trainer's own).
        fields = registry.option_fields()
        node = TrainerNode('trainer_fields', namespace=NS)
        try:
            missing = [name for name in fields if not node.has_parameter(name)]
            assert missing == []
        finally:
            node.destroy_node()
        # Each one set reaches the config (an int where a number is wanted; 0 is None).
        chosen = {**TD3_OPTIONS, 'critic_loss': 'huber', 'huber_delta': 2,
                  'preactivation_penalty': 0.01, 'grad_clip_norm': 10.0,
                  'normalize_rewards': True, 'actor_units': [64, 32], 'observation_clip': 3,
                  'jit_compile': False, 'critic_final_init': 0, 'noise': 'gaussian'}
        node = TrainerNode('trainer_td3', namespace=NS, parameter_overrides=[
            Parameter(k, value=v) for k, v in chosen.items()])
        try:
            assert node.parameters_valid()
            config = node._build_core().agent.config
            expected = {**chosen, 'actor_units': (64, 32), 'critic_final_init': None}
            for name, value in expected.items():
                assert getattr(config, name) == value, name
            assert isinstance(config.huber_delta, float)
            assert node._build_core().agent.critic2 is not None
        finally:
            node.destroy_node()
        # A wrong value fails the configure with the option's name, not a traceback.
        for name, value in (('twin_critics', 'yes'), ('batch_size', 2.5),
                            ('actor_units', ['a']), ('critic_loss', 'l1')):
            node = TrainerNode(f'trainer_bad_{name}', namespace=NS,
                               parameter_overrides=[Parameter(name, value=value)])
            try:
                with pytest.raises(ValueError, match=name):
                    node.agent_config()
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_a_trainer_of_its_own_samples_the_storage_pool_and_a_restart_keeps_the_data(tmp_path):
    # The launch files' data path: the storage node holds the pool, the trainer (another
    # process) samples it through the storage's sample_batch service, not from topics.
    write_pool(tmp_path / 'pool')
    storage_args = ['-r', f'__ns:=/{NS}', '-p', f'root:={tmp_path / "pool"}']
    with NodeProcess('tspace_ros.nodes.storage', tmp_path / 'storage.log',
                     storage_args) as storage, RosContext() as ros:
        node = LifecycleDriver(ros, f'{NS}/storage')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), storage.output()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE)
        policies, statuses, output = run_trainer(tmp_path, 'trainer_service', 30, 'service')
        assert statuses[-1].buffer_size == 200 and policies[-1].version == 30, output
        assert np.isfinite(statuses[-1].critic_loss)
        # A restarted trainer resumes from its checkpoint and finds the same replay data.
        policies, statuses, output = run_trainer(tmp_path, 'trainer_service2', 20, 'service',
                                                 total=50)
        assert '30 updates so far, policy version 30' in output
        assert statuses[-1].buffer_size == 200 and policies[-1].version == 50, output


def test_the_manager_does_not_take_a_trainer_busy_training_for_a_dead_one(tmp_path):
    # Offline training keeps the trainer busy for many seconds; its lifecycle services must
    # still answer, or the manager declares it lost and deactivates the whole chain.
    from std_msgs.msg import String
    write_pool(tmp_path / 'pool')
    ns = f'{NS}_busy'
    trainer_args = ['-r', f'__ns:=/{ns}', '-p', 'mode:=offline',
                    '-p', f'pool_root:={tmp_path / "pool"}', '-p', 'offline_updates:=1500',
                    '-p', 'batch_size:=256', '-p', 'publish_every:=1000000']
    manager_args = ['-r', f'__ns:=/{ns}', '-p', 'node_names:=[trainer]',
                    '-p', 'autostart:=true', '-p', 'check_period_s:=0.2',
                    '-p', 'response_timeout_s:=1.0', '-p', 'max_missed:=3']
    with NodeProcess('tspace_ros.nodes.trainer', tmp_path / 'trainer.log',
                     trainer_args) as trainer, \
            NodeProcess('tspace_ros.nodes.lifecycle_manager', tmp_path / 'manager.log',
                        manager_args) as manager, RosContext() as ros:
        probe = ros.node('busy_probe', ns)
        statuses, manager_states = [], []
        probe.create_subscription(TrainerStatus, 'trainer/status', statuses.append, 10)
        probe.create_subscription(String, 'lifecycle_manager/status',
                                  lambda m: manager_states.append(m.data), 10)
        assert spin_until(ros.executor, lambda: 'active' in manager_states, TIMEOUT_S), \
            manager.output() + trainer.output()
        assert spin_until(ros.executor, lambda: 'offline training: 1500 updates' in
                          trainer.output(), 3 * TIMEOUT_S), trainer.output()
        spin_until(ros.executor, lambda: False, 1.0)
        assert not [s for s in manager_states if s.startswith('failed')], \
            (manager_states, manager.output())
        assert 'failure' not in manager.output()
