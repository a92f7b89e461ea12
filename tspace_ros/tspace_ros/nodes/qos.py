"""QoS profiles shared by the tspace_ros topics."""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Observation windows: every window matters to the episode, so reliable, with
# room for a short stall of the subscriber (10 windows = 15 s at 1.5 s each).
WINDOW_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

# Policy updates: the latest one must reach agents that join late.
POLICY_UPDATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
