"""TrainerCore: update ratio, min samples, publication, checkpoints, RDPG, TensorBoard."""

import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from tspace_ros.agents.ddpg import DdpgConfig  # noqa: E402
from tspace_ros.agents.episode_buffer import EpisodeBuffer  # noqa: E402
from tspace_ros.agents.export import blob_to_weights  # noqa: E402
from tspace_ros.agents.litert import LiteRtActor, LiteRtRecurrentActor  # noqa: E402
from tspace_ros.agents.networks import build_actor  # noqa: E402
from tspace_ros.agents.policy_exchange import PolicyBlob  # noqa: E402
from tspace_ros.agents.rdpg import RdpgConfig  # noqa: E402
from tspace_ros.agents.replay import InMemoryReplay  # noqa: E402
from tspace_ros.episodes.records import EpisodeSummaryRecord  # noqa: E402
from tspace_ros.training.trainer import TrainerConfig, TrainerCore  # noqa: E402
from tspace_ros.vehicle import load_vehicle_parameters  # noqa: E402

STATE_DIM, ACTION_DIM = 3, 2
ACTOR_UNITS = (16,)
TINY_DDPG = {'actor_units': ACTOR_UNITS, 'critic_state_units': (8,),
             'critic_action_units': (8,), 'critic_units': (16,), 'batch_size': 8}
TINY_RDPG = {'actor_dense_units': 8, 'actor_lstm_units': (8,), 'critic_dense_units': 8,
             'critic_lstm_units': (8,), 'critic_head_units': (8,), 'batch_size': 2,
             'tbptt_k1': 4, 'tbptt_k2': 4}
PROBE = np.random.default_rng(99).normal(size=(6, STATE_DIM)).astype(np.float32)


def target_action(states):
    """Return the best action of the bandit: a smooth function of the state, in [-1, 1]."""
    return 0.8 * np.tanh(np.asarray(states)[..., :ACTION_DIM])


def add_transitions(replay, n, rng):
    """Add n one-step transitions whose reward is -|action - target(state)|^2 (learnable)."""
    states = rng.normal(size=(n, STATE_DIM))
    actions = rng.uniform(-1, 1, (n, ACTION_DIM))
    rewards = -np.sum((actions - target_action(states)) ** 2, axis=1)
    replay.add_batch(states, actions, rewards, rng.normal(size=(n, STATE_DIM)), np.ones(n))


def filled_replay(n, seed=0):
    """Return a replay buffer holding n bandit transitions."""
    replay = InMemoryReplay(10_000, STATE_DIM, ACTION_DIM)
    add_transitions(replay, n, np.random.default_rng(seed))
    return replay


def summary(steps=10, valid=True, timed_out=0, reward=-5.0, energy_wh=300.0, distance=1.5):
    """Return an episode summary."""
    return EpisodeSummaryRecord('VAN1', 'driver', 'ep', 1_790_000_000_000_000_000,
                                1_790_000_060_000_000_000, steps, reward, energy_wh, distance,
                                valid, 1, 2, timed_out)


def ddpg_trainer(tmp_path=None, publish=None, agent=None, checkpoint=False, log=False,
                 **config):
    """Return a DDPG TrainerCore with tiny networks (no LiteRT unless asked)."""
    values = {'export_litert': False, 'publish_every': 1000}
    values.update(config)
    return TrainerCore(TrainerConfig(**values), STATE_DIM, ACTION_DIM,
                       DdpgConfig(**{**TINY_DDPG, **(agent or {})}),
                       checkpoint_dir=tmp_path / 'ckpt' if checkpoint else None,
                       log_dir=tmp_path / 'tb' if log else None, publish=publish)


def actor_from_blob(blob):
    """Return a fresh Keras actor holding a blob's weights."""
    actor = build_actor(STATE_DIM, ACTION_DIM, ACTOR_UNITS)
    blob_to_weights(blob, actor, algorithm='ddpg')
    return actor


# -- configuration ----------------------------------------------------------------------


