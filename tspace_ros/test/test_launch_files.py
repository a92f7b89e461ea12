"""
The suite's launch files and its parameter file: what they start, and that every key is real.

sim.launch.py and vehicle.launch.py build their descriptions in launch/tspace_launch.py;
with launch_ros importable (a ROS 2 install) the descriptions are built and checked,
elsewhere that test is skipped with the reason. The parameter file they pass
(config/sim_suite.yaml) is checked against the nodes everywhere: every section is a
node of the suite and every key a parameter the node declares, and a wrong key stops a
node in configure with the file and the key named.
"""

import ast
import importlib.util
import pathlib

from lifecycle_msgs.msg import Transition
import pytest
import rclpy
from ros_test_support import NodeProcess, PACKAGE_DIR, RosContext
from test_config_and_launch import _setup_console_scripts
from test_window_source_lifecycle import LifecycleDriver

from tspace_ros.suite import load_node_parameters, Suite
import yaml

LAUNCH_DIR = PACKAGE_DIR / 'launch'
SUITE_PARAMS = PACKAGE_DIR / 'config' / 'sim_suite.yaml'


def _launched_executables():
    tree = ast.parse((LAUNCH_DIR / 'tspace_launch.py').read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if getattr(node.func, 'id', None) == 'lifecycle' and node.args and \
                    isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
            names |= {kw.value.value for kw in node.keywords if kw.arg == 'executable' and
                      isinstance(kw.value, ast.Constant)}
    return names


def test_launch_files_start_installed_executables_and_every_node_has_parameters():
    launched = _launched_executables()
    assert {'storage', 'trainer', 'can_bridge', 'cruncher', 'agent', 'vehicle_sim',
            'lifecycle_manager', 'recorder', 'map_viz'} <= launched
    assert launched <= _setup_console_scripts()
    sections = set(load_node_parameters(SUITE_PARAMS))
    assert {'storage', 'trainer', 'can_bridge', 'cruncher', 'agent', 'vehicle_sim',
            'lifecycle_manager'} <= sections
    for name in ('sim.launch.py', 'vehicle.launch.py'):
        tree = ast.parse((LAUNCH_DIR / name).read_text())
        assert 'generate_launch_description' in {
            n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_launched_node_is_respawned():
    # A killed node comes back (launch respawn); the lifecycle manager reactivates it.
    tree = ast.parse((LAUNCH_DIR / 'tspace_launch.py').read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and
             getattr(n.func, 'id', None) in ('LifecycleNode', 'Node')]
    assert len(calls) >= 4
    for call in calls:
        assert any(kw.arg is None and getattr(kw.value, 'id', None) == 'RESPAWN'
                   for kw in call.keywords), ast.dump(call)[:200]
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and
                  getattr(n.targets[0], 'id', None) == 'RESPAWN')
    assert ast.literal_eval(assign.value) == {'respawn': True, 'respawn_delay': 2.0}


LAYERS = sorted(p for folder in ('agents', 'storage', 'sites', 'drivers', 'links')
                for p in (PACKAGE_DIR / 'config' / folder).glob('*.yaml')) + \
    sorted((PACKAGE_DIR / 'config' / 'vehicles').glob('*_suite.yaml'))


def test_every_key_of_every_layered_parameter_file_is_a_declared_parameter(tmp_path):
    assert len(LAYERS) >= 7
    nodes = {'storage', 'trainer', 'can_bridge', 'cloud_bridge', 'cruncher', 'agent',
             'map_viz'}
    cloud = {}
    for path in LAYERS:
        sections = load_node_parameters(path)
        assert set(sections) <= nodes, path
        cloud.update(sections.get('cloud_bridge', {}))
    rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
    suite = Suite('LAYERS_CHECK', [SUITE_PARAMS, *LAYERS])
    try:
        for name, node in suite.nodes.items():
            assert node.parameters_valid(), name
        # The cloud bridge is not in the simulated suite: its keys are checked on the node.
        from rclpy.parameter import Parameter

        from tspace_ros.nodes.cloud_bridge import CloudBridge
        assert cloud, 'no layer configures the cloud bridge'
        bridge = CloudBridge('cloud_bridge', namespace='LAYERS_CHECK', parameter_overrides=[
            Parameter(key, value=value) for key, value in cloud.items()])
        try:
            assert bridge.parameters_valid(), cloud
        finally:
            bridge.destroy_node()
    finally:
        suite.close()
        rclpy.try_shutdown()


def test_the_cloud_link_runs_the_cloud_bridge_with_its_layer_under_later_files(tmp_path):
    from tspace_ros.suite import link_params_path, SuiteConfigError
    with pytest.raises(SuiteConfigError, match='simulate=False'):
        Suite('CLOUD_CHECK', link='cloud')
    with pytest.raises(SuiteConfigError, match='link must be one of'):
        Suite('CLOUD_CHECK', link='carrier_pigeon', simulate=False)
    layer = load_node_parameters(link_params_path('cloud'))
    later = tmp_path / 'later.yaml'
    later.write_text(yaml.safe_dump({'/**/cloud_bridge': {'ros__parameters': {
        'signal_duration_s': 6}}}))
    rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
    suite = Suite('CLOUD_CHECK', [SUITE_PARAMS, later], link='cloud', simulate=False,
                  overrides={'storage': {'root': str(tmp_path / 'pool')}})
    try:
        assert suite.bridge_name == 'cloud_bridge'
        assert 'cloud_bridge' in suite.nodes and 'can_bridge' not in suite.nodes
        assert 'vehicle_sim' not in suite.nodes
        # The link's layer (elastic steps over the cloud) over the suite's file...
        assert suite['cruncher'].get_parameter('max_step_windows').value == \
            layer['cruncher']['max_step_windows'] != \
            load_node_parameters(SUITE_PARAMS)['cruncher']['max_step_windows']
        # ... under the files after it.
        assert suite['cloud_bridge'].get_parameter('signal_duration_s').value == 6
        names = suite.manager.node_names
        assert names.index('cloud_bridge') < names.index('cruncher') < names.index('agent')
        for node in suite.nodes.values():
            assert node.parameters_valid()
    finally:
        suite.close()
        rclpy.try_shutdown()


def test_every_key_of_the_suite_parameter_file_is_a_declared_parameter(tmp_path):
    rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
    suite = Suite('PARAMS_CHECK', overrides={'storage': {'root': str(tmp_path / 'pool')}})
    try:
        params = load_node_parameters(SUITE_PARAMS)
        for name, node in suite.nodes.items():
            assert node.parameters_valid(), name
            for key, value in params.get(name, {}).items():
                if (name, key) != ('storage', 'root'):  # overridden above
                    assert node.get_parameter(key).value == value, (name, key)
        assert suite.manager.node_names == params['lifecycle_manager']['node_names']
    finally:
        suite.close()
        rclpy.try_shutdown()


def test_a_wrong_key_or_value_in_a_parameter_file_stops_configure_naming_file_and_key(
        tmp_path):
    params = tmp_path / 'typo.yaml'
    params.write_text(yaml.safe_dump({'/**/storage': {'ros__parameters': {
        'root': str(tmp_path / 'pool'), 'max_age': 3600.0}}}))
    bad_value = tmp_path / 'bad_value.yaml'
    bad_value.write_text(yaml.safe_dump({'/**/cruncher': {'ros__parameters': {
        'max_step_windows': 'three'}}}))
    with NodeProcess('tspace_ros.nodes.storage', tmp_path / 'storage.log',
                     ['-r', '__ns:=/typo', '--params-file', str(params)]) as storage, \
            NodeProcess('tspace_ros.nodes.cruncher', tmp_path / 'cruncher.log',
                        ['-r', '__ns:=/typo', '--params-file', str(bad_value)]) as cruncher, \
            RosContext() as ros:
        assert not LifecycleDriver(ros, 'typo/storage').transition(
            Transition.TRANSITION_CONFIGURE)
        assert not LifecycleDriver(ros, 'typo/cruncher').transition(
            Transition.TRANSITION_CONFIGURE)
    assert f"parameter file {params}: unknown key(s) ['max_age']" in storage.output()
    assert "'max_age_s'" in storage.output()  # what it takes, so the typo is plain
    assert "parameter 'max_step_windows'" in cruncher.output()
    assert 'INTEGER' in cruncher.output()


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installable from PyPI; runs in a ROS 2 install')
@pytest.mark.parametrize('name, simulated', [('sim.launch.py', True),
                                             ('vehicle.launch.py', False),
                                             ('cloud.launch.py', False)])
def test_launch_descriptions_build_with_real_launch_ros(name, simulated):
    from launch_ros.actions import LifecycleNode, Node
    spec = importlib.util.spec_from_file_location(name.replace('.', '_'), LAUNCH_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    arguments = {getattr(e, 'name', None) for e in description.entities}
    assert {'namespace', 'vehicle_id', 'driver', 'algorithm', 'mode', 'storage_backend',
            'storage_root', 'record'} <= arguments
    assert ('can_interface' in arguments) != simulated
    nodes = [e for e in description.entities if isinstance(e, (LifecycleNode, Node))]
    executables = {n.node_executable for n in nodes}
    assert ('vehicle_sim' in executables) == simulated
    assert {'can_bridge', 'agent', 'cruncher', 'storage', 'trainer',
            'lifecycle_manager'} <= executables


def test_a_params_file_on_the_command_line_layers_over_the_suite_file(
        tmp_path, monkeypatch, capsys):
    from tspace_ros import suite as suite_module
    monkeypatch.chdir(tmp_path)   # not the repository: config/... is found all the same
    rdpg = suite_module.resolve_params_file('config/agents/rdpg.yaml')
    assert rdpg == suite_module.config_path('agents', 'rdpg.yaml') and rdpg.is_file()
    assert suite_module.resolve_params_file('agents/rdpg.yaml') == rdpg
    mine = tmp_path / 'mine.yaml'
    mine.write_text('/**/trainer:\n  ros__parameters:\n    batch_size: 64\n')
    assert suite_module.resolve_params_file('mine.yaml') == pathlib.Path('mine.yaml')
    with pytest.raises(suite_module.SuiteConfigError, match='nope.yaml: not found in'):
        suite_module.resolve_params_file('nope.yaml')
    # The command line's files come after the suite's own: its settings stay, later win.
    assert suite_module.main(['--params-file', 'nope.yaml']) == 2
    assert 'parameter file nope.yaml: not found' in capsys.readouterr().err
    args = suite_module.parse_args(['--params-file', 'mine.yaml'])
    files = [suite_module.params_file_path()] + [suite_module.resolve_params_file(f)
                                                 for f in args.params_file]
    params = suite_module.load_parameter_files(files)
    assert params['trainer']['batch_size'] == 64
    assert params['lifecycle_manager']['node_names'] == load_node_parameters(
        SUITE_PARAMS)['lifecycle_manager']['node_names']
