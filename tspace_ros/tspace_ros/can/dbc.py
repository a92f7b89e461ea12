"""
The CAN database (DBC) of the vehicle: where it lives and how it is loaded.

The shipped default, ``config/dbc/tspace_sim_van.dbc``, describes the simulated
van: its drive signals (50 Hz), the VCU's status (10 Hz) and diagnostics (1 Hz),
and the torque-map transfer protocol between the CAN bridge and the VCU. A real
vehicle brings its own DBC and a matching ``SignalMapping``.
"""

import logging
import pathlib
from typing import List, Optional, Tuple, Union
import warnings

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


class DbcError(ValueError):
    """A DBC that cannot be loaded; the message names the file and cantools' reason."""


class _Collect(logging.Handler):
    """Keep the messages cantools logs while a file loads."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def resolve_dbc_path(path: Optional[Union[str, pathlib.Path]] = None) -> pathlib.Path:
    """Return the DBC file for ``path``: None the shipped one, a bare name from dbc_dir()."""
    if path is None or path == '':
        return default_dbc_path()
    resolved = pathlib.Path(path)
    if not resolved.exists() and resolved.name == str(path):
        resolved = dbc_dir() / resolved
    return resolved


def load_dbc_with_warnings(path: Optional[Union[str, pathlib.Path]] = None,
                           strict: bool = True) -> Tuple[Database, List[str]]:
    """
    Load a DBC file with cantools; return (database, cantools' warnings).

    ``strict`` (the default) makes overlapping or out-of-frame signals an
    error; production DBCs often have them (multiplexed layouts, reserved
    bits), so a vehicle can load its DBC with ``strict=False`` and the
    warnings go to the log and the diagnostics. DbcError names the file and
    the reason for anything cantools refuses.
    """
    resolved = resolve_dbc_path(path)
    collect = _Collect()
    logger = logging.getLogger('cantools')
    logger.addHandler(collect)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            db = cantools.database.load_file(str(resolved), database_format='dbc',
                                             strict=bool(strict))
    except FileNotFoundError:
        raise DbcError(f'DBC file {str(resolved)!r} does not exist') from None
    except OSError as error:
        raise DbcError(f'DBC file {str(resolved)!r}: {error.strerror or error}') from None
    except Exception as error:  # noqa: B902 - cantools raises many kinds; all are a bad file
        reason = ' '.join(str(error).split())[:400]
        hint = ' (production DBCs often need dbc_strict: false)' if strict else ''
        raise DbcError(f'DBC file {str(resolved)!r} cannot be loaded: {reason}{hint}') \
            from None
    finally:
        logger.removeHandler(collect)
    found = collect.messages + [str(w.message) for w in caught]
    return db, [' '.join(m.split())[:300] for m in found]


def load_dbc(path: Optional[Union[str, pathlib.Path]] = None, strict: bool = True) -> Database:
    """
    Load a DBC file with cantools (strict by default: overlapping signals are an error).

    ``path`` None loads the shipped default. A bare file name (no directory) is
    looked up in ``dbc_dir()`` when it does not exist relative to the working
    directory. DbcError names the file and the reason.
    """
    return load_dbc_with_warnings(path, strict)[0]
