"""
Launch the node suite for a remote vehicle through its telematics cloud.

    ros2 launch tspace_ros cloud.launch.py cloud_url:=https://tbox.example
        namespace:=VIN123 vehicle_id:=VIN123 driver:=alice site:=example_depot

The same as ``vehicle.launch.py link:=cloud``: the cloud bridge speaks tspace's
RemoteCAN (get_signal, set_torque) with the bearer token from TSPACE_CLOUD_TOKEN
(or the cloud_token_file parameter in the vehicle file), the driver's HMI over
MQTT when mqtt_port is set; the rest of the suite is the vehicle's.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tspace_launch import suite_description  # noqa: E402


def generate_launch_description():
    """Return the cloud vehicle's launch description."""
    return suite_description(simulate=False, link='cloud')
