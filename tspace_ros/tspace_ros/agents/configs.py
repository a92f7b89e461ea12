"""
The agents' hyperparameters: one dataclass per agent family, without TensorFlow.

``DdpgConfig`` (DDPG, and TD3 as its options) and ``RdpgConfig`` (recurrent
DDPG) hold every hyperparameter with its default and its checks. They import
no TensorFlow, so the nodes can declare a parameter for every field and the
algorithm registry (``tspace_ros.agents.registry``) can describe an algorithm
without loading an agent; ``ddpg`` and ``rdpg`` re-export them.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

from tspace_ros.agents.noise import NOISE_KINDS


def _field(default, description: str):
    """Return a dataclass field with its default and the description its parameter shows."""
    return dataclasses.field(default=default, metadata={'description': description})


CRITIC_LOSSES = ('mse', 'huber')
TD3_OPTIONS = {'twin_critics': True, 'policy_delay': 2, 'target_noise': 0.2,
               'target_noise_clip': 0.5}   # Fujimoto et al. 2018; SB3's TD3 defaults
# Recurrent TD3 (the ``rtd3`` algorithm): RDPG's config with the same TD3 options on.
RECURRENT_TD3_OPTIONS = {'twin_critics': True, 'policy_delay': 2, 'target_noise': 0.2,
                         'target_noise_clip': 0.5}
_DDPG_TUPLE_FIELDS = ('actor_units', 'critic_state_units', 'critic_action_units', 'critic_units')


class _AgentConfig:
    """What both config dataclasses share: the common checks, and JSON in and out."""

    def _check_shared(self, tuple_fields) -> None:
        """Turn list fields (from JSON) into tuples; check the fields both configs have."""
        for name in tuple_fields:
            setattr(self, name, tuple(int(u) for u in getattr(self, name)))
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError('need 0 <= gamma <= 1 and 0 < tau <= 1')
        if self.actor_lr <= 0 or self.critic_lr <= 0 or self.batch_size < 1:
            raise ValueError('learning rates and batch_size must be positive')
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError('grad_clip_norm must be positive or None')
        if int(self.policy_delay) != self.policy_delay or self.policy_delay < 1:
            raise ValueError(f'policy_delay must be an integer >= 1, got {self.policy_delay!r}')
        self.policy_delay = int(self.policy_delay)
        if self.noise not in NOISE_KINDS:
            raise ValueError(f'noise must be one of {NOISE_KINDS}, got {self.noise!r}')

    def to_dict(self) -> Dict[str, Any]:
        """Return the config as JSON-able values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]):
        """Build a config from ``to_dict`` output (unknown keys are an error)."""
        return cls(**values)


@dataclasses.dataclass
class DdpgConfig(_AgentConfig):
    """
    Every DDPG hyperparameter, with tspace's value where it had one.

    The batch size is 256, not tspace's 4: a TD target and a policy gradient
    averaged over 4 samples are so noisy that each update moves the networks
    mostly at random, while an update of 256 costs only about 2.5 times one of
    4 on a 2-core CPU (1.7 vs 4.5 ms: fixed per-update overhead dominates small
    batches), so 256 gives about 25 times the gradient signal per second. It is
    also what TD3/SAC/CleanRL use for continuous control. The rest of tspace's
    settings are kept: gamma 0.99, tau 0.005, both learning rates 1e-3, its
    network shapes and OU noise (sigma 0.2, theta 0.15, dt 0.01). Observation
    normalisation is off by default: ``vehicle_policy.StateBuilder`` already
    scales each signal to about [0, 1].
    """

    gamma: float = _field(0.99, 'discount per step')
    tau: float = _field(0.005, 'soft target update rate per update')
    actor_lr: float = _field(1e-3, 'Adam learning rate of the actor (tspace)')
    critic_lr: float = _field(1e-3, 'Adam learning rate of the critic (tspace)')
    batch_size: int = _field(256, 'transitions per update (tspace: 4; see above)')
    grad_clip_norm: Optional[float] = _field(None,
                                             'global-norm clip per network; None: no clipping')
    actor_units: Tuple[int, ...] = _field((256, 256), 'actor hidden layers (ReLU)')
    actor_final_init: float = _field(3e-3, 'tanh layer kernel uniform in +-this')
    critic_state_units: Tuple[int, ...] = _field((16, 32), 'critic state branch (ReLU)')
    critic_action_units: Tuple[int, ...] = _field((32,), 'critic action branch (ReLU)')
    critic_units: Tuple[int, ...] = _field((256, 256), 'critic layers after the concat (ReLU)')
    critic_final_init: Optional[float] = _field(None, 'Q layer kernel +-this; None: Glorot')
    noise: str = _field('ou', 'exploration noise: ou or gaussian')
    noise_sigma: float = _field(0.2, 'noise scale in action units ([-1, 1])')
    ou_theta: float = _field(0.15, 'OU mean reversion rate')
    ou_dt: float = _field(0.01, 'OU time step')
    normalize_observations: bool = _field(False, 'standardise states with running statistics')
    observation_clip: float = _field(5.0, 'clip standardised states to +-this')
    reward_scale: float = _field(1.0, 'rewards are multiplied by this in the TD target')
    normalize_rewards: bool = _field(False, 'also divide rewards by their running std')
    jit_compile: bool = _field(False, 'compile the update with XLA')
    critic_loss: str = _field('mse', 'critic loss: mse or huber (delta huber_delta)')
    huber_delta: float = _field(1.0, 'the quadratic zone of the Huber loss, in Q units')
    preactivation_penalty: float = _field(0.0, 'weight of mean(pre-tanh^2) in the actor loss')
    twin_critics: bool = _field(False, 'TD3: two critics, min of the target Qs')
    policy_delay: int = _field(1, 'TD3: actor and targets every N critic updates')
    target_noise: float = _field(0.0, 'TD3: target policy smoothing noise std')
    target_noise_clip: float = _field(0.5, 'TD3: the smoothing noise clipped to +-this')
    seed: int = _field(0, 'seeds initial weights, noise and batch sampling')

    def __post_init__(self):
        """Check ranges; turn list fields (from JSON) back into tuples."""
        self._check_shared(_DDPG_TUPLE_FIELDS)
        if self.critic_loss not in CRITIC_LOSSES:
            raise ValueError(f'critic_loss must be one of {CRITIC_LOSSES}, got '
                             f'{self.critic_loss!r}')
        if self.huber_delta <= 0 or self.preactivation_penalty < 0 or \
                self.target_noise < 0 or self.target_noise_clip < 0:
            raise ValueError('huber_delta must be positive; preactivation_penalty, '
                             'target_noise and target_noise_clip >= 0')


