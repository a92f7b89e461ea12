"""Style: flake8 with the ament configuration, as ROS Python packages run it."""

import subprocess
import sys

import pytest
from ros_test_support import lint_paths


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    """The package, its tests and the workspace tools pass ament_flake8."""
    # In a process of its own: flake8 forks workers, which must not inherit
    # the DDS threads of tests that ran rclpy in this process.
    result = subprocess.run(
        [sys.executable, '-c', 'import sys; from ament_flake8.main import main; '
         'sys.exit(main(sys.argv[1:]))', *lint_paths()],
        capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
