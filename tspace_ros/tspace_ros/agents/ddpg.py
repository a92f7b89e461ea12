"""
DDPG (deep deterministic policy gradient) with TensorFlow/Keras 3.

The agent learns a deterministic policy mu(s) in [-1, 1]^action_dim and a Q
function Q(s, a) from batches of transitions (see ``replay``). One update:

- critic: minimise mean (y - Q(s, a))^2 (or the Huber loss) with the TD target
  y = r + gamma (1 - done) Q'(s', mu'(s')) from the target networks;
- actor: minimise -mean Q(s, mu(s)) (with the just-updated critic), plus an
  optional penalty on the tanh layer's pre-activations (so it does not saturate);
- optional global-norm gradient clipping of each network's gradients;
- soft target updates theta' <- tau theta + (1 - tau) theta'.

TD3 (Fujimoto et al. 2018, as Stable-Baselines3 does it) is DDPG with three
options on: ``twin_critics`` (two critics, the TD target takes the smaller
target Q), ``target_noise`` (clipped Gaussian noise on the target action:
target policy smoothing) and ``policy_delay`` (the actor and the targets are
updated every that many critic updates). With them off, the update is DDPG's.

All of it runs in one ``tf.function`` per agent (no retracing: fixed input
signature, any batch size). Exploration noise is added only by
``act(..., explore=True)``; ``act(..., explore=False)`` is the deterministic
policy (tspace added noise at inference too).

Checkpoints are directories: ``actor.keras`` and ``critic.keras`` (whole Keras
models, loadable on their own), ``target_actor.weights.h5`` and
``target_critic.weights.h5``, ``optimizers.*`` (a ``tf.train.Checkpoint`` of
both Adam optimisers: moments and iteration counts), ``normalizers.npz``
(plain arrays) and ``agent.json`` (dimensions, config, update count, noise and
sampling generator states). No pickle. A loaded agent's next updates, actions
and noise are those the saved one would have produced.
"""

import pathlib
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from tspace_ros.agents.checkpoints import read_manifest, write_checkpoint
from tspace_ros.agents.configs import (  # noqa: F401 (re-exported)
    CRITIC_LOSSES, DdpgConfig, TD3_OPTIONS)
from tspace_ros.agents.networks import build_actor, build_critic
from tspace_ros.agents.noise import make_noise
from tspace_ros.agents.normalization import ObservationNormalizer, RewardScaler
from tspace_ros.agents.replay import TransitionSource

METRIC_NAMES = ('critic_loss', 'actor_loss', 'q_mean', 'critic_grad_norm', 'actor_grad_norm',
                'preactivation_mean')