# tspace's (and the DDPG paper's) final-layer initialisation range of the actor.
ACTOR_FINAL_INIT_LIMIT = 3e-3
_RDPG_TUPLE_FIELDS = ('actor_lstm_units', 'critic_lstm_units', 'critic_head_units')


@dataclasses.dataclass
class RdpgConfig(_AgentConfig):
    """
    Every RDPG hyperparameter, with tspace's value where it had one.

    A batch is ``batch_size`` whole episodes (tspace: 4). 16 episodes of up to
    200 steps give each update several thousand TD errors, enough to average
    out the noise of single episodes, at a cost a trainer's CPU takes in
    seconds. The actor's learning rate is 1e-4 (the DDPG paper's), below
    tspace's 1e-3, a conservative choice for two 256-unit LSTMs trained over
    200-step windows (the Pendulum bench, 64 units and 10-step windows, uses
    1e-3).
    ``max_sequence_length`` None trains on whole episodes; a number trains on
    random windows of at most that many steps that start from the zero state.
    The TD3 options (``twin_critics``, ``target_noise``, ``policy_delay``; all
    off by default, which is RDPG) make it a recurrent TD3 (``rtd3``); one
    critic update is one TBPTT window.
    """

    gamma: float = _field(0.99, 'discount per step')
    tau: float = _field(0.005, 'soft target update rate per update')
    actor_lr: float = _field(1e-4, 'Adam learning rate of the actor')
    critic_lr: float = _field(1e-3, 'Adam learning rate of the critic (tspace)')
    batch_size: int = _field(16, 'episodes per batch (tspace: 4; see above)')
    tbptt_k1: int = _field(200, 'steps between updates (tspace: 200)')
    tbptt_k2: int = _field(200, 'steps back-propagated per update (tspace: 200)')
    max_sequence_length: Optional[int] = _field(None, 'crop longer episodes to windows of this')
    grad_clip_norm: Optional[float] = _field(None,
                                             'global-norm clip per network; None: no clipping')
    actor_dense_units: int = _field(256, 'actor Dense (ReLU) before the LSTMs')
    actor_lstm_units: Tuple[int, ...] = _field((256, 256), 'actor LSTM layers')
    actor_final_init: float = _field(ACTOR_FINAL_INIT_LIMIT, 'tanh layer kernel uniform in +-this')
    critic_dense_units: int = _field(256, 'critic Dense (ReLU) before the LSTMs')
    critic_lstm_units: Tuple[int, ...] = _field((256, 256), 'critic LSTM layers (history encoder)')
    critic_head_units: Tuple[int, ...] = _field((256, 256), 'critic layers on [encoding, action]')
    noise: str = _field('ou', 'exploration noise: ou or gaussian')
    noise_sigma: float = _field(0.2, 'noise scale in action units ([-1, 1])')
    ou_theta: float = _field(0.15, 'OU mean reversion rate')
    ou_dt: float = _field(0.01, 'OU time step')
    reward_scale: float = _field(1.0, 'rewards are multiplied by this in the TD target')
    twin_critics: bool = _field(False, 'TD3: two recurrent critics, min of the target Qs')
    target_noise: float = _field(0.0, 'TD3: target policy smoothing noise std')
    target_noise_clip: float = _field(0.5, 'TD3: the smoothing noise clipped to +-this')
    policy_delay: int = _field(1, 'TD3: actor and targets every N critic updates (windows)')
    seed: int = _field(0, 'seeds initial weights, noise and batch sampling')

    def __post_init__(self):
        """Check ranges; turn list fields (from JSON) back into tuples."""
        self._check_shared(_RDPG_TUPLE_FIELDS)
        if not 1 <= self.tbptt_k1 <= self.tbptt_k2:
            raise ValueError(f'need 1 <= tbptt_k1 <= tbptt_k2, got {self.tbptt_k1}, '
                             f'{self.tbptt_k2}')
        if self.max_sequence_length is not None and self.max_sequence_length < 1:
            raise ValueError('max_sequence_length must be positive or None')
        if not self.actor_lstm_units or not self.critic_lstm_units:
            raise ValueError('actor and critic need at least one LSTM layer')
        if min(self.actor_lstm_units + self.critic_lstm_units + self.critic_head_units
               + (self.actor_dense_units, self.critic_dense_units)) < 1:
            raise ValueError('layer sizes must be positive')
        if self.target_noise < 0 or self.target_noise_clip < 0:
            raise ValueError('target_noise and target_noise_clip must be >= 0')
