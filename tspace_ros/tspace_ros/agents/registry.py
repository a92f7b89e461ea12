"""
The algorithm registry: one TensorFlow-free description per learning algorithm.

Every stage that depends on the algorithm reads it here: the trainer core
(which agent to build, what it samples, what its blob carries), the trainer
node (a parameter for every field of the algorithm's config), the agent node
(which actor the vehicle runs), policy exchange (which names a blob may carry),
the main job (its ``--algorithm`` choices) and the parameter files
(``config/agents/<name>.yaml``).

An ``Algorithm`` names:

- ``config_type``: its hyperparameter dataclass (``agents.configs``, no TF),
  and ``config_defaults``: the fields it sets differently from that type's
  defaults (TD3 is DDPG's config with the TD3 options on);
- ``agent``: ``'module:Class'``, imported only when an agent is built
  (TensorFlow loads then);
- ``samples``: ``'records'`` (a ``TransitionSource``: one sample is one
  transition) or ``'episodes'`` (an ``EpisodeSource``: one sample is one
  episode);
- ``actor``: ``'feedforward'`` (the vehicle runs ``action = mu(state)``; the
  blob's inference model has the state normalisation built in) or
  ``'recurrent'`` (the vehicle runs the step actor and carries its LSTM state);
- ``default_min_samples``: samples before the first update;
- ``sequence_field``: the config field the trainer's ``rdpg_max_length`` sets
  (None: none);
- ``metrics``: what one update reports.

Adding an algorithm is one module with its agent (and, if it needs one, its
config dataclass) and one ``register`` call below.
"""

import dataclasses
import importlib
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from tspace_ros.agents.configs import (
    DdpgConfig, RdpgConfig, RECURRENT_TD3_OPTIONS, TD3_OPTIONS)

SAMPLE_KINDS = ('records', 'episodes')
ACTOR_KINDS = ('feedforward', 'recurrent')
# A parameter value that means "None" for an optional numeric field (grad_clip_norm 0: off).
NONE_VALUE = 0


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One learning algorithm, as every stage needs to know it (see the module doc)."""

    name: str
    summary: str
    config_type: type
    agent: str
    samples: str
    actor: str
    default_min_samples: int
    metrics: Tuple[str, ...]
    config_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sequence_field: Optional[str] = None

    def __post_init__(self):
        """Check the description; ValueError naming what is wrong."""
        if self.samples not in SAMPLE_KINDS:
            raise ValueError(f'algorithm {self.name!r}: samples must be one of {SAMPLE_KINDS}')
        if self.actor not in ACTOR_KINDS:
            raise ValueError(f'algorithm {self.name!r}: actor must be one of {ACTOR_KINDS}')
        fields = config_fields(self.config_type)
        unknown = sorted(set(self.config_defaults) - set(fields))
        if unknown or (self.sequence_field is not None and self.sequence_field not in fields):
            raise ValueError(f'algorithm {self.name!r}: {self.config_type.__name__} has no '
                             f'field {unknown or self.sequence_field}')
        if ':' not in self.agent:
            raise ValueError(f"algorithm {self.name!r}: agent must be 'module:Class'")

    @property
    def recurrent(self) -> bool:
        """Tell whether the vehicle runs a step actor that carries an LSTM state."""
        return self.actor == 'recurrent'

    def agent_type(self):
        """Import the agent class (this loads TensorFlow) and return it."""
        module, _, name = self.agent.partition(':')
        return getattr(importlib.import_module(module), name)

    def make_config(self, values: Optional[Mapping[str, Any]] = None):
        """
        Return the algorithm's config: its defaults, then ``values`` (field: value).

        Unknown fields are a ValueError naming them; the config's own checks
        apply (ValueError).
        """
        values = dict(values or {})
        unknown = sorted(set(values) - set(config_fields(self.config_type)))
        if unknown:
            raise ValueError(f'{self.name} has no option {", ".join(unknown)} (its options: '
                             f'{", ".join(config_fields(self.config_type))})')
        try:
            return self.config_type(**{**self.config_defaults, **values})
        except (TypeError, ValueError) as error:
            raise ValueError(f'{self.name}: {error}') from None

    def default_config(self):
        """Return the algorithm's config with its defaults."""
        return self.make_config()


