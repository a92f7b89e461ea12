"""
Every tspace_interfaces type survives construction, transport and reception intact.

Types are discovered from the ament index, so a new .msg/.srv/.action is
covered by these tests automatically. Each instance has every field set to a
distinct non-default value (checked), is sent through real ROS 2 middleware
(topic, service or action between two nodes), and compared field by field.
"""

import importlib
import threading

from ament_index_python import get_resource
from interface_values import default_valued_fields, differences, fill
import pytest
from rclpy.action import ActionClient, ActionServer
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from ros_test_support import RosContext, spin_until

TIMEOUT_S = 15.0


def _interfaces(kind):
    content, _ = get_resource('rosidl_interfaces', 'tspace_interfaces')
    names = sorted({line.split('/')[1].rsplit('.', 1)[0]
                    for line in content.splitlines() if line.startswith(kind + '/')})
    module = importlib.import_module(f'tspace_interfaces.{kind}')
    return [getattr(module, name) for name in names]


MESSAGES = _interfaces('msg')
SERVICES = _interfaces('srv')
ACTIONS = _interfaces('action')


def _parts(types, parts):
    return [(t, getattr(t, part)) for t in types for part in parts]


ALL_STRUCTS = list(MESSAGES) + \
    [p for _, p in _parts(SERVICES, ('Request', 'Response'))] + \
    [p for _, p in _parts(ACTIONS, ('Goal', 'Result', 'Feedback'))]


def test_the_index_lists_every_interface_the_package_defines():
    assert {m.__name__ for m in MESSAGES} == {
        'CanFrame', 'CanFrameBatch', 'ObservationWindow', 'TorqueMap', 'Transition',
        'EpisodeSummary', 'Episode', 'PolicyUpdate', 'TrainerStatus',
        'AgentAction', 'EpisodeEvent'}
    assert {s.__name__ for s in SERVICES} == {'EpisodeControl', 'SampleBatch'}
    assert {a.__name__ for a in ACTIONS} == {'FlashTorqueMap'}


@pytest.mark.parametrize('struct', ALL_STRUCTS, ids=lambda t: t.__name__)
def test_filler_sets_every_field_and_serialization_round_trips(struct):
    msg = fill(struct())
    assert default_valued_fields(msg) == []
    back = deserialize_message(serialize_message(msg), struct)
    assert differences(msg, back) == []
    assert back == msg


@pytest.mark.parametrize('msg_type', MESSAGES, ids=lambda t: t.__name__)
def test_message_round_trips_over_a_topic(msg_type):
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    topic = f'roundtrip/{msg_type.__name__}'
    sent = fill(msg_type())
    received = []
    with RosContext() as ros:
        publisher = ros.node('roundtrip_pub').create_publisher(msg_type, topic, qos)
        ros.node('roundtrip_sub').create_subscription(msg_type, topic, received.append, qos)
        assert spin_until(ros.executor, lambda: publisher.get_subscription_count() > 0,
                          TIMEOUT_S), 'subscriber never matched'
        publisher.publish(sent)
        assert spin_until(ros.executor, lambda: received, TIMEOUT_S), 'nothing received'
    assert differences(sent, received[0]) == []
    assert received[0] == sent


@pytest.mark.parametrize('srv_type', SERVICES, ids=lambda t: t.__name__)
def test_service_request_and_response_round_trip(srv_type):
    request = fill(srv_type.Request())
    response = fill(srv_type.Response())
    seen = []

    def serve(req, resp):
        seen.append(req)
        return response

    with RosContext() as ros:
        name = f'roundtrip/{srv_type.__name__}'
        ros.node('roundtrip_server').create_service(srv_type, name, serve)
        client = ros.node('roundtrip_client').create_client(srv_type, name)
        assert spin_until(ros.executor, client.service_is_ready, TIMEOUT_S)
        future = client.call_async(request)
        assert spin_until(ros.executor, future.done, TIMEOUT_S), 'no response'
    assert differences(request, seen[0]) == []
    assert differences(response, future.result()) == []


@pytest.mark.parametrize('action_type', ACTIONS, ids=lambda t: t.__name__)
def test_action_goal_feedback_and_result_round_trip(action_type):
    goal = fill(action_type.Goal())
    feedback = fill(action_type.Feedback())
    result = fill(action_type.Result())
    goals_seen, feedback_seen = [], []
    feedback_arrived = threading.Event()

    def execute(goal_handle):
        goals_seen.append(goal_handle.request)
        # Repeat the feedback until the client has it: its feedback subscription
        # may match a little after the goal services do.
        while not feedback_arrived.wait(0.05):
            goal_handle.publish_feedback(feedback)
        goal_handle.succeed()
        return result

    def on_feedback(message):
        feedback_seen.append(message.feedback)
        feedback_arrived.set()

    with RosContext(MultiThreadedExecutor) as ros:
        name = f'roundtrip_{action_type.__name__}'
        group = ReentrantCallbackGroup()
        ActionServer(ros.node('roundtrip_action_server'), action_type, name, execute,
                     callback_group=group)
        client = ActionClient(ros.node('roundtrip_action_client'), action_type, name,
                              callback_group=group)
        assert spin_until(ros.executor, client.server_is_ready, TIMEOUT_S)
        goal_future = client.send_goal_async(goal, feedback_callback=on_feedback)
        assert spin_until(ros.executor, goal_future.done, TIMEOUT_S), 'goal not answered'
        assert goal_future.result().accepted
        result_future = goal_future.result().get_result_async()
        assert spin_until(ros.executor, result_future.done, TIMEOUT_S), 'no result'
        feedback_arrived.set()
    assert differences(goal, goals_seen[0]) == []
    assert differences(feedback, feedback_seen[0]) == []
    assert differences(result, result_future.result().result) == []


def test_comparison_reports_a_changed_nested_field_by_its_path():
    from tspace_interfaces.msg import Episode
    sent = fill(Episode())
    changed = fill(Episode())
    changed.transitions[1].state[2] += 1.0
    changed.summary.header.frame_id = 'other'
    assert differences(sent, changed) == ['summary.header.frame_id', 'transitions[1].state']
    partly = fill(Episode())
    partly.summary.valid = False
    assert default_valued_fields(partly) == ['summary.valid']
