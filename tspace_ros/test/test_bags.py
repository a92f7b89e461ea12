"""
rosbag2 bags: the rosbags-based core, then the recorder and replay nodes in their own processes.

The recorder test records what a test publisher sends in a namespace; the
replay tests play that very bag back into the test's subscribers (node and
command), so the chain record -> bag -> replay is checked end to end, bytes
for bytes.
"""

import itertools
import pathlib
import shutil
import subprocess
import sys
import time

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from interface_values import differences, fill
from lifecycle_msgs.msg import State, Transition as LifecycleTransition
from mcap.reader import make_reader
import pytest
from rcl_interfaces.srv import SetParameters
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from ros_test_support import call, NodeProcess, RosContext, spin_until
from rosbags.typesys import get_types_from_msg
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Bool
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.msg import (CanFrameBatch, EpisodeEvent, ObservationWindow, TorqueMap,
                                   Transition)

from tspace_ros.bags import (bag_info, BagError, BagRecorder, qos_profile_yaml, read_bag,
                             typestore_with_ours)
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, RECORD_QOS, WINDOW_QOS
from tspace_ros.nodes.recorder import DEFAULT_TOPICS
from tspace_ros.nodes.topic_bus import FRAME_QOS
import yaml

TIMEOUT_S = 20.0
NS = 'bags_test'
WINDOW_TYPE = 'tspace_interfaces/msg/ObservationWindow'
TRANSITION_TYPE = 'tspace_interfaces/msg/Transition'
DIAGNOSTICS_TYPE = 'diagnostic_msgs/msg/DiagnosticArray'
T0 = 1_795_000_000_000_000_000
DONE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
DEEP = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                  reliability=ReliabilityPolicy.RELIABLE)


def distinct(cls, k):
    """Return a message of cls with every field set, distinct for each k."""
    return fill(cls(), itertools.count(1 + 1000 * k))


def diagnostics(k):
    status = DiagnosticStatus(level=DiagnosticStatus.WARN, name=f'unit{k}', message='hot',
                              hardware_id='tspace_ros',
                              values=[KeyValue(key='temperature', value=str(40 + k))])
    array = DiagnosticArray(status=[status])
    array.header.stamp.sec = k
    return array


def write_sample_bag(path):
    """Write windows, transitions and diagnostics, some out of order; return what was written."""
    sent = [('/veh/observation/window', distinct(ObservationWindow, 0), T0 + 30),
            ('/veh/transitions', distinct(Transition, 1), T0 + 10),
            ('/diagnostics', diagnostics(2), T0 + 20),
            ('/veh/observation/window', distinct(ObservationWindow, 3), T0 + 40),
            ('/veh/transitions', distinct(Transition, 4), T0 + 50),
            ('/veh/observation/window', distinct(ObservationWindow, 5), T0 + 60)]
    with BagRecorder(path, typestore_with_ours(), custom_data={'namespace': '/veh'}) as bag:
        bag.add_topic('/veh/observation/window', WINDOW_TYPE,
                      qos_profile_yaml(depth=1000))
        bag.add_topic('/veh/transitions', TRANSITION_TYPE,
                      qos_profile_yaml(depth=100, durability='transient_local'))
        bag.add_topic('/diagnostics', DIAGNOSTICS_TYPE,
                      qos_profile_yaml(depth=10, reliability='best_effort'))
        # Compare bytes with these very bytes: CDR padding is not deterministic.
        sent = [(topic, msg, stamp, serialize_message(msg)) for topic, msg, stamp in sent]
        for topic, _, stamp, data in sent:
            bag.write(topic, stamp, data)
    return sorted(sent, key=lambda item: item[2])


# ---- core -----------------------------------------------------------------------------------


