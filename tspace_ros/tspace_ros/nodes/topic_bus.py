"""
A python-can bus whose frames travel over ROS 2 topics.

There is no SocketCAN here and multicast is forbidden, so separate processes
(``vehicle_sim`` and ``can_bridge`` as ``ros2 launch`` starts them) share a bus
the way ros2_socketcan does: raw frames as ``tspace_interfaces/CanFrameBatch``
messages. The bus side (the vehicle) publishes what is on the bus on
``from_can_bus`` and puts what it receives on ``to_can_bus`` onto the bus; a
client (the CAN bridge) does the opposite. ``TopicCanBus`` is a
``can.BusABC``, so code written for python-can uses it unchanged.

Received frames wait in a bounded queue filled by the subscription callback,
so ``recv()`` returns only what the node's executor has already delivered: call
it with ``timeout=0`` from the node's own callbacks. Frames that do not fit the
queue, or cannot exist on a bus, are counted (``dropped``, ``rejected``), never
lost silently.
"""

import queue
from typing import Iterable, Optional

import can
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from tspace_interfaces.msg import CanFrameBatch

from tspace_ros.nodes.messages import frame_from_msg, frame_to_msg

FROM_BUS_TOPIC = 'from_can_bus'
TO_BUS_TOPIC = 'to_can_bus'

# Every frame matters (map transfers, signals): reliable, deep enough for bursts.
FRAME_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                       reliability=ReliabilityPolicy.RELIABLE)


class TopicCanBus(can.BusABC):
    """A can.BusABC over CanFrameBatch topics of a ROS 2 node."""

    def __init__(self, node, side: str = 'client', channel: str = 'ros',
                 max_queue: int = 100_000, callback_group=None, **kwargs):
        """
        Attach to a node's topics.

        side: 'client' (receives from_can_bus, sends to_can_bus; the CAN bridge)
        or 'bus' (the vehicle: receives to_can_bus, sends from_can_bus).
        callback_group: where the subscription runs; give it a group of its own
        under a MultiThreadedExecutor so ``recv(timeout)`` can wait inside
        another callback.
        """
        if side not in ('client', 'bus'):
            raise ValueError(f"side must be 'client' or 'bus', got {side!r}")
        rx_topic, tx_topic = (FROM_BUS_TOPIC, TO_BUS_TOPIC) if side == 'client' else \
            (TO_BUS_TOPIC, FROM_BUS_TOPIC)
        self.channel_info = f'ROS topics {rx_topic} (rx) / {tx_topic} (tx)'
        super().__init__(channel=channel, **kwargs)
        self._node = node
        self._channel = channel
        self._queue = queue.Queue(maxsize=max_queue)
        self.received = 0
        self.dropped = 0
        self.rejected = 0
        self.last_rejection = ''
        self._publisher = node.create_publisher(CanFrameBatch, tx_topic, FRAME_QOS)
        self._subscription = node.create_subscription(
            CanFrameBatch, rx_topic, self._on_batch, FRAME_QOS, callback_group=callback_group)

    @property
    def peers(self) -> int:
        """Return how many endpoints on the other side are matched (0: nobody there)."""
        return min(self._publisher.get_subscription_count(),
                   self._node.count_publishers(self._subscription.topic_name))

    def _on_batch(self, batch: CanFrameBatch):
        for frame_msg in batch.frames:
            try:
                frame = frame_from_msg(frame_msg)
            except ValueError as error:
                self.rejected += 1
                self.last_rejection = str(error)
                continue
            frame.channel = self._channel
            try:
                self._queue.put_nowait(frame)
                self.received += 1
            except queue.Full:
                self.dropped += 1

    def _recv_internal(self, timeout: Optional[float]):
        try:
            if timeout == 0:
                return self._queue.get_nowait(), False
            return self._queue.get(timeout=timeout), False
        except queue.Empty:
            return None, False

    def send(self, msg: can.Message, timeout: Optional[float] = None) -> None:
        """Publish one frame."""
        self.send_batch([msg])

    def send_batch(self, frames: Iterable[can.Message]) -> None:
        """Publish several frames as one CanFrameBatch (far cheaper than one each)."""
        batch = CanFrameBatch()
        batch.header.stamp = self._node.get_clock().now().to_msg()
        batch.header.frame_id = self._channel
        batch.frames = [frame_to_msg(frame) for frame in frames]
        if batch.frames:
            self._publisher.publish(batch)

    def shutdown(self) -> None:
        """Release the publisher and subscription."""
        if not self._is_shutdown:
            self._node.destroy_subscription(self._subscription)
            self._node.destroy_publisher(self._publisher)
        super().shutdown()
