"""
Benchmark: RDPG against feed-forward DDPG on a partially observed pendulum.

The task is gymnasium's ``Pendulum-v1`` (swing up and balance, 200 steps per
episode, reward -(theta^2 + 0.1 omega^2 + 0.001 u^2) per step, torque u in
[-2, 2] Nm) with the angular velocity removed from the observation: the agents
see only [cos theta, sin theta]. A policy without memory cannot tell which way
the pendulum swings; the recurrent agent (LSTMs over states and last actions)
can infer it from the history. Both agents get the same environment-step
budget, the same random warm-up and the same exploration noise; every
``--eval-every`` steps each runs ``--eval-episodes`` deterministic episodes
(no noise) on fixed seeds, and at the end ``--final-episodes`` more. Prints
both learning curves (step, mean evaluation return) and the final comparison.

Both agents make one gradient update per environment step after the warm-up.
DDPG (``tspace_ros.agents.ddpg``, tspace's network shapes, batch 256) updates
at every step. RDPG (64-unit layers: Dense, 2 LSTM actor; Dense, LSTM, 2 Dense
critic) trains after every episode on ``--rdpg-batches`` batches of 64 random
50-step windows of stored episodes; TBPTT with k1 = k2 = 10 splits each batch
into 5 updates that carry the LSTM state from one 10-step window to the next
(40 x 5 = 200 updates per 200-step episode). ``--algorithm rtd3`` makes the
recurrent agent recurrent TD3 (RDPG with ``RECURRENT_TD3_OPTIONS``: twin
critics, target policy smoothing, actor and target updates every second
window), the same sizes and budget otherwise.

Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/rdpg_pendulum_po.py`` (CPU, minutes);
``--only recurrent --algorithm rtd3`` trains recurrent TD3 alone.
"""

import argparse
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from tspace_ros.agents.configs import RECURRENT_TD3_OPTIONS  # noqa: E402
from tspace_ros.agents.ddpg import DdpgAgent, DdpgConfig  # noqa: E402
from tspace_ros.agents.episode_buffer import EpisodeBuffer  # noqa: E402
from tspace_ros.agents.rdpg import RdpgAgent, RdpgConfig  # noqa: E402
from tspace_ros.agents.replay import InMemoryReplay  # noqa: E402

MAX_TORQUE_NM = 2.0
STATE_DIM, ACTION_DIM = 2, 1


def observe(obs: np.ndarray) -> np.ndarray:
    """Return the partial observation [cos theta, sin theta] of Pendulum's (3,) one."""
    return np.asarray(obs[:2], np.float32)