def test_bag_round_trip_metadata_schemas_and_info(tmp_path):
    path = tmp_path / 'sample'
    sent = write_sample_bag(path)
    classes = {WINDOW_TYPE: ObservationWindow, TRANSITION_TYPE: Transition,
               DIAGNOSTICS_TYPE: DiagnosticArray}

    read = list(read_bag(path))
    assert [(topic, stamp) for topic, _, stamp, _ in read] == \
        [(topic, stamp) for topic, _, stamp, _ in sent], 'not in time order'
    for (topic, msgtype, _, data), (_, msg, _, written) in zip(read, sent):
        copy = deserialize_message(data, classes[msgtype])
        assert differences(copy, msg) == [], topic
        assert data == written

    metadata = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert metadata['storage_identifier'] == 'mcap' and metadata['message_count'] == 6
    topics = {t['topic_metadata']['name']: t for t in metadata['topics_with_message_count']}
    assert {name: t['message_count'] for name, t in topics.items()} == {
        '/veh/observation/window': 3, '/veh/transitions': 2, '/diagnostics': 1}
    assert topics['/veh/observation/window']['topic_metadata']['type'] == WINDOW_TYPE
    [qos] = topics['/veh/transitions']['topic_metadata']['offered_qos_profiles']
    assert (qos['reliability'], qos['durability'], qos['depth']) == \
        ('reliable', 'transient_local', 100)
    [qos] = topics['/diagnostics']['topic_metadata']['offered_qos_profiles']
    assert qos['reliability'] == 'best_effort'

    # The MCAP carries the full definitions (Foxglove needs no tspace_interfaces).
    [mcap_file] = path.glob('*.mcap')
    with open(mcap_file, 'rb') as stream:
        summary = make_reader(stream).get_summary()
    schemas = {s.name: s for s in summary.schemas.values()}
    assert set(schemas) == {WINDOW_TYPE, TRANSITION_TYPE, DIAGNOSTICS_TYPE}
    window_schema = schemas[WINDOW_TYPE].data.decode()
    assert schemas[WINDOW_TYPE].encoding == 'ros2msg'
    assert 'float32[] samples' in window_schema and 'MSG: std_msgs/Header' in window_schema
    assert 'float32[] next_state' in schemas[TRANSITION_TYPE].data.decode()
    channels = {c.topic: c for c in summary.channels.values()}
    assert 'transient_local' in channels['/veh/transitions'].metadata['offered_qos_profiles']

    info = bag_info(path)
    assert info['topics'] == ['/diagnostics', '/veh/observation/window', '/veh/transitions']
    assert info['types']['/diagnostics'] == DIAGNOSTICS_TYPE
    assert info['counts'] == {'/veh/observation/window': 3, '/veh/transitions': 2,
                              '/diagnostics': 1}
    assert (info['message_count'], info['start_ns'], info['end_ns'], info['duration_ns']) == \
        (6, T0 + 10, T0 + 60, 50)
    assert info['storage_identifier'] == 'mcap' and info['custom_data'] == {'namespace': '/veh'}
    assert info['qos']['/veh/transitions'][0]['durability'] == 'transient_local'

    only = list(read_bag(path, topics=['/veh/transitions']))
    assert [stamp for _, _, stamp, _ in only] == [T0 + 10, T0 + 50]


