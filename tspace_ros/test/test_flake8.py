"""Style: flake8 with the ament configuration, as ROS Python packages run it."""

from ament_flake8.main import main_with_errors
import pytest
from ros_test_support import PACKAGE_DIR, REPO_ROOT


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    """The package, its tests and the workspace tools pass ament_flake8."""
    paths = [str(PACKAGE_DIR)] + [
        str(REPO_ROOT / extra) for extra in ('tools', 'bench') if (REPO_ROOT / extra).is_dir()]
    rc, errors = main_with_errors(argv=paths)
    assert rc == 0, f'found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
