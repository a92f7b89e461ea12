"""
RDPG (recurrent deterministic policy gradient) with TensorFlow/Keras 3.

For partially observed problems the policy and Q function see the history:
the actor mu(h_t) and the critic Q(h_t, a_t) run LSTMs over the history
h_t = (s_0, a_-1, s_1, a_0, ..., s_t, a_t-1), the states together with the
action applied before each of them (``last_action``; zeros before the first
step, and ``begin_episode`` starts acting the same way).

Networks (tspace's sizes are the defaults, every size is configurable):

- actor: [state, last_action] -> Dense 256 ReLU -> LSTM 256 -> LSTM 256 ->
  Dense tanh (kernel uniform in +-0.003) -> action in [-1, 1];
- critic: [state, last_action] -> Dense 256 ReLU -> LSTM 256 -> LSTM 256 (the
  history encoder), then [encoding, action] -> Dense 256 ReLU -> Dense 256 ReLU
  -> Q. The action enters after the LSTMs, so the encoder is shared between the
  critic loss (stored actions) and the actor loss (mu's actions), and the
  actor's gradient dQ/da does not run through the recurrence. The head needs
  two hidden layers: with one, Q's slope in the action hardly depended on the
  history, and the actor saturated at one constant action (seen on Pendulum).

Sequence models take (batch, time, features) tensors plus a boolean ``mask``
(batch, time), True on valid steps, and the initial LSTM state (h, c) of every
layer (batch, units); they return the outputs for every step and the final
(h, c) of every layer. Padded steps (mask False) are zeroed at the input and
skipped by the LSTMs (the state is carried unchanged over them), so they change
no valid output, no final state, no loss and no gradient. No model fixes its
batch size. The STEP actor (``step_actor``) is the same actor for one step:
``[state (n, S), last_action (n, A), h1, c1, h2, c2 (n, units)] -> [action
(n, A), h1', c1', h2', c2']``, built from the very same Dense layers and LSTM
cells (shared variables), without loops: the vehicle side carries the LSTM
state between steps, and the model converts to TFLite/LiteRT as plain ops.

Training on a batch of padded episodes (``episode_buffer``), one call of
``train_step``:

1. TD targets y_t = r_t + gamma (1 - done_t) Q'(h_t+1, mu'(h_t+1)) for every
   step at once, from the target networks run over the whole sequence
   (s_0, next_state_0, ..., next_state_T-1) without gradient.
2. Truncated back-propagation through time TBPTT(k1, k2), 1 <= k1 <= k2:
   the sequence is padded at the end to a multiple of k1 and at the front with
   k2 - k1 masked steps (the LSTM state stays zero over them). Update i uses
   the window of k2 steps ending at (i + 1) k1: gradients flow back through all
   k2 steps of the window; the loss covers the window's last k1 steps (each
   step enters the losses exactly once); the LSTM state at the window's start
   is carried over from the previous window's forward pass with
   ``stop_gradient`` (no gradient crosses a window boundary). One optimiser
   step for actor and critic per window, then soft target updates. With
   k1 = k2 = k (tspace: 200) the windows are consecutive chunks of k steps.
3. Losses per window, over valid steps only: critic mean (y - Q)^2 (squared
   and masked: tspace used mean(y - Q) over padding too), actor -mean Q(h,
   mu(h)). Both come from one forward pass with the window's starting weights
   (simultaneous actor and critic steps).

Recurrent TD3 (the ``rtd3`` algorithm) is this agent with the TD3 options of
``RdpgConfig`` on, as ``ddpg`` has them for the feed-forward agent (with all
of them off the update is RDPG's, op for op):

- ``twin_critics``: a second critic (``critic2``: its own LSTM encoder and
  head, its own target ``target_critic2``); the TD target takes the smaller
  target Q, y_t = r_t + gamma (1 - done_t) min(Q1'(h_t+1, a'), Q2'(h_t+1,
  a')); both critics are trained on the same targets (the critic loss is the
  sum of both losses, one Adam optimiser for both), the actor's loss uses
  critic 1 only;
- ``target_noise``: target policy smoothing, a' = clip(mu'(h_t+1) + clip(N(0,
  target_noise), -target_noise_clip, target_noise_clip), -1, 1), with a
  seeded ``tf.random.Generator`` whose state the checkpoint keeps;
- ``policy_delay``: the actor step and the soft target updates (all targets)
  happen on every ``policy_delay``-th critic update only, a ``tf.cond`` inside
  the one compiled window step. One critic update is one TBPTT window; the
  turn follows ``update_count`` (the N-th, 2N-th, ... window overall).

Exploration noise is added only by ``act(..., explore=True)``; inference is
deterministic. Checkpoints are directories in Keras' own format: one
``rdpg.weights.h5`` (actor, critic, both targets and both Adam optimisers; with
twin critics also ``critic2`` and ``target_critic2``) and ``agent.json``
(dimensions, config, update count, noise, sampling and smoothing generator
states). No pickle. Checkpoints written before the TD3 options load as RDPG.
"""

import pathlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tspace_ros.agents.checkpoints import read_manifest, write_checkpoint
from tspace_ros.agents.configs import (  # noqa: F401 (re-exported)
    ACTOR_FINAL_INIT_LIMIT, RdpgConfig)
from tspace_ros.agents.ddpg import clip_gradients, soft_update
from tspace_ros.agents.episode_buffer import EpisodeSource
from tspace_ros.agents.noise import make_noise

METRIC_NAMES = ('critic_loss', 'actor_loss', 'q_mean', 'critic_grad_norm', 'actor_grad_norm')
# -- networks ---------------------------------------------------------------------------


def _seeds(seed: Optional[int], count: int) -> List[Optional[int]]:
    """Return ``count`` initialiser seeds derived from ``seed`` (None: unseeded)."""
    if seed is None:
        return [None] * count
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count) % (2 ** 31)]


def _state_inputs(units: Sequence[int]) -> List[keras.KerasTensor]:
    """Return Inputs h1, c1, h2, c2, ... of shape (batch, units) for LSTM layers."""
    inputs = []
    for index, width in enumerate(units):
        for kind in ('h', 'c'):
            inputs.append(keras.Input(shape=(int(width),), name=f'{kind}{index + 1}'))
    return inputs


def _masked_input(parts, mask) -> keras.KerasTensor:
    """Concatenate (batch, time, .) parts and zero them where mask (batch, time) is False."""
    x = keras.ops.concatenate(parts, axis=-1)
    return keras.ops.where(keras.ops.expand_dims(mask, -1), x, keras.ops.zeros_like(x))


def _lstm_layers(units: Sequence[int], prefix: str, seeds) -> List[keras.layers.LSTM]:
    """Return LSTM layers ``{prefix}_lstm_i`` whose cells are named ``{prefix}_lstm_cell_i``."""
    layers = []
    for index, width in enumerate(units):
        kernel_seed, recurrent_seed = seeds[2 * index], seeds[2 * index + 1]
        layer = keras.layers.LSTM(
            int(width), return_sequences=True, return_state=True,
            kernel_initializer=keras.initializers.GlorotUniform(seed=kernel_seed),
            recurrent_initializer=keras.initializers.Orthogonal(seed=recurrent_seed),
            name=f'{prefix}_lstm_{index + 1}')
        # Unique cell names: the step model calls the cells themselves.
        layer.cell.name = f'{prefix}_lstm_cell_{index + 1}'
        layers.append(layer)
    return layers


def _run_lstms(x, mask, layers, initial_states) -> Tuple[keras.KerasTensor, list]:
    """Run the LSTM layers over x (batch, time, .); return (outputs, [h1, c1, h2, ...])."""
    finals = []
    for index, layer in enumerate(layers):
        x, h, c = layer(x, mask=mask, initial_state=initial_states[2 * index:2 * index + 2])
        finals += [h, c]
    return x, finals


