"""DdpgAgent: acting, the compiled update against numpy, clipping, checkpoints."""

import json

import keras
import numpy as np
import pytest

from tspace_ros.agents.ddpg import clip_gradients, DdpgAgent, DdpgConfig, METRIC_NAMES
from tspace_ros.agents.replay import InMemoryReplay

STATE_DIM, ACTION_DIM = 4, 2
SMALL = {'actor_units': (32, 32), 'critic_state_units': (8,), 'critic_action_units': (8,),
         'critic_units': (32, 32)}


def _replay(n=300, seed=0):
    """Return a replay buffer of n random transitions."""
    rng = np.random.default_rng(seed)
    replay = InMemoryReplay(1000, STATE_DIM, ACTION_DIM)
    replay.add_batch(rng.normal(size=(n, STATE_DIM)), rng.uniform(-1, 1, (n, ACTION_DIM)),
                     rng.normal(-2.0, 1.0, n), rng.normal(size=(n, STATE_DIM)),
                     rng.random(n) < 0.2)
    return replay


def _dense(x, layer, activation=None):
    """Apply a Keras Dense layer's weights in numpy (float64)."""
    kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
    y = x @ kernel + bias
    return np.maximum(y, 0.0) if activation == 'relu' else y


def _np_actor(model, state):
    """Numpy forward pass of an actor built by build_actor."""
    x = state
    for name in ('hidden_1', 'hidden_2'):
        x = _dense(x, model.get_layer(name), 'relu')
    return np.tanh(_dense(x, model.get_layer('action')))


def _np_critic(model, state, action):
    """Numpy forward pass of a critic built with one-layer branches and two hidden layers."""
    s = _dense(state, model.get_layer('state_1'), 'relu')
    a = _dense(action, model.get_layer('action_1'), 'relu')
    x = np.concatenate([s, a], axis=1)
    for name in ('hidden_1', 'hidden_2'):
        x = _dense(x, model.get_layer(name), 'relu')
    return _dense(x, model.get_layer('q'))[:, 0]


def _weights(model):
    """Return copies of a model's weights."""
    return [w.copy() for w in model.get_weights()]


def test_config_defaults_and_validation():
    """The defaults are tspace's except the batch size; bad values are refused."""
    cfg = DdpgConfig()
    assert (cfg.gamma, cfg.tau, cfg.actor_lr, cfg.critic_lr) == (0.99, 0.005, 1e-3, 1e-3)
    assert cfg.batch_size == 256 and cfg.grad_clip_norm is None
    assert (cfg.noise, cfg.noise_sigma, cfg.ou_theta, cfg.ou_dt) == ('ou', 0.2, 0.15, 0.01)
    assert cfg.actor_units == (256, 256) and cfg.critic_state_units == (16, 32)
    assert DdpgConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ({'gamma': 1.5}, {'tau': 0}, {'batch_size': 0}, {'grad_clip_norm': -1.0},
                {'noise': 'pink'}):
        with pytest.raises(ValueError):
            DdpgConfig(**bad)


def test_act_deterministic_noise_only_when_exploring():
    """explore=False repeats exactly; explore=True adds noise; single and batch agree."""
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(noise='gaussian', noise_sigma=0.3,
                                                        **SMALL))
    states = np.random.default_rng(0).normal(size=(5, STATE_DIM)).astype(np.float32)
    single = agent.act(states[0])
    assert single.shape == (ACTION_DIM,) and single.dtype == np.float32
    np.testing.assert_array_equal(single, agent.act(states[0], explore=False))
    batch = agent.act(states)
    assert batch.shape == (5, ACTION_DIM)
    np.testing.assert_allclose(batch[0], single, atol=1e-6)
    np.testing.assert_allclose(batch, _np_actor(agent.actor, states), atol=1e-6)
    noisy = agent.act(states, explore=True)
    assert noisy.shape == (5, ACTION_DIM) and np.all(np.abs(noisy) <= 1.0)
    assert np.abs(noisy - batch).mean() > 0.1
    assert not np.array_equal(agent.act(states[0], explore=True), single)
    np.testing.assert_array_equal(agent.act(states[0]), single)     # noise left no trace
    with pytest.raises(ValueError):
        agent.act(np.zeros(STATE_DIM + 1))


def test_ou_exploration_resets_each_episode():
    """With OU noise, begin_episode restarts the process (same seed: same noise again)."""
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(**SMALL))
    state = np.zeros(STATE_DIM)
    agent.begin_episode()
    first = [agent.act(state, explore=True) for _ in range(3)]
    assert not np.array_equal(first[0], first[2])


