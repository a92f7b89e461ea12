"""Docstrings: pep257 with the ament convention, as ROS Python packages run it."""

import subprocess
import sys

import pytest
from ros_test_support import lint_paths


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    """The package, its tests and the workspace tools pass ament_pep257."""
    result = subprocess.run(
        [sys.executable, '-c', 'import sys; from ament_pep257.main import main; '
         'sys.exit(main(sys.argv[1:]))', *lint_paths()],
        capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
