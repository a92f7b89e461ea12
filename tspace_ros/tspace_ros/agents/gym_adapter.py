"""
Train and evaluate an agent on any continuous-action gymnasium environment.

The agent acts in [-1, 1]^action_dim; ``ActionScaler`` maps that linearly onto
the environment's Box bounds. ``run`` collects ``warmup_steps`` uniformly
random actions, then acts with exploration noise and trains
``updates_per_step`` times after every environment step. Evaluation runs the
deterministic policy (``explore=False``) on a separate environment over
``eval_episodes`` episodes with fixed reset seeds (the same episodes every
time, so the curve compares like with like) at the first episode end at or
after every ``eval_interval`` steps, never in the middle of a training episode
(a recurrent agent's state stays intact).

Transitions are stored with ``done`` = terminated: a time limit (truncation)
is not a terminal state and the critic bootstraps through it.

Any agent with ``begin_episode``, ``act`` and ``update`` (``Learner``) and any
memory with ``add``, ``end_episode``, ``sample`` and ``__len__`` (``Memory``)
work: DDPG with ``InMemoryReplay``, RDPG with an episode buffer.
"""

import dataclasses
import time
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Union

import gymnasium as gym
import numpy as np

from tspace_ros.agents.replay import TransitionSource


class Learner(Protocol):
    """What ``run`` needs of an agent."""

    def begin_episode(self) -> None:
        """Start an episode: reset exploration noise and any recurrent state."""

    def act(self, state: np.ndarray, explore: bool) -> np.ndarray:
        """Return the action in [-1, 1]^action_dim for a state (state_dim,)."""

    def update(self, source, n_updates: int) -> Mapping[str, np.ndarray]:
        """Train ``n_updates`` times on batches from ``source``; return metrics per update."""


class Memory(TransitionSource, Protocol):
    """What ``run`` needs of the experience store."""

    def add(self, state, action, reward: float, next_state, done: bool) -> None:
        """Store one transition (action in the agent's [-1, 1] units)."""

    def end_episode(self) -> None:
        """Close the current episode (an episode buffer stores it here)."""


class ActionScaler:
    """Map actions between the agent's [-1, 1] and a Box space's [low, high] (element-wise)."""

    def __init__(self, space: gym.spaces.Box):
        if not isinstance(space, gym.spaces.Box):
            raise TypeError(f'need a continuous (Box) action space, got {space}')
        self.low = np.asarray(space.low, np.float64).reshape(-1)
        self.high = np.asarray(space.high, np.float64).reshape(-1)
        if not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))):
            raise ValueError('the action space must be bounded')
        self.shape, self.dtype = space.shape, space.dtype

    def to_env(self, action) -> np.ndarray:
        """Return the environment action for an agent action in [-1, 1]."""
        a = np.clip(np.asarray(action, np.float64).reshape(-1), -1.0, 1.0)
        return (self.low + (a + 1.0) * 0.5 * (self.high - self.low)).astype(
            self.dtype).reshape(self.shape)

    def to_agent(self, env_action) -> np.ndarray:
        """Return the agent action (float32, flat) for an environment action."""
        a = np.asarray(env_action, np.float64).reshape(-1)
        return (2.0 * (a - self.low) / (self.high - self.low) - 1.0).astype(np.float32)


@dataclasses.dataclass
class RunConfig:
    """Schedule of a training run (environment steps count transitions, not updates)."""

    total_steps: int = 15_000       # environment steps to collect
    warmup_steps: int = 1_000       # first steps with uniformly random actions, no training
    updates_per_step: int = 1       # updates after each step once warm-up is over
    eval_interval: int = 1_000      # evaluate at the first episode end after each multiple
    eval_episodes: int = 10         # deterministic episodes per evaluation
    eval_at_start: bool = True      # also evaluate the untrained policy at step 0
    seed: int = 0                   # seeds environments and warm-up actions


@dataclasses.dataclass
class Evaluation:
    """One evaluation: environment steps done so far and the returns of its episodes."""

    step: int
    returns: List[float]

    @property
    def mean_return(self) -> float:
        """Return the mean episode return."""
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        """Return the standard deviation of the episode returns."""
        return float(np.std(self.returns))


