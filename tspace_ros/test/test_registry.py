"""The algorithm registry: one description per algorithm, read by every stage."""

import subprocess
import sys

import pytest

from tspace_ros.agents import registry
from tspace_ros.agents.configs import (
    DdpgConfig, RdpgConfig, RECURRENT_TD3_OPTIONS, TD3_OPTIONS)


def test_the_shipped_algorithms_and_what_each_stage_reads():
    assert registry.names() == ('ddpg', 'td3', 'rdpg', 'rtd3')
    ddpg, td3, rdpg, rtd3 = (registry.get(name) for name in registry.names())
    assert (ddpg.samples, ddpg.actor, ddpg.config_type) == ('records', 'feedforward', DdpgConfig)
    assert (rdpg.samples, rdpg.actor, rdpg.config_type) == ('episodes', 'recurrent', RdpgConfig)
    assert rdpg.recurrent and not td3.recurrent
    # TD3 is DDPG's config with its options on; DDPG is the special case with them off.
    assert td3.default_config() == DdpgConfig(**TD3_OPTIONS)
    assert ddpg.default_config() == DdpgConfig()
    assert not ddpg.default_config().twin_critics
    assert rdpg.sequence_field == 'max_sequence_length' and ddpg.sequence_field is None
    # Recurrent TD3 is RDPG's config (and agent) with the TD3 options on.
    assert (rtd3.samples, rtd3.actor, rtd3.config_type) == ('episodes', 'recurrent', RdpgConfig)
    assert rtd3.agent == rdpg.agent and rtd3.recurrent and rtd3.default_min_samples == 2
    assert rtd3.sequence_field == 'max_sequence_length' and rtd3.metrics == rdpg.metrics
    config = rtd3.default_config()
    assert isinstance(config, RdpgConfig) and config.twin_critics
    assert config == RdpgConfig(**RECURRENT_TD3_OPTIONS)
    assert (config.policy_delay, config.target_noise, config.target_noise_clip) == (2, 0.2, 0.5)
    assert not rdpg.default_config().twin_critics and rdpg.default_config().policy_delay == 1


def test_unknown_algorithm_and_unknown_options_are_named():
    with pytest.raises(ValueError, match=r"unknown algorithm 'sac'; known: ddpg, td3, rdpg, rtd3"):
        registry.get('sac')
    with pytest.raises(ValueError, match='rdpg has no option critic_loss'):
        registry.get('rdpg').make_config({'critic_loss': 'huber'})
    with pytest.raises(ValueError, match='rtd3: .*policy_delay'):
        registry.get('rtd3').make_config({'policy_delay': 0})
    with pytest.raises(ValueError, match='td3: .*policy_delay'):
        registry.get('td3').make_config({'policy_delay': 0})
    with pytest.raises(ValueError, match='already registered'):
        registry.register(registry.get('ddpg'))


def test_options_from_parameters_convert_and_check_each_kind():
    fields = registry.option_fields()
    # Every field of both config types, each with its description.
    import dataclasses
    names = {f.name for t in (DdpgConfig, RdpgConfig) for f in dataclasses.fields(t)}
    assert set(fields) == names
    assert all(field.description for field in fields.values())
    given = {'gamma': 1, 'grad_clip_norm': 0, 'actor_units': [8, 4], 'critic_loss': 'huber'}
    config = registry.config_from_options(registry.get('td3'), given.get)
    assert config.gamma == 1.0 and isinstance(config.gamma, float)
    assert config.grad_clip_norm is None and config.actor_units == (8, 4)
    assert config.twin_critics and config.critic_loss == 'huber'
    # An option of another algorithm is ignored; a wrong kind is named.
    assert registry.config_from_options(registry.get('rdpg'), {'critic_loss': 1}.get) == \
        RdpgConfig()
    for name, value in (('twin_critics', 1), ('batch_size', True), ('gamma', 'high'),
                        ('actor_units', [1.5]), ('noise', 3)):
        with pytest.raises(ValueError, match=f"option '{name}' must be"):
            registry.config_from_options(registry.get('ddpg'), {name: value}.get)


def test_the_registry_loads_no_tensorflow():
    code = ('import sys; from tspace_ros.agents import registry; '
            'registry.get("td3").default_config(); '
            'from tspace_ros.agents import policy_exchange; '
            'print("tensorflow" in sys.modules, "keras" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['False', 'False']