def test_config_defaults():
    """Defaults follow the brief; min_samples depends on the algorithm."""
    cfg = TrainerConfig()
    assert (cfg.algorithm, cfg.mode, cfg.updates_per_episode, cfg.max_update_ratio) == \
        ('ddpg', 'episode', 0, 1.0)
    assert (cfg.min_samples, cfg.publish_every, cfg.checkpoint_every) == (1000, 200, 2000)
    assert cfg.export_litert and not cfg.include_timed_out
    assert TrainerConfig(algorithm='rdpg').min_samples == 2
    assert TrainerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize('field, value', [
    ('algorithm', 'ppo'), ('mode', 'batch'), ('updates_per_episode', -1),
    ('updates_per_episode', 2.5), ('max_update_ratio', 0.0), ('max_update_ratio', math.nan),
    ('min_samples', 0), ('publish_every', 0), ('checkpoint_every', -1),
    ('rdpg_max_length', 0), ('chunk', 0), ('seed', -3), ('export_litert', 'yes'),
    ('include_timed_out', 1)])
def test_bad_config_values_name_the_field(field, value):
    """Every bad value raises ValueError naming its field."""
    with pytest.raises(ValueError, match=f'TrainerConfig.{field} '):
        TrainerConfig(**{field: value})


def test_agent_config_and_source_must_match_the_algorithm():
    """An RDPG config for a DDPG trainer, or an episode buffer as its source, is refused."""
    with pytest.raises(ValueError, match='agent_config'):
        TrainerCore(TrainerConfig(), STATE_DIM, ACTION_DIM, RdpgConfig(**TINY_RDPG))
    trainer = TrainerCore(TrainerConfig(export_litert=False), STATE_DIM, ACTION_DIM,
                          DdpgConfig(**TINY_DDPG))
    with pytest.raises(ValueError, match='TransitionSource'):
        trainer.set_source(EpisodeBuffer(STATE_DIM, ACTION_DIM))
    with pytest.raises(ValueError, match='state_dim'):
        trainer.set_source(InMemoryReplay(10, STATE_DIM + 1, ACTION_DIM))


# -- when to train ----------------------------------------------------------------------


def test_continuous_mode_waits_for_min_samples_and_keeps_the_update_ratio(tmp_path):
    """No update below min_samples; then never more than ratio x samples, chunk per call."""
    trainer = ddpg_trainer(tmp_path, mode='continuous', min_samples=40, max_update_ratio=0.5,
                           chunk=7)
    replay = InMemoryReplay(10_000, STATE_DIM, ACTION_DIM)
    trainer.set_source(replay)
    rng = np.random.default_rng(0)
    for _ in range(3):
        add_transitions(replay, 10, rng)
        assert trainer.on_samples(10) is None
    assert trainer.update_count == trainer.agent.update_count == 0
    assert trainer.status()['critic_loss'] is None and trainer.policy_version == 0

    bursts = []
    for _ in range(9):
        add_transitions(replay, 10, rng)
        before = trainer.update_count
        result = trainer.on_samples(10)
        bursts.append(trainer.update_count - before)
        assert trainer.update_count <= 0.5 * trainer.samples_seen
        if result is not None:
            assert result['updates'] == bursts[-1] and result['update_count'] == \
                trainer.update_count
    assert bursts[0] == 7 and max(bursts) == 7   # the backlog is worked off in chunks
    # Without new samples the backlog runs out exactly at the ratio, and no further.
    while trainer.on_samples(0) is not None:
        assert trainer.update_count <= 0.5 * trainer.samples_seen
    assert trainer.update_count == 0.5 * trainer.samples_seen == 60
    assert trainer.agent.update_count == 60
    assert trainer.on_samples(1) is None and trainer.on_samples(1) is not None
    assert trainer.update_count == 61


def test_episode_mode_trains_after_valid_episodes(tmp_path):
    """updates_per_episode after each valid episode once min_samples are there; checkpoints."""
    published = []
    trainer = ddpg_trainer(tmp_path, published.append, checkpoint=True, mode='episode',
                           updates_per_episode=3, min_samples=30)
    replay = filled_replay(20)
    trainer.set_source(replay)
    assert trainer.on_episode(summary(steps=20)) is None        # 20 < min_samples
    assert trainer.update_count == 0 and trainer.status()['last_checkpoint'] is not None
    add_transitions(replay, 20, np.random.default_rng(1))
    result = trainer.on_episode(summary(steps=20))
    assert result['updates'] == 3 and trainer.update_count == 3
    assert [b.version for b in published] == [3] and trainer.policy_version == 3
    assert trainer.status()['last_checkpoint_update'] == 3
    assert trainer.on_episode(summary(valid=False)) is None
    assert trainer.update_count == 3 and trainer.episodes_discarded == 1
    assert trainer.episodes_seen == 2 and len(trainer.episode_history) == 2
    status = trainer.status()
    assert status['episodes_seen'] == 2 and status['buffer_size'] == 40
    assert status['updates_per_second'] > 0 and math.isfinite(status['critic_loss'])
    # continuous / offline trainers only record episodes
    offline = ddpg_trainer(tmp_path, mode='offline', min_samples=1)
    offline.set_source(replay)
    assert offline.on_episode(summary()) is None and offline.update_count == 0
    assert offline.on_samples(100) is None and offline.update_count == 0


