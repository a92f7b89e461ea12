"""Shipped configuration and launch files match the nodes they are for."""

import ast
import importlib.util

from lifecycle_msgs.msg import Transition
import pytest
from rcl_interfaces.srv import ListParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_test_support import call, NodeProcess, PACKAGE_DIR, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.msg import ObservationWindow
import yaml

CONFIG = PACKAGE_DIR / 'config' / 'window_source.yaml'
LAUNCH = PACKAGE_DIR / 'launch' / 'window_source.launch.py'
TIMEOUT_S = 15.0


def _setup_console_scripts():
    tree = ast.parse((PACKAGE_DIR / 'setup.py').read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and \
                node.targets[0].id in ('NODES', 'COMMANDS'):
            names |= {key.value for key in node.value.keys}
    return names


def test_params_file_keys_are_declared_parameters_and_take_effect(tmp_path):
    params = yaml.safe_load(CONFIG.read_text())['/**/window_source']['ros__parameters']
    received = []
    with NodeProcess('tspace_ros.nodes.window_source', tmp_path / 'node.log', [
            '--params-file', str(CONFIG), '-p', 'publish_period_s:=0.05']) as process, \
            RosContext() as ros:
        probe = ros.node('config_probe')
        probe.create_subscription(ObservationWindow, 'observation/window', received.append,
                                  QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        lister = probe.create_client(ListParameters, '/window_source/list_parameters')
        assert spin_until(ros.executor, lister.service_is_ready, TIMEOUT_S)
        declared = set(call(ros.executor, lister, ListParameters.Request()).result.names)
        assert set(params) <= declared, f'undeclared keys in {CONFIG.name}: ' \
            f'{sorted(set(params) - declared)}'
        node = LifecycleDriver(ros, 'window_source')
        assert node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: received, TIMEOUT_S), process.output()
        assert node.transition(Transition.TRANSITION_DEACTIVATE)
    window = received[0]
    assert window.vehicle_id == params['vehicle_id']
    assert window.sample_rate_hz == params['sample_rate_hz']
    assert window.samples_per_signal == params['samples_per_window']


def test_launch_file_starts_executables_that_the_package_installs():
    tree = ast.parse(LAUNCH.read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions
    executables = {kw.value.value for n in ast.walk(tree) if isinstance(n, ast.Call)
                   for kw in n.keywords if kw.arg == 'executable'}
    assert executables and executables <= _setup_console_scripts()


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installable from PyPI; runs in a ROS 2 install')
def test_launch_description_builds_with_real_launch_ros():
    spec = importlib.util.spec_from_file_location('window_source_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = [getattr(entity, 'name', None) for entity in description.entities]
    assert 'namespace' in names and 'vehicle_id' in names
