"""RDPG: recurrent networks, masking, losses, TBPTT, acting, checkpoints, a smoke run."""

import os

import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from tspace_ros.agents.episode_buffer import EpisodeBuffer, pad_episodes  # noqa: E402
from tspace_ros.agents.rdpg import (  # noqa: E402
    RdpgAgent, RdpgConfig, zero_state)

STATE_DIM, ACTION_DIM, UNITS = 3, 2, 8


def tiny_config(**overrides) -> RdpgConfig:
    """Return a config with small networks (fast to build and trace)."""
    values = {'actor_dense_units': UNITS, 'actor_lstm_units': (UNITS, UNITS),
              'critic_dense_units': UNITS, 'critic_lstm_units': (UNITS,),
              'critic_head_units': (UNITS,), 'batch_size': 3, 'tbptt_k1': 16, 'tbptt_k2': 16,
              'gamma': 0.9, 'tau': 0.25, 'seed': 7}
    values.update(overrides)
    return RdpgConfig(**values)


def ragged_batch(lengths=(5, 2, 4), padded=None, seed=0):
    """Return a padded batch (episode_buffer layout) with random values on valid steps."""
    rng = np.random.default_rng(seed)
    episodes = [{'state': rng.normal(size=(length, STATE_DIM)),
                 'action': rng.uniform(-1, 1, (length, ACTION_DIM)),
                 'reward': rng.normal(size=length),
                 'next_state': rng.normal(size=(length, STATE_DIM)),
                 'done': np.arange(length) == length - 1} for length in lengths]
    return pad_episodes(episodes, padded)


def scramble_padding(batch, seed=1):
    """Return a copy of the batch with garbage (huge values, NaN) on every padded step."""
    rng = np.random.default_rng(seed)
    out = {key: value.copy() for key, value in batch.items()}
    pad = ~batch['mask']
    for key in ('state', 'last_action', 'action', 'next_state'):
        out[key][pad] = rng.normal(scale=1e3, size=out[key][pad].shape)
    out['reward'][pad] = np.nan
    out['done'][pad] = 7.0
    out['state'][pad, 0] = np.nan
    return out


@pytest.fixture(scope='module')
def agent():
    """Return one agent shared by the tests that do not train it."""
    return RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config())


def actor_inputs(batch, agent):
    """Return the sequence actor's inputs for a batch from the zero state."""
    return [batch['state'], batch['last_action'], batch['mask']] + zero_state(
        len(batch['mask']), agent.config.actor_lstm_units)


def test_step_actor_equals_sequence_actor(agent):
    """Stepping the step actor through each episode gives the sequence actor's outputs."""
    batch = ragged_batch()
    sequence = [x.numpy() for x in agent.actor(actor_inputs(batch, agent))]
    assert {id(v) for v in agent.step_actor.weights} == {id(v) for v in agent.actor.weights}
    carry = zero_state(3, agent.config.actor_lstm_units)
    for t in range(batch['mask'].shape[1]):
        outputs = agent.step_actor([batch['state'][:, t], batch['last_action'][:, t]] + carry)
        outputs = [x.numpy() for x in outputs]
        valid = batch['mask'][:, t]
        np.testing.assert_allclose(outputs[0][valid], sequence[0][valid, t], atol=1e-6)
        # Keep each row's state once its episode has ended (as the mask does).
        carry = [np.where(valid[:, None], new, old) for new, old in zip(outputs[1:], carry)]
    for final, stepped in zip(sequence[1:], carry):
        np.testing.assert_allclose(final, stepped, atol=1e-6)
    # No fixed batch size in either model.
    one = agent.step_actor([np.zeros((1, STATE_DIM), np.float32),
                            np.zeros((1, ACTION_DIM), np.float32)]
                           + zero_state(1, agent.config.actor_lstm_units))
    assert one[0].shape == (1, ACTION_DIM)
    assert agent.step_actor.inputs[0].shape == (None, STATE_DIM)
    assert agent.actor.inputs[0].shape == (None, None, STATE_DIM)