def test_episode_mode_ratio_counts_the_episode_samples(tmp_path):
    """updates_per_episode 0: ratio x new samples (reported, else the summary's steps)."""
    trainer = ddpg_trainer(tmp_path, mode='episode', max_update_ratio=0.5, min_samples=10)
    trainer.set_source(filled_replay(50))
    trainer.on_samples(10)
    assert trainer.on_episode(summary(steps=999))['updates'] == 5   # the reported 10
    # Not reported: the summary's steps, timed-out ones left out (12 - 2 = 10).
    assert trainer.on_episode(summary(steps=12, timed_out=2))['updates'] == 5
    assert trainer.samples_seen == 20
    # 3 new samples at ratio 0.5: 1 update now, 2 with the next 3 (no fraction lost).
    assert trainer.on_episode(summary(steps=3))['updates'] == 1
    assert trainer.on_episode(summary(steps=3))['updates'] == 2
    included = ddpg_trainer(tmp_path, mode='episode', min_samples=1, include_timed_out=True)
    included.set_source(filled_replay(20))
    assert included.on_episode(summary(steps=4, timed_out=2))['updates'] == 4


def test_offline_training_learns_the_signal(tmp_path):
    """train(): the critic loss falls and the actor moves towards the best action."""
    trainer = ddpg_trainer(tmp_path, mode='offline', agent={'batch_size': 32, 'seed': 0})
    trainer.set_source(filled_replay(2000))
    error_before = np.mean((trainer.agent.act(PROBE) - target_action(PROBE)) ** 2)
    first = trainer.train(50)
    last = trainer.train(400)
    error_after = np.mean((trainer.agent.act(PROBE) - target_action(PROBE)) ** 2)
    assert last['critic_loss'] < first['critic_loss']
    assert error_after < 0.7 * error_before
    assert [p['update'] for p in trainer.loss_history] == [50, 450]


# -- publication ------------------------------------------------------------------------


def test_publishes_every_k_updates_and_blobs_load_back(tmp_path):
    """Blobs every publish_every updates and after a burst, versions rising; they load back."""
    published = []
    trainer = ddpg_trainer(tmp_path, published.append, mode='offline', publish_every=5)
    trainer.set_source(filled_replay(200))
    first = trainer.current_blob()
    assert first.version == 0 and first.model_format == ''
    trainer.train(12)
    assert [b.version for b in published] == [5, 10, 12]
    trainer.train(3)                              # ends on a boundary: published once
    assert [b.version for b in published] == [5, 10, 12, 15]
    assert trainer.policy_version == trainer.status()['policy_version'] == 15
    assert trainer.current_blob() is published[-1]

    blob = published[-1]
    blob.save(tmp_path / 'policy.npz')
    loaded = PolicyBlob.load(tmp_path / 'policy.npz', algorithm='ddpg', state_dim=STATE_DIM,
                             action_dim=ACTION_DIM)
    assert loaded.version == 15 and loaded.sha256 == blob.sha256
    np.testing.assert_allclose(actor_from_blob(loaded)(PROBE).numpy(),
                               trainer.agent.act(PROBE, explore=False), atol=1e-5)
    # An earlier blob is a snapshot: the actor has moved on since.
    early = actor_from_blob(published[0])(PROBE).numpy()
    assert not np.allclose(early, trainer.agent.act(PROBE), atol=1e-7)


