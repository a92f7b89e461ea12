"""
The recorder lifecycle node: our topics into a rosbag2 bag (MCAP), as ``ros2 bag record``.

Each activation creates a new bag directory ``<output_dir>/<prefix>_<UTC time>``
(see ``tspace_ros.bags``) and subscribes to every listed topic with ``raw=True``:
rclpy hands over the serialized CDR bytes, which go to the bag unchanged,
stamped with the receive time on the node's clock (simulated time under
``use_sim_time``). A message that arrives while that clock still reads 0 (no
``/clock`` yet) is held, up to ``MAX_EARLY`` messages, and written with the
clock's first reading (or, if the clock never starts, the wall clock's when the
bag closes), so a bag never starts at epoch 0; one held over the bound is
dropped and counted (``early_dropped`` in ``/diagnostics``). Deactivate (or
cleanup, shutdown, SIGTERM) closes the bag: metadata.yaml is written and the
path and counts are logged.

Topics (``topics``, relative ones in the node's namespace): a topic's type is
the one its publishers announce, else the type in ``DEFAULT_TOPICS``; a topic
that is neither is looked for again every ``discovery_period_s``. Each is
subscribed RELIABLE (best effort only when a publisher is best effort) with the
publishers' durability (transient local only when all of them are), and the
offered QoS goes to the bag so ``ros2 bag play`` reproduces it. A subscription
that matches no publisher although there are some (QoS mismatch) is made again
with the publishers' QoS. ``/diagnostics``: messages and bytes per topic, the
bag path.
"""

from collections import OrderedDict
from datetime import datetime, timezone
import functools
import os
import pathlib
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_check_compatible, QoSCompatibility,
                       QoSProfile, ReliabilityPolicy)

from tspace_ros.bags import BagError, BagRecorder, qos_profile_yaml, typestore_with_ours
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN
from tspace_ros.nodes.lifecycle import (declare_string_array, run_lifecycle_node,  # noqa: F401
                                        TspaceLifecycleNode)
from tspace_ros.nodes.messages import message_class  # noqa: F401 - recorder's API
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, EVENT_QOS, RECORD_QOS, WINDOW_QOS

RECORD_DEPTH = 1000
# Messages held while the clock still reads 0 (before the first /clock), at most.
MAX_EARLY = 10000

_VOLATILE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)

# Our topics (relative names) -> (type, the QoS their publishers offer).
DEFAULT_TOPICS = OrderedDict([
    ('can/frames', ('tspace_interfaces/msg/CanFrameBatch', _VOLATILE)),
    ('observation/window', ('tspace_interfaces/msg/ObservationWindow', WINDOW_QOS)),
    ('torque_map/active', ('tspace_interfaces/msg/TorqueMap', ACTIVE_MAP_QOS)),
    ('agent/action', ('tspace_interfaces/msg/AgentAction', RECORD_QOS)),
    ('transitions', ('tspace_interfaces/msg/Transition', RECORD_QOS)),
    ('episode', ('tspace_interfaces/msg/Episode', RECORD_QOS)),
    ('episode/event', ('tspace_interfaces/msg/EpisodeEvent', EVENT_QOS)),
    ('episode/summary', ('tspace_interfaces/msg/EpisodeSummary', RECORD_QOS)),
    ('trainer/status', ('tspace_interfaces/msg/TrainerStatus', _VOLATILE)),
    ('/diagnostics', ('diagnostic_msgs/msg/DiagnosticArray', _VOLATILE)),
])


def qos_to_yaml(profile: QoSProfile, depth: int = 0) -> str:
    """
    Return an rclpy QoS profile as rosbag2's offered_qos_profiles YAML.

    depth: the depth to store when the profile has none (discovered profiles
    carry no depth); at least 1.
    """
    history = 'keep_all' if profile.history == HistoryPolicy.KEEP_ALL else 'keep_last'
    reliability = 'best_effort' if profile.reliability == ReliabilityPolicy.BEST_EFFORT \
        else 'reliable'
    durability = 'transient_local' if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL \
        else 'volatile'
    return qos_profile_yaml(history, max(1, profile.depth or depth), reliability, durability)


