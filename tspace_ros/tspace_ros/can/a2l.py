"""
The torque map's place in an ECU, read from its A2L (ASAM MCD-2 MC) with pya2ldb.

An A2L describes an ECU's calibration memory. ``map_layout`` finds the map
characteristic (``TorqueMap`` in the simulated van's ``config/dbc/tspace_sim_van.a2l``)
and checks that it is what the XCP link writes: a MAP, float32 (``FLOAT32_IEEE``)
stored row by row (``ROW_DIR``: the first, x axis varies fastest) in Intel byte
order (``MSB_LAST``), an identical conversion in Nm, and axes whose breakpoints
are the default map's (x: pedal, y: speed). It returns the ``XcpMapLayout``
(address, address extension, shape). Anything else is an ``A2lError`` naming the
file, the characteristic and what differs; no A2L is parsed by hand.
"""

import pathlib
from typing import Union

import numpy as np

from tspace_ros.can.xcp_link import XcpMapLayout
from tspace_ros.torque_map.map import TorqueMap


class A2lError(ValueError):
    """An A2L that does not describe the map the link writes (the message says why)."""


def map_layout(path: Union[str, pathlib.Path], default_map: TorqueMap,
               name: str = 'TorqueMap') -> XcpMapLayout:
    """Return the layout of characteristic ``name`` of an A2L file (see the module docstring)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise A2lError(f'A2L file {str(path)!r} does not exist')
    try:
        import pya2l
        from pya2l.api.inspect import Characteristic
        session = pya2l.import_a2l(str(path), in_memory=True, progress_bar=False,
                                   loglevel='ERROR')
        characteristic = Characteristic(session, name)
    except Exception as error:  # noqa: B902 - the parser's errors, all a bad file
        raise A2lError(f'{path}: no usable characteristic {name!r}: '
                       f'{" ".join(str(error).split())[:200]}') from None
    where = f'{path}: {name}'
    if characteristic.type != 'MAP':
        raise A2lError(f'{where} is a {characteristic.type}, not a MAP')
    values = characteristic.deposit.fncValues
    if values is None or values.data_type != 'FLOAT32_IEEE' or values.indexMode != 'ROW_DIR':
        raise A2lError(f'{where}: record layout {characteristic.deposit.name} stores '
                       f'{getattr(values, "data_type", "?")} {getattr(values, "indexMode", "?")}'
                       '; the link writes FLOAT32_IEEE ROW_DIR')
    common = characteristic.deposit._mod_common
    order = characteristic.byteOrder or (common.byteOrder if common is not None else None)
    if order not in (None, 'MSB_LAST', 'LITTLE_ENDIAN'):
        raise A2lError(f'{where}: byte order {order}; the link writes Intel (MSB_LAST)')
    method = characteristic.compuMethod
    if method is not None and (method.conversionType not in ('IDENTICAL', 'NO_COMPU_METHOD')
                               or (method.unit or 'Nm') != 'Nm'):
        raise A2lError(f'{where}: conversion {method.conversionType} in {method.unit!r}; the '
                       'link writes Nm as they are (IDENTICAL)')
    axes = characteristic.axisDescriptions
    if len(axes) != 2:
        raise A2lError(f'{where}: {len(axes)} axes, a MAP has 2')
    rows, columns = default_map.shape
    for axis, expected, what in ((axes[0], default_map.pedal_breakpoints, 'x (pedal)'),
                                 (axes[1], default_map.speed_breakpoints_kph, 'y (speed)')):
        if axis.maxAxisPoints != len(expected):
            raise A2lError(f'{where}: axis {what} has {axis.maxAxisPoints} points, the default '
                           f'map {len(expected)}')
        points = axis.fixAxisParList
        if points and not np.allclose(points, expected, atol=1e-6):
            raise A2lError(f'{where}: axis {what} breakpoints {list(points)} differ from the '
                           f"default map's {list(map(float, expected))}")
    return XcpMapLayout(int(characteristic.address), rows, columns,
                        int(characteristic.ecuAddressExtension or 0))