@pytest.mark.parametrize('normalize', [False, True])
def test_litert_model_in_the_blob_acts_like_the_agent(tmp_path, normalize):
    """export_litert: the blob's LiteRT model equals act(explore=False) (normalising too)."""
    published = []
    trainer = ddpg_trainer(tmp_path, published.append, mode='offline', export_litert=True,
                           agent={'normalize_observations': normalize})
    replay = InMemoryReplay(1000, STATE_DIM, ACTION_DIM)
    rng = np.random.default_rng(3)
    states = rng.normal(5.0, 3.0, (200, STATE_DIM))     # far from standardised
    replay.add_batch(states, rng.uniform(-1, 1, (200, ACTION_DIM)), rng.normal(size=200),
                     states, np.ones(200))
    trainer.set_source(replay)
    trainer.train(4)
    (blob,) = published
    assert blob.model_format == 'tflite'
    received = PolicyBlob.from_bytes(blob.to_bytes(), sha256=blob.sha256, model=blob.model,
                                     model_format=blob.model_format,
                                     model_sha256=blob.model_sha256, algorithm='ddpg')
    actor = LiteRtActor.from_blob(received)
    probe = np.vstack([PROBE * 3.0 + 5.0, [[100.0, -80.0, 60.0]]])   # the last one clips
    for state in probe:
        np.testing.assert_allclose(actor.infer(state), trainer.agent.act(state), atol=1e-5)
    if normalize:
        assert 'observation_mean' in blob.metadata
        # The raw actor alone (no normalisation) would act differently.
        raw = trainer.agent.actor(probe).numpy()
        assert not np.allclose(raw, trainer.agent.act(probe), atol=1e-4)


# -- checkpoints ------------------------------------------------------------------------


def test_checkpoint_and_resume_continue_exactly(tmp_path):
    """A resumed trainer has the counters and actor, and trains on as the saved one would."""
    published = []
    replay = filled_replay(300)
    first = ddpg_trainer(tmp_path, published.append, checkpoint=True, mode='offline',
                         publish_every=4, checkpoint_every=0)
    first.set_source(replay)
    first.on_samples(300)
    first.train(6)
    first.on_episode(summary())
    state_file = first.save_checkpoint()
    assert state_file.name == 'trainer.json'
    saved = first.agent.act(PROBE)
    first.train(5)
    continued = first.agent.act(PROBE)

    second = ddpg_trainer(tmp_path, published.append, checkpoint=True, mode='offline',
                          publish_every=4, checkpoint_every=0)
    assert (second.update_count, second.policy_version, second.samples_seen,
            second.episodes_seen) == (6, 6, 300, 1)
    assert second.episode_history == first.episode_history[:1]
    np.testing.assert_allclose(second.agent.act(PROBE), saved, atol=1e-6)
    second.set_source(replay)
    second.train(5)
    np.testing.assert_allclose(second.agent.act(PROBE), continued, atol=1e-6)
    assert second.update_count == 11 and published[-1].version == 11
    second.close()
    assert second.status()['last_checkpoint_update'] == 11
    dirs = sorted(p.name for p in (tmp_path / 'ckpt').iterdir())
    assert dirs == ['agent-000002', 'trainer.json']    # the older agent directory is gone
    third = ddpg_trainer(tmp_path, checkpoint=True, mode='offline')
    assert third.update_count == 11 and third.policy_version == 11


def test_periodic_checkpoints_and_mismatched_checkpoints(tmp_path):
    """checkpoint_every saves at multiples of the update count; a wrong trainer refuses it."""
    trainer = ddpg_trainer(tmp_path, checkpoint=True, mode='offline', checkpoint_every=4)
    trainer.set_source(filled_replay(50))
    assert trainer.status()['last_checkpoint'] is None
    trainer.train(9)
    assert trainer.status()['last_checkpoint_update'] == 8
    state = json.loads((tmp_path / 'ckpt' / 'trainer.json').read_text())
    assert state['update_count'] == 8 and state['agent_checkpoint'] == 'agent-000002'
    trainer.loss_history.append({'update': 9, 'critic_loss': math.inf,
                                 'actor_loss': math.nan, 'q_mean': 0.0})
    trainer.save_checkpoint()                      # a diverged loss does not stop a save
    assert json.loads((tmp_path / 'ckpt' / 'trainer.json').read_text())[
        'loss_history'][-1]['critic_loss'] is None
    with pytest.raises(ValueError, match='state_dim'):
        TrainerCore(TrainerConfig(), STATE_DIM + 1, ACTION_DIM,
                    checkpoint_dir=tmp_path / 'ckpt')


# -- RDPG -------------------------------------------------------------------------------