def test_bad_bags_raise_bag_errors_that_say_why(tmp_path):
    good = tmp_path / 'good'
    write_sample_bag(good)

    with pytest.raises(BagError, match='no such bag'):
        read_bag(tmp_path / 'absent')
    with pytest.raises(BagError, match='no such bag'):
        bag_info(tmp_path / 'absent')

    no_metadata = tmp_path / 'no_metadata'
    shutil.copytree(good, no_metadata)
    (no_metadata / 'metadata.yaml').unlink()
    for reader in (read_bag, bag_info):
        with pytest.raises(BagError, match='metadata.yaml is missing') as error:
            reader(no_metadata)
        assert 'ros2 bag reindex' in str(error.value)

    truncated = tmp_path / 'truncated'
    shutil.copytree(good, truncated)
    [mcap_file] = truncated.glob('*.mcap')
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[:len(data) // 2])
    for reader in (read_bag, bag_info):
        with pytest.raises(BagError, match='cannot read the bag') as error:
            reader(truncated)
        assert str(mcap_file) in str(error.value)

    with pytest.raises(BagError, match='no topic /veh/nothing'):
        read_bag(good, topics=['/veh/nothing'])
    with BagRecorder(tmp_path / 'refuses', typestore_with_ours()) as bag:
        with pytest.raises(BagError, match='unknown message type thirdparty_msgs/msg/Gadget'):
            bag.add_topic('/gadget', 'thirdparty_msgs/msg/Gadget')
        with pytest.raises(BagError, match='was not added'):
            bag.write('/gadget', 1, b'\x00\x01\x00\x00')
    with pytest.raises(BagError, match='exists'):
        BagRecorder(good, typestore_with_ours())


def test_unknown_types_raise_or_are_skipped_with_a_count(tmp_path):
    path = tmp_path / 'foreign'
    writer_store = typestore_with_ours()  # this store only knows the third-party type
    writer_store.register(get_types_from_msg('int32 x\nstring label',
                                             'thirdparty_msgs/msg/Gadget'))
    gadget = writer_store.types['thirdparty_msgs/msg/Gadget']
    transition = distinct(Transition, 7)
    with BagRecorder(path, writer_store) as bag:
        bag.add_topic('/gadget', 'thirdparty_msgs/msg/Gadget')
        bag.add_topic('/veh/transitions', TRANSITION_TYPE)
        for k in range(3):
            bag.write('/gadget', T0 + k, bytes(writer_store.serialize_cdr(
                gadget(x=k, label='g'), 'thirdparty_msgs/msg/Gadget')))
        bag.write('/veh/transitions', T0 + 5, serialize_message(transition))

    with pytest.raises(BagError, match='/gadget') as error:
        read_bag(path)
    assert 'unknown message type thirdparty_msgs/msg/Gadget' in str(error.value)
    assert 'skip_unknown' in str(error.value)

    messages = read_bag(path, skip_unknown=True)
    assert messages.skipped == {'/gadget': ('thirdparty_msgs/msg/Gadget', 3)}
    assert messages.skipped_messages == 3
    assert [(topic, stamp) for topic, _, stamp, _ in messages] == [('/veh/transitions', T0 + 5)]
    # bag_info describes every topic, known or not.
    assert bag_info(path)['counts'] == {'/gadget': 3, '/veh/transitions': 1}


def test_typestore_finds_our_messages_installed_or_in_the_source_tree(monkeypatch):
    installed = typestore_with_ours()
    monkeypatch.setenv('AMENT_PREFIX_PATH', '')  # not installed: the source tree
    source = typestore_with_ours()
    for store in (installed, source):
        assert WINDOW_TYPE in store.fielddefs and DIAGNOSTICS_TYPE in store.fielddefs
        assert 'tspace_interfaces/msg/CanFrameBatch' in store.fielddefs
    assert installed.hash_rihs01(WINDOW_TYPE) == source.hash_rihs01(WINDOW_TYPE)
    with pytest.raises(BagError, match='no tspace_interfaces .msg files'):
        typestore_with_ours(share_dir='/nonexistent')


# ---- recorder node --------------------------------------------------------------------------


def _status_values(arrays, name):
    for array in reversed(arrays):
        for status in array.status:
            if status.name == name:
                return {kv.key: kv.value for kv in status.values}
    return {}


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    """Record with the recorder node what a test publisher sends; return the bag and the sent."""
    root = tmp_path_factory.mktemp('recording')
    out = root / 'bags'
    sent = {'observation/window': [distinct(ObservationWindow, k) for k in range(20)],
            'transitions': [distinct(Transition, 100 + k) for k in range(5)],
            'can/frames': [distinct(CanFrameBatch, 200 + k) for k in range(3)],
            'episode/event': [distinct(EpisodeEvent, 300 + k) for k in range(2)],
            'torque_map/active': [distinct(TorqueMap, 400)]}
    with NodeProcess('tspace_ros.nodes.recorder', root / 'recorder.log', [
            '-r', f'__ns:=/{NS}', '-p', f'output_dir:={out}', '-p', 'prefix:=run',
            '-p', 'discovery_period_s:=0.2', '-p', 'diagnostics_period_s:=0.2']) as process, \
            RosContext() as ros:
        probe = ros.node('bag_probe', NS)
        diags = []
        probe.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 100)
        # Present before activation: the window publisher, and a latched torque map
        # (transient local) that the recorder must still get.
        publishers = {'observation/window': probe.create_publisher(
            ObservationWindow, 'observation/window', WINDOW_QOS),
            'torque_map/active': probe.create_publisher(TorqueMap, 'torque_map/active',
                                                        ACTIVE_MAP_QOS)}
        publishers['torque_map/active'].publish(sent['torque_map/active'][0])
        node = LifecycleDriver(ros, f'{NS}/recorder')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), process.output()
        before_ns = time.time_ns()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), process.output()
        # Appearing later: transitions and frames (types from the default table), and
        # episode events from a VOLATILE publisher although the default expects transient
        # local: the recorder has to subscribe again with the publisher's QoS.
        publishers['transitions'] = probe.create_publisher(Transition, 'transitions',
                                                           RECORD_QOS)
        publishers['can/frames'] = probe.create_publisher(CanFrameBatch, 'can/frames',
                                                          FRAME_QOS)
        publishers['episode/event'] = probe.create_publisher(
            EpisodeEvent, 'episode/event', RECORD_QOS,
            event_callbacks=PublisherEventCallbacks(incompatible_qos=lambda event: None))
        assert spin_until(ros.executor, lambda: all(
            p.get_subscription_count() > 0 for p in publishers.values()), TIMEOUT_S), \
            process.output()
        # Interleaved, as on a running vehicle.
        for k in range(len(sent['observation/window'])):
            for topic in ('observation/window', 'transitions', 'can/frames', 'episode/event'):
                if k < len(sent[topic]):
                    publishers[topic].publish(sent[topic][k])
        expected = {f'messages /{NS}/{topic}': str(len(msgs)) for topic, msgs in sent.items()}
        name = f'/{NS}/recorder'
        assert spin_until(ros.executor, lambda: expected.items() <=
                          _status_values(diags, name).items(), TIMEOUT_S), \
            (_status_values(diags, name), process.output())
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
        after_ns = time.time_ns()
        values = _status_values(diags, name)
        bag = values['path']

        # A second activation records into a new bag, which SIGTERM (leaving the block)
        # still closes properly.
        windows = publishers['observation/window']
        assert spin_until(ros.executor, lambda: windows.get_subscription_count() == 0,
                          TIMEOUT_S)
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), process.output()
        assert spin_until(ros.executor, lambda: windows.get_subscription_count() > 0,
                          TIMEOUT_S)
        windows.publish(distinct(ObservationWindow, 99))
        assert spin_until(ros.executor, lambda: _status_values(diags, name).get(
            f'messages /{NS}/observation/window') == '1', TIMEOUT_S), process.output()
        second = _status_values(diags, name)['path']
    assert process.wait(0) == 0, process.output()
    assert 'bag closed' in process.output()
    return {'bag': pathlib.Path(bag), 'second': pathlib.Path(second), 'out': out, 'sent': sent,
            'log': process.output(), 'diagnostics': values, 'window_ns': (before_ns, after_ns)}