def build_recurrent_actor(state_dim: int, action_dim: int, dense_units: int = 256,
                          lstm_units: Sequence[int] = (256, 256),
                          final_init_limit: float = ACTOR_FINAL_INIT_LIMIT,
                          seed: Optional[int] = None,
                          name: str = 'actor') -> Tuple[keras.Model, keras.Model]:
    """
    Build the recurrent policy; return (sequence actor, step actor) sharing all weights.

    Sequence actor: ``[state (B, T, state_dim), last_action (B, T, action_dim),
    mask (B, T) bool, h1, c1, h2, c2, ... (B, units)] -> [action (B, T,
    action_dim), h1, c1, ...]`` (final states). Step actor: ``[state (B,
    state_dim), last_action (B, action_dim), h1, c1, ...] -> [action (B,
    action_dim), h1, c1, ...]`` for one step. Layers ``dense`` (ReLU), the LSTMs
    and ``action`` (tanh, kernel uniform in +-final_init_limit, bias zero).
    """
    _check_dims(state_dim, action_dim)
    seeds = _seeds(seed, 2 + 2 * len(lstm_units))
    dense = keras.layers.Dense(int(dense_units), activation='relu', name=f'{name}_dense',
                               kernel_initializer=keras.initializers.GlorotUniform(seeds[0]))
    lstms = _lstm_layers(lstm_units, name, seeds[2:])
    limit = float(final_init_limit)
    head = keras.layers.Dense(
        action_dim, activation='tanh', name=f'{name}_action',
        kernel_initializer=keras.initializers.RandomUniform(-limit, limit, seed=seeds[1]))

    state = keras.Input(shape=(None, state_dim), name='state')
    last_action = keras.Input(shape=(None, action_dim), name='last_action')
    mask = keras.Input(shape=(None,), dtype='bool', name='mask')
    initial = _state_inputs(lstm_units)
    x = dense(_masked_input([state, last_action], mask))
    x, finals = _run_lstms(x, mask, lstms, initial)
    sequence = keras.Model([state, last_action, mask] + initial, [head(x)] + finals, name=name)

    step_state = keras.Input(shape=(state_dim,), name='state')
    step_last_action = keras.Input(shape=(action_dim,), name='last_action')
    step_initial = _state_inputs(lstm_units)
    x = dense(keras.ops.concatenate([step_state, step_last_action], axis=-1))
    step_finals = []
    for index, layer in enumerate(lstms):
        x, (h, c) = layer.cell(x, step_initial[2 * index:2 * index + 2])
        step_finals += [h, c]
    step = keras.Model([step_state, step_last_action] + step_initial, [head(x)] + step_finals,
                       name=f'{name}_step')
    return sequence, step


def build_recurrent_critic(state_dim: int, action_dim: int, dense_units: int = 256,
                           lstm_units: Sequence[int] = (256, 256),
                           head_units: Sequence[int] = (256, 256), seed: Optional[int] = None,
                           name: str = 'critic') -> Tuple[keras.Model, keras.Model, keras.Model]:
    """
    Build the recurrent Q function; return (critic, encoder, head) sharing all weights.

    Encoder: ``[state (B, T, state_dim), last_action (B, T, action_dim), mask
    (B, T) bool, h1, c1, ... (B, units)] -> [encoding (B, T, units[-1]), h1, c1,
    ...]``. Head: ``[encoding (B, T, units[-1]), action (B, T, action_dim)] -> Q
    (B, T)`` (ReLU layers, then a linear Glorot-initialised output). Critic:
    ``[state, last_action, action, mask, h1, c1, ...] -> [Q (B, T), h1, c1,
    ...]``, the encoder followed by the head.
    """
    _check_dims(state_dim, action_dim)
    seeds = _seeds(seed, 2 + 2 * len(lstm_units) + len(head_units))
    state = keras.Input(shape=(None, state_dim), name='state')
    last_action = keras.Input(shape=(None, action_dim), name='last_action')
    action = keras.Input(shape=(None, action_dim), name='action')
    mask = keras.Input(shape=(None,), dtype='bool', name='mask')
    initial = _state_inputs(lstm_units)
    x = keras.layers.Dense(
        int(dense_units), activation='relu', name=f'{name}_dense',
        kernel_initializer=keras.initializers.GlorotUniform(seeds[0]))(
            _masked_input([state, last_action], mask))
    x, finals = _run_lstms(x, mask, _lstm_layers(lstm_units, name, seeds[2:]), initial)
    encoder = keras.Model([state, last_action, mask] + initial, [x] + finals,
                          name=f'{name}_encoder')

    encoding = keras.Input(shape=(None, int(lstm_units[-1])), name='encoding')
    head_action = keras.Input(shape=(None, action_dim), name='action')
    y = keras.ops.concatenate([encoding, head_action], axis=-1)
    head_seeds = seeds[2 + 2 * len(lstm_units):]
    for index, (width, layer_seed) in enumerate(zip(head_units, head_seeds)):
        y = keras.layers.Dense(int(width), activation='relu', name=f'{name}_head_{index + 1}',
                               kernel_initializer=keras.initializers.GlorotUniform(layer_seed))(y)
    q = keras.layers.Dense(1, name=f'{name}_q',
                           kernel_initializer=keras.initializers.GlorotUniform(seeds[1]))(y)
    head = keras.Model([encoding, head_action], keras.ops.squeeze(q, -1), name=f'{name}_head')

    outputs = encoder([state, last_action, mask] + initial)
    critic = keras.Model([state, last_action, action, mask] + initial,
                         [head([outputs[0], action])] + list(outputs[1:]), name=name)
    return critic, encoder, head


def zero_state(batch: int, units: Sequence[int]) -> List[np.ndarray]:
    """Return the zero LSTM state [h1, c1, h2, c2, ...], each float32 (batch, units)."""
    return [np.zeros((batch, int(width)), np.float32) for width in units for _ in range(2)]


