"""The accelerator-pedal torque map: the table the agent changes and the VCU applies."""

from tspace_ros.torque_map.map import (DEFAULT_PEDAL_BREAKPOINTS, DEFAULT_SPEED_BREAKPOINTS_KPH,
                                       TorqueMap, TorqueMapError)

__all__ = ['DEFAULT_PEDAL_BREAKPOINTS', 'DEFAULT_SPEED_BREAKPOINTS_KPH', 'TorqueMap',
           'TorqueMapError']