def test_recorder_records_exactly_what_was_sent(recording):
    bag, sent = recording['bag'], recording['sent']
    assert bag.name.startswith('run_') and bag.name.endswith('Z')
    assert (bag / 'metadata.yaml').is_file()
    assert f'bag closed: {bag}' in recording['log']
    assert sorted(recording['out'].iterdir()) == sorted([bag, recording['second']])
    assert int(recording['diagnostics']['bytes']) > 0
    second = bag_info(recording['second'])  # closed on SIGTERM: metadata.yaml is there
    assert second['counts'][f'/{NS}/observation/window'] == 1
    assert second['counts'][f'/{NS}/transitions'] == 0

    info = bag_info(bag)
    assert info['verified'] and second['verified'], 'the recorder writes MCAP CRCs'
    expected_topics = {f'/{NS}/{topic}' for topic in DEFAULT_TOPICS if topic[0] != '/'}
    assert set(info['topics']) == expected_topics | {'/diagnostics'}
    for topic, msgs in sent.items():
        assert info['counts'][f'/{NS}/{topic}'] == len(msgs), topic
    assert info['counts'][f'/{NS}/agent/action'] == 0
    assert info['custom_data']['namespace'] == f'/{NS}'
    assert info['qos'][f'/{NS}/torque_map/active'][0]['durability'] == 'transient_local'
    assert info['qos'][f'/{NS}/observation/window'][0]['reliability'] == 'reliable'
    before_ns, after_ns = recording['window_ns']
    assert before_ns <= info['start_ns'] <= info['end_ns'] <= after_ns

    classes = {'observation/window': ObservationWindow, 'transitions': Transition,
               'can/frames': CanFrameBatch, 'episode/event': EpisodeEvent,
               'torque_map/active': TorqueMap}
    for topic, msgs in sent.items():
        read = list(read_bag(bag, topics=[f'/{NS}/{topic}']))
        assert len(read) == len(msgs), topic
        for (_, _, _, data), msg in zip(read, msgs):  # first, last and all between
            assert differences(deserialize_message(data, classes[topic]), msg) == [], topic