def test_train_step_matches_numpy_td_target_and_soft_update():
    """Critic loss = mean (r s + gamma (1 - d) Q'(s', mu'(s')) - Q(s, a))^2; targets move tau."""
    cfg = DdpgConfig(gamma=0.9, tau=0.1, reward_scale=0.5, actor_units=(32, 32),
                     critic_state_units=(8,), critic_action_units=(8,), critic_units=(32, 32),
                     critic_final_init=0.5, seed=3)
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, cfg)
    batch = _replay(6).sample(6, np.random.default_rng(5))
    batch['done'][:2] = [1.0, 0.0]
    # Make the targets differ from the online networks so the test sees both.
    agent.target_critic.set_weights([w * 1.1 for w in agent.critic.get_weights()])
    agent.target_actor.set_weights([w * 0.9 for w in agent.actor.get_weights()])
    s, a, s2 = (batch[k].astype(np.float64) for k in ('state', 'action', 'next_state'))
    next_q = _np_critic(agent.target_critic, s2, _np_actor(agent.target_actor, s2))
    y = 0.5 * batch['reward'] + 0.9 * (1 - batch['done']) * next_q
    q = _np_critic(agent.critic, s, a)
    before = {name: _weights(getattr(agent, name))
              for name in ('actor', 'critic', 'target_actor', 'target_critic')}

    metrics = agent.train_step(batch)
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics['critic_loss'] == pytest.approx(np.mean((y - q) ** 2), rel=1e-5)
    assert metrics['q_mean'] == pytest.approx(q.mean(), rel=1e-5, abs=1e-6)
    # The actor loss uses the updated critic and the actor before its update.
    agent_before = DdpgAgent(STATE_DIM, ACTION_DIM, cfg)
    agent_before.actor.set_weights(before['actor'])
    expected_actor_loss = -_np_critic(agent.critic, s, _np_actor(agent_before.actor, s)).mean()
    assert metrics['actor_loss'] == pytest.approx(expected_actor_loss, rel=1e-5, abs=1e-6)
    for online, target in (('actor', 'target_actor'), ('critic', 'target_critic')):
        online_after = getattr(agent, online).get_weights()
        for old, new, src, prev in zip(before[target], getattr(agent, target).get_weights(),
                                       online_after, before[online]):
            np.testing.assert_allclose(new, 0.1 * src + 0.9 * old, rtol=1e-6, atol=1e-7)
        assert any(not np.array_equal(x, y) for x, y in zip(online_after, before[online]))
    assert agent.update_count == 1
    assert int(agent.critic_optimizer.iterations) == 1


@pytest.mark.parametrize('clip', [None, 1e-3])
def test_gradient_clipping_limits_the_applied_norm(clip):
    """With SGD(1) the critic's step is the gradient: its norm is min(norm, clip)."""
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(grad_clip_norm=clip, **SMALL))
    agent.critic_optimizer = keras.optimizers.SGD(1.0)   # before the first (tracing) call
    before = _weights(agent.critic)
    metrics = agent.train_step(_replay(64).sample(64, np.random.default_rng(0)))
    step = np.sqrt(sum(np.sum((b - a) ** 2) for b, a in zip(before, agent.critic.get_weights())))
    assert metrics['critic_grad_norm'] > 1e-2
    expected = metrics['critic_grad_norm'] if clip is None else clip
    assert step == pytest.approx(expected, rel=1e-3)


def test_clip_gradients_helper():
    """clip_gradients scales to the global norm and reports the norm before clipping."""
    import tensorflow as tf
    grads = [tf.constant([3.0, 0.0]), tf.constant([[0.0], [4.0]])]
    clipped, norm = clip_gradients(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert float(tf.linalg.global_norm(clipped)) == pytest.approx(1.0)
    same, norm = clip_gradients(grads, None)
    assert float(norm) == pytest.approx(5.0) and same is grads


def test_update_returns_metrics_per_update():
    """Update samples config.batch_size transitions per update and returns arrays."""
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(batch_size=32, **SMALL))
    metrics = agent.update(_replay(), 5)
    assert set(metrics) == set(METRIC_NAMES)
    assert all(v.shape == (5,) and np.all(np.isfinite(v)) for v in metrics.values())
    assert agent.update_count == 5 and int(agent.actor_optimizer.iterations) == 5
    with pytest.raises(ValueError):
        agent.update(InMemoryReplay(10, STATE_DIM, ACTION_DIM), 1)


