"""
Benchmark: DDPG training updates per second at batch 256 (optionally vs Stable-Baselines3).

Times ``DdpgAgent.update`` (sample a batch from an ``InMemoryReplay`` of
random transitions, one compiled critic + actor + soft-target update) with
actor and critic both 2 x 256 ReLU MLPs (the critic on [state, action], no
branches), in ``--blocks`` blocks of ``--updates`` updates after a warm-up
block, and prints the median updates/s with the spread over blocks.

With ``--sb3-python PYTHON`` the same measurement runs for Stable-Baselines3's
DDPG (PyTorch, CPU, same sizes, batch, learning rates, tau and gamma, its own
replay buffer filled the same way) in that interpreter, which needs torch,
stable-baselines3 and gymnasium (e.g. a throw-away venv, never the project's):
``python3.11 -m venv /tmp/sb3venv && /tmp/sb3venv/bin/pip install torch==2.13.0
stable-baselines3 gymnasium==1.4.0``. It then prints the ratio tspace / SB3.
Both use their framework's default thread count on this machine unless
``--threads`` sets one for both.

Run after ``scripts/bootstrap``: ``source scripts/env.sh && python
bench/train_throughput.py [--sb3-python /tmp/sb3venv/bin/python]``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

REPLAY_SIZE = 10_000


def random_transitions(n, state_dim, action_dim, seed=0):
    """Return n random transitions as arrays (states, actions, rewards, next states, dones)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, state_dim)).astype(np.float32),
            rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
            rng.normal(-5.0, 3.0, n).astype(np.float32),
            rng.normal(size=(n, state_dim)).astype(np.float32),
            (rng.random(n) < 0.01).astype(np.float32))


def time_blocks(run_block, blocks, updates):
    """Run one untimed warm-up block, then ``blocks`` timed ones; return updates/s per block."""
    run_block(updates)
    rates = []
    for _ in range(blocks):
        start = time.perf_counter()
        run_block(updates)
        rates.append(updates / (time.perf_counter() - start))
    return rates


def measure_tspace(args):
    """Return (updates/s per block, description) for DdpgAgent."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf
    from tspace_ros.agents.ddpg import DdpgAgent, DdpgConfig
    from tspace_ros.agents.replay import InMemoryReplay

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    config = DdpgConfig(batch_size=args.batch_size, actor_units=(256, 256),
                        critic_state_units=(), critic_action_units=(), critic_units=(256, 256),
                        jit_compile=args.jit)
    agent = DdpgAgent(args.state_dim, args.action_dim, config)
    replay = InMemoryReplay(REPLAY_SIZE, args.state_dim, args.action_dim)
    replay.add_batch(*random_transitions(REPLAY_SIZE, args.state_dim, args.action_dim))
    rates = time_blocks(lambda n: agent.update(replay, n), args.blocks, args.updates)
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return rates, (f'tspace_ros DdpgAgent (TensorFlow {tf.__version__}, '
                   f'{"XLA" if args.jit else "tf.function"}, {threads} threads)')


def measure_sb3(args):
    """Return (updates/s per block, description) for Stable-Baselines3's DDPG."""
    import gymnasium as gym
    import stable_baselines3
    from stable_baselines3 import DDPG
    from stable_baselines3.common.logger import configure
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    class Dummy(gym.Env):
        """An environment that only supplies the spaces."""

        observation_space = gym.spaces.Box(-np.inf, np.inf, (args.state_dim,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (args.action_dim,), np.float32)

    model = DDPG('MlpPolicy', Dummy(), learning_rate=1e-3, buffer_size=REPLAY_SIZE,
                 learning_starts=0, batch_size=args.batch_size, tau=0.005, gamma=0.99,
                 policy_kwargs={'net_arch': [256, 256]}, device='cpu', seed=0)
    model.set_logger(configure(None, []))
    states, actions, rewards, next_states, dones = random_transitions(
        REPLAY_SIZE, args.state_dim, args.action_dim)
    for i in range(REPLAY_SIZE):
        model.replay_buffer.add(states[i:i + 1], next_states[i:i + 1], actions[i:i + 1],
                                rewards[i:i + 1], dones[i:i + 1], [{}])
    rates = time_blocks(lambda n: model.train(gradient_steps=n, batch_size=args.batch_size),
                        args.blocks, args.updates)
    return rates, (f'Stable-Baselines3 {stable_baselines3.__version__} DDPG (PyTorch '
                   f'{torch.__version__}, {torch.get_num_threads()} threads)')


def describe(label, rates):
    """Return a line with the median updates/s and the spread over blocks."""
    return (f'  {label}\n    median {statistics.median(rates):7.1f} updates/s '
            f'(min {min(rates):.1f}, max {max(rates):.1f}, {len(rates)} blocks)')


def main(argv=None) -> int:
    """Measure and print; with --sb3-worker print the SB3 result as JSON instead."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--state-dim', type=int, default=3, help='Pendulum: 3')
    parser.add_argument('--action-dim', type=int, default=1, help='Pendulum: 1')
    parser.add_argument('--blocks', type=int, default=7, help='timed blocks')
    parser.add_argument('--updates', type=int, default=200, help='updates per block')
    parser.add_argument('--threads', type=int, default=0,
                        help='intra-op threads for both frameworks (0: their defaults)')
    parser.add_argument('--jit', action='store_true', help='compile the update with XLA')
    parser.add_argument('--sb3-python', help='interpreter with stable-baselines3 and torch')
    parser.add_argument('--sb3-worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sb3_worker:
        rates, label = measure_sb3(args)
        print(json.dumps({'rates': rates, 'label': label}))
        return 0

    print(f'train throughput: batch {args.batch_size}, actor and critic 2 x 256, state '
          f'{args.state_dim}, action {args.action_dim}, {args.blocks} blocks of '
          f'{args.updates} updates, {os.cpu_count()} CPUs')
    rates, label = measure_tspace(args)
    print(describe(label, rates), flush=True)
    if args.sb3_python:
        command = [args.sb3_python, os.path.abspath(__file__), '--sb3-worker',
                   '--batch-size', str(args.batch_size), '--state-dim', str(args.state_dim),
                   '--action-dim', str(args.action_dim), '--blocks', str(args.blocks),
                   '--updates', str(args.updates), '--threads', str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f'  SB3 measurement failed:\n{done.stderr[-2000:]}', file=sys.stderr)
            return 1
        sb3 = json.loads(done.stdout.strip().splitlines()[-1])
        print(describe(sb3['label'], sb3['rates']))
        ratio = statistics.median(rates) / statistics.median(sb3['rates'])
        print(f'  ratio tspace_ros / SB3: {ratio:.2f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