class DdpgAgent:
    """
    A DDPG learner: actor, critic, their target copies and Adam optimisers.

    ``state_dim`` is the length of a state vector, ``action_dim`` that of an
    action (each element in [-1, 1]). The networks take normalised states when
    ``config.normalize_observations`` is on; ``act`` normalises, so callers
    always pass raw states. An exported policy must carry the normaliser's
    statistics (``obs_normalizer.get_state()``) in that case.
    """

    def __init__(self, state_dim: int, action_dim: int, config: Optional[DdpgConfig] = None):
        self.config = cfg = config if config is not None else DdpgConfig()
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        net_seed, noise_seed, sample_seed = (
            int(s.generate_state(1)[0]) for s in np.random.SeedSequence(cfg.seed).spawn(3))

        def actor(name, seed):
            return build_actor(self.state_dim, self.action_dim, cfg.actor_units,
                               cfg.actor_final_init, seed=seed, name=name)

        def critic(name, seed):
            return build_critic(self.state_dim, self.action_dim, cfg.critic_state_units,
                                cfg.critic_action_units, cfg.critic_units,
                                cfg.critic_final_init, seed=seed, name=name)

        self.actor, self.critic = actor('actor', net_seed), critic('critic', net_seed + 1)
        self.target_actor, self.target_critic = actor('target_actor', None), critic(
            'target_critic', None)
        self.target_actor.set_weights(self.actor.get_weights())
        self.target_critic.set_weights(self.critic.get_weights())
        self.critic2 = self.target_critic2 = None
        if cfg.twin_critics:
            self.critic2 = critic('critic2', net_seed + 2)
            self.target_critic2 = critic('target_critic2', None)
            self.target_critic2.set_weights(self.critic2.get_weights())
        # The actor's last hidden layer, for the tanh layer's pre-activations.
        self._hidden = keras.Model(self.actor.inputs, self.actor.layers[-2].output)
        self._action_layer = self.actor.layers[-1]
        self.actor_optimizer = keras.optimizers.Adam(cfg.actor_lr, name='actor_optimizer')
        self.critic_optimizer = keras.optimizers.Adam(cfg.critic_lr, name='critic_optimizer')
        self.actor_optimizer.build(self.actor.trainable_variables)
        self.critic_optimizer.build(self._critic_variables())
        self._smoothing = tf.random.Generator.from_seed(net_seed + 3)

        self.noise = make_noise(cfg.noise, self.action_dim, cfg.noise_sigma, cfg.ou_theta,
                                cfg.ou_dt, seed=noise_seed)
        self.obs_normalizer = (ObservationNormalizer(self.state_dim, cfg.observation_clip)
                               if cfg.normalize_observations else None)
        self.reward_scaler = RewardScaler(cfg.reward_scale, cfg.normalize_rewards)
        self.rng = np.random.default_rng(sample_seed)   # draws training batches
        self.update_count = 0

        state_spec = tf.TensorSpec([None, self.state_dim], tf.float32)
        action_spec = tf.TensorSpec([None, self.action_dim], tf.float32)
        vector_spec = tf.TensorSpec([None], tf.float32)
        self._policy = tf.function(self._policy_graph, input_signature=[state_spec])
        flag_spec = tf.TensorSpec([], tf.bool)
        self._step = tf.function(
            self._train_step_graph, jit_compile=cfg.jit_compile,
            input_signature=[state_spec, action_spec, vector_spec, state_spec, vector_spec,
                             flag_spec])

    def _critic_variables(self):
        """Return the trainable variables of the critic(s), one optimiser for both."""
        variables = list(self.critic.trainable_variables)
        if self.critic2 is not None:
            variables += self.critic2.trainable_variables
        return variables

    def _actor_turn(self) -> bool:
        """Return whether this update also updates the actor and targets (policy_delay)."""
        return (self.update_count + 1) % self.config.policy_delay == 0

    # -- acting -------------------------------------------------------------------------

    def begin_episode(self) -> None:
        """Start an episode: reset the exploration noise (OU restarts at mu)."""
        self.noise.reset()

    def act(self, state, explore: bool = False) -> np.ndarray:
        """
        Return the action for a state (state_dim,) or a batch (n, state_dim).

        The result is float32 of shape (action_dim,) or (n, action_dim) in
        [-1, 1]. Without ``explore`` it is deterministic; with it the configured
        noise is added and the sum clipped to [-1, 1].
        """
        x = np.asarray(state, np.float32)
        single = x.ndim == 1
        if single:
            x = x[np.newaxis]
        if x.ndim != 2 or x.shape[1] != self.state_dim:
            raise ValueError(f'state must have shape ({self.state_dim},) or '
                             f'(n, {self.state_dim}), got {np.shape(state)}')
        if self.obs_normalizer is not None:
            x = self.obs_normalizer.normalize(x)
        action = self._policy(x).numpy()
        if explore:
            action = np.clip(action + self.noise.sample(None if single else len(action)),
                             -1.0, 1.0)
        return (action[0] if single else action).astype(np.float32)

    def _policy_graph(self, state):
        """Actor forward pass (compiled): (n, state_dim) -> (n, action_dim)."""
        return self.actor(state, training=False)

    # -- learning -----------------------------------------------------------------------

    def train_step(self, batch: Dict[str, np.ndarray]) -> Dict[str, float]:
        """
        Run one update on a batch (keys ``replay.TRANSITION_KEYS``, raw states and rewards).

        States are normalised and rewards scaled with the current statistics
        (this does not update them; ``update`` does). Returns the metrics of
        METRIC_NAMES: losses and Q mean before this update, gradient global
        norms before clipping.
        """
        metrics = self._step(*self._prepare(batch), tf.constant(self._actor_turn()))
        self.update_count += 1
        return {name: float(value) for name, value in metrics.items()}

    def update(self, source: TransitionSource, n_updates: int) -> Dict[str, np.ndarray]:
        """
        Sample ``n_updates`` batches of ``config.batch_size`` from ``source`` and train on each.

        With normalisation on, each sampled batch first updates the running
        statistics (so they follow whatever the source holds). Returns each
        metric of METRIC_NAMES as an array of shape (n_updates,).
        """
        if len(source) == 0:
            raise ValueError('the transition source is empty')
        results = []
        for _ in range(int(n_updates)):
            batch = source.sample(self.config.batch_size, self.rng)
            if self.obs_normalizer is not None:
                self.obs_normalizer.update(batch['state'])
            self.reward_scaler.update(batch['reward'])
            results.append(self._step(*self._prepare(batch),
                                      tf.constant(self._actor_turn())))
            self.update_count += 1
        return {name: np.array([float(r[name]) for r in results], np.float64)
                for name in METRIC_NAMES}

    def _prepare(self, batch):
        """Return the compiled step's float32 arguments for a batch."""
        state, next_state = batch['state'], batch['next_state']
        if self.obs_normalizer is not None:
            state = self.obs_normalizer.normalize(state)
            next_state = self.obs_normalizer.normalize(next_state)
        reward = self.reward_scaler.scale_rewards(np.reshape(batch['reward'], (-1,)))
        return (np.asarray(state, np.float32), np.asarray(batch['action'], np.float32),
                reward, np.asarray(next_state, np.float32),
                np.asarray(batch['done'], np.float32).reshape(-1))

    def _td_loss(self, target, q):
        if self.config.critic_loss == 'huber':
            error = tf.abs(target - q)
            delta = self.config.huber_delta
            quadratic = tf.minimum(error, delta)
            return tf.reduce_mean(0.5 * tf.square(quadratic) + delta * (error - quadratic))
        return tf.reduce_mean(tf.square(target - q))

    def _train_step_graph(self, state, action, reward, next_state, done, actor_turn):
        """One update (compiled): critic(s), then on the actor's turn actor and targets."""
        cfg = self.config
        next_action = self.target_actor(next_state, training=False)
        if cfg.target_noise > 0:   # target policy smoothing
            noise = tf.clip_by_value(
                self._smoothing.normal(tf.shape(next_action)) * cfg.target_noise,
                -cfg.target_noise_clip, cfg.target_noise_clip)
            next_action = tf.clip_by_value(next_action + noise, -1.0, 1.0)
        next_q = tf.squeeze(self.target_critic([next_state, next_action], training=False), -1)
        if self.critic2 is not None:
            next_q = tf.minimum(next_q, tf.squeeze(
                self.target_critic2([next_state, next_action], training=False), -1))
        target = tf.stop_gradient(reward + cfg.gamma * (1.0 - done) * next_q)

        critic_vars = self._critic_variables()
        with tf.GradientTape() as tape:
            q = tf.squeeze(self.critic([state, action], training=True), -1)
            critic_loss = self._td_loss(target, q)
            if self.critic2 is not None:
                q2 = tf.squeeze(self.critic2([state, action], training=True), -1)
                critic_loss = critic_loss + self._td_loss(target, q2)
        critic_grads, critic_norm = clip_gradients(tape.gradient(critic_loss, critic_vars),
                                                   cfg.grad_clip_norm)
        self.critic_optimizer.apply_gradients(zip(critic_grads, critic_vars))

        actor_vars = self.actor.trainable_variables
        with tf.GradientTape() as tape:
            hidden = self._hidden(state, training=True)
            pre = tf.matmul(hidden, self._action_layer.kernel) + self._action_layer.bias
            actor_q = self.critic([state, tf.tanh(pre)], training=False)
            preactivation = tf.reduce_mean(tf.square(pre))
            actor_loss = -tf.reduce_mean(actor_q) + cfg.preactivation_penalty * preactivation

        def update_actor():
            grads, norm = clip_gradients(tape.gradient(actor_loss, actor_vars),
                                         cfg.grad_clip_norm)
            self.actor_optimizer.apply_gradients(zip(grads, actor_vars))
            soft_update(self.target_critic.weights, self.critic.weights, cfg.tau)
            if self.critic2 is not None:
                soft_update(self.target_critic2.weights, self.critic2.weights, cfg.tau)
            soft_update(self.target_actor.weights, self.actor.weights, cfg.tau)
            return norm

        if cfg.policy_delay == 1:
            actor_norm = update_actor()
        else:
            actor_norm = tf.cond(actor_turn, update_actor, lambda: tf.constant(0.0))
        return {'critic_loss': critic_loss, 'actor_loss': actor_loss,
                'q_mean': tf.reduce_mean(q), 'critic_grad_norm': critic_norm,
                'actor_grad_norm': actor_norm, 'preactivation_mean': preactivation}

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, directory) -> pathlib.Path:
        """
        Write everything needed to resume into ``directory`` (replaced as a whole).

        The files are written to a temporary sibling first and swapped in, so a
        crash never leaves a half-written checkpoint under the name.
        """
        def write_files(tmp: pathlib.Path) -> None:
            self.actor.save(tmp / 'actor.keras')
            self.critic.save(tmp / 'critic.keras')
            self.target_actor.save_weights(tmp / 'target_actor.weights.h5')
            self.target_critic.save_weights(tmp / 'target_critic.weights.h5')
            if self.critic2 is not None:
                self.critic2.save(tmp / 'critic2.keras')
                self.target_critic2.save_weights(tmp / 'target_critic2.weights.h5')
            self._optimizer_checkpoint().write(str(tmp / 'optimizers'))
            arrays = {f'reward_{k}': v for k, v in self.reward_scaler.get_state().items()}
            if self.obs_normalizer is not None:
                arrays.update(
                    {f'obs_{k}': v for k, v in self.obs_normalizer.get_state().items()})
            np.savez(tmp / 'normalizers.npz', **arrays)

        return write_checkpoint(directory, 'ddpg', {
            'state_dim': self.state_dim, 'action_dim': self.action_dim,
            'config': self.config.to_dict(), 'update_count': self.update_count,
            'noise': self.noise.get_state(), 'sampling_rng': self.rng.bit_generator.state,
            'smoothing_state': [int(v) for v in self._smoothing.state.numpy()]},
            write_files)

    @classmethod
    def load_checkpoint(cls, directory) -> 'DdpgAgent':
        """Return the agent saved by ``save_checkpoint`` in ``directory``, ready to resume."""
        directory = pathlib.Path(directory)
        meta = read_manifest(directory, 'ddpg')
        agent = cls(meta['state_dim'], meta['action_dim'], DdpgConfig.from_dict(meta['config']))
        agent.actor.load_weights(directory / 'actor.keras')
        agent.critic.load_weights(directory / 'critic.keras')
        agent.target_actor.load_weights(directory / 'target_actor.weights.h5')
        agent.target_critic.load_weights(directory / 'target_critic.weights.h5')
        if agent.critic2 is not None:
            agent.critic2.load_weights(directory / 'critic2.keras')
            agent.target_critic2.load_weights(directory / 'target_critic2.weights.h5')
        agent._optimizer_checkpoint().read(str(directory / 'optimizers')).assert_consumed()
        with np.load(directory / 'normalizers.npz', allow_pickle=False) as arrays:
            agent.reward_scaler.set_state(_prefixed(arrays, 'reward_'))
            if agent.obs_normalizer is not None:
                agent.obs_normalizer.set_state(_prefixed(arrays, 'obs_'))
        agent.update_count = int(meta['update_count'])
        agent.noise.set_state(meta['noise'])
        agent.rng.bit_generator.state = meta['sampling_rng']
        if 'smoothing_state' in meta:   # (checkpoints before target smoothing lack it)
            agent._smoothing.state.assign(np.array(meta['smoothing_state'], np.int64))
        return agent

    def _optimizer_checkpoint(self) -> tf.train.Checkpoint:
        """Return a checkpoint object tracking both optimisers' variables."""
        return tf.train.Checkpoint(actor_optimizer=self.actor_optimizer,
                                   critic_optimizer=self.critic_optimizer)


def clip_gradients(grads, clip_norm: Optional[float]):
    """Return (grads scaled to global norm <= clip_norm, global norm before clipping)."""
    if clip_norm is None:
        return grads, tf.linalg.global_norm(grads)
    return tf.clip_by_global_norm(grads, clip_norm)


def soft_update(target_variables, source_variables, tau: float) -> None:
    """Move each target variable towards its source: t <- tau s + (1 - tau) t."""
    for target, source in zip(target_variables, source_variables):
        target.assign(tau * source + (1.0 - tau) * target)


def _prefixed(arrays, prefix: str) -> Dict[str, np.ndarray]:
    """Return the arrays whose names start with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: arrays[k] for k in arrays.files if k.startswith(prefix)}
