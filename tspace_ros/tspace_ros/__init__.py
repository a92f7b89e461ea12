"""
tspace_ros: learning vehicle control with deep reinforcement learning on ROS 2.

The data flow is the package layout:

- ``signals``: CAN or cloud signals -> fixed-rate observation windows.
- ``nodes``: thin ROS 2 lifecycle adapters around the ROS-free core; the only
  modules that import rclpy.

Later stages add the vehicle simulation, CAN bridge, episodes, storage, agents and
trainer beside these, each ROS-free with a node in ``nodes``.
"""

__version__ = '0.1.0'
