"""
Launch a fleet's shared storage and trainer: one pool and one policy for many vehicles.

    ros2 launch tspace_ros fleet.launch.py fleet:=fleet vehicles:="[VIN1, VIN2]"
    ros2 launch tspace_ros vehicle.launch.py namespace:=VIN1 vehicle_id:=VIN1 fleet:=fleet
    ros2 launch tspace_ros vehicle.launch.py namespace:=VIN2 vehicle_id:=VIN2 fleet:=fleet

The storage keeps the transitions and episodes of every vehicle listed (each
transition carries its vehicle and driver ids); the trainer trains on all of them and
publishes /<fleet>/policy/update, which the agents of vehicle launches started with
fleet:=<fleet> subscribe to. The vehicles can run on other machines of the same ROS
domain (see the README: several vehicles).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tspace_launch import fleet_description  # noqa: E402


def generate_launch_description():
    """Return the fleet's launch description."""
    return fleet_description()
