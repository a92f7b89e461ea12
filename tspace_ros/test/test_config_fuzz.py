"""
Configuration files are hostile input: bounded YAML, clear errors naming the file.

Arbitrary bytes (hypothesis) through the bounded loader; alias bombs, deep
nesting, huge and non-UTF-8 files through the vehicle-file, parameter-file and
override loaders: each is refused with the loader's own error naming the file,
never a RecursionError, a MemoryError or a hang.
"""

import pathlib

from hypothesis import given, settings, strategies as st
import pytest

from tspace_ros.bounded_yaml import load_bounded, MAX_BYTES, YamlBoundsError
from tspace_ros.suite import load_node_parameters, parse_overrides, SuiteConfigError
from tspace_ros.vehicle.parameters import (load_torque_map, load_vehicle_parameters,
                                           vehicle_config_path, VehicleConfigError)

BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + ''.join(f'{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},'
                  f'*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n'
                  for i in range(8)))
HOSTILE = {
    'alias bomb': (BOMB.encode(), 'anchors and aliases'),
    'deep flow nesting': (b'x: ' + b'[' * 5000 + b']' * 5000 + b'\n', 'nested more than'),
    'deep block nesting': (''.join(' ' * i + f'k{i}:\n' for i in range(300)).encode(),
                           'nested more than'),
    'huge': (b'a: 1\n' + b'#' * (MAX_BYTES + 10), 'larger than'),
    'not utf-8': (b'a: \xff\xfe\n', 'not UTF-8'),
    'unclosed': (b'key: [unclosed\n', 'not valid YAML'),
}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.text(alphabet='[]{}:- ,&*!|>"\'\n\tab01.#', max_size=200)))
def test_any_text_is_a_value_or_a_bounds_error(data):
    try:
        load_bounded(data, 'fuzz.yaml')
    except YamlBoundsError as error:
        assert str(error).startswith('fuzz.yaml')


@pytest.mark.parametrize('name', sorted(HOSTILE))
def test_hostile_files_are_refused_naming_the_file(tmp_path, name):
    data, reason = HOSTILE[name]
    path = tmp_path / 'hostile.yaml'
    path.write_bytes(data)
    for load, error in ((load_vehicle_parameters, VehicleConfigError),
                        (load_node_parameters, SuiteConfigError),
                        (load_torque_map, VehicleConfigError)):
        with pytest.raises(error) as raised:
            load(path)
        assert str(path) in str(raised.value) and reason in str(raised.value), raised.value


def test_a_shipped_file_still_loads_and_overrides_are_bounded(tmp_path):
    assert load_vehicle_parameters(vehicle_config_path('sim_van')).vehicle_id
    assert parse_overrides(['agent.noise_sigma=0.2']) == {'agent': {'noise_sigma': 0.2}}
    with pytest.raises(SuiteConfigError, match='anchors and aliases'):
        parse_overrides(['agent.x=&a [*a]'])
    with pytest.raises(SuiteConfigError, match='nested more than'):
        parse_overrides(['agent.x=' + '[' * 100 + ']' * 100])
    copy = tmp_path / 'van.yaml'
    copy.write_text(pathlib.Path(vehicle_config_path('sim_van')).read_text())
    assert load_vehicle_parameters(copy).vehicle_id
