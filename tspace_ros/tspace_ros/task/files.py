"""
Shipped configuration files and torque-map files, for every stage (no simulator here).

``config_path('vehicles', 'sim_van.yaml')`` finds a file of ``tspace_ros/config``
in the source tree or the installed share directory; ``load_torque_map`` reads a
``TorqueMap.to_dict()`` YAML within bounds; ``load_default_map('')`` is the
shipped simulated van's default map, or the file given.
"""

import pathlib
from typing import Union

from tspace_ros.bounded_yaml import read_bounded, YamlBoundsError
from tspace_ros.torque_map import TorqueMap, TorqueMapError

SIM_VAN_DEFAULT_MAP = 'sim_van_default_map.yaml'


class VehicleConfigError(ValueError):
    """A vehicle or torque-map file that is missing, unreadable or wrong (names the file)."""


def config_path(kind: str, file_name: str) -> pathlib.Path:
    """
    Return the path of a shipped configuration file, ``config/<kind>/<file_name>``.

    Looks in the source tree first, then in the installed package's share
    directory (ament index). VehicleConfigError if neither has it.
    """
    candidates = [pathlib.Path(__file__).resolve().parents[2] / 'config' / kind / file_name]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(pathlib.Path(get_package_share_directory('tspace_ros')) / 'config' /
                          kind / file_name)
    except (ImportError, LookupError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    what = {'vehicles': 'vehicle file'}.get(kind, f'{kind} file')
    raise VehicleConfigError(f'no {what} {file_name!r}; looked in '
                             f'{[str(p) for p in candidates]}')


def vehicle_config_path(name: str = 'sim_van') -> pathlib.Path:
    """Return the path of a shipped vehicle file, ``config/vehicles/<name>.yaml``."""
    return config_path('vehicles', f'{name}.yaml')


def read_yaml(path: Union[str, pathlib.Path], what: str):
    """Return a YAML file's content (bounded, safe types); VehicleConfigError if wrong."""
    try:
        return read_bounded(path, what)
    except OSError as error:
        raise VehicleConfigError(f'cannot read {what} {str(path)!r}: {error}') from None
    except YamlBoundsError as error:
        raise VehicleConfigError(f'{what}: {error}') from None


def load_torque_map(path: Union[str, pathlib.Path]) -> TorqueMap:
    """Read a torque map file (``TorqueMap.to_dict()`` as YAML); VehicleConfigError if wrong."""
    data = read_yaml(pathlib.Path(path), 'torque map file')
    if not isinstance(data, dict):
        raise VehicleConfigError(f'{path}: expected a torque map mapping, got {data!r}')
    try:
        return TorqueMap.from_dict(data)
    except (TorqueMapError, TypeError, ValueError) as error:
        raise VehicleConfigError(f'{path}: invalid torque map: {error}') from None


def default_map_path(path: Union[str, pathlib.Path, None] = None) -> pathlib.Path:
    """Return the default map's file: ``path``, or '' / None for the shipped sim van's."""
    return pathlib.Path(path) if path else config_path('vehicles', SIM_VAN_DEFAULT_MAP)


def load_default_map(path: Union[str, pathlib.Path, None] = None) -> TorqueMap:
    """Return the default map of ``path`` ('' / None: the shipped sim van's)."""
    return load_torque_map(default_map_path(path))
