"""A torque map shaped like tspace's vehicle's, for tests of the gate and the transfer."""

import numpy as np

from tspace_ros.torque_map import (DEFAULT_PEDAL_BREAKPOINTS, DEFAULT_SPEED_BREAKPOINTS_KPH,
                                   TorqueMap)


def tspace_like_map(vehicle_id: str = 'SIMVAN') -> TorqueMap:
    """
    Return a 14 x 17 default map spanning about -2300..4400 Nm.

    Regeneration below 20 % pedal (growing with speed up to 20 km/h), drive
    torque above it (falling with speed above 50 km/h, constant power). The
    values are not multiples of the bus resolution (0.5 Nm) on purpose.
    """
    speeds = np.asarray(DEFAULT_SPEED_BREAKPOINTS_KPH)[:, None]
    pedals = np.asarray(DEFAULT_PEDAL_BREAKPOINTS)[None, :]
    regen = -2300.0 * np.minimum(1.0, speeds / 20.0) * np.clip(1.0 - pedals / 0.2, 0.0, 1.0)
    drive = 4400.0 * np.minimum(1.0, 50.0 / np.maximum(speeds, 50.0)) * \
        np.clip((pedals - 0.2) / 0.8, 0.0, 1.0)
    return TorqueMap(DEFAULT_SPEED_BREAKPOINTS_KPH, DEFAULT_PEDAL_BREAKPOINTS,
                     regen + drive + 0.3, vehicle_id=vehicle_id)
