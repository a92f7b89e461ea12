"""
The CAN database (DBC) of the vehicle: where it lives and how it is loaded.

The shipped default, ``config/dbc/tspace_sim_van.dbc``, describes the simulated
van: its drive signals (50 Hz), the VCU's status (10 Hz) and diagnostics (1 Hz),
and the torque-map transfer protocol between the CAN bridge and the VCU. A real
vehicle brings its own DBC and a matching ``SignalMapping``.
"""

import pathlib
from typing import Optional, Union

import cantools

DEFAULT_DBC_NAME = 'tspace_sim_van.dbc'

# Message names of the shipped DBC.
MSG_VEHICLE_DYNAMICS = 'VehicleDynamics'
MSG_BATTERY_STATUS = 'BatteryStatus'
MSG_MOTOR_STATUS = 'MotorStatus'
MSG_VCU_STATUS = 'VcuStatus'
MSG_VCU_DIAGNOSTICS = 'VcuDiagnostics'
MSG_MAP_SEGMENT = 'MapSegment'
MSG_MAP_COMMIT = 'MapCommit'
MSG_MAP_ACK = 'MapAck'

Database = cantools.database.can.Database


def dbc_dir() -> pathlib.Path:
    """
    Return the directory holding the shipped DBC files.

    The source tree (``tspace_ros/config/dbc``) comes first, so tests and tools
    work without a build; otherwise the installed ``share/tspace_ros/config/dbc``
    found through ament_index_python. FileNotFoundError if neither exists.
    """
    source = pathlib.Path(__file__).resolve().parents[2] / 'config' / 'dbc'
    if source.is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = pathlib.Path(get_package_share_directory('tspace_ros')) / 'config' / 'dbc'
    except (ImportError, LookupError) as error:
        raise FileNotFoundError(
            f'no DBC directory: {source} does not exist and the installed share directory '
            f'of tspace_ros is not found ({error})') from None
    if not installed.is_dir():
        raise FileNotFoundError(f'no DBC directory: neither {source} nor {installed} exists')
    return installed


def default_dbc_path() -> pathlib.Path:
    """Return the path of the shipped DBC of the simulated van."""
    return dbc_dir() / DEFAULT_DBC_NAME


def load_dbc(path: Optional[Union[str, pathlib.Path]] = None) -> Database:
    """
    Load a DBC file with cantools (strict: overlapping signals are an error).

    ``path`` None loads the shipped default. A bare file name (no directory) is
    looked up in ``dbc_dir()`` when it does not exist relative to the working
    directory.
    """
    if path is None:
        resolved = default_dbc_path()
    else:
        resolved = pathlib.Path(path)
        if not resolved.exists() and resolved.name == str(path):
            resolved = dbc_dir() / resolved
    return cantools.database.load_file(str(resolved), database_format='dbc', strict=True)
