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