def test_messages_before_the_first_clock_do_not_start_the_bag_at_1970(tmp_path):
    # Under use_sim_time the node clock reads 0 until /clock arrives: what came before
    # is written at the clock's first reading, and the bag starts there, not at epoch 0.
    ns = f'{NS}_early'
    first_clock_ns = 1_790_000_000_000_000_000
    with NodeProcess('tspace_ros.nodes.recorder', tmp_path / 'recorder.log', [
            '-r', f'__ns:=/{ns}', '-p', f'output_dir:={tmp_path / "bags"}',
            '-p', 'use_sim_time:=true', '-p', 'discovery_period_s:=0.2',
            '-p', 'diagnostics_period_s:=0.2']) as process, RosContext() as ros:
        probe = ros.node('early_probe', ns)
        windows = probe.create_publisher(ObservationWindow, 'observation/window', WINDOW_QOS)
        clock = probe.create_publisher(Clock, '/clock', 10)
        diags = []
        probe.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 100)
        node = LifecycleDriver(ros, f'{ns}/recorder')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), process.output()
        assert spin_until(ros.executor, lambda: windows.get_subscription_count() > 0,
                          TIMEOUT_S)
        for k in range(3):
            windows.publish(distinct(ObservationWindow, k))
        spin_until(ros.executor, lambda: False, 0.5)   # received while the clock reads 0
        assert spin_until(ros.executor, lambda: clock.get_subscription_count() > 0,
                          TIMEOUT_S)
        for k in range(3, 6):
            stamp = first_clock_ns + (k - 3) * 10**8
            clock.publish(Clock(clock=Time(sec=stamp // 10**9, nanosec=stamp % 10**9)))
            spin_until(ros.executor, lambda: False, 0.3)
            windows.publish(distinct(ObservationWindow, k))
        name = f'/{ns}/recorder'
        assert spin_until(ros.executor, lambda: _status_values(diags, name).get(
            f'messages /{ns}/observation/window') == '6', TIMEOUT_S), process.output()
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
        bag = pathlib.Path(_status_values(diags, name)['path'])
    info = bag_info(bag)
    assert info['counts'][f'/{ns}/observation/window'] == 6
    assert first_clock_ns <= info['start_ns'] <= info['end_ns'] < first_clock_ns + 10**9
    assert _status_values(diags, name)['early_dropped'] == '0'


# ---- replay node and command ----------------------------------------------------------------


def _recorded(bag, topic):
    return [(stamp, data) for _, _, stamp, data in read_bag(bag, topics=[topic])]


def _set(ros, client, **values):
    request = SetParameters.Request(parameters=[
        Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
    results = call(ros.executor, client, request).results
    assert all(r.successful for r in results), results


def test_replay_node_publishes_the_bag_and_refuses_a_bad_one(recording, tmp_path):
    bag = recording['bag']
    windows = _recorded(bag, f'/{NS}/observation/window')
    transitions = _recorded(bag, f'/{NS}/transitions')
    frames = _recorded(bag, f'/{NS}/can/frames')
    stamps = {stamp for stamp, _ in windows + transitions}
    missing = tmp_path / 'no_bag_here'
    with NodeProcess('tspace_ros.nodes.replay', tmp_path / 'replay.log', [
            '-r', '__ns:=/replay_test', '-p', f'bag:={missing}', '-p', 'rate:=0.0',
            '-p', 'wait_for_subscribers:=1',
            '-p', "topics:=['observation/window', 'transitions']"]) as process, \
            RosContext() as ros:
        probe = ros.node('replay_probe')
        got = {'window': [], 'transition': [], 'done': [], 'clock': [], 'bus': [], 'raw': []}
        probe.create_subscription(ObservationWindow, f'/{NS}/observation/window',
                                  got['window'].append, DEEP, raw=True)
        probe.create_subscription(Transition, f'/{NS}/transitions', got['transition'].append,
                                  DEEP, raw=True)
        probe.create_subscription(Bool, '/replay_test/replay/done',
                                  lambda m: got['done'].append(m.data), DONE_QOS)
        probe.create_subscription(
            Clock, '/clock',
            lambda m: got['clock'].append(m.clock.sec * 10**9 + m.clock.nanosec), DEEP)
        probe.create_subscription(CanFrameBatch, '/bus_ns/from_can_bus', got['bus'].append,
                                  DEEP, raw=True)
        probe.create_subscription(CanFrameBatch, '/bus_ns/can/frames', got['raw'].append,
                                  DEEP, raw=True)
        parameters = probe.create_client(SetParameters, '/replay_test/replay/set_parameters')
        node = LifecycleDriver(ros, 'replay_test/replay')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), process.output()

        # A bag that is not there: activation fails, says why, the node lives on.
        assert not node.transition(LifecycleTransition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: 'no such bag' in process.output(), TIMEOUT_S)
        assert 'activate failed' in process.output() and str(missing) in process.output()
        assert process.process.poll() is None
        assert node.state() == State.PRIMARY_STATE_INACTIVE

        # The recorded bag, as fast as the subscribers take it.
        _set(ros, parameters, bag=str(bag))
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), process.output()
        assert spin_until(ros.executor, lambda: got['done'] and
                          len(got['window']) >= len(windows) and
                          len(got['transition']) >= len(transitions) and
                          got['clock'] and got['clock'][-1] == max(stamps), TIMEOUT_S), \
            (process.output(), {k: len(v) for k, v in got.items()})
        assert got['done'] == [True]
        assert got['window'] == [data for _, data in windows]
        assert got['transition'] == [data for _, data in transitions]
        assert set(got['clock']) <= stamps and got['clock'] == sorted(got['clock'])
        assert 'replay done: 25 messages' in process.output()

        # The CAN frames only, onto the bus topic of another namespace (for a CAN bridge).
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
        _set(ros, parameters, topics=['can/frames'], frames_to_bus=True,
             remap_namespace='/bus_ns', publish_clock=False)
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), process.output()
        assert spin_until(ros.executor, lambda: len(got['done']) == 2 and
                          len(got['bus']) >= len(frames), TIMEOUT_S), process.output()
        assert got['done'] == [True, True]
        assert got['bus'] == [data for _, data in frames] and got['raw'] == []
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)


def test_replay_command_paces_by_rate_and_exits_with_the_right_code(tmp_path):
    env_command = [sys.executable, '-m', 'tspace_ros.nodes.replay']
    result = subprocess.run(env_command + ['--bag', str(tmp_path / 'absent')],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and 'no such bag' in result.stderr, result.stderr

    # Four transitions 0.2 s apart, replayed at twice the speed: 0.3 s from first to last.
    path = tmp_path / 'paced'
    sent = [serialize_message(distinct(Transition, k)) for k in range(4)]
    with BagRecorder(path, typestore_with_ours()) as bag:
        bag.add_topic('/paced/transitions', TRANSITION_TYPE, qos_profile_yaml(depth=100))
        for k, data in enumerate(sent):
            bag.write('/paced/transitions', T0 + k * 200_000_000, data)
    with RosContext() as ros:
        received = []
        ros.node('command_probe').create_subscription(
            Transition, '/paced/transitions',
            lambda data: received.append((time.monotonic(), data)), DEEP, raw=True)
        command = subprocess.Popen(
            env_command + ['--bag', str(path), '--rate', '2', '--topics', 'transitions',
                           '--wait-for-subscribers', '1', '--no-clock'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            finished = spin_until(ros.executor, lambda: len(received) == 4 and
                                  command.poll() is not None, TIMEOUT_S)
        finally:
            if command.poll() is None:
                command.kill()  # by its PID
            output = command.communicate()[0]
    assert finished and command.returncode == 0, output
    assert [data for _, data in received] == sent
    span = received[-1][0] - received[0][0]
    assert 0.25 <= span < 5.0, span