def test_padding_changes_no_output_or_state(agent):
    """Garbage on padded steps changes no valid output and no final state."""
    batch = ragged_batch()
    garbage = scramble_padding(batch)
    mask = batch['mask']
    clean = agent.actor(actor_inputs(batch, agent))
    dirty = agent.actor(actor_inputs(garbage, agent))
    np.testing.assert_array_equal(clean[0].numpy()[mask], dirty[0].numpy()[mask])
    for a, b in zip(clean[1:], dirty[1:]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    critic_state = zero_state(3, agent.config.critic_lstm_units)
    q_clean = agent.critic([batch['state'], batch['last_action'], batch['action'], mask]
                           + critic_state)
    q_dirty = agent.critic([garbage['state'], garbage['last_action'], garbage['action'],
                            mask] + critic_state)
    assert np.all(np.isfinite(q_clean[0].numpy()[mask]))
    np.testing.assert_array_equal(q_clean[0].numpy()[mask], q_dirty[0].numpy()[mask])
    for a, b in zip(q_clean[1:], q_dirty[1:]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The final state of a padded row is the state after its last valid step.
    short = {key: value[1:2, :2] for key, value in batch.items() if key != 'length'}
    alone = agent.actor(actor_inputs(short, agent))
    for a, b in zip(clean[1:], alone[1:]):
        np.testing.assert_allclose(a.numpy()[1:2], b.numpy(), atol=1e-6)


def test_padding_changes_no_loss_or_gradient(agent):
    """Garbage on padded steps changes neither the losses nor any gradient."""
    batch = ragged_batch()
    clean = agent.gradients(batch)
    dirty = agent.gradients(scramble_padding(batch))
    for name in ('critic_loss', 'actor_loss', 'q_mean'):
        assert np.isfinite(clean[name]) and clean[name] == dirty[name]
    for key in ('critic_gradients', 'actor_gradients'):
        assert len(clean[key]) == len(dirty[key]) > 0
        for a, b in zip(clean[key], dirty[key]):
            assert np.all(np.isfinite(a))
            np.testing.assert_array_equal(a, b)
    # More padding (a longer padded length) changes nothing either.
    longer = agent.gradients(ragged_batch(padded=9))
    assert longer['critic_loss'] == pytest.approx(clean['critic_loss'], rel=1e-6)
    for a, b in zip(clean['actor_gradients'], longer['actor_gradients']):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _numpy_losses(agent, batch):
    """Return (critic loss, actor loss) computed episode by episode, without padding."""
    cfg = agent.config
    errors, actor_q = [], []
    for row, length in enumerate(batch['length']):
        ep = {key: batch[key][row:row + 1, :length] for key in batch if key != 'length'}
        ones = np.ones((1, length + 1), bool)
        ext_state = np.concatenate([ep['state'][:, :1], ep['next_state']], axis=1)
        ext_last = np.concatenate([ep['last_action'][:, :1], ep['action']], axis=1)
        next_action = agent.target_actor([ext_state, ext_last, ones] + zero_state(
            1, cfg.actor_lstm_units))[0].numpy()
        next_q = agent.target_critic([ext_state, ext_last, next_action, ones] + zero_state(
            1, cfg.critic_lstm_units))[0].numpy()[0, 1:]
        target = ep['reward'][0] + cfg.gamma * (1.0 - ep['done'][0]) * next_q
        mask = ones[:, :length]
        q = agent.critic([ep['state'], ep['last_action'], ep['action'], mask]
                         + zero_state(1, cfg.critic_lstm_units))[0].numpy()[0]
        errors.append((target - q) ** 2)
        mu = agent.actor([ep['state'], ep['last_action'], mask]
                         + zero_state(1, cfg.actor_lstm_units))[0].numpy()
        actor_q.append(agent.critic([ep['state'], ep['last_action'], mu, mask]
                                    + zero_state(1, cfg.critic_lstm_units))[0].numpy()[0])
    return np.mean(np.concatenate(errors)), -np.mean(np.concatenate(actor_q))


def test_critic_loss_is_masked_squared_td_error(agent):
    """The critic loss is mean (y - Q)^2 over valid steps; the actor loss -mean Q(h, mu)."""
    # Targets that differ from the online networks, as after some training.
    agent.soft_update_targets(1.0)
    for variable in agent.target_critic.weights:
        variable.assign(variable.numpy() * 1.1 + 0.01)
    batch = ragged_batch()
    critic_loss, actor_loss = _numpy_losses(agent, batch)
    result = agent.gradients(batch)
    assert result['critic_loss'] == pytest.approx(critic_loss, rel=1e-5)
    assert result['actor_loss'] == pytest.approx(actor_loss, rel=1e-5, abs=1e-7)
    count = agent.update_count
    metrics = agent.train_step(batch)
    assert metrics['critic_loss'] == pytest.approx(critic_loss, rel=1e-5)
    assert agent.update_count == count + 1


def test_tbptt_windows_carry_the_recurrent_state(agent):
    """Windows of k1 steps (k2 >= k1) give the losses of one pass over the whole sequence."""
    batch = ragged_batch(lengths=(12, 5, 9), seed=3)
    expected = agent.gradients(batch)   # k1 = k2 = 16: one window
    for k1, k2 in ((4, 4), (3, 5)):
        windowed = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(tbptt_k1=k1, tbptt_k2=k2))
        for name in ('actor', 'critic', 'target_actor', 'target_critic'):
            getattr(windowed, name).set_weights(getattr(agent, name).get_weights())
        # Zero learning rates: every window sees the same weights (the targets are
        # computed once per batch), so the windows' losses are pieces of the
        # whole-sequence losses iff the state is carried from window to window.
        windowed.actor_optimizer.learning_rate.assign(0.0)
        windowed.critic_optimizer.learning_rate.assign(0.0)
        metrics = windowed.train_step(batch)
        assert windowed.update_count == -(-12 // k1)
        for name in ('critic_loss', 'actor_loss', 'q_mean'):
            assert metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), (k1, k2)
    # Control: the same chunks started from the zero state give other losses.
    chunks = {key: np.concatenate([batch[key][:, i:i + 4] for i in (0, 4, 8)])
              for key in batch if key != 'length'}
    chunks['length'] = chunks['mask'].sum(axis=1)
    keep = chunks['length'] > 0
    chunks = {key: value[keep] for key, value in chunks.items()}
    restarted = agent.gradients(chunks)
    assert restarted['critic_loss'] != pytest.approx(expected['critic_loss'], rel=1e-3)


def test_training_updates_weights_and_soft_updates_targets(agent):
    """A training step moves the online networks; targets follow by tau."""
    before_actor = [w.numpy() for w in agent.actor.weights]
    before_target = [w.numpy() for w in agent.target_critic.weights]
    metrics = agent.train_step(ragged_batch())
    assert all(np.isfinite(v) for v in metrics.values())
    after_actor = [w.numpy() for w in agent.actor.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before_actor, after_actor))
    online = [w.numpy() for w in agent.critic.weights]
    for old, new, source in zip(before_target, agent.target_critic.weights, online):
        np.testing.assert_allclose(new.numpy(), 0.25 * source + 0.75 * old, atol=1e-6)
    old_target = [w.numpy() for w in agent.target_actor.weights]
    agent.soft_update_targets(0.5)
    for old, new, source in zip(old_target, agent.target_actor.weights, agent.actor.weights):
        np.testing.assert_allclose(new.numpy(), 0.5 * source.numpy() + 0.5 * old, atol=1e-6)