def test_checkpoint_resumes_identically(tmp_path):
    """A loaded agent continues exactly: same losses, actions, noise, optimizer iterations."""
    cfg = DdpgConfig(batch_size=16, normalize_observations=True, normalize_rewards=True,
                     grad_clip_norm=10.0, seed=7, **SMALL)
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, cfg)
    replay = _replay()
    agent.update(replay, 12)
    agent.act(np.zeros(STATE_DIM), explore=True)     # advance the OU process
    path = agent.save_checkpoint(tmp_path / 'ckpt')
    agent.save_checkpoint(tmp_path / 'ckpt')          # overwriting works
    assert {p.name for p in path.iterdir()} >= {
        'actor.keras', 'critic.keras', 'target_actor.weights.h5', 'target_critic.weights.h5',
        'optimizers.index', 'normalizers.npz', 'agent.json'}
    assert not list(tmp_path.glob('.ckpt*'))
    loaded = DdpgAgent.load_checkpoint(path)
    assert loaded.config == cfg and loaded.update_count == 12
    for opt in ('actor_optimizer', 'critic_optimizer'):
        assert int(getattr(loaded, opt).iterations) == int(getattr(agent, opt).iterations) == 12
        for a, b in zip(getattr(agent, opt).variables, getattr(loaded, opt).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for name in ('actor', 'critic', 'target_actor', 'target_critic'):
        for a, b in zip(getattr(agent, name).get_weights(), getattr(loaded, name).get_weights()):
            np.testing.assert_array_equal(a, b)
    state = np.ones(STATE_DIM)
    np.testing.assert_array_equal(agent.act(state, explore=True),
                                  loaded.act(state, explore=True))
    standalone = keras.models.load_model(path / 'actor.keras')   # takes normalised states
    normalised = loaded.obs_normalizer.normalize(state[None])
    np.testing.assert_allclose(standalone(normalised).numpy()[0], loaded.act(state), atol=1e-6)
    expected, resumed = agent.update(replay, 3), loaded.update(replay, 3)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(expected[name], resumed[name])
    assert int(loaded.actor_optimizer.iterations) == 15
    np.testing.assert_array_equal(agent.act(state), loaded.act(state))


def test_load_refuses_other_checkpoints(tmp_path):
    """A directory whose agent.json is not a DDPG checkpoint is refused."""
    (tmp_path / 'agent.json').write_text(json.dumps({'format': 1, 'algorithm': 'rdpg'}))
    with pytest.raises(ValueError):
        DdpgAgent.load_checkpoint(tmp_path)


# ---- TD3 and the stabilisers ---------------------------------------------------------------

def _copied(model):
    return [w.copy() for w in model.get_weights()]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_td3_delays_the_actor_and_targets_and_trains_twin_critics():
    from tspace_ros.agents.ddpg import TD3_OPTIONS
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(**SMALL, **TD3_OPTIONS, seed=3))
    assert agent.critic2 is not None and agent.config.policy_delay == 2
    replay, rng = _replay(), np.random.default_rng(0)
    models = (agent.actor, agent.critic, agent.critic2, agent.target_actor,
              agent.target_critic)
    before = [_copied(m) for m in models]
    agent.train_step(replay.sample(32, rng))        # update 1: critics only
    after = [_copied(m) for m in models]
    assert _same(before[0], after[0]) and _same(before[3], after[3])   # actor, its target
    assert _same(before[4], after[4])                                   # target critic
    assert not _same(before[1], after[1]) and not _same(before[2], after[2])
    metrics = agent.train_step(replay.sample(32, rng))   # update 2: the actor's turn
    assert not _same(after[0], _copied(agent.actor))
    assert not _same(after[4], _copied(agent.target_critic))
    assert metrics['actor_grad_norm'] > 0


def test_a_td3_checkpoint_resumes_exactly(tmp_path):
    from tspace_ros.agents.ddpg import TD3_OPTIONS
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(**SMALL, **TD3_OPTIONS, seed=5,
                                                        batch_size=16))
    replay = _replay()
    agent.update(replay, 3)
    agent.save_checkpoint(tmp_path / 'td3')
    loaded = DdpgAgent.load_checkpoint(tmp_path / 'td3')
    assert _same(_copied(loaded.critic2), _copied(agent.critic2))
    assert _same(_copied(loaded.target_critic2), _copied(agent.target_critic2))
    ours, theirs = agent.update(replay, 3), loaded.update(replay, 3)
    np.testing.assert_array_equal(ours['critic_loss'], theirs['critic_loss'])
    assert _same(_copied(agent.actor), _copied(loaded.actor))


def test_the_huber_loss_is_linear_for_large_td_errors():
    replay = _replay()
    batch = replay.sample(64, np.random.default_rng(1))
    batch['reward'] = np.full_like(batch['reward'], 1000.0)   # TD errors of about 1000
    losses = {}
    for kind in ('mse', 'huber'):
        agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(**SMALL, critic_loss=kind,
                                                            huber_delta=1.0, seed=2))
        losses[kind] = agent.train_step(batch)['critic_loss']
    assert losses['mse'] == pytest.approx(1000.0 ** 2, rel=0.05)
    assert losses['huber'] == pytest.approx(1000.0 - 0.5, rel=0.05)
    with pytest.raises(ValueError, match='critic_loss'):
        DdpgConfig(critic_loss='l1')


def test_the_preactivation_penalty_keeps_the_actor_off_saturation():
    replay = _replay()
    means = {}
    for penalty in (0.0, 1.0):
        agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(
            **SMALL, preactivation_penalty=penalty, actor_final_init=2.0, actor_lr=1e-2,
            batch_size=64, seed=4))
        metrics = agent.update(replay, 150)
        means[penalty] = float(np.mean(metrics['preactivation_mean'][-20:]))
    assert means[1.0] < 0.5 * means[0.0], means
