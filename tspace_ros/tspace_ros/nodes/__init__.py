"""ROS 2 lifecycle nodes: thin adapters between topics/services and the ROS-free core."""
