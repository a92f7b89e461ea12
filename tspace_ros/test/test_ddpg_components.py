"""DDPG building blocks: networks, exploration noise, replay buffer, normalisation."""

import math
import subprocess
import sys

import numpy as np
import pytest

from tspace_ros.agents.noise import GaussianNoise, make_noise, OrnsteinUhlenbeckNoise
from tspace_ros.agents.normalization import ObservationNormalizer, RewardScaler, RunningMeanStd
from tspace_ros.agents.replay import InMemoryReplay, TRANSITION_KEYS, TransitionSource


def test_numpy_modules_do_not_import_tensorflow():
    """Noise, replay, normalisation and the gym adapter stay TF-free (vehicle side, tools)."""
    code = ('import sys, tspace_ros.agents, tspace_ros.agents.noise, tspace_ros.agents.replay, '
            'tspace_ros.agents.normalization, tspace_ros.agents.gym_adapter; '
            'sys.exit("tensorflow" in sys.modules or "keras" in sys.modules)')
    assert subprocess.run([sys.executable, '-c', code], timeout=60).returncode == 0


# -- networks ------------------------------------------------------------------------------

def test_actor_shapes_names_and_tanh_init():
    """The actor is 2 x 256 ReLU + tanh, final kernel in +-0.003, any batch size."""
    from tspace_ros.agents.networks import build_actor
    actor = build_actor(7, 3, seed=1)
    assert actor.input_shape == (None, 7) and actor.output_shape == (None, 3)
    units = {layer.name: layer.units for layer in actor.layers if hasattr(layer, 'units')}
    assert units == {'hidden_1': 256, 'hidden_2': 256, 'action': 3}
    kernel, bias = actor.get_layer('action').get_weights()
    assert np.all(np.abs(kernel) <= 0.003) and np.abs(kernel).max() > 0.002
    assert np.all(bias == 0)
    assert actor.get_layer('action').activation.__name__ == 'tanh'
    for batch in (1, 5):
        out = actor(np.random.default_rng(0).normal(size=(batch, 7)).astype(np.float32))
        assert out.shape == (batch, 3)
        assert np.all(np.abs(out) < 0.1)     # small initial actions
    big = actor(np.full((2, 7), 1e4, np.float32)).numpy()
    assert np.all(np.abs(big) <= 1.0)


def test_critic_shapes_and_branches():
    """The critic: state 16 -> 32, action 32, concat, 256-256-1; empty branches = plain MLP."""
    from tspace_ros.agents.networks import build_critic
    critic = build_critic(7, 3, seed=1)
    units = {layer.name: layer.units for layer in critic.layers if hasattr(layer, 'units')}
    assert units == {'state_1': 16, 'state_2': 32, 'action_1': 32, 'hidden_1': 256,
                     'hidden_2': 256, 'q': 1}
    assert critic.get_layer('concat').output.shape == (None, 64)
    q = critic([np.zeros((4, 7), np.float32), np.zeros((4, 3), np.float32)])
    assert q.shape == (4, 1)
    mlp = build_critic(7, 3, state_units=(), action_units=(), hidden_units=(256, 256))
    assert mlp.get_layer('concat').output.shape == (None, 10)
    assert mlp.get_layer('hidden_1').get_weights()[0].shape == (10, 256)


def test_networks_are_seeded():
    """The same seed gives the same initial weights, another seed different ones."""
    from tspace_ros.agents.networks import build_actor
    a, b, c = build_actor(3, 1, seed=5), build_actor(3, 1, seed=5), build_actor(3, 1, seed=6)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


# -- noise ---------------------------------------------------------------------------------

def test_ou_step_statistics():
    """OU increments: x' - (1 - theta dt) x ~ N(0, sigma^2 dt); variance grows as predicted."""
    sigma, theta, dt, n, steps = 0.2, 0.15, 0.01, 4000, 300
    noise = OrnsteinUhlenbeckNoise(1, sigma=sigma, theta=theta, dt=dt, seed=3)
    xs = np.stack([noise.sample(n)[:, 0] for _ in range(steps)])      # (steps, n)
    residual = xs[1:] - (1 - theta * dt) * xs[:-1]
    assert abs(residual.std() - sigma * math.sqrt(dt)) < 0.01 * sigma * math.sqrt(dt)
    assert abs(residual.mean()) < 1e-3 * sigma
    decay = (1 - theta * dt) ** 2
    expected_var = sigma ** 2 * dt * (1 - decay ** steps) / (1 - decay)
    assert abs(xs[-1].var() / expected_var - 1) < 0.1
    assert abs(xs[-1].mean()) < 4 * math.sqrt(expected_var / n)
    lag1 = np.corrcoef(xs[-2], xs[-1])[0, 1]
    assert lag1 > 0.99      # strongly correlated in time (1 - theta dt = 0.9985)


def test_ou_reset_seed_and_state():
    """Reset returns to mu; the same seed repeats; get/set_state continues exactly."""
    a = OrnsteinUhlenbeckNoise(2, seed=1)
    b = OrnsteinUhlenbeckNoise(2, seed=1)
    first = [a.sample() for _ in range(5)]
    np.testing.assert_array_equal(first, [b.sample() for _ in range(5)])
    state = a.get_state()
    expected = [a.sample() for _ in range(3)]
    c = OrnsteinUhlenbeckNoise(2, seed=99)
    c.set_state(state)
    np.testing.assert_array_equal(expected, [c.sample() for _ in range(3)])
    a.reset()
    assert np.all(a._x == 0.0)
    assert a.sample().shape == (2,) and a.sample(4).shape == (4, 2)


