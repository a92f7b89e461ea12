"""The accelerator-pedal torque map: the table the agent changes and the VCU applies."""

from tspace_ros.torque_map.action import action_rows, apply_action
from tspace_ros.torque_map.map import (DEFAULT_PEDAL_BREAKPOINTS, DEFAULT_SPEED_BREAKPOINTS_KPH,
                                       TorqueMap, TorqueMapError)
from tspace_ros.torque_map.safety_gate import GateResult, GateRule, SafetyGate, torque_limits

__all__ = ['DEFAULT_PEDAL_BREAKPOINTS', 'DEFAULT_SPEED_BREAKPOINTS_KPH', 'TorqueMap',
           'TorqueMapError', 'GateResult', 'GateRule', 'SafetyGate', 'action_rows',
           'apply_action', 'torque_limits']
