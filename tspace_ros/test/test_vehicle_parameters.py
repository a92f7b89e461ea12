"""Vehicle parameter files: the shipped one loads; bad ones name the key and the expectation."""

import copy

import pytest

from tspace_ros.vehicle import (load_torque_map, load_vehicle_parameters, vehicle_config_path,
                                vehicle_parameters_from_dict, VehicleConfigError,
                                VehicleSimulation)
import yaml

SHIPPED = vehicle_config_path('sim_van')
DATA = yaml.safe_load(SHIPPED.read_text())


def write_vehicle(tmp_path, data, name='van.yaml'):
    """Write a vehicle file next to a copy of the default map; return its path."""
    (tmp_path / 'sim_van_default_map.yaml').write_text(
        (SHIPPED.parent / 'sim_van_default_map.yaml').read_text())
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def changed(section, key, value):
    """Return the shipped data with one value replaced (value None: the key removed)."""
    data = copy.deepcopy(DATA)
    if value is None:
        del data[section][key]
    else:
        data[section][key] = value
    return data


def test_shipped_vehicle_loads_with_its_documented_values():
    """The sim van file is complete, and its default map path resolves next to it."""
    params = load_vehicle_parameters()
    assert params.source == str(SHIPPED)
    assert params.motor.peak_torque_nm == 430.0 and params.battery.cells_in_series == 108
    assert params.default_map_path == SHIPPED.parent / 'sim_van_default_map.yaml'
    assert params.load_default_map().shape == (14, 17)
    assert params.simulation.physics_step_s == 0.01 and params.simulation.signal_rate_hz == 50.0


def test_every_value_in_the_shipped_file_has_a_comment():
    """Each value has an inline comment or sits in a block of values under a comment."""
    lines = [line.strip() for line in SHIPPED.read_text().splitlines()]

    def is_value(line):
        return bool(line) and not line.startswith('#') and not line.endswith(':')

    for number, line in enumerate(lines):
        if not is_value(line) or '#' in line:
            continue
        above = number - 1
        while above >= 0 and is_value(lines[above]):
            above -= 1
        assert above >= 0 and lines[above].startswith('#'), f'no comment for {line!r}'


@pytest.mark.parametrize('section, key, value, message', [
    ('motor', 'peak_torque_nm', -5.0, r'motor\.peak_torque_nm: expected a number in '
                                      r'\(0\.0, 10000\.0\], got -5\.0'),
    ('body', 'test_mass_kg', 'heavy', r"body\.test_mass_kg: expected a number .* got 'heavy'"),
    ('body', 'drag_coefficient', True, r'body\.drag_coefficient: expected a number'),
    ('battery', 'cells_in_series', 96.5, r'battery\.cells_in_series: expected an integer'),
    ('battery', 'initial_soc', 1.2, r'battery\.initial_soc: expected a number in \[0\.0, 1\.0\]'),
    ('driveline', 'gear_efficiency', None, r'driveline\.gear_efficiency: missing; expected'),
    ('driver', 'preview_s', float('nan'), r'driver\.preview_s: expected a number'),
    ('battery', 'cell_ocv_v', [3.3, 3.4], r'battery\.cell_ocv_v: expected one voltage per SOC'),
    ('battery', 'soc_breakpoints', [0.0, 0.5, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99,
                                    1.0], r'battery\.soc_breakpoints: expected strictly'),
    ('battery', 'cell_ocv_v', 'flat', r'battery\.cell_ocv_v: expected a list of at least 2'),
])
def test_bad_values_name_the_key_and_what_was_expected(tmp_path, section, key, value, message):
    """A wrong value is refused with the file, the key and the expected kind or range."""
    path = write_vehicle(tmp_path, changed(section, key, value))
    with pytest.raises(VehicleConfigError, match=message) as error:
        load_vehicle_parameters(path)
    assert str(path) in str(error.value)


def test_unknown_and_missing_keys_and_sections_are_named(tmp_path):
    """Misspelt keys, unknown and missing sections and non-mappings are refused clearly."""
    data = copy.deepcopy(DATA)
    data['motor']['peak_torqe_nm'] = 400.0
    with pytest.raises(VehicleConfigError, match=r"motor: unknown key\(s\) \['peak_torqe_nm'\]"):
        vehicle_parameters_from_dict(data)
    data = copy.deepcopy(DATA)
    data['gearbox'] = {}
    with pytest.raises(VehicleConfigError, match=r"unknown key\(s\) \['gearbox'\]"):
        vehicle_parameters_from_dict(data)
    data = copy.deepcopy(DATA)
    del data['brakes']
    with pytest.raises(VehicleConfigError, match='brakes: missing; expected a mapping'):
        vehicle_parameters_from_dict(data)
    data = copy.deepcopy(DATA)
    data['battery'] = [1, 2]
    with pytest.raises(VehicleConfigError, match='battery: expected a mapping'):
        vehicle_parameters_from_dict(data)
    with pytest.raises(VehicleConfigError, match='expected a mapping with keys'):
        vehicle_parameters_from_dict(['not', 'a', 'mapping'])


def test_unreadable_files_and_bad_maps_are_clear_errors(tmp_path):
    """Missing files, invalid YAML and a broken default map name the file and the problem."""
    with pytest.raises(VehicleConfigError, match='cannot read vehicle file'):
        load_vehicle_parameters(tmp_path / 'absent.yaml')
    broken = tmp_path / 'broken.yaml'
    broken.write_text('body: [unclosed\n')
    with pytest.raises(VehicleConfigError, match='not valid YAML'):
        load_vehicle_parameters(broken)
    data = copy.deepcopy(DATA)
    data['default_map'] = 'bad_map.yaml'
    path = write_vehicle(tmp_path, data)
    (tmp_path / 'bad_map.yaml').write_text(yaml.safe_dump({'speed_breakpoints_kph': [0, 10],
                                                           'pedal_breakpoints': [0, 1],
                                                           'torque_nm': [[0, 1, 2]]}))
    params = load_vehicle_parameters(path)
    with pytest.raises(VehicleConfigError, match=r'bad_map\.yaml: invalid torque map: .*shape'):
        params.load_default_map()
    with pytest.raises(VehicleConfigError, match='invalid torque map'):
        VehicleSimulation(params, 'nedc')
    with pytest.raises(VehicleConfigError, match='cannot read torque map file'):
        load_torque_map(tmp_path / 'absent_map.yaml')
    with pytest.raises(VehicleConfigError, match="no vehicle file 'no_such_van.yaml'"):
        vehicle_config_path('no_such_van')
