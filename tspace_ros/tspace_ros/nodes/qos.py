"""QoS profiles shared by the tspace_ros topics."""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Observation windows: every window matters to the episode, so reliable, with a
# deep history: a bridge catching up (or a simulation faster than real time) sends
# bursts, and a reliable KEEP_LAST writer overwrites what a slow reader has not
# acknowledged yet. 1000 windows of 5 x 200 float32 are about 4 MB.
WINDOW_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1000,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

# Policy updates: the latest one must reach agents that join late.
POLICY_UPDATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# The map the VCU applies: the latest one must reach late joiners (agent, rviz).
ACTIVE_MAP_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# Learning-loop records (episode events, agent actions, transitions, episodes):
# every one matters, so reliable and deep; a late joiner sees the recent ones.
RECORD_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1000,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

# Episode events: few and decisive (stored / discarded), so late joiners get the last ones.
EVENT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
