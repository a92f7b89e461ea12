"""The gymnasium adapter and a short DDPG run on Pendulum-v1 that must show learning."""

import gymnasium as gym
import numpy as np
import pytest

from tspace_ros.agents.ddpg import DdpgAgent, DdpgConfig, METRIC_NAMES
from tspace_ros.agents.gym_adapter import ActionScaler, evaluate, run, RunConfig
from tspace_ros.agents.replay import InMemoryReplay


def test_action_scaler_maps_bounds():
    """[-1, 1] maps linearly onto the Box bounds and back; out-of-range actions are clipped."""
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)
    scaler = ActionScaler(gym.spaces.Box(low, high))
    np.testing.assert_allclose(scaler.to_env([-1.0, -1.0]), [-2.0, 0.0])
    np.testing.assert_allclose(scaler.to_env([1.0, 0.0]), [2.0, 5.0])
    np.testing.assert_allclose(scaler.to_env([3.0, 1.0]), [2.0, 10.0])
    np.testing.assert_allclose(scaler.to_agent([1.0, 7.5]), [0.5, 0.5])
    with pytest.raises(TypeError):
        ActionScaler(gym.spaces.Discrete(3))
    with pytest.raises(ValueError):
        ActionScaler(gym.spaces.Box(-np.inf, np.inf, (1,)))


def test_evaluate_is_deterministic():
    """The deterministic policy on the same reset seeds gives the same returns."""
    agent = DdpgAgent(3, 1, DdpgConfig(actor_units=(16,), critic_units=(16,)))
    env = gym.make('Pendulum-v1')
    first, second = evaluate(agent, env, 2, seed=4), evaluate(agent, env, 2, seed=4)
    assert first == second and len(first) == 2 and first[0] != first[1]


def test_pendulum_smoke_run_learns():
    """
    1,500 steps (500 warm-up, 1,001 updates): the critic learns Pendulum's values.

    Too short for the policy to swing up, so the check is on the critic (the
    same on every seed tried): Q values become negative like the rewards, the
    TD loss falls, and upright is valued above horizontal above hanging down.
    """
    agent = DdpgAgent(3, 1, DdpgConfig(noise='gaussian', noise_sigma=0.1, seed=0))
    memory = InMemoryReplay(5000, 3, 1)
    seen = []
    result = run('Pendulum-v1', agent, memory,
                 RunConfig(total_steps=1500, warmup_steps=500, eval_interval=1000,
                           eval_episodes=2, eval_at_start=False, seed=0),
                 on_evaluation=seen.append)
    assert result.steps == 1500 and len(memory) == 1500
    assert result.updates == 1001 == agent.update_count
    assert [e.step for e in result.evaluations] == [1000, 1500] and seen == result.evaluations
    assert len(result.episode_returns) == 7            # 200-step episodes, truncated
    assert np.all(memory.sample(1500, np.random.default_rng(0))['done'] == 0)
    assert all(np.all(np.isfinite(v)) and v.shape == (1001,) for v in result.metrics.values())
    assert set(result.metrics) == set(METRIC_NAMES)
    q = result.metrics['q_mean']
    assert q[:50].mean() > -10 and q[-50:].mean() < -15
    loss = result.metrics['critic_loss']
    assert loss[-100:].mean() < 0.5 * loss[:100].mean()
    states = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0]], np.float32)  # up, horizontal, down
    values = agent.critic([states, np.zeros((3, 1), np.float32)]).numpy()[:, 0]
    assert values[0] > values[1] + 5 and values[1] > values[2] + 5
    assert all(-1700 < e.mean_return < 0 for e in result.evaluations)