class RecorderNode(TspaceLifecycleNode):
    """Lifecycle node that records topics into one new bag per activation."""

    def __init__(self, node_name: str = 'recorder', **kwargs):
        """Declare the parameters; nothing is subscribed before activate."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('output_dir', 'bags', 'Directory under which each activation creates a bag.')
        d('prefix', 'tspace', 'Bag directory name prefix: <prefix>_<UTC time>.')
        declare_string_array(self, 'topics', list(DEFAULT_TOPICS),
                             'Topics to record; relative ones are in the node namespace.')
        d('discovery_period_s', 1.0, 'How often topics not found yet are looked for, s.',
          (0.05, 60.0))
        d('diagnostics_period_s', 1.0, 'How often /diagnostics is published, s.', (0.1, 60.0))
        self._lock = threading.Lock()
        self._typestore = None
        self._wanted = []
        self._defaults = {}
        self._bag = None
        self._early = []          # (topic, data) received before the clock started
        self.early_dropped = 0
        self._record_subs = {}
        # Messages are taken in a group of their own: while deactivate waits for the last
        # of them (see _drain), the executor's other threads still deliver them.
        self._record_group = ReentrantCallbackGroup()
        self._record_timers = []
        self._diag_pub = None
        self._problem = ''

    @property
    def bag(self):
        """Return the BagRecorder being written; None unless active."""
        return self._bag

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Check the parameters and topic names; load the type store."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        topics = [t for t in self.get_parameter('topics').value if t]
        try:
            self._wanted = list(OrderedDict.fromkeys(self.resolve_topic_name(t) for t in topics))
            self._typestore = typestore_with_ours()
        except (BagError, RuntimeError, ValueError) as error:
            self.configure_failed(f'{error}')
            return TransitionCallbackReturn.FAILURE
        if not self._wanted:
            self.get_logger().error('configure failed: no topics to record')
            return TransitionCallbackReturn.FAILURE
        self._defaults = {self.resolve_topic_name(t): spec for t, spec in DEFAULT_TOPICS.items()}
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.get_logger().info(f'configured: {len(self._wanted)} topics')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Create a new bag and subscribe to every topic whose type is known."""
        output_dir = pathlib.Path(os.path.expanduser(self.get_parameter('output_dir').value))
        stamp = datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')
        path = output_dir / f'{self.get_parameter("prefix").value}_{stamp}'
        suffix = 1
        while path.exists():
            path = output_dir / f'{self.get_parameter("prefix").value}_{stamp}_{suffix}'
            suffix += 1
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            bag = BagRecorder(path, self._typestore, custom_data={
                'namespace': self.get_namespace(), 'recorder': self.get_fully_qualified_name()})
        except (BagError, OSError) as error:
            self.get_logger().error(f'activate failed: {error}')
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._bag, self._problem = bag, ''
        self._discover()
        self._record_timers = [
            self.wall_timer(self.get_parameter('discovery_period_s').value, self._discover),
            self.wall_timer(self.get_parameter('diagnostics_period_s').value,
                            self._publish_diagnostics)]
        waiting = [t for t in self._wanted if t not in self._record_subs]
        self.get_logger().info(
            f'recording {len(self._record_subs)} topics to {path}' +
            (f'; waiting for {", ".join(waiting)}' if waiting else ''))
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop recording and close the bag (metadata.yaml written)."""
        self._stop_recording()
        return super().on_deactivate(state)

    def release(self) -> None:
        """Close any open bag; drop subscriptions, timers and the publisher."""
        self._stop_recording()
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None

    def _drain(self, quiet_s: float = 0.2, limit_s: float = 2.0) -> None:
        """Wait (bounded) until no message arrived for quiet_s: what is queued is written."""
        deadline = time.monotonic() + limit_s
        count, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                now_count = self._bag.message_count if self._bag is not None else 0
            if now_count != count:
                count, quiet_since = now_count, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(0.02)

    def _stop_recording(self):
        if self._bag is not None and self._record_subs:
            self._drain()
        for timer in self._record_timers:
            self.destroy_timer(timer)
        self._record_timers = []
        for subscription in self._record_subs.values():
            self.destroy_subscription(subscription)
        self._record_subs = {}
        with self._lock:
            if self._bag is not None and self._early:
                self._write_early(time.time_ns())   # the clock never started
            bag, self._bag = self._bag, None
            self._early = []
        if bag is None:
            return
        try:
            bag.close()
        except BagError as error:
            self.get_logger().error(str(error))
        counts = ', '.join(f'{topic} {n}' for topic, n in bag.counts.items())
        self.get_logger().info(f'bag closed: {bag.path}: {bag.message_count} messages, '
                               f'{sum(bag.bytes.values())} bytes ({counts or "no topics"})')
        self._publish_diagnostics(bag)

    # ---- topics --------------------------------------------------------------------------

    def _discover(self):
        """Subscribe to the topics whose type is known now; redo mismatched subscriptions."""
        if self._bag is None:
            return
        announced = dict(self.get_topic_names_and_types())
        for topic in self._wanted:
            subscription = self._record_subs.get(topic)
            if subscription is not None:
                if not self._incompatible(topic, subscription.qos_profile):
                    continue
                self.get_logger().warning(f'{topic}: no publisher offers a QoS compatible '
                                          'with the subscription: subscribing again with theirs')
                self.destroy_subscription(subscription)
                del self._record_subs[topic]
            types = announced.get(topic)
            default_type, default_qos = self._defaults.get(topic, (None, None))
            if types:
                if len(types) > 1:
                    self.get_logger().warning(f'{topic} has several types {types}: '
                                              f'recording {types[0]}')
                msgtype = types[0]
            elif default_type:
                msgtype = default_type
            else:
                continue
            self._subscribe(topic, msgtype, default_qos)

    def _incompatible(self, topic: str, qos: QoSProfile) -> bool:
        """Return True when there are publishers and none can match qos."""
        infos = self.get_publishers_info_by_topic(topic)
        return bool(infos) and all(
            qos_check_compatible(i.qos_profile, qos)[0] == QoSCompatibility.ERROR
            for i in infos)

    def _subscribe(self, topic: str, msgtype: str, default_qos):
        infos = self.get_publishers_info_by_topic(topic)
        if infos:
            best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                              for i in infos)
            transient = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                            for i in infos)
            offered = infos[0].qos_profile
        else:
            best_effort = False
            transient = default_qos is not None and \
                default_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
            offered = default_qos or _VOLATILE
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort
            else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if transient
            else DurabilityPolicy.VOLATILE)
        depth = default_qos.depth if default_qos is not None else \
            (1 if transient else RECORD_DEPTH)
        try:
            cls = message_class(msgtype)
            with self._lock:
                self._bag.add_topic(topic, msgtype, qos_to_yaml(offered, depth))
            self._record_subs[topic] = self.create_subscription(
                cls, topic, functools.partial(self._on_message, topic), qos, raw=True,
                callback_group=self._record_group)
        except (BagError, ValueError) as error:
            self._problem = f'{topic} not recorded: {error}'
            self.get_logger().error(self._problem, throttle_duration_sec=10.0)

    def _on_message(self, topic: str, data: bytes):
        with self._lock:
            if self._bag is None:
                return
            now_ns = self.get_clock().now().nanoseconds
            try:
                if now_ns <= 0:   # no clock yet: hold it (a bag must not start at 1970)
                    self._early.append((topic, data))
                    if len(self._early) > MAX_EARLY:
                        del self._early[0]
                        self.early_dropped += 1
                    return
                if self._early:
                    self._write_early(now_ns)
                self._bag.write(topic, now_ns, data)
            except BagError as error:
                self._problem = str(error)
                self.get_logger().error(self._problem, throttle_duration_sec=5.0)

    def _write_early(self, stamp_ns: int) -> None:
        """Write the messages held before the clock started, in order, at stamp_ns (locked)."""
        early, self._early = self._early, []
        for topic, data in early:
            self._bag.write(topic, stamp_ns, data)

    def _publish_diagnostics(self, bag=None):
        bag = bag or self._bag
        if self._diag_pub is None:
            return
        if bag is None:
            level, message, values = OK, 'not recording', {}
        else:
            values = {'path': str(bag.path), 'messages': bag.message_count,
                      'bytes': sum(bag.bytes.values()),
                      'recording': bag.is_open}
            values.update({f'messages {topic}': n for topic, n in bag.counts.items()})
            waiting = [t for t in self._wanted if t not in bag.types]
            values['waiting'] = ', '.join(waiting) or '-'
            level = ERROR if self._problem else (WARN if waiting and bag.is_open else OK)
            message = f'{"recording" if bag.is_open else "recorded"} ' \
                      f'{bag.message_count} messages to {bag.path}'
        values['last_problem'] = self._problem or '-'
        values['early_dropped'] = self.early_dropped
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), self.get_fully_qualified_name(), 'tspace_ros',
            level, message, values))


def main(args=None) -> int:
    """Run the recorder node until it is shut down."""
    return run_lifecycle_node(RecorderNode, args)


if __name__ == '__main__':
    sys.exit(main())