def test_rdpg_trains_on_episodes_and_publishes_the_step_actor(tmp_path):
    """RDPG with an EpisodeBuffer: min 2 episodes, windowed batches, a LiteRT step actor."""
    published = []
    trainer = TrainerCore(
        TrainerConfig(algorithm='rdpg', mode='episode', updates_per_episode=2,
                      rdpg_max_length=5, seed=3), STATE_DIM, ACTION_DIM,
        RdpgConfig(**TINY_RDPG), publish=published.append)
    assert trainer.agent.config.max_sequence_length == 5 and trainer.agent.config.seed == 3
    with pytest.raises(ValueError, match='EpisodeSource'):
        trainer.set_source(InMemoryReplay(10, STATE_DIM, ACTION_DIM))
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM)
    trainer.set_source(buffer)
    rng = np.random.default_rng(0)
    for episode in range(3):
        length = 7 + episode
        states = rng.normal(size=(length + 1, STATE_DIM))
        actions = rng.uniform(-1, 1, (length, ACTION_DIM))
        buffer.add_episode(states[:-1], actions,
                           -np.sum((actions - target_action(states[:-1])) ** 2, axis=1),
                           states[1:], np.arange(length) == length - 1)
        result = trainer.on_episode(summary(steps=length))
        if episode == 0:
            assert result is None and trainer.update_count == 0   # 1 < 2 episodes
    assert trainer.update_count == 4 and trainer.samples_seen == 3
    # Windows of 5 steps padded to k1 = 4: two TBPTT steps per batch.
    assert trainer.agent.update_count == 8
    assert [b.version for b in published] == [2, 4]
    blob = published[-1]
    assert blob.algorithm == 'rdpg' and blob.model_format == 'tflite'
    actor = LiteRtRecurrentActor.from_blob(blob)
    trainer.agent.begin_episode()
    for state in PROBE:
        np.testing.assert_allclose(actor.step(state), trainer.agent.act(state), atol=1e-5)


# -- TensorBoard ------------------------------------------------------------------------


