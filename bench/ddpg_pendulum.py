"""
Benchmark: DDPG learns gymnasium's Pendulum-v1 within 15,000 environment steps.

Trains ``DdpgAgent`` with tspace's network shapes, batch 256, Gaussian
exploration (sigma 0.1 of the action range's half width) and 1,000 random
warm-up steps, one update per step after warm-up, and evaluates the
deterministic policy every 1,000 steps on the same 10 episodes. Prints the
curve (step, mean return +- std over the episodes), the final and best mean
returns and the wall time. Acceptance: a mean evaluation return better than
-200 within the step budget (other implementations reach about -150; a random
policy scores about -1200).

Run after ``scripts/bootstrap``: ``source scripts/env.sh && python bench/ddpg_pendulum.py``
(a few minutes on 2 cores).
"""

import argparse
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from tspace_ros.agents.ddpg import DdpgAgent, DdpgConfig  # noqa: E402
from tspace_ros.agents.gym_adapter import run, RunConfig  # noqa: E402
from tspace_ros.agents.replay import InMemoryReplay  # noqa: E402

THRESHOLD = -200.0


def main(argv=None) -> int:
    """Train, print the evaluation curve; exit 1 if the threshold was not reached."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--steps', type=int, default=15_000, help='environment steps')
    parser.add_argument('--warmup', type=int, default=1_000, help='random warm-up steps')
    parser.add_argument('--eval-interval', type=int, default=1_000)
    parser.add_argument('--eval-episodes', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--actor-lr', type=float, default=1e-3)
    parser.add_argument('--critic-lr', type=float, default=1e-3)
    parser.add_argument('--noise', choices=('gaussian', 'ou'), default='gaussian')
    parser.add_argument('--sigma', type=float, default=0.1, help='noise scale, action units')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    config = DdpgConfig(batch_size=args.batch_size, actor_lr=args.actor_lr,
                        critic_lr=args.critic_lr, noise=args.noise, noise_sigma=args.sigma,
                        seed=args.seed)
    agent = DdpgAgent(3, 1, config)
    memory = InMemoryReplay(100_000, 3, 1)
    print(f'ddpg pendulum: Pendulum-v1, {args.steps} steps, warm-up {args.warmup}, batch '
          f'{config.batch_size}, lr actor {config.actor_lr:g} critic {config.critic_lr:g}, '
          f'{config.noise} noise sigma {config.noise_sigma:g}, gamma {config.gamma:g}, tau '
          f'{config.tau:g}, seed {config.seed}')
    print(f'  {"step":>6s}  mean return over {args.eval_episodes} episodes')

    def show(evaluation):
        print(f'  {evaluation.step:6d}  {evaluation.mean_return:8.1f} +- '
              f'{evaluation.std_return:6.1f}', flush=True)

    result = run('Pendulum-v1', agent, memory,
                 RunConfig(total_steps=args.steps, warmup_steps=args.warmup,
                           eval_interval=args.eval_interval,
                           eval_episodes=args.eval_episodes, seed=args.seed),
                 on_evaluation=show)
    final = result.evaluations[-1]
    best = max(result.evaluations, key=lambda e: e.mean_return)
    first_pass = next((e for e in result.evaluations if e.mean_return > THRESHOLD), None)
    print(f'final: mean return {final.mean_return:.1f} at step {final.step}; best '
          f'{best.mean_return:.1f} at step {best.step}; threshold {THRESHOLD:g} first passed '
          f'at step {first_pass.step if first_pass else "never"}')
    print(f'wall time {result.wall_time_s:.1f} s ({result.updates} updates, '
          f'{result.updates / result.wall_time_s:.0f} updates/s including acting and '
          f'evaluation)')
    return 0 if first_pass is not None else 1


if __name__ == '__main__':
    raise SystemExit(main())
