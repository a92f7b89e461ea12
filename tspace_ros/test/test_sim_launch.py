"""
launch_testing: sim.launch.py brings the suite up and windows and flashes flow.

Runs where launch_testing is importable (a ROS 2 install: `colcon test` picks it up
through launch_testing's pytest plugin); skipped here, where launch and launch_testing
cannot be installed from PyPI. The same chain is tested in one process by
test_bringup.py and test_fleet.py.
"""

import os
import time
import unittest

import pytest

launch_testing = pytest.importorskip(
    'launch_testing', reason='launch_testing is not installable from PyPI; runs in a ROS 2 '
    'install (colcon test)')

import launch  # noqa: E402, I100
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import rclpy  # noqa: E402
from tspace_interfaces.msg import AgentAction, ObservationWindow  # noqa: E402

from tspace_ros.nodes.qos import RECORD_QOS, WINDOW_QOS  # noqa: E402

NAMESPACE = 'LAUNCHTEST0000001'
LAUNCH_FILE = os.path.join(os.path.dirname(__file__), '..', 'launch', 'sim.launch.py')


@pytest.mark.launch_test
def generate_test_description():
    """Launch the simulated suite in a namespace of its own, pool in a temporary place."""
    suite = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(LAUNCH_FILE),
        launch_arguments={'namespace': NAMESPACE, 'vehicle_id': NAMESPACE,
                          'storage_root': f'/tmp/tspace_launch_test_{os.getpid()}',
                          'real_time_factor': '10.0'}.items())
    return launch.LaunchDescription([suite, launch_testing.actions.ReadyToTest()])


class TestSimLaunch(unittest.TestCase):
    """Windows arrive and the agent's flashes take effect, in every node's own process."""

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node('sim_launch_probe')

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_windows_and_flashes(self):
        windows, decisions = [], []
        self.node.create_subscription(ObservationWindow, f'/{NAMESPACE}/observation/window',
                                      windows.append, WINDOW_QOS)
        self.node.create_subscription(AgentAction, f'/{NAMESPACE}/agent/action',
                                      decisions.append, RECORD_QOS)
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and not (windows and any(
                d.flashed for d in decisions)):
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertTrue(windows, 'no observation window from the launched bridge')
        self.assertTrue(any(d.flashed for d in decisions), 'no flashed decision')
        self.assertEqual(windows[-1].vehicle_id, NAMESPACE)
