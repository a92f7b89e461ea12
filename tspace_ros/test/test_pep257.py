"""Docstrings: pep257 with the ament convention, as ROS Python packages run it."""

from ament_pep257.main import main
import pytest
from ros_test_support import PACKAGE_DIR, REPO_ROOT


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    """The package, its tests and the workspace tools pass ament_pep257."""
    paths = [str(PACKAGE_DIR)] + [
        str(REPO_ROOT / extra) for extra in ('tools', 'bench') if (REPO_ROOT / extra).is_dir()]
    rc = main(argv=paths)
    assert rc == 0, 'found docstring style errors (see the output above)'