def test_act_is_deterministic_recurrent_and_resets(agent):
    """Acting carries the LSTM state and last action; begin_episode resets; noise on demand."""
    rng = np.random.default_rng(5)
    states = rng.normal(size=(6, STATE_DIM)).astype(np.float32)
    agent.begin_episode()
    first = np.stack([agent.act(s) for s in states])
    assert first.shape == (6, ACTION_DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(agent.last_action, first[-1])
    agent.begin_episode()
    assert not np.any(agent.last_action) and not np.any(agent.actor_state[0])
    again = np.stack([agent.act(s) for s in states])
    np.testing.assert_array_equal(first, again)
    # act equals the sequence actor on the history, last actions fed back.
    last = np.concatenate([np.zeros((1, ACTION_DIM), np.float32), first[:-1]])[np.newaxis]
    sequence = agent.actor([states[np.newaxis], last, np.ones((1, 6), bool)]
                           + zero_state(1, agent.config.actor_lstm_units))[0].numpy()[0]
    np.testing.assert_allclose(first, sequence, atol=1e-6)
    # The same state gives different actions as the history grows (it is recurrent).
    agent.begin_episode()
    repeated = np.stack([agent.act(states[0]) for _ in range(3)])
    assert not np.allclose(repeated[0], repeated[2])
    agent.begin_episode()
    noisy = np.stack([agent.act(s, explore=True) for s in states])
    assert not np.allclose(noisy, first) and np.all(np.abs(noisy) <= 1.0)
    with pytest.raises(ValueError):
        agent.act(np.zeros(STATE_DIM + 1))
    # The applied action, when given, is what the next step sees as last action.
    agent.begin_episode()
    agent.act(states[0])
    applied = np.array([0.5, -0.25], np.float32)
    replaced = agent.act(states[1], last_action=applied)
    last = np.stack([np.zeros(ACTION_DIM, np.float32), applied])[np.newaxis]
    expected = agent.actor([states[np.newaxis, :2], last, np.ones((1, 2), bool)]
                           + zero_state(1, agent.config.actor_lstm_units))[0].numpy()[0, 1]
    np.testing.assert_allclose(replaced, expected, atol=1e-6)
    assert not np.allclose(replaced, first[1])
    with pytest.raises(ValueError):
        agent.act(states[2], last_action=np.full(ACTION_DIM, np.nan))


def test_checkpoint_resume(tmp_path):
    """A loaded checkpoint has the same weights, optimiser state, noise and sampling."""
    rng = np.random.default_rng(6)
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM)
    for length in (3, 7, 11):
        buffer.add_episode(rng.normal(size=(length, STATE_DIM)),
                           rng.uniform(-1, 1, (length, ACTION_DIM)), rng.normal(size=length),
                           rng.normal(size=(length, STATE_DIM)), np.zeros(length))
    agent = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(tbptt_k1=4, tbptt_k2=4, noise='ou'))
    agent.update(buffer, 2)
    agent.act(np.ones(STATE_DIM), explore=True)
    path = agent.save_checkpoint(tmp_path / 'ckpt')
    assert sorted(p.name for p in path.iterdir()) == ['agent.json', 'rdpg.weights.h5']
    loaded = RdpgAgent.load_checkpoint(path)
    assert loaded.update_count == agent.update_count > 0
    assert loaded.config == agent.config
    for a, b in zip(agent.critic_optimizer.variables + agent.actor_optimizer.variables,
                    loaded.critic_optimizer.variables + loaded.actor_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(loaded.actor_optimizer.iterations) == agent.update_count
    for model in ('actor', 'critic', 'target_actor', 'target_critic'):
        for a, b in zip(getattr(agent, model).weights, getattr(loaded, model).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Resuming continues exactly: same batches, same updates, same noise.
    np.testing.assert_array_equal(agent.noise.sample(), loaded.noise.sample())
    first = agent.update(buffer, 1)
    second = loaded.update(buffer, 1)
    for name in first:
        np.testing.assert_allclose(first[name], second[name], rtol=1e-6)
    for a, b in zip(agent.actor.weights, loaded.actor.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-7)
    (path / 'agent.json').write_text('{"format": 1, "algorithm": "ddpg"}')
    with pytest.raises(ValueError):
        RdpgAgent.load_checkpoint(path)


def test_config_validation():
    """Inconsistent TBPTT settings and sizes are refused."""
    with pytest.raises(ValueError):
        RdpgConfig(tbptt_k1=10, tbptt_k2=5)
    with pytest.raises(ValueError):
        RdpgConfig(actor_lstm_units=())
    with pytest.raises(ValueError):
        RdpgConfig(noise='pink')
    assert RdpgConfig.from_dict(RdpgConfig().to_dict()) == RdpgConfig()


def test_smoke_training_on_partially_observed_pendulum():
    """RDPG acts and trains on Pendulum-v1 without angular velocity; losses stay finite."""
    gym = pytest.importorskip('gymnasium')
    env = gym.make('Pendulum-v1', max_episode_steps=60)
    agent = RdpgAgent(2, 1, tiny_config(tbptt_k1=20, tbptt_k2=30, batch_size=4,
                                        noise='gaussian', noise_sigma=0.3))
    buffer = EpisodeBuffer(2, 1)
    metrics = None
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        agent.begin_episode()
        done = False
        while not done:
            state = obs[:2].astype(np.float32)
            action = agent.act(state, explore=True)
            obs, reward, terminated, truncated, _ = env.step(2.0 * action)
            buffer.add_step(state, action, reward, obs[:2], terminated)
            done = terminated or truncated
        buffer.end_episode()
        metrics = agent.update(buffer, 2)
    env.close()
    assert len(buffer) == 3 and buffer.num_steps == 180
    assert agent.update_count == 3 * 2 * 3
    for name, values in metrics.items():
        assert values.shape == (2,) and np.all(np.isfinite(values)), name


# -- recurrent TD3 (the TD3 options; rtd3) -----------------------------------------------


def small_buffer(lengths=(3, 7, 11, 6), seed=11):
    """Return an episode buffer holding random episodes of the given lengths."""
    rng = np.random.default_rng(seed)
    buffer = EpisodeBuffer(STATE_DIM, ACTION_DIM)
    for length in lengths:
        buffer.add_episode(rng.normal(size=(length, STATE_DIM)),
                           rng.uniform(-1, 1, (length, ACTION_DIM)), rng.normal(size=length),
                           rng.normal(size=(length, STATE_DIM)),
                           np.arange(length) == length - 1)
    return buffer


def weight_sums(model):
    """Return (sum, sum of |.|) of a model's weights, in float64."""
    weights = [w.numpy().astype(np.float64) for w in model.weights]
    return (sum(float(np.sum(w)) for w in weights),
            sum(float(np.sum(np.abs(w))) for w in weights))


# Recorded with the code before the TD3 options: 3 batches (9 TBPTT windows, k1 4, k2 6).
RDPG_SUMS_AFTER_3_BATCHES = {
    'actor': (22.570432980115584, 203.6770973090679),
    'critic': (9.96065203291073, 134.5809116811579),
    'target_actor': (22.549148602261994, 203.66311926349954),
    'target_critic': (9.8295236850754, 134.51241374373058)}
RDPG_CRITIC_LOSSES = (0.8064640387892723, 0.9000048542022705, 0.6395042808282942)


@pytest.mark.parametrize('options', [{}, {'twin_critics': False, 'policy_delay': 1,
                                          'target_noise': 0.0, 'target_noise_clip': 0.3}])
def test_td3_options_off_update_exactly_as_before(options):
    """With the TD3 options off the update is RDPG's (numbers recorded before them)."""
    agent = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(tbptt_k1=4, tbptt_k2=6, **options))
    assert agent.critic2 is None and agent.target_critic2 is None
    metrics = agent.update(small_buffer(), 3)
    assert agent.update_count == 9
    np.testing.assert_allclose(metrics['critic_loss'], RDPG_CRITIC_LOSSES, rtol=1e-6)
    for name, sums in RDPG_SUMS_AFTER_3_BATCHES.items():
        np.testing.assert_allclose(weight_sums(getattr(agent, name)), sums, rtol=1e-6,
                                   err_msg=name)


def _target_by_hand(agent, batch, target_critic):
    """Return r + gamma (1 - done) Q'(h', mu'(h')) (B, T) from one target critic, no noise."""
    cfg = agent.config
    batch_size = len(batch['mask'])
    ones = np.ones((batch_size, 1), bool)
    ext_state = np.concatenate([batch['state'][:, :1], batch['next_state']], axis=1)
    ext_last = np.concatenate([batch['last_action'][:, :1], batch['action']], axis=1)
    ext_mask = np.concatenate([ones, batch['mask']], axis=1)
    next_action = agent.target_actor([ext_state, ext_last, ext_mask] + zero_state(
        batch_size, cfg.actor_lstm_units))[0].numpy()
    next_q = target_critic([ext_state, ext_last, next_action, ext_mask] + zero_state(
        batch_size, cfg.critic_lstm_units))[0].numpy()[:, 1:]
    return batch['reward'] + cfg.gamma * (1.0 - batch['done']) * next_q


def test_twin_critics_take_the_smaller_target_and_the_actor_uses_critic_one():
    """Take the TD target min(Q1', Q2'); train both critics; the actor sees critic 1 only."""
    agent = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(twin_critics=True))
    # Its own encoder and head, its own target (a copy at first).
    own = {id(v) for v in agent.critic.weights}
    assert not own & {id(v) for v in agent.critic2.weights}
    assert {id(v) for v in agent.critic2_encoder.weights} <= {
        id(v) for v in agent.critic2.weights}
    for a, b in zip(agent.critic2.weights, agent.target_critic2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(agent.critic.weights[0].numpy(), agent.critic2.weights[0].numpy())
    batch = ragged_batch()
    mask = batch['mask']
    result = agent.gradients(batch)
    first = _target_by_hand(agent, batch, agent.target_critic)
    second = _target_by_hand(agent, batch, agent.target_critic2)
    target = result['target']
    assert np.all(target[mask] <= first[mask] + 1e-6) and np.all(
        target[mask] <= second[mask] + 1e-6)
    np.testing.assert_allclose(target[mask], np.minimum(first, second)[mask], rtol=1e-5,
                               atol=1e-6)
    assert np.any(first[mask] != second[mask])
    # The critic loss is the sum of both critics' losses on the same targets.
    critic_zero = zero_state(3, agent.config.critic_lstm_units)
    inputs = [batch['state'], batch['last_action'], batch['action'], mask]
    losses = [np.mean((target - critic(inputs + critic_zero)[0].numpy())[mask] ** 2)
              for critic in (agent.critic, agent.critic2)]
    assert result['critic_loss'] == pytest.approx(sum(losses), rel=1e-5)
    assert len(result['critic_gradients']) == len(agent.critic.trainable_variables) + len(
        agent.critic2.trainable_variables)
    assert all(np.any(g) for g in result['critic_gradients'][-2:])
    # Changing critic 2 leaves the actor's loss and gradient as they were.
    for variable in agent.critic2.weights:
        variable.assign(variable.numpy() * 1.5 + 0.1)
    changed = agent.gradients(batch)
    assert changed['actor_loss'] == result['actor_loss']
    for a, b in zip(result['actor_gradients'], changed['actor_gradients']):
        np.testing.assert_array_equal(a, b)
    assert changed['critic_loss'] != pytest.approx(result['critic_loss'], rel=1e-3)
    # A training step moves both critics and both critic targets.
    before = [[w.numpy() for w in getattr(agent, name).weights]
              for name in ('critic', 'critic2', 'target_critic', 'target_critic2')]
    agent.train_step(batch)
    for name, old in zip(('critic', 'critic2', 'target_critic', 'target_critic2'), before):
        new = [w.numpy() for w in getattr(agent, name).weights]
        assert any(not np.array_equal(a, b) for a, b in zip(old, new)), name


def test_target_smoothing_changes_the_target_only_with_noise_and_is_seeded():
    """Clipped noise on mu' changes the targets when target_noise > 0; the seed fixes it."""
    batch = ragged_batch()
    mask = batch['mask']
    plain = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config())
    expected = plain.gradients(batch)['target']
    np.testing.assert_array_equal(plain.gradients(batch)['target'], expected)
    np.testing.assert_allclose(expected[mask], _target_by_hand(plain, batch,
                                                               plain.target_critic)[mask],
                               rtol=1e-5, atol=1e-6)
    # Noise clipped to zero is no noise.
    clipped = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(target_noise=0.5,
                                                           target_noise_clip=0.0))
    np.testing.assert_array_equal(clipped.gradients(batch)['target'], expected)
    noisy, again = (RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(target_noise=0.3))
                    for _ in range(2))
    first = [noisy.gradients(batch)['target'] for _ in range(2)]
    assert not np.allclose(first[0][mask], expected[mask])
    assert not np.allclose(first[0][mask], first[1][mask])   # fresh noise each time
    for a, b in zip(first, [again.gradients(batch)['target'] for _ in range(2)]):
        np.testing.assert_array_equal(a, b)   # the same seed, the same noise
    # Small noise moves the targets a little (the target critic is smooth in the action).
    small = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(target_noise=1e-4)).gradients(
        batch)['target'][mask]
    assert np.any(small != expected[mask])
    np.testing.assert_allclose(small, expected[mask], atol=1e-3)