@dataclasses.dataclass
class RunResult:
    """What a run produced: evaluations, training episode returns, update metrics, timing."""

    evaluations: List[Evaluation]
    episode_returns: List[float]     # returns of the finished training episodes
    metrics: Dict[str, np.ndarray]   # metric -> value per update, in update order
    steps: int
    updates: int
    wall_time_s: float


EnvSource = Union[str, Callable[[], gym.Env]]


def make_env(env: EnvSource) -> gym.Env:
    """Return a new environment from a gymnasium id or a factory."""
    return gym.make(env) if isinstance(env, str) else env()


def flat_observation(observation) -> np.ndarray:
    """Return an observation as a flat float32 state vector."""
    return np.asarray(observation, np.float32).reshape(-1)


def evaluate(agent: Learner, env: gym.Env, episodes: int, seed: int) -> List[float]:
    """Run ``episodes`` deterministic episodes (reset seeds seed, seed+1, ...); return returns."""
    scaler = ActionScaler(env.action_space)
    returns = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        agent.begin_episode()
        total, finished = 0.0, False
        while not finished:
            action = agent.act(flat_observation(observation), explore=False)
            observation, reward, terminated, truncated, _ = env.step(scaler.to_env(action))
            total += float(reward)
            finished = terminated or truncated
        returns.append(total)
    return returns


def run(env: EnvSource, agent: Learner, memory: Memory, config: Optional[RunConfig] = None,
        on_evaluation: Optional[Callable[[Evaluation], None]] = None) -> RunResult:
    """
    Train ``agent`` on ``env`` for ``config.total_steps`` steps; return the RunResult.

    ``on_evaluation`` is called with each Evaluation as it completes (to print
    a curve while the run goes on). The run ends with a final evaluation at
    ``total_steps`` if the last one was earlier.
    """
    cfg = config if config is not None else RunConfig()
    started = time.perf_counter()
    train_env, eval_env = make_env(env), make_env(env)
    scaler = ActionScaler(train_env.action_space)
    rng = np.random.default_rng(cfg.seed)
    train_env.action_space.seed(cfg.seed)
    eval_seed = cfg.seed + 1_000_000
    evaluations: List[Evaluation] = []
    metrics: Dict[str, List[np.ndarray]] = {}
    episode_returns: List[float] = []
    updates = 0

    def do_evaluation(step):
        evaluation = Evaluation(step, evaluate(agent, eval_env, cfg.eval_episodes, eval_seed))
        evaluations.append(evaluation)
        if on_evaluation is not None:
            on_evaluation(evaluation)

    if cfg.eval_at_start:
        do_evaluation(0)
    next_eval = cfg.eval_interval
    step, episode = 0, 0
    try:
        while step < cfg.total_steps:
            observation, _ = train_env.reset(seed=cfg.seed + episode)
            state = flat_observation(observation)
            agent.begin_episode()
            total, finished = 0.0, False
            while not finished and step < cfg.total_steps:
                if step < cfg.warmup_steps:
                    action = rng.uniform(-1.0, 1.0, scaler.low.shape).astype(np.float32)
                else:
                    action = agent.act(state, explore=True)
                observation, reward, terminated, truncated, _ = train_env.step(
                    scaler.to_env(action))
                next_state = flat_observation(observation)
                memory.add(state, action, float(reward), next_state, bool(terminated))
                state, total, step = next_state, total + float(reward), step + 1
                finished = terminated or truncated
                if step >= cfg.warmup_steps and cfg.updates_per_step > 0:
                    for name, values in agent.update(memory, cfg.updates_per_step).items():
                        metrics.setdefault(name, []).append(np.asarray(values))
                    updates += cfg.updates_per_step
            memory.end_episode()
            if finished:
                episode_returns.append(total)
            episode += 1
            if finished and step >= next_eval:
                do_evaluation(step)
                next_eval = (step // cfg.eval_interval + 1) * cfg.eval_interval
        if not evaluations or evaluations[-1].step != step:
            do_evaluation(step)
    finally:
        train_env.close()
        eval_env.close()
    return RunResult(evaluations, episode_returns,
                     {name: np.concatenate(parts) for name, parts in metrics.items()},
                     step, updates, time.perf_counter() - started)