def masked_mean(values, mask):
    """Return the mean of ``values`` (B, T) over the steps where ``mask`` (B, T) is True."""
    mask = tf.cast(mask, tf.bool)
    total = tf.reduce_sum(tf.where(mask, values, tf.zeros_like(values)))
    return total / tf.maximum(tf.reduce_sum(tf.cast(mask, values.dtype)), 1.0)


def _check_dims(state_dim: int, action_dim: int) -> None:
    """Raise ValueError unless both dimensions are positive."""
    if state_dim < 1 or action_dim < 1:
        raise ValueError(f'state_dim and action_dim must be positive, got {state_dim}, '
                         f'{action_dim}')


# -- the agent --------------------------------------------------------------------------


class _Checkpointable(keras.Model):
    """Hold the networks and optimisers so that one ``.weights.h5`` file saves them all."""

    def __init__(self, **parts):
        super().__init__(name='rdpg')
        for key, value in parts.items():
            setattr(self, key, value)
        self.built = True


class RdpgAgent:
    """
    An RDPG learner: recurrent actor and critic, their targets and Adam optimisers.

    ``state_dim`` is the length of one state vector, ``action_dim`` that of an
    action (each element in [-1, 1]). Attributes: ``actor`` (sequence model),
    ``step_actor`` (one step, shared weights), ``critic`` (with its
    ``critic_encoder`` and ``critic_head``), ``target_actor``,
    ``target_critic``, with ``twin_critics`` also ``critic2`` (with its
    ``critic2_encoder`` and ``critic2_head``) and ``target_critic2`` (else
    None), ``noise``, ``rng`` (draws batches), ``update_count`` (critic
    optimiser steps, one per TBPTT window).
    """

    def __init__(self, state_dim: int, action_dim: int, config: Optional[RdpgConfig] = None):
        self.config = cfg = config if config is not None else RdpgConfig()
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        net_seed, noise_seed, sample_seed = (
            int(s.generate_state(1)[0]) for s in np.random.SeedSequence(cfg.seed).spawn(3))

        def actor(name, seed):
            return build_recurrent_actor(self.state_dim, self.action_dim, cfg.actor_dense_units,
                                         cfg.actor_lstm_units, cfg.actor_final_init, seed, name)

        def critic(name, seed):
            return build_recurrent_critic(self.state_dim, self.action_dim,
                                          cfg.critic_dense_units, cfg.critic_lstm_units,
                                          cfg.critic_head_units, seed, name)

        self.actor, self.step_actor = actor('actor', net_seed)
        self.critic, self.critic_encoder, self.critic_head = critic('critic', net_seed + 1)
        self.target_actor = actor('target_actor', None)[0]
        self.target_critic = critic('target_critic', None)[0]
        self.target_actor.set_weights(self.actor.get_weights())
        self.target_critic.set_weights(self.critic.get_weights())
        self.critic2 = self.critic2_encoder = self.critic2_head = self.target_critic2 = None
        twin = {}
        if cfg.twin_critics:
            self.critic2, self.critic2_encoder, self.critic2_head = critic('critic2',
                                                                           net_seed + 2)
            self.target_critic2 = critic('target_critic2', None)[0]
            self.target_critic2.set_weights(self.critic2.get_weights())
            twin = {'critic2': self.critic2, 'target_critic2': self.target_critic2}
        self.actor_optimizer = keras.optimizers.Adam(cfg.actor_lr, name='actor_optimizer')
        self.critic_optimizer = keras.optimizers.Adam(cfg.critic_lr, name='critic_optimizer')
        self.actor_optimizer.build(self.actor.trainable_variables)
        self.critic_optimizer.build(self._critic_variables())
        # (Without twin critics the file holds exactly what it held before the TD3 options.)
        self._saveable = _Checkpointable(
            actor=self.actor, critic=self.critic, target_actor=self.target_actor,
            target_critic=self.target_critic, actor_optimizer=self.actor_optimizer,
            critic_optimizer=self.critic_optimizer, **twin)
        self._smoothing = tf.random.Generator.from_seed(net_seed + 3)   # target smoothing

        self.noise = make_noise(cfg.noise, self.action_dim, cfg.noise_sigma, cfg.ou_theta,
                                cfg.ou_dt, seed=noise_seed)
        self.rng = np.random.default_rng(sample_seed)   # draws training batches
        self.update_count = 0

        spec = tf.TensorSpec
        state_specs = [spec([None, int(u)], tf.float32)
                       for u in cfg.actor_lstm_units for _ in range(2)]
        self._step_fn = tf.function(
            self._step_graph,
            input_signature=[spec([None, self.state_dim], tf.float32),
                             spec([None, self.action_dim], tf.float32)] + state_specs)
        self._targets_fn = tf.function(self._targets_graph, reduce_retracing=True)
        self._window_fn = tf.function(self._window_graph, reduce_retracing=True)
        self.begin_episode()

    def _critic_variables(self) -> list:
        """Return the trainable variables of the critic(s), one optimiser for both."""
        variables = list(self.critic.trainable_variables)
        if self.critic2 is not None:
            variables += self.critic2.trainable_variables
        return variables

    def _critic_zero_state(self, batch: int) -> List[np.ndarray]:
        """Return the zero LSTM state of the critic(s): critic 1's, then critic 2's."""
        return zero_state(batch, self.config.critic_lstm_units) * (
            2 if self.critic2 is not None else 1)

    def _actor_turn(self, update: int) -> bool:
        """Return whether critic update number ``update`` (from 0) also steps the actor."""
        return (update + 1) % self.config.policy_delay == 0

    # -- acting -------------------------------------------------------------------------

    def begin_episode(self) -> None:
        """Start an episode: zero LSTM state and last action, reset the noise."""
        self._actor_state = [tf.constant(s) for s in zero_state(1, self.config.actor_lstm_units)]
        self._last_action = np.zeros(self.action_dim, np.float32)
        self.noise.reset()

    reset = begin_episode

    @property
    def last_action(self) -> np.ndarray:
        """Return the action ``act`` returned last in this episode (zeros at its start)."""
        return self._last_action.copy()

    @property
    def actor_state(self) -> List[np.ndarray]:
        """Return the carried LSTM state [h1, c1, h2, c2, ...], each (1, units)."""
        return [s.numpy() for s in self._actor_state]

    def act(self, state, explore: bool = False, last_action=None) -> np.ndarray:
        """
        Return the action (action_dim,) float32 in [-1, 1] for one state (state_dim,).

        Advances the carried LSTM state by one step. ``last_action`` defaults to
        the action ``act`` returned last (zeros after ``begin_episode``); pass
        the action actually applied when it differs (a map the safety gate
        changed, a random warm-up action), as that is the one stored. Without
        ``explore`` the policy is deterministic; with it the configured noise
        is added and the sum is clipped to [-1, 1] (the noisy action is the
        applied one).
        """
        x = np.asarray(state, np.float32)
        if x.shape != (self.state_dim,):
            raise ValueError(f'state must have shape ({self.state_dim},), got {x.shape}')
        if last_action is not None:
            previous = np.asarray(last_action, np.float32)
            if previous.shape != (self.action_dim,) or not np.all(np.isfinite(previous)):
                raise ValueError(f'last_action must be finite of shape ({self.action_dim},)')
            self._last_action = previous
        outputs = self._step_fn(x[np.newaxis], self._last_action[np.newaxis],
                                *self._actor_state)
        action = outputs[0].numpy()[0]
        if explore:
            action = np.clip(action + self.noise.sample(), -1.0, 1.0)
        self._actor_state = list(outputs[1:])
        self._last_action = action.astype(np.float32)
        return self._last_action.copy()

    def _step_graph(self, state, last_action, *actor_state):
        """Step actor forward pass (compiled)."""
        return self.step_actor([state, last_action] + list(actor_state), training=False)

    # -- learning -----------------------------------------------------------------------

    def update(self, source: EpisodeSource, n_batches: int) -> Dict[str, np.ndarray]:
        """
        Train on ``n_batches`` batches of ``config.batch_size`` episodes from ``source``.

        Each batch is sampled with ``config.max_sequence_length`` and padded to a
        multiple of k1, then trained by ``train_step`` (one optimiser step per
        TBPTT window). Returns each metric of METRIC_NAMES per batch, shape
        (n_batches,).
        """
        if len(source) == 0:
            raise ValueError('the episode source is empty')
        cfg = self.config
        results = [self.train_step(source.sample(cfg.batch_size, self.rng,
                                                 cfg.max_sequence_length, cfg.tbptt_k1))
                   for _ in range(int(n_batches))]
        return {name: np.array([r[name] for r in results], np.float64) for name in METRIC_NAMES}

    def train_step(self, batch: Dict[str, np.ndarray]) -> Dict[str, float]:
        """
        Train on one padded batch of episodes (keys ``episode_buffer.EPISODE_BATCH_KEYS``).

        Runs every TBPTT window of the batch (see the module doc). Returns the
        metrics of METRIC_NAMES before each window's step: the losses and Q
        mean averaged over all valid steps of the batch, the gradient global
        norms (before clipping) averaged over the windows (the actor's over
        the windows that stepped it: all without ``policy_delay``; 0 if none
        did). With twin critics the critic loss is the sum of both critics'
        losses (as ``ddpg`` reports it) and ``q_mean`` is critic 1's.
        """
        cfg = self.config
        k1, k2 = cfg.tbptt_k1, cfg.tbptt_k2
        state, last_action, action, reward, next_state, done, mask = self._prepare(batch)
        target = self._targets_fn(state, last_action, action, reward, next_state, done, mask)
        length = state.shape[1]
        back = -(-length // k1) * k1 - length
        front = k2 - k1
        state, last_action, action, target, mask = (
            _pad_time(x, front, back) for x in (state, last_action, action, target.numpy(),
                                                mask))
        actor_carry = zero_state(state.shape[0], cfg.actor_lstm_units)
        critic_carry = self._critic_zero_state(state.shape[0])
        sums = dict.fromkeys(METRIC_NAMES, 0.0)
        steps_total, windows = 0, (length + back) // k1
        turns = [self._actor_turn(self.update_count + i) for i in range(windows)]
        for index in range(windows):
            window = slice(index * k1, index * k1 + k2)
            metrics, actor_carry, critic_carry = self._window_fn(
                state[:, window], last_action[:, window], action[:, window],
                target[:, window], mask[:, window], actor_carry, critic_carry,
                tf.constant(turns[index]), True)
            self.update_count += 1
            steps = int(mask[:, window][:, front:].sum())
            steps_total += steps
            for name in ('critic_loss', 'actor_loss', 'q_mean'):
                sums[name] += float(metrics[name]) * steps
            sums['critic_grad_norm'] += float(metrics['critic_grad_norm']) / windows
            if turns[index]:   # (the actor's norm: over the windows that stepped it)
                sums['actor_grad_norm'] += float(metrics['actor_grad_norm']) / sum(turns)
        for name in ('critic_loss', 'actor_loss', 'q_mean'):
            sums[name] /= max(steps_total, 1)
        return sums

    def gradients(self, batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
        """
        Return the losses and gradients of one batch that fits one TBPTT window; apply nothing.

        For tests and diagnostics: the batch's padded length must be <= k1.
        Returns ``critic_loss``, ``actor_loss``, ``q_mean`` (floats),
        ``target`` (B, T) and ``critic_gradients`` / ``actor_gradients`` (lists
        of arrays in the order of the networks' trainable variables: critic 1's,
        then critic 2's with twin critics). With target smoothing each call
        draws new noise (it advances the smoothing generator).
        """
        cfg = self.config
        state, last_action, action, reward, next_state, done, mask = self._prepare(batch)
        if state.shape[1] > cfg.tbptt_k1:
            raise ValueError(f'batch of {state.shape[1]} steps does not fit one window of '
                             f'k1 = {cfg.tbptt_k1} steps')
        target = self._targets_fn(state, last_action, action, reward, next_state,
                                  done, mask).numpy()
        back, front = cfg.tbptt_k1 - state.shape[1], cfg.tbptt_k2 - cfg.tbptt_k1
        padded = [_pad_time(x, front, back) for x in (state, last_action, action, target, mask)]
        batch_size = state.shape[0]
        metrics, _, _ = self._window_fn(
            *padded, zero_state(batch_size, cfg.actor_lstm_units),
            self._critic_zero_state(batch_size), tf.constant(True), False)
        result = {name: float(metrics[name]) for name in ('critic_loss', 'actor_loss', 'q_mean')}
        result['target'] = target
        result['critic_gradients'] = [g.numpy() for g in metrics['critic_gradients']]
        result['actor_gradients'] = [g.numpy() for g in metrics['actor_gradients']]
        return result

    def _prepare(self, batch: Dict[str, np.ndarray]):
        """Return the batch as float32 arrays with every padded entry zeroed, and the mask."""
        mask = np.asarray(batch['mask'], bool)
        if mask.ndim != 2:
            raise ValueError(f'mask must be (batch, time), got {mask.shape}')

        def clean(key, width):
            x = np.asarray(batch[key], np.float32)
            shape = mask.shape + ((width,) if width else ())
            if x.shape != shape:
                raise ValueError(f'{key} has shape {x.shape}, expected {shape}')
            keep = mask[..., np.newaxis] if width else mask
            return np.where(keep, x, np.float32(0.0))

        return (clean('state', self.state_dim), clean('last_action', self.action_dim),
                clean('action', self.action_dim),
                clean('reward', 0) * np.float32(self.config.reward_scale),
                clean('next_state', self.state_dim), clean('done', 0), mask)

    def _targets_graph(self, state, last_action, action, reward, next_state, done, mask):
        """
        Return the TD targets (B, T) (compiled, no gradient).

        The target networks run over (s_0, next_state_0 .. next_state_T-1) with
        last actions (last_action_0, action_0 .. action_T-1): output t + 1 is
        Q'(h_t+1, mu'(h_t+1)) (with smoothing noise on mu', the smaller of
        both target critics' with twin critics).
        """
        cfg = self.config
        ext_state = tf.concat([state[:, :1], next_state], axis=1)
        ext_last_action = tf.concat([last_action[:, :1], action], axis=1)
        ext_mask = tf.concat([mask[:, :1], mask], axis=1)
        batch_size = tf.shape(state)[0]
        actor_zero = [tf.zeros([batch_size, u]) for u in cfg.actor_lstm_units for _ in range(2)]
        critic_zero = [tf.zeros([batch_size, u]) for u in cfg.critic_lstm_units for _ in range(2)]
        # tf.identity drops the Keras mask the sequence output carries (the critic
        # takes the mask as an input of its own).
        next_action = tf.identity(self.target_actor(
            [ext_state, ext_last_action, ext_mask] + actor_zero, training=False)[0])
        if cfg.target_noise > 0:   # target policy smoothing
            noise = tf.clip_by_value(
                self._smoothing.normal(tf.shape(next_action)) * cfg.target_noise,
                -cfg.target_noise_clip, cfg.target_noise_clip)
            next_action = tf.clip_by_value(next_action + noise, -1.0, 1.0)
        next_q = self.target_critic([ext_state, ext_last_action, next_action, ext_mask]
                                    + critic_zero, training=False)[0][:, 1:]
        if self.target_critic2 is not None:
            next_q = tf.minimum(next_q, self.target_critic2(
                [ext_state, ext_last_action, next_action, ext_mask] + critic_zero,
                training=False)[0][:, 1:])
        return tf.stop_gradient(reward + cfg.gamma * (1.0 - done) * next_q)

    def _run_window(self, model, inputs, mask, carry):
        """
        Run a sequence model over a window of k2 steps from ``carry``.

        Returns (outputs over the window, stop-gradient state after the first k1
        steps, which is where the next window starts).
        """
        k1, k2 = self.config.tbptt_k1, self.config.tbptt_k2
        first = model([x[:, :k1] for x in inputs] + [mask[:, :k1]] + list(carry), training=True)
        carry_next = [tf.stop_gradient(s) for s in first[1:]]
        if k1 == k2:
            return first[0], carry_next
        rest = model([x[:, k1:] for x in inputs] + [mask[:, k1:]] + list(first[1:]),
                     training=True)
        return tf.concat([first[0], rest[0]], axis=1), carry_next

    def _window_graph(self, state, last_action, action, target, mask, actor_carry,
                      critic_carry, actor_turn, apply: bool):
        """
        One TBPTT window (compiled): losses, gradients, optimiser steps, soft updates.

        ``critic_carry`` holds critic 1's LSTM state, then critic 2's (twin
        critics). ``actor_turn`` (bool tensor) says whether the actor steps and
        the targets move in this window; it is read only with ``policy_delay``
        > 1. ``apply`` False steps nothing and returns the gradients.
        """
        cfg = self.config
        front = cfg.tbptt_k2 - cfg.tbptt_k1
        loss_mask = mask[:, front:]
        actor_vars = self.actor.trainable_variables
        critic_vars = self._critic_variables()
        split = 2 * len(cfg.critic_lstm_units)
        with tf.GradientTape(persistent=True) as tape:
            encoding, critic_next = self._run_window(
                self.critic_encoder, [state, last_action], mask, critic_carry[:split])
            encoding = encoding[:, front:]
            q = self.critic_head([encoding, action[:, front:]], training=True)
            critic_loss = masked_mean(tf.square(target[:, front:] - q), loss_mask)
            if self.critic2 is not None:   # both critics on the same targets
                encoding2, critic2_next = self._run_window(
                    self.critic2_encoder, [state, last_action], mask, critic_carry[split:])
                q2 = self.critic2_head([encoding2[:, front:], action[:, front:]],
                                       training=True)
                critic_loss = critic_loss + masked_mean(tf.square(target[:, front:] - q2),
                                                        loss_mask)
                critic_next = list(critic_next) + list(critic2_next)
            mu, actor_next = self._run_window(self.actor, [state, last_action], mask,
                                              actor_carry)
            actor_q = self.critic_head([tf.stop_gradient(encoding), tf.identity(mu[:, front:])],
                                       training=True)
            actor_loss = -masked_mean(actor_q, loss_mask)
        critic_grads = tape.gradient(critic_loss, critic_vars)
        if apply and cfg.policy_delay > 1:
            actor_grads = None   # (computed on the actor's turn only)
        else:
            actor_grads = tape.gradient(actor_loss, actor_vars)
        critic_grads, critic_norm = clip_gradients(critic_grads, cfg.grad_clip_norm)
        if actor_grads is not None:
            actor_grads, actor_norm = clip_gradients(actor_grads, cfg.grad_clip_norm)
        metrics = {'critic_loss': critic_loss, 'actor_loss': actor_loss,
                   'q_mean': masked_mean(q, loss_mask), 'critic_grad_norm': critic_norm}
        if not apply:
            metrics['actor_grad_norm'] = actor_norm
            metrics['critic_gradients'] = critic_grads
            metrics['actor_gradients'] = actor_grads
            return metrics, actor_next, critic_next
        self.critic_optimizer.apply_gradients(zip(critic_grads, critic_vars))
        if actor_grads is not None:   # policy_delay 1: every window, as RDPG
            self.actor_optimizer.apply_gradients(zip(actor_grads, actor_vars))
            self._soft_update_graph(cfg.tau)
        else:
            def update_actor():
                grads, norm = clip_gradients(tape.gradient(actor_loss, actor_vars),
                                             cfg.grad_clip_norm)
                self.actor_optimizer.apply_gradients(zip(grads, actor_vars))
                self._soft_update_graph(cfg.tau)
                return norm

            actor_norm = tf.cond(actor_turn, update_actor, lambda: tf.constant(0.0))
        metrics['actor_grad_norm'] = actor_norm
        return metrics, actor_next, critic_next

    def _soft_update_graph(self, tau: float) -> None:
        """Move every target network towards its online one by ``tau``."""
        soft_update(self.target_critic.weights, self.critic.weights, tau)
        if self.critic2 is not None:
            soft_update(self.target_critic2.weights, self.critic2.weights, tau)
        soft_update(self.target_actor.weights, self.actor.weights, tau)

    def soft_update_targets(self, tau: Optional[float] = None) -> None:
        """Move every target network towards its online one by ``tau`` (default config.tau)."""
        self._soft_update_graph(self.config.tau if tau is None else float(tau))

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, directory) -> pathlib.Path:
        """
        Write everything needed to resume into ``directory`` (replaced as a whole).

        ``rdpg.weights.h5`` holds the four networks (six with twin critics)
        and both optimisers (Keras' weights format); ``agent.json`` the rest,
        with the target smoothing generator's state. The files are written to a
        temporary sibling first and swapped in, so a crash never leaves a
        half-written checkpoint under the name. The recurrent acting state of a
        running episode is not saved: a resumed agent starts a new episode.
        """
        return write_checkpoint(directory, 'rdpg', {
            'state_dim': self.state_dim, 'action_dim': self.action_dim,
            'config': self.config.to_dict(), 'update_count': self.update_count,
            'noise': self.noise.get_state(), 'sampling_rng': self.rng.bit_generator.state,
            'smoothing_state': [int(v) for v in self._smoothing.state.numpy()]},
            lambda tmp: self._saveable.save_weights(tmp / 'rdpg.weights.h5'))

    @classmethod
    def load_checkpoint(cls, directory) -> 'RdpgAgent':
        """
        Return the agent saved by ``save_checkpoint`` in ``directory``, ready to resume.

        A checkpoint from before the TD3 options (its config without them, no
        smoothing state) loads as the RDPG agent it was.
        """
        directory = pathlib.Path(directory)
        meta = read_manifest(directory, 'rdpg')
        agent = cls(meta['state_dim'], meta['action_dim'], RdpgConfig.from_dict(meta['config']))
        agent._saveable.load_weights(directory / 'rdpg.weights.h5')
        agent.update_count = int(meta['update_count'])
        agent.noise.set_state(meta['noise'])
        agent.rng.bit_generator.state = meta['sampling_rng']
        if 'smoothing_state' in meta:   # (checkpoints before target smoothing lack it)
            agent._smoothing.state.assign(np.array(meta['smoothing_state'], np.int64))
        return agent


def _pad_time(x: np.ndarray, front: int, back: int) -> np.ndarray:
    """Pad axis 1 (time) of x with ``front`` zeros before and ``back`` after (False for bool)."""
    if front == 0 and back == 0:
        return np.asarray(x)
    widths = [(0, 0), (front, back)] + [(0, 0)] * (np.ndim(x) - 2)
    return np.pad(x, widths)