_REGISTRY: Dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Add an algorithm (ValueError if its name is taken); return it."""
    if algorithm.name in _REGISTRY:
        raise ValueError(f'algorithm {algorithm.name!r} is already registered')
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def names() -> Tuple[str, ...]:
    """Return the registered algorithms' names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Algorithm:
    """Return the algorithm of that name; ValueError listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f'unknown algorithm {name!r}; known: {", ".join(names())}') from None


def config_types() -> Tuple[type, ...]:
    """Return the distinct config types of the registered algorithms."""
    seen = []
    for algorithm in _REGISTRY.values():
        if algorithm.config_type not in seen:
            seen.append(algorithm.config_type)
    return tuple(seen)


# -- fields as parameters -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptionField:
    """One config field as a parameter: its kind, whether it may be None, its description."""

    name: str
    kind: type            # bool, int, float, str or tuple (of ints)
    optional: bool        # None allowed (given as 0 in a parameter)
    description: str


def config_fields(config_type: type) -> Dict[str, OptionField]:
    """Return the fields of a config dataclass as ``OptionField`` s, by name."""
    hints = typing.get_type_hints(config_type)
    fields = {}
    for field in dataclasses.fields(config_type):
        kind, optional = _kind(hints[field.name])
        fields[field.name] = OptionField(field.name, kind, optional,
                                         field.metadata.get('description', ''))
    return fields


def option_fields() -> Dict[str, OptionField]:
    """Return every field of every registered config type (one entry per name)."""
    fields: Dict[str, OptionField] = {}
    for config_type in config_types():
        for name, field in config_fields(config_type).items():
            have = fields.get(name)
            if have is not None and (have.kind, have.optional) != (field.kind, field.optional):
                raise ValueError(f'config field {name!r} has two kinds: {have.kind.__name__} '
                                 f'and {field.kind.__name__}')
            fields.setdefault(name, field)
    return fields


def _kind(hint) -> Tuple[type, bool]:
    """Return (kind, optional) of a field's type hint."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        return _kind(inner[0])[0], True
    if typing.get_origin(hint) is tuple:
        return tuple, False
    if hint in (bool, int, float, str):
        return hint, False
    raise ValueError(f'unsupported config field type {hint!r}')


def option_value(field: OptionField, value: Any) -> Any:
    """
    Return a parameter's value as the config field wants it; ValueError if it cannot be.

    An int is a float where a float is wanted (YAML writes 1 for 1.0); 0 is
    None for an optional field; a list of ints is a tuple.
    """
    def wrong():
        return ValueError(f'option {field.name!r} must be {_describe_kind(field)}, got '
                          f'{value!r}')
    if field.optional and value is not None and not isinstance(value, (bool, str, list, tuple)) \
            and value == NONE_VALUE:
        return None
    if field.kind is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if field.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if field.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        return float(value)
    if field.kind is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise wrong()
    return tuple(int(v) for v in value)


def _describe_kind(field: OptionField) -> str:
    kind = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string',
            tuple: 'a list of integers'}[field.kind]
    return kind + (' (0: none)' if field.optional else '')


def config_from_options(algorithm: Algorithm, get: Callable[[str], Any]):
    """
    Build the algorithm's config from options; ``get(name)`` returns a value or None (unset).

    Unset options keep the algorithm's defaults; options of other algorithms
    are ignored. ValueError names a wrong option.
    """
    values = {}
    for name, field in config_fields(algorithm.config_type).items():
        value = get(name)
        if value is not None:
            values[name] = option_value(field, value)
    return algorithm.make_config(values)


# -- the algorithms -----------------------------------------------------------------------

_FEEDFORWARD_METRICS = ('critic_loss', 'actor_loss', 'q_mean', 'critic_grad_norm',
                        'actor_grad_norm', 'preactivation_mean')
_RECURRENT_METRICS = ('critic_loss', 'actor_loss', 'q_mean', 'critic_grad_norm',
                      'actor_grad_norm')

register(Algorithm(
    name='ddpg', summary='DDPG: deterministic actor, one critic (Lillicrap et al. 2016)',
    config_type=DdpgConfig, agent='tspace_ros.agents.ddpg:DdpgAgent', samples='records',
    actor='feedforward', default_min_samples=1000, metrics=_FEEDFORWARD_METRICS))
register(Algorithm(
    name='td3', summary='TD3: DDPG with twin critics, target policy smoothing and delayed '
    'actor updates (Fujimoto et al. 2018)',
    config_type=DdpgConfig, agent='tspace_ros.agents.ddpg:DdpgAgent', samples='records',
    actor='feedforward', default_min_samples=1000, metrics=_FEEDFORWARD_METRICS,
    config_defaults=dict(TD3_OPTIONS)))
register(Algorithm(
    name='rdpg', summary='RDPG: recurrent actor and critic over whole episodes (Heess et al. '
    '2015)', config_type=RdpgConfig, agent='tspace_ros.agents.rdpg:RdpgAgent',
    samples='episodes', actor='recurrent', default_min_samples=2, metrics=_RECURRENT_METRICS,
    sequence_field='max_sequence_length'))
register(Algorithm(
    name='rtd3', summary='Recurrent TD3: RDPG with twin recurrent critics, target policy '
    'smoothing and delayed actor updates', config_type=RdpgConfig,
    agent='tspace_ros.agents.rdpg:RdpgAgent', samples='episodes', actor='recurrent',
    default_min_samples=2, metrics=_RECURRENT_METRICS, sequence_field='max_sequence_length',
    config_defaults=dict(RECURRENT_TD3_OPTIONS)))
