"""
Monitoring: the torque map as rviz markers, and /diagnostics aggregated per vehicle.

Pure functions and ROS-free cores (only message types are imported); the nodes
``map_viz`` and ``diagnostics_aggregator`` are their thin adapters.
"""

from tspace_ros.monitoring.diagnostics import (aggregated_array, DiagnosticsAggregator,
                                               group_of, GroupSummary, LEVEL_NAMES,
                                               MemberState, Summary)
from tspace_ros.monitoring.markers import (DEFAULT_SCALE, diverging_color, HIGHLIGHT_LIFT_M,
                                           STYLES, torque_map_markers)

__all__ = ['aggregated_array', 'DEFAULT_SCALE', 'DiagnosticsAggregator', 'diverging_color',
           'group_of', 'GroupSummary', 'HIGHLIGHT_LIFT_M', 'LEVEL_NAMES', 'MemberState',
           'STYLES', 'Summary', 'torque_map_markers']