def _weights(agent, name):
    """Return copies of a network's weights."""
    return [w.numpy() for w in getattr(agent, name).weights]


def _changed(before, after) -> bool:
    """Tell whether any weight differs."""
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_policy_delay_steps_the_actor_and_targets_every_nth_window():
    """policy_delay 2: critics every update; actor and all targets every second one."""
    agent = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(twin_critics=True, policy_delay=2))
    batch = ragged_batch()   # 5 steps: one window (k1 = 16) per train_step
    names = ('actor', 'critic', 'critic2', 'target_actor', 'target_critic', 'target_critic2')
    for update in range(4):
        before = {name: _weights(agent, name) for name in names}
        metrics = agent.train_step(batch)
        turn = update % 2 == 1
        assert agent.update_count == update + 1
        for name in ('critic', 'critic2'):
            assert _changed(before[name], _weights(agent, name)), (update, name)
        for name in ('actor', 'target_actor', 'target_critic', 'target_critic2'):
            assert _changed(before[name], _weights(agent, name)) == turn, (update, name)
        assert (metrics['actor_grad_norm'] > 0) == turn
        assert metrics['critic_grad_norm'] > 0 and np.isfinite(metrics['actor_loss'])
    assert int(agent.actor_optimizer.iterations) == 2
    assert int(agent.critic_optimizer.iterations) == 4
    # On its turn the delayed step is RDPG's step (the same starting weights, both networks).
    plain = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config())
    delayed = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(policy_delay=2))
    delayed.update_count = 1   # (fresh optimisers in both: the next window is a turn)
    expected, metrics = plain.train_step(batch), delayed.train_step(batch)
    assert metrics == pytest.approx(expected, rel=1e-6)
    for name in ('actor', 'critic', 'target_actor', 'target_critic'):
        for a, b in zip(_weights(plain, name), _weights(delayed, name)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
    # The turn counts TBPTT windows across batches: 3 windows of 4 steps per batch.
    windowed = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(tbptt_k1=4, tbptt_k2=4,
                                                            policy_delay=3))
    long = ragged_batch(lengths=(12, 5, 9), seed=3)
    for _ in range(3):
        metrics = windowed.train_step(long)
        assert np.isfinite(metrics['actor_grad_norm']) and metrics['actor_grad_norm'] > 0
    assert windowed.update_count == 9
    assert int(windowed.actor_optimizer.iterations) == 3
    assert int(windowed.critic_optimizer.iterations) == 9


