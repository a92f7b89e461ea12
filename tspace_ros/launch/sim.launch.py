"""
Launch the node suite on the simulated van, each node in its own process.

    ros2 launch tspace_ros sim.launch.py [namespace:=VIN] [algorithm:=rdpg] [mode:=infer]
        [record:=true] [storage_root:=~/tspace/pool] [real_time_factor:=20.0]

The van (vehicle_sim) and the CAN bridge share a CAN bus over ROS topics; every node
but the van follows the van's simulated clock (use_sim_time). The lifecycle manager
configures and activates the chain in order (autostart) and deactivates it on a failure.
Parameters come from config/sim_suite.yaml, the file the single-process bringup
(`ros2 run tspace_ros suite`) uses too; launch arguments override some of them.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tspace_launch import suite_description  # noqa: E402


def generate_launch_description():
    """Return the simulated suite's launch description."""
    return suite_description(simulate=True)