def _events(log_dir):
    """Return {tag: [(step, value or bytes)]} of the tensor events under log_dir."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(log_dir), size_guidance={'tensors': 0})
    accumulator.Reload()
    return {tag: [(e.step, tf.make_ndarray(e.tensor_proto)) for e in
                  accumulator.Tensors(tag)] for tag in accumulator.Tags()['tensors']}


def test_tensorboard_events_have_the_scalars_and_map_images(tmp_path):
    """Losses, Q, rate, episode figures, policy versions and torque-map images are logged."""
    trainer = ddpg_trainer(tmp_path, log=True, mode='episode', updates_per_episode=3,
                           min_samples=10)
    trainer.set_source(filled_replay(30))
    result = trainer.on_episode(summary(steps=30, reward=-7.5, energy_wh=450.0, distance=2.0,
                                        timed_out=1))
    default = load_vehicle_parameters().load_default_map()
    learned = default.with_torque(default.torque_nm - 25.0, 3)
    trainer.log.torque_map('learned', learned, trainer.update_count, default_map=default)
    trainer.close()
    events = _events(tmp_path / 'tb')
    for tag in ('loss/critic', 'loss/actor', 'q/mean', 'train/updates_per_second',
                'episode/return', 'episode/energy_per_km_wh', 'episode/distance_km',
                'episode/timed_out_steps', 'policy/version', 'torque_map/learned',
                'torque_map/learned_minus_default'):
        assert tag in events, sorted(events)
    assert events['loss/critic'] == [(3, pytest.approx(result['critic_loss'], rel=1e-6))]
    assert events['episode/return'] == [(1, pytest.approx(-7.5))]
    assert events['episode/energy_per_km_wh'][0][1] == pytest.approx(225.0)
    assert events['episode/timed_out_steps'][0][1] == 1
    assert events['policy/version'] == [(3, 3)]
    (step, image), = events['torque_map/learned']
    width, height, png = image          # an image summary: width, height, encoded PNG
    assert step == 3 and int(width) > 100 and int(height) > 100
    assert png.startswith(b'\x89PNG')


def test_training_log_without_a_directory_writes_nothing(tmp_path):
    """log_dir None: every call is a no-op."""
    from tspace_ros.training.tensorboard import TrainingLog
    log = TrainingLog(None)
    default = load_vehicle_parameters().load_default_map()
    log.scalar('loss/critic', 1.0, 0)
    log.torque_map('learned', default, 0, default_map=default)
    log.close()
    assert not log.enabled and list(tmp_path.iterdir()) == []


def test_td3_from_the_registry_trains_publishes_and_resumes_as_td3(tmp_path):
    """Train td3: DDPG's agent with TD3's options, blobs named td3, a td3 checkpoint."""
    from tspace_ros.agents import registry
    config = registry.get('td3').make_config(TINY_DDPG)
    published = []
    trainer = TrainerCore(TrainerConfig(algorithm='td3', mode='offline', publish_every=1000),
                          STATE_DIM, ACTION_DIM, config, checkpoint_dir=tmp_path / 'ckpt',
                          publish=published.append)
    assert TrainerConfig(algorithm='td3').min_samples == 1000
    agent = trainer.agent
    assert agent.config.twin_critics and agent.config.policy_delay == 2
    assert agent.critic2 is not None
    trainer.set_source(filled_replay(200))
    trainer.train(4)
    assert published[-1].algorithm == 'td3' and published[-1].version == 4
    PolicyBlob.from_bytes(published[-1].to_bytes()).verify(algorithm='td3')
    trainer.close()
    with pytest.raises(ValueError, match="algorithm 'td3', the trainer 'ddpg'"):
        ddpg_trainer(tmp_path, checkpoint=True, mode='offline')
    resumed = TrainerCore(TrainerConfig(algorithm='td3', mode='offline'), STATE_DIM,
                          ACTION_DIM, checkpoint_dir=tmp_path / 'ckpt')
    assert resumed.update_count == 4 and resumed.agent.config.twin_critics
    resumed.close()


def test_rtd3_from_the_registry_trains_on_episodes_and_publishes_a_step_actor(tmp_path):
    """Train rtd3: RDPG's agent with the TD3 options, an rtd3 blob, its LiteRT step actor runs."""
    from tspace_ros.agents import registry
    config = registry.get('rtd3').make_config(TINY_RDPG)
    published = []
    trainer = TrainerCore(
        TrainerConfig(algorithm='rtd3', mode='episode', updates_per_episode=2,
                      rdpg_max_length=5, seed=3), STATE_DIM, ACTION_DIM, config,
        checkpoint_dir=tmp_path / 'ckpt', publish=published.append)
    assert TrainerConfig(algorithm='rtd3').min_samples == 2
    agent = trainer.agent
    assert agent.config.twin_critics and agent.config.policy_delay == 2
    assert agent.config.target_noise == 0.2 and agent.config.max_sequence_length == 5
    assert agent.critic2 is not None and agent.target_critic2 is not None
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM)
    trainer.set_source(buffer)
    rng = np.random.default_rng(0)
    for episode in range(3):
        length = 7 + episode
        states = rng.normal(size=(length + 1, STATE_DIM))
        actions = rng.uniform(-1, 1, (length, ACTION_DIM))
        buffer.add_episode(states[:-1], actions,
                           -np.sum((actions - target_action(states[:-1])) ** 2, axis=1),
                           states[1:], np.arange(length) == length - 1)
        trainer.on_episode(summary(steps=length))
    assert trainer.update_count == 4 and agent.update_count == 8   # 2 windows per batch
    assert int(agent.actor_optimizer.iterations) == 4              # every second window
    assert int(agent.critic_optimizer.iterations) == 8
    blob = published[-1]
    assert blob.algorithm == 'rtd3' and blob.model_format == 'tflite' and blob.version == 4
    PolicyBlob.from_bytes(blob.to_bytes()).verify(algorithm='rtd3')
    actor = LiteRtRecurrentActor.from_blob(blob)
    agent.begin_episode()
    for state in PROBE:
        np.testing.assert_allclose(actor.step(state), agent.act(state), atol=1e-5)
    trainer.close()
    resumed = TrainerCore(TrainerConfig(algorithm='rtd3', mode='episode'), STATE_DIM,
                          ACTION_DIM, checkpoint_dir=tmp_path / 'ckpt')
    assert resumed.update_count == 4 and resumed.agent.update_count == 8
    assert resumed.agent.config.twin_critics and resumed.agent.critic2 is not None
    assert resumed.agent.config.max_sequence_length == 5   # the checkpoint's config
    resumed.close()
