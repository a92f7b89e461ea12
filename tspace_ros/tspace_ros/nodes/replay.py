"""
The replay lifecycle node and command: a rosbag2 bag back onto the topics, as ``ros2 bag play``.

On activate it opens ``bag`` and verifies it whole (its MCAP CRCs and
metadata.yaml against the data: a corrupt, truncated or tampered bag fails
the activation, with the file, chunk or topic in the log, before anything is
published; a bag without CRCs, of another writer, plays with a warning that
it is unverified), creates one publisher per replayed topic with the type
and offered QoS recorded in the bag, and plays the messages from a thread:
the recorded CDR bytes are published as they are (no deserialization), paced
by ``rate`` (1.0: recorded speed, 2.0: twice as fast, 0: as fast as the
subscribers acknowledge). With ``publish_clock`` it publishes ``/clock`` with
the bag's timestamps, so nodes with ``use_sim_time`` run on the recorded time.
When it is done it publishes ``replay/done`` (std_msgs/Bool, transient local:
True when every message went out, False after an error) and logs the counts;
with ``loop`` it starts over instead.

Topic names: ``topics`` selects what to replay ('' or nothing: everything),
by recorded name or relative to the recorded namespace (which the recorder
node stores in the bag). ``remap_namespace`` moves the topics of the recorded
namespace under another one (``/diagnostics`` and other global topics stay);
``frames_to_bus`` publishes the CanFrameBatch messages of ``can/frames`` on
``from_can_bus`` instead, where a CAN bridge with ``can_interface: ros_topic``
reads its bus, so it rebuilds the windows offline. ``wait_for_subscribers``
holds the start until every replayed topic has that many subscribers (at most
``wait_timeout_s``).

As a command (first argument not ``--ros-args``)::

    python -m tspace_ros.nodes.replay --bag PATH [--rate R] [--topics T ...]

configures and activates itself, exits 0 when done, 2 with the message when
the bag cannot be replayed (missing, truncated, corrupt: a CRC that does not
match, an unknown type).
"""

import argparse
import sys
import threading
import time

from builtin_interfaces.msg import Time
import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Bool

from tspace_ros.bags import bag_info, BagError, read_bag, typestore_with_ours
from tspace_ros.nodes.lifecycle import (declare_string_array, run_lifecycle_node,
                                        TspaceLifecycleNode)
from tspace_ros.nodes.messages import message_class
from tspace_ros.nodes.topic_bus import FRAME_QOS, FROM_BUS_TOPIC

DONE_TOPIC = 'replay/done'
FRAMES_TOPIC = 'can/frames'
FRAMES_TYPE = 'tspace_interfaces/msg/CanFrameBatch'
# Topics that belong to no namespace: remap_namespace leaves them alone.
GLOBAL_TOPICS = ('/clock', '/diagnostics', '/parameter_events', '/rosout', '/tf',
                 '/tf_static')
DEFAULT_DEPTH = 1000
CLOCK_PERIOD_S = 0.05  # /clock ticks while waiting for the next message at rate > 0
ACK_TIMEOUT_S = 10.0

DONE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                       reliability=ReliabilityPolicy.RELIABLE)


def qos_from_bag(profiles) -> QoSProfile:
    """Return the publisher QoS for a topic from its recorded offered profiles (bag_info)."""
    if not profiles:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEFAULT_DEPTH,
                          reliability=ReliabilityPolicy.RELIABLE)
    first = profiles[0]
    transient = first['durability'] == 'transient_local'
    depth = first['depth'] if first['depth'] > 0 else (1 if transient else DEFAULT_DEPTH)
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if first['history'] == 'keep_all'
        else HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if first['reliability'] == 'best_effort'
        else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient
        else DurabilityPolicy.VOLATILE)


def _namespace(name: str) -> str:
    name = '/' + name.strip('/')
    return name


def relative_name(topic: str, namespace: str):
    """Return topic relative to namespace ('/' is the root), or None when outside it."""
    prefix = _namespace(namespace).rstrip('/') + '/'
    if topic in GLOBAL_TOPICS or not topic.startswith(prefix):
        return None
    return topic[len(prefix):]


