"""
Launch the node suite for a real vehicle, each node in its own process.

    ros2 launch tspace_ros vehicle.launch.py namespace:=VIN123 vehicle_id:=VIN123
        driver:=alice can_interface:=kvaser can_channel:=0 [algorithm:=rdpg] [mode:=infer]
        [storage_backend:=mongodb] [storage_root:=~/tspace/pool] [record:=true]
    ros2 launch tspace_ros vehicle.launch.py link:=cloud cloud_url:=https://tbox.example
        namespace:=VIN123 vehicle_id:=VIN123 site:=example_depot   # TSPACE_CLOUD_TOKEN set

The CAN bridge reads the vehicle's bus through python-can (link:=can, the default);
with link:=cloud the cloud bridge reaches it through the telematics cloud (tspace's
RemoteCAN: get_signal, set_torque; the HMI over MQTT). The lifecycle manager
configures and activates the chain in order (autostart) and, when a node fails,
deactivates it so that the bridge flashes the default map back. Parameters come from
config/sim_suite.yaml (the simulation's vehicle-independent settings) with wall-clock
time; MongoDB's connection string comes from TSPACE_MONGODB_URI, never from a file
in the repository.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tspace_launch import suite_description  # noqa: E402


def generate_launch_description():
    """Return the real vehicle's launch description."""
    return suite_description(simulate=False)
