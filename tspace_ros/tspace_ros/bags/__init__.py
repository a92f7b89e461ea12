"""
rosbag2 recording and replay for tspace_ros, written and read with the rosbags library.

``core`` (no rclpy): ``BagRecorder`` writes MCAP bags with our message
definitions as schemas, ``read_bag`` and ``bag_info`` read them, every problem
is a ``BagError``. The ``recorder`` and ``replay`` lifecycle nodes
(``tspace_ros.nodes``) put them on the ROS graph. ``integrity``: the MCAP
CRCs our bags carry, verified (``verify_mcap``) whenever a bag is read.
"""

from tspace_ros.bags.core import (bag_info, BagError, BagMessages, BagRecorder, msg_dir,
                                  parse_qos_yaml, qos_profile_yaml, read_bag,
                                  typestore_with_ours)
from tspace_ros.bags.integrity import McapCheck, verify_mcap

__all__ = ['bag_info', 'BagError', 'BagMessages', 'BagRecorder', 'McapCheck', 'msg_dir',
           'parse_qos_yaml', 'qos_profile_yaml', 'read_bag', 'typestore_with_ours',
           'verify_mcap']