def evaluate(agent, seeds) -> float:
    """Return the mean return of deterministic episodes, one per seed."""
    env = gym.make('Pendulum-v1')
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        agent.begin_episode()
        total, done = 0.0, False
        while not done:
            action = agent.act(observe(obs), explore=False)
            obs, reward, terminated, truncated, _ = env.step(MAX_TORQUE_NM * action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run(name: str, agent, store, train_after_step, train_after_episode, args):
    """
    Train one agent for ``args.steps`` environment steps; return its curve and timings.

    ``store(s, a, r, s2, terminated)`` records a step, ``store(None, ...)``
    closes an episode; ``train_after_step(step)`` and ``train_after_episode()``
    train (after the warm-up). Returns ([(step, mean return)], final mean,
    seconds).
    """
    env = gym.make('Pendulum-v1')
    rng = np.random.default_rng(args.seed)
    eval_seeds = 10_000 + np.arange(args.eval_episodes)
    curve, started = [], time.perf_counter()
    obs, _ = env.reset(seed=args.seed)
    agent.begin_episode()
    for step in range(1, args.steps + 1):
        state = observe(obs)
        if step <= args.warmup:
            action = rng.uniform(-1.0, 1.0, ACTION_DIM).astype(np.float32)
        else:
            action = agent.act(state, explore=True)
        obs, reward, terminated, truncated, _ = env.step(MAX_TORQUE_NM * action)
        store(state, action, float(reward), observe(obs), terminated)
        if step > args.warmup:
            train_after_step(step)
        if terminated or truncated:
            store(None, None, None, None, None)
            if step > args.warmup:
                train_after_episode()
            obs, _ = env.reset()
            agent.begin_episode()
        if step % args.eval_every == 0:
            curve.append((step, evaluate(agent, eval_seeds)))
            print(f'  {name:4s} step {step:6d}  eval return {curve[-1][1]:8.1f}  '
                  f'({time.perf_counter() - started:5.0f} s)', flush=True)
            agent.begin_episode()
    seconds = time.perf_counter() - started
    final = evaluate(agent, 20_000 + np.arange(args.final_episodes))
    return curve, final, seconds


def run_ddpg(args):
    """Train feed-forward DDPG on the partial observation."""
    agent = DdpgAgent(STATE_DIM, ACTION_DIM, DdpgConfig(
        noise='gaussian', noise_sigma=args.noise_sigma, seed=args.seed))
    replay = InMemoryReplay(args.steps, STATE_DIM, ACTION_DIM)

    def store(state, action, reward, next_state, terminated):
        if state is None:
            replay.end_episode()
        else:
            replay.add(state, action, reward, next_state, terminated)

    return run('ddpg', agent, store, lambda step: agent.update(replay, 1), lambda: None, args)


def run_rdpg(args):
    """Train the recurrent agent (RDPG, or recurrent TD3) on the partial observation."""
    units = args.rdpg_units
    options = RECURRENT_TD3_OPTIONS if args.algorithm == 'rtd3' else {}
    agent = RdpgAgent(STATE_DIM, ACTION_DIM, RdpgConfig(
        actor_dense_units=units, actor_lstm_units=(units, units), critic_dense_units=units,
        critic_lstm_units=(units,), critic_head_units=(units, units),
        actor_lr=args.rdpg_actor_lr, critic_lr=1e-3, batch_size=args.rdpg_batch,
        tbptt_k1=args.rdpg_k, tbptt_k2=args.rdpg_k,
        max_sequence_length=args.rdpg_max_length or None,
        noise='gaussian', noise_sigma=args.noise_sigma, seed=args.seed, **options))
    episodes = EpisodeBuffer(STATE_DIM, ACTION_DIM, capacity=args.steps // 200 + 1)

    def store(state, action, reward, next_state, terminated):
        if state is None:
            episodes.end_episode()
        else:
            episodes.add_step(state, action, reward, next_state, terminated)

    return run(args.algorithm, agent, store, lambda step: None,
               lambda: agent.update(episodes, args.rdpg_batches), args)


def main(argv=None) -> int:
    """Train both agents and print the curves and the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--steps', type=int, default=15000, help='environment steps per agent')
    parser.add_argument('--warmup', type=int, default=1000,
                        help='random-action steps first (whole episodes: a multiple of 200)')
    parser.add_argument('--eval-every', type=int, default=1000, help='steps between evals')
    parser.add_argument('--eval-episodes', type=int, default=5, help='episodes per eval')
    parser.add_argument('--final-episodes', type=int, default=20, help='episodes at the end')
    parser.add_argument('--noise-sigma', type=float, default=0.1,
                        help='Gaussian exploration noise (action units)')
    parser.add_argument('--rdpg-units', type=int, default=64, help='RDPG layer width')
    parser.add_argument('--rdpg-k', type=int, default=10, help='TBPTT k1 = k2 (steps)')
    parser.add_argument('--rdpg-max-length', type=int, default=50,
                        help='train on random windows of this many steps of an episode '
                        '(0: whole episodes)')
    parser.add_argument('--rdpg-batch', type=int, default=64, help='sequences per batch')
    parser.add_argument('--rdpg-batches', type=int, default=40,
                        help='RDPG batches after each episode (each max-length / k updates)')
    parser.add_argument('--rdpg-actor-lr', type=float, default=1e-3, help='RDPG actor lr')
    parser.add_argument('--algorithm', choices=('rdpg', 'rtd3'), default='rdpg',
                        help='the recurrent agent: RDPG or recurrent TD3 (its TD3 options on)')
    parser.add_argument('--only', choices=('recurrent', 'rdpg', 'ddpg'), default=None,
                        help='train one agent only (rdpg: the recurrent one, as recurrent)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.warmup % 200 or args.eval_every % 200 or args.steps < 1 or args.eval_every < 1:
        parser.error('--warmup and --eval-every must be multiples of 200 (whole episodes), '
                     '--steps and --eval-every positive')
    print(f'partially observed Pendulum-v1 (obs = [cos, sin]), {args.algorithm}: '
          f'{args.steps} steps per agent, '
          f'warm-up {args.warmup}, eval {args.eval_episodes} episodes every '
          f'{args.eval_every} steps, final {args.final_episodes} episodes, seed {args.seed}',
          flush=True)
    results = {}
    only = 'recurrent' if args.only == 'rdpg' else args.only
    for name, kind, runner in (('ddpg', 'ddpg', run_ddpg),
                               (args.algorithm, 'recurrent', run_rdpg)):
        if only in (None, kind):
            results[name] = runner(args)
    print('\nlearning curves (step, mean evaluation return):')
    names = list(results)
    print('   step  ' + '  '.join(f'{n:>8s}' for n in names))
    for row in range(len(results[names[0]][0])):
        step = results[names[0]][0][row][0]
        print(f'{step:7d}  ' + '  '.join(f'{results[n][0][row][1]:8.1f}' for n in names))
    print('\nfinal (deterministic policy, '
          f'{args.final_episodes} episodes on unseen seeds):')
    for name in names:
        curve, final, seconds = results[name]
        print(f'  {name}: mean return {final:8.1f}   ({seconds:.0f} s wall time with evaluations)')
    if len(names) == 2:
        gap = results[args.algorithm][1] - results['ddpg'][1]
        print(f'  {args.algorithm.upper()} - DDPG: {gap:+.1f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