def test_rtd3_checkpoint_resumes_exactly(tmp_path):
    """Twin critics, smoothing and delay: a loaded agent continues with identical updates."""
    buffer = small_buffer()
    config = tiny_config(tbptt_k1=4, tbptt_k2=4, twin_critics=True, policy_delay=2,
                         target_noise=0.2, target_noise_clip=0.5)
    agent = RdpgAgent(STATE_DIM, ACTION_DIM, config)
    agent.update(buffer, 1)
    if agent.update_count % 2 == 0:   # an odd number of windows so far: mid-delay
        agent.train_step(ragged_batch(lengths=(3, 2, 1)))
    assert agent.update_count % 2 == 1
    path = agent.save_checkpoint(tmp_path / 'ckpt')
    assert sorted(p.name for p in path.iterdir()) == ['agent.json', 'rdpg.weights.h5']
    loaded = RdpgAgent.load_checkpoint(path)
    assert loaded.config == config and loaded.update_count == agent.update_count
    np.testing.assert_array_equal(loaded._smoothing.state.numpy(),
                                  agent._smoothing.state.numpy())
    names = ('actor', 'critic', 'critic2', 'target_actor', 'target_critic', 'target_critic2')
    for name in names:
        for a, b in zip(_weights(agent, name), _weights(loaded, name)):
            np.testing.assert_array_equal(a, b)
    first, second = agent.update(buffer, 2), loaded.update(buffer, 2)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    for name in names:
        for a, b in zip(_weights(agent, name), _weights(loaded, name)):
            np.testing.assert_array_equal(a, b)
    # A fresh agent (another smoothing noise draw) would not have given these.
    fresh = RdpgAgent(STATE_DIM, ACTION_DIM, config)
    assert fresh._smoothing.state.numpy().tolist() != agent._smoothing.state.numpy().tolist()