class ReplayNode(TspaceLifecycleNode):
    """Lifecycle node that publishes the messages of a bag."""

    def __init__(self, node_name: str = 'replay', **kwargs):
        """Declare the parameters; the bag is opened on activate."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('bag', '', 'The bag to replay: a rosbag2 directory (or an .mcap file).')
        declare_string_array(self, 'topics', [''],
                             "Topics to replay, recorded or relative names ('': all).")
        d('rate', 1.0, 'Speed: 1.0 recorded speed, 2.0 twice as fast, 0 as fast as possible.',
          (0.0, 1000.0))
        d('publish_clock', True, 'Publish /clock with the bag times (for use_sim_time).')
        d('remap_namespace', '', "Namespace for the recorded namespace's topics ('': keep).")
        d('loop', False, 'Start over at the end instead of finishing.')
        d('frames_to_bus', False,
          'Publish CanFrameBatch messages of can/frames on from_can_bus instead.')
        d('wait_for_subscribers', 0,
          'Start only once every replayed topic has this many subscribers.', (0, 1000))
        d('wait_timeout_s', 10.0, 'Longest wait for the subscribers, s.', (0.0, 3600.0))
        self._done_pub = None
        self._clock_pub = None
        self._replay_pubs = {}
        self._thread = None
        self._stop = threading.Event()
        self.finished = threading.Event()
        self.last_error = ''
        self.counts = {}
        self.succeeded = False

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Check the parameters; create the replay/done publisher."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        self._done_pub = self.create_publisher(Bool, DONE_TOPIC, DONE_QOS)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Open the bag, create the publishers and start playing."""
        p = {name: self.get_parameter(name).value for name in (
            'bag', 'topics', 'rate', 'publish_clock', 'remap_namespace', 'loop',
            'frames_to_bus', 'wait_for_subscribers', 'wait_timeout_s')}
        try:
            plan = self._plan(p)
        except (BagError, ValueError) as error:
            self.last_error = str(error)
            self.get_logger().error(f'activate failed: {error}')
            self._destroy_publishers()
            return TransitionCallbackReturn.FAILURE
        self._stop.clear()
        self.finished.clear()
        self.succeeded = False
        self.counts = dict.fromkeys(plan['topics'], 0)
        self._thread = threading.Thread(target=self._play, args=(plan,), name='replay',
                                        daemon=True)
        self._thread.start()
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop playing and drop the publishers."""
        self._stop_playing()
        return super().on_deactivate(state)

    def release(self) -> None:
        """Stop playing; drop every publisher."""
        self._stop_playing()
        if self._done_pub is not None:
            self.destroy_publisher(self._done_pub)
            self._done_pub = None

    def _stop_playing(self):
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=ACK_TIMEOUT_S + 5.0)
        self._destroy_publishers()

    def _destroy_publishers(self):
        for publisher, _ in self._replay_pubs.values():
            self.destroy_publisher(publisher)
        self._replay_pubs = {}
        if self._clock_pub is not None:
            self.destroy_publisher(self._clock_pub)
            self._clock_pub = None

    # ---- planning ----------------------------------------------------------------------------

    def _plan(self, p) -> dict:
        """Check the bag and create the publishers; raise BagError/ValueError."""
        if not p['bag']:
            raise BagError("parameter 'bag' is empty: give the bag to replay")
        info = bag_info(p['bag'])
        if info['unverified']:
            self.get_logger().warning(
                f'replaying unverified data (no checksum covers it): '
                f'{"; ".join(info["unverified"])}')
        recorded_ns = info['custom_data'].get('namespace', '/') or '/'
        selected = self._select(info, recorded_ns, [t for t in p['topics'] if t])
        if p['publish_clock'] and '/clock' in selected and len(selected) > 1:
            selected.remove('/clock')  # we publish /clock ourselves
        typestore = typestore_with_ours()
        with read_bag(p['bag'], selected, typestore):
            pass  # unknown types raise BagError here, before anything is published
        target_ns = _namespace(p['remap_namespace']) if p['remap_namespace'] else recorded_ns
        for topic in selected:
            msgtype = info['types'][topic]
            relative = relative_name(topic, recorded_ns)
            frames = msgtype == FRAMES_TYPE and (
                relative == FRAMES_TOPIC or topic.endswith('/' + FRAMES_TOPIC))
            if p['frames_to_bus'] and frames:
                # Frames recorded in a namespace the bag does not name (ros2 bag record):
                # they go to the bus of the namespace they were recorded in, or the remap.
                if relative != FRAMES_TOPIC and not p['remap_namespace']:
                    target_ns = topic[:-len(FRAMES_TOPIC)] or '/'
                name = target_ns.rstrip('/') + '/' + FROM_BUS_TOPIC
                qos = FRAME_QOS
            else:
                name = topic if not p['remap_namespace'] or relative is None \
                    else target_ns.rstrip('/') + '/' + relative
                qos = qos_from_bag(info['qos'].get(topic))
            publisher = self.create_publisher(message_class(msgtype), name, qos)
            self._replay_pubs[topic] = (publisher, qos)
        if p['publish_clock']:
            self._clock_pub = self.create_publisher(Clock, '/clock', CLOCK_QOS)
        outputs = ', '.join(f'{topic} -> {pub.topic_name}' if pub.topic_name != topic else topic
                            for topic, (pub, _) in self._replay_pubs.items())
        self.get_logger().info(
            f'replaying {sum(info["counts"][t] for t in selected)} messages from {p["bag"]} '
            f'({info["duration_s"]:.3f} s long) at rate {p["rate"]}: {outputs}')
        return {'bag': p['bag'], 'topics': selected, 'typestore': typestore,
                'rate': p['rate'], 'loop': p['loop'],
                'wait_for_subscribers': p['wait_for_subscribers'],
                'wait_timeout_s': p['wait_timeout_s']}

    @staticmethod
    def _select(info, recorded_ns, requested):
        if not requested:
            return list(info['topics'])
        selected = []
        for name in requested:
            candidates = [name, '/' + name.lstrip('/'),
                          recorded_ns.rstrip('/') + '/' + name.lstrip('/')]
            match = next((c for c in candidates if c in info['counts']), None)
            if match is None and not name.startswith('/'):
                # A relative name in a bag without a recorded namespace: a unique suffix.
                ends = [t for t in info['topics'] if t.endswith('/' + name)]
                if len(ends) > 1:
                    raise BagError(f'{info["path"]}: topic {name} is ambiguous: '
                                   f'{", ".join(ends)}')
                match = ends[0] if ends else None
            if match is None:
                raise BagError(f'{info["path"]}: no topic {name} in the bag (it has '
                               f'{", ".join(info["topics"]) or "none"})')
            if match not in selected:
                selected.append(match)
        return selected

    # ---- playing (in the replay thread) ------------------------------------------------------

    def _play(self, plan):
        ok = True
        try:
            self._wait_for_subscribers(plan)
            while not self._stop.is_set():
                self._play_once(plan)
                if not plan['loop'] or self._stop.is_set():
                    break
                self.get_logger().info('end of the bag: starting over')
            for publisher, _ in list(self._replay_pubs.values()):
                self._wait_acked(publisher)
        except BagError as error:
            ok = False
            self.last_error = str(error)
            self.get_logger().error(f'replay stopped: {error}')
        except Exception as error:  # a publisher destroyed under us on shutdown
            if self._stop.is_set():
                return
            ok = False
            self.last_error = f'{type(error).__name__}: {error}'
            self.get_logger().error(f'replay stopped: {self.last_error}')
        if self._stop.is_set():
            return
        counts = ', '.join(f'{topic} {n}' for topic, n in self.counts.items())
        self.get_logger().info(f'replay {"done" if ok else "failed"}: '
                               f'{sum(self.counts.values())} messages ({counts})')
        self.succeeded = ok
        if self._done_pub is not None:
            self._done_pub.publish(Bool(data=ok))
        self.finished.set()

    def _wait_for_subscribers(self, plan):
        wanted = plan['wait_for_subscribers']
        if not wanted:
            return
        deadline = time.monotonic() + plan['wait_timeout_s']
        while not self._stop.is_set():
            missing = [pub.topic_name for pub, _ in self._replay_pubs.values()
                       if pub.get_subscription_count() < wanted]
            if not missing:
                return
            if time.monotonic() > deadline:
                self.get_logger().warning(f'fewer than {wanted} subscribers on '
                                          f'{", ".join(missing)}: starting anyway')
                return
            self._stop.wait(0.02)

    def _play_once(self, plan):
        rate = plan['rate']
        pending = dict.fromkeys(self._replay_pubs, 0)
        start_wall = time.monotonic()
        start_ns = None
        with read_bag(plan['bag'], plan['topics'], plan['typestore']) as messages:
            for topic, _, stamp_ns, data in messages:
                if self._stop.is_set():
                    return
                if start_ns is None:
                    start_ns = stamp_ns
                if rate > 0:
                    self._wait_until(start_wall, start_ns, stamp_ns, rate)
                    if self._stop.is_set():
                        return
                self._publish_clock(stamp_ns)
                publisher, qos = self._replay_pubs[topic]
                publisher.publish(data)
                self.counts[topic] += 1
                if rate == 0:  # flow control: never overwrite what is not acknowledged yet
                    pending[topic] += 1
                    if pending[topic] >= max(1, qos.depth // 2):
                        self._wait_acked(publisher)
                        pending[topic] = 0
        if self._clock_pub is not None:
            self._wait_acked(self._clock_pub)

    def _wait_until(self, start_wall, start_ns, stamp_ns, rate):
        target = start_wall + (stamp_ns - start_ns) / 1e9 / rate
        while not self._stop.is_set():
            remaining = target - time.monotonic()
            if remaining <= 0:
                return
            if self._clock_pub is not None:
                elapsed_ns = int((time.monotonic() - start_wall) * rate * 1e9)
                self._publish_clock(min(stamp_ns, start_ns + elapsed_ns))
            self._stop.wait(min(CLOCK_PERIOD_S, remaining))

    def _publish_clock(self, stamp_ns: int):
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=Time(sec=stamp_ns // 10**9,
                                                     nanosec=stamp_ns % 10**9)))

    def _wait_acked(self, publisher):
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            if publisher.wait_for_all_acked(Duration(seconds=0.2)):
                return


def _parse_command(argv):
    parser = argparse.ArgumentParser(
        prog='python -m tspace_ros.nodes.replay',
        description='Replay a rosbag2 bag onto its topics; exit 0 when done, '
                    '2 when the bag cannot be replayed. ROS arguments go after --ros-args.')
    parser.add_argument('--bag', required=True, help='the bag directory (or .mcap file)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='1.0 recorded speed, 0 as fast as possible (default 1.0)')
    parser.add_argument('--topics', nargs='*', default=[],
                        help='topics to replay (recorded or relative names; default all)')
    parser.add_argument('--no-clock', action='store_true', help='do not publish /clock')
    parser.add_argument('--remap-namespace', default='',
                        help="namespace for the recorded namespace's topics")
    parser.add_argument('--frames-to-bus', action='store_true',
                        help='publish can/frames batches on from_can_bus (for a CAN bridge)')
    parser.add_argument('--loop', action='store_true', help='start over at the end, forever')
    parser.add_argument('--wait-for-subscribers', type=int, default=0, metavar='N',
                        help='start once every topic has N subscribers (default 0)')
    parser.add_argument('--wait-timeout', type=float, default=10.0, metavar='S',
                        help='longest wait for those subscribers, s (default 10)')
    ros_args = []
    if '--ros-args' in argv:
        ros_args = argv[argv.index('--ros-args'):]
        argv = argv[:argv.index('--ros-args')]
    return parser.parse_args(argv), ros_args


def replay_command(argv) -> int:
    """Replay a bag as a command: configure, activate, wait until done; return the exit code."""
    options, ros_args = _parse_command(list(argv))
    overrides = [
        Parameter('bag', value=options.bag),
        Parameter('topics', Parameter.Type.STRING_ARRAY, list(options.topics) or ['']),
        Parameter('rate', value=float(options.rate)),
        Parameter('publish_clock', value=not options.no_clock),
        Parameter('remap_namespace', value=options.remap_namespace),
        Parameter('frames_to_bus', value=options.frames_to_bus),
        Parameter('loop', value=options.loop),
        Parameter('wait_for_subscribers', value=int(options.wait_for_subscribers)),
        Parameter('wait_timeout_s', value=float(options.wait_timeout)),
    ]
    rclpy.init(args=['replay', *ros_args])
    node = None
    try:
        node = ReplayNode(parameter_overrides=overrides)
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print('replay: invalid options (see the log)', file=sys.stderr)
            return 2
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            print(f'replay: {node.last_error}', file=sys.stderr)
            return 2
        while not node.finished.is_set():
            rclpy.spin_once(node, timeout_sec=0.1)
        code = 0 if node.succeeded else 2
        if not node.succeeded:
            print(f'replay: {node.last_error}', file=sys.stderr)
        node.trigger_deactivate()
        node.trigger_shutdown()
        return code
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()


def main(args=None) -> int:
    """Run the replay node (with --ros-args or no argument) or the replay command."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] != '--ros-args':
        return replay_command(argv)
    return run_lifecycle_node(ReplayNode, args)


if __name__ == '__main__':
    sys.exit(main())