def test_gaussian_noise_and_factory():
    """Gaussian noise has mean 0 and std sigma; make_noise picks the kind."""
    noise = GaussianNoise(3, sigma=0.1, seed=0)
    x = noise.sample(20000)
    assert x.shape == (20000, 3)
    assert abs(x.mean()) < 0.005 and abs(x.std() - 0.1) < 0.005
    assert isinstance(make_noise('ou', 2, 0.2), OrnsteinUhlenbeckNoise)
    assert isinstance(make_noise('gaussian', 2, 0.2), GaussianNoise)
    with pytest.raises(ValueError):
        make_noise('pink', 2, 0.2)


# -- replay --------------------------------------------------------------------------------

def _fill(replay, start, n):
    """Add n transitions whose state is their index (start, start+1, ...)."""
    for i in range(start, start + n):
        replay.add(np.full(2, i), np.full(1, -i), float(i), np.full(2, i + 1), i % 2 == 0)


def test_replay_ring_buffer_wraps():
    """Beyond capacity the oldest transitions go; a too large add_batch keeps the newest."""
    replay = InMemoryReplay(5, 2, 1)
    assert isinstance(replay, TransitionSource)
    _fill(replay, 0, 7)
    assert len(replay) == 5 and replay.total_added == 7
    assert sorted(replay._data['state'][:, 0]) == [2, 3, 4, 5, 6]
    states = np.arange(12, dtype=np.float32)[:, None].repeat(2, 1)
    replay.add_batch(states, np.zeros((12, 1)), np.zeros(12), states, np.zeros(12))
    assert sorted(replay._data['state'][:, 0]) == [7, 8, 9, 10, 11]
    batch = replay.sample(3, np.random.default_rng(0))
    assert set(batch) == set(TRANSITION_KEYS)
    assert batch['state'].shape == (3, 2) and batch['action'].shape == (3, 1)
    assert batch['reward'].shape == (3,) and batch['done'].shape == (3,)
    assert all(v.dtype == np.float32 for v in batch.values())
    with pytest.raises(ValueError):
        replay.add_batch(np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(2), np.zeros((2, 2)),
                         np.zeros(2))
    with pytest.raises(ValueError):
        InMemoryReplay(3, 2, 1).sample(4, np.random.default_rng(0))


def test_replay_samples_uniformly_and_consistently(tmp_path):
    """Every stored transition is drawn equally often, its columns kept together."""
    replay = InMemoryReplay(10, 2, 1)
    _fill(replay, 0, 13)                 # wrapped: holds 3..12
    batch = replay.sample(100_000, np.random.default_rng(1))
    counts = np.bincount(batch['state'][:, 0].astype(int), minlength=13)
    assert np.all(counts[:3] == 0)
    assert np.all(np.abs(counts[3:] - 10_000) < 500)          # ~5 sigma
    np.testing.assert_array_equal(batch['action'][:, 0], -batch['state'][:, 0])
    np.testing.assert_array_equal(batch['next_state'][:, 0], batch['state'][:, 0] + 1)
    np.testing.assert_array_equal(batch['done'], batch['state'][:, 0] % 2 == 0)
    replay.save(tmp_path / 'replay.npz')
    loaded = InMemoryReplay.load(tmp_path / 'replay.npz')
    assert len(loaded) == 10 and loaded.capacity == 10
    np.testing.assert_array_equal(loaded._data['state'][:, 0], np.arange(3, 13))


# -- normalisation -------------------------------------------------------------------------

def test_running_mean_std_matches_numpy():
    """Merging batches gives the mean and variance of all the data at once."""
    rng = np.random.default_rng(0)
    data = rng.normal([1.0, -50.0, 300.0], [0.1, 5.0, 80.0], size=(1000, 3))
    stats = RunningMeanStd((3,))
    for chunk in np.array_split(data, [1, 10, 300, 301, 700]):
        stats.update(chunk)
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.var, data.var(axis=0), rtol=1e-10)
    assert stats.count == 1000


def test_observation_normalizer_and_state():
    """Normalised states have mean 0 and std 1, are clipped, and the state round-trips."""
    rng = np.random.default_rng(0)
    data = rng.normal([10.0, -3.0], [100.0, 0.01], size=(5000, 2))
    norm = ObservationNormalizer(2, clip=3.0)
    np.testing.assert_array_equal(norm.normalize([[1.0, -9.0]]), [[1.0, -3.0]])  # identity+clip
    norm.update(data)
    z = norm.normalize(data)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.01)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.02)
    assert np.abs(z).max() <= 3.0
    assert norm.normalize(data[0]).shape == (2,)
    other = ObservationNormalizer(2, clip=3.0)
    other.set_state({k: np.array(v) for k, v in norm.get_state().items()})
    np.testing.assert_array_equal(other.normalize(data[:10]), norm.normalize(data[:10]))
    with pytest.raises(ValueError):
        ObservationNormalizer(3).set_state(norm.get_state())


def test_reward_scaler():
    """Fixed scaling multiplies; running scaling divides by the std, without centring."""
    assert RewardScaler(0.1).scale_rewards([-10.0, 0.0]).tolist() == pytest.approx([-1.0, 0.0])
    scaler = RewardScaler(2.0, running=True)
    rewards = np.random.default_rng(0).normal(-5.0, 4.0, 10_000)
    scaler.update(rewards)
    scaled = scaler.scale_rewards(rewards)
    assert scaled.std() == pytest.approx(2.0, rel=1e-3)
    assert scaled.mean() == pytest.approx(2.0 * rewards.mean() / rewards.std(), rel=1e-3)