def test_checkpoint_without_the_td3_options_loads_as_rdpg(tmp_path):
    """A checkpoint from before the TD3 options (no such fields, no smoothing state) loads."""
    import json
    buffer = small_buffer()
    agent = RdpgAgent(STATE_DIM, ACTION_DIM, tiny_config(tbptt_k1=4, tbptt_k2=4))
    agent.update(buffer, 1)
    path = agent.save_checkpoint(tmp_path / 'ckpt')
    manifest = json.loads((path / 'agent.json').read_text())
    for key in ('twin_critics', 'target_noise', 'target_noise_clip', 'policy_delay'):
        del manifest['config'][key]
    del manifest['smoothing_state']
    (path / 'agent.json').write_text(json.dumps(manifest))
    loaded = RdpgAgent.load_checkpoint(path)
    assert loaded.config == agent.config and loaded.critic2 is None
    first, second = agent.update(buffer, 1), loaded.update(buffer, 1)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    for a, b in zip(agent.critic.weights, loaded.critic.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_td3_option_validation():
    """Negative noise and a policy delay below 1 or not an integer are refused."""
    for options in ({'target_noise': -0.1}, {'target_noise_clip': -1.0}, {'policy_delay': 0},
                    {'policy_delay': 1.5}):
        with pytest.raises(ValueError):
            RdpgConfig(**options)
    config = RdpgConfig(twin_critics=True, policy_delay=2.0, target_noise=0.2)
    assert config.policy_delay == 2 and isinstance(config.policy_delay, int)
    assert RdpgConfig.from_dict(config.to_dict()) == config
