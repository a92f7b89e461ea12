"""
Keras builders for the DDPG actor and critic.

tspace's shapes (the defaults): the actor is 2 x 256 ReLU then a tanh output
whose kernel starts uniform in +-0.003 (so first actions are near 0); the critic
passes the state through 16 -> 32 ReLU, the action through 32 ReLU,
concatenates both and ends in 256 -> 256 ReLU -> 1 (linear Q value). Empty
branches give a plain MLP on [state, action] (as Stable-Baselines3 builds it).

Shapes: state (batch, state_dim), action (batch, action_dim), Q (batch, 1). No
model fixes its batch size. Initialisers take seeds derived from one ``seed``
so that a seeded agent starts from the same weights every time.
"""

from typing import Optional, Sequence

import keras
import numpy as np

# tspace's (and the DDPG paper's) final-layer initialisation range of the actor.
ACTOR_FINAL_INIT_LIMIT = 3e-3


def _seeds(seed: Optional[int], count: int):
    """Return ``count`` initialiser seeds derived from ``seed`` (None: unseeded)."""
    if seed is None:
        return [None] * count
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count) % (2 ** 31)]


def _dense_stack(x, units: Sequence[int], prefix: str, seeds):
    """Apply ReLU Dense layers named ``{prefix}_1``, ``{prefix}_2``, ... to ``x``."""
    for index, (width, seed) in enumerate(zip(units, seeds)):
        x = keras.layers.Dense(int(width), activation='relu',
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                               name=f'{prefix}_{index + 1}')(x)
    return x


def build_actor(state_dim: int, action_dim: int, hidden_units: Sequence[int] = (256, 256),
                final_init_limit: float = ACTOR_FINAL_INIT_LIMIT, seed: Optional[int] = None,
                name: str = 'actor') -> keras.Model:
    """
    Build the deterministic policy: state (batch, state_dim) -> action (batch, action_dim).

    Layers: ``hidden_1`` .. ``hidden_n`` (ReLU, Glorot uniform), then ``action``
    (tanh, kernel uniform in +-final_init_limit, bias zero), so actions lie in
    [-1, 1]. The input ``state`` has no fixed batch size.
    """
    _check_dims(state_dim, action_dim)
    seeds = _seeds(seed, len(hidden_units) + 1)
    state = keras.Input(shape=(state_dim,), name='state')
    x = _dense_stack(state, hidden_units, 'hidden', seeds)
    limit = float(final_init_limit)
    action = keras.layers.Dense(
        action_dim, activation='tanh', name='action',
        kernel_initializer=keras.initializers.RandomUniform(-limit, limit, seed=seeds[-1]))(x)
    return keras.Model(state, action, name=name)


def build_critic(state_dim: int, action_dim: int, state_units: Sequence[int] = (16, 32),
                 action_units: Sequence[int] = (32,),
                 hidden_units: Sequence[int] = (256, 256),
                 final_init_limit: Optional[float] = None, seed: Optional[int] = None,
                 name: str = 'critic') -> keras.Model:
    """
    Build the Q function: [state (batch, state_dim), action (batch, action_dim)] -> (batch, 1).

    Layers: ``state_1`` .. (ReLU) on the state, ``action_1`` .. (ReLU) on the
    action, ``concat``, ``hidden_1`` .. (ReLU), then ``q`` (linear). An empty
    branch passes its input straight to ``concat``. ``final_init_limit`` None
    gives ``q`` a Glorot-uniform kernel (tspace); a number draws it uniform in
    +-limit (the DDPG paper used 3e-3). Call it as ``critic([state, action])``.
    """
    _check_dims(state_dim, action_dim)
    n_layers = len(state_units) + len(action_units) + len(hidden_units) + 1
    seeds = iter(_seeds(seed, n_layers))
    state = keras.Input(shape=(state_dim,), name='state')
    action = keras.Input(shape=(action_dim,), name='action')
    s = _dense_stack(state, state_units, 'state', [next(seeds) for _ in state_units])
    a = _dense_stack(action, action_units, 'action', [next(seeds) for _ in action_units])
    x = keras.layers.Concatenate(name='concat')([s, a])
    x = _dense_stack(x, hidden_units, 'hidden', [next(seeds) for _ in hidden_units])
    last_seed = next(seeds)
    if final_init_limit is None:
        kernel_init = keras.initializers.GlorotUniform(seed=last_seed)
    else:
        limit = float(final_init_limit)
        kernel_init = keras.initializers.RandomUniform(-limit, limit, seed=last_seed)
    q = keras.layers.Dense(1, name='q', kernel_initializer=kernel_init)(x)
    return keras.Model([state, action], q, name=name)


def _check_dims(state_dim: int, action_dim: int) -> None:
    """Raise ValueError unless both dimensions are positive."""
    if state_dim < 1 or action_dim < 1:
        raise ValueError(f'state_dim and action_dim must be positive, got {state_dim}, '
                         f'{action_dim}')
