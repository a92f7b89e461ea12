"""
The package's import boundaries, as the folder layout promises them.

- The core (everything outside ``nodes/``, the single-process ``suite``, the
  main job ``bringup`` and the control tool ``ctl``) never imports rclpy: it runs
  and is tested without ROS.
- The vehicle side never loads the simulator (``tspace_ros.vehicle``) or
  TensorFlow: the nodes that run on a real vehicle, checked by importing each in
  a fresh interpreter, and the core packages they use, checked in their source.
- Nodes do not import each other: only the shared node helpers.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'
# They put the nodes together in one process, or talk to running nodes (ctl).
COMPOSITION = {'suite.py', 'bringup.py', 'ctl.py'}
NODE_HELPERS = {'lifecycle', 'messages', 'qos', 'diagnostics', 'can_bus', 'topic_bus',
                'vehicle_bridge'}
VEHICLE_NODES = ['can_bridge', 'cloud_bridge', 'agent', 'cruncher', 'map_viz', 'recorder',
                 'storage', 'lifecycle_manager', 'replay']
VEHICLE_CORE = ['can', 'torque_map', 'episodes', 'cruncher', 'signals', 'task', 'storage',
                'bags', 'bridge', 'cloud']
FORBIDDEN_ON_VEHICLE = ('tspace_ros.vehicle', 'tensorflow', 'keras')


def _imports(path: pathlib.Path):
    """Return every module name imported anywhere in a file (also inside functions)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + '.')


def _core_files():
    return [p for p in PACKAGE.rglob('*.py')
            if 'nodes' not in p.relative_to(PACKAGE).parts and p.name not in COMPOSITION]


def test_the_core_never_imports_rclpy():
    offenders = {str(p.relative_to(PACKAGE)): name for p in _core_files()
                 for name in _imports(p) if _is(name, 'rclpy')}
    assert len(_core_files()) > 40
    assert offenders == {}


def test_the_vehicle_side_core_never_imports_the_simulator_or_tensorflow():
    offenders = {}
    for package in VEHICLE_CORE:
        for path in (PACKAGE / package).rglob('*.py'):
            for name in _imports(path):
                if any(_is(name, bad) for bad in FORBIDDEN_ON_VEHICLE):
                    offenders[str(path.relative_to(PACKAGE))] = name
    assert offenders == {}


@pytest.mark.parametrize('node', VEHICLE_NODES)
def test_a_vehicle_side_node_loads_neither_the_simulator_nor_tensorflow(node):
    code = (f'import sys, tspace_ros.nodes.{node}\n'
            f'bad = sorted(n for n in sys.modules if n.split(".")[0] in ("tensorflow", "keras")'
            ' or n == "tspace_ros.vehicle" or n.startswith("tspace_ros.vehicle."))\n'
            'print(",".join(bad))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '', f'{node} loads {result.stdout.strip()}'


def test_nodes_do_not_import_each_other():
    offenders = {}
    for path in (PACKAGE / 'nodes').glob('*.py'):
        for name in _imports(path):
            if _is(name, 'tspace_ros.nodes') and name != 'tspace_ros.nodes':
                module = name.split('.')[2]
                if module not in NODE_HELPERS and module != path.stem:
                    offenders[path.name] = name
    assert offenders == {}


def test_the_checks_see_a_violation(tmp_path):
    # The scanner itself: an import inside a function is found.
    sample = tmp_path / 'sample.py'
    sample.write_text('def f():\n    from rclpy.node import Node\n    import tensorflow as tf\n')
    assert _imports(sample) == ['rclpy.node', 'tensorflow']
