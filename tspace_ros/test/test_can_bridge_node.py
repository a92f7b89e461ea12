"""
The can_bridge node in its own process, against a vehicle played by this test.

The test is the vehicle: it puts frames of the shipped DBC on the ROS-topic bus
in real time and answers torque-map transfers with the same VcuMapReceiver the
simulated VCU uses (or refuses, or stays silent). The bridge is driven over
its lifecycle services, its flash action and its episode service.
"""

import json
import os
import signal
import socket
import time

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
import numpy as np
import pytest
from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_test_support import call, NodeProcess, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import (CanFrameBatch, EpisodeEvent, ObservationWindow,
                                   TorqueMap as TorqueMapMsg)
from tspace_interfaces.srv import EpisodeControl

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.can.transfer import VcuMapReceiver
from tspace_ros.nodes.messages import time_to_ns, torque_map_from_msg, torque_map_to_msg
from tspace_ros.nodes.qos import EVENT_QOS
from tspace_ros.nodes.topic_bus import TopicCanBus
from tspace_ros.torque_map import apply_action
from tspace_ros.vehicle import load_vehicle_parameters

TIMEOUT_S = 20.0
DB = load_dbc()
DEFAULT = load_vehicle_parameters().load_default_map()
RESULT = FlashTorqueMap.Result
HEARTBEAT_ID = DB.get_message_by_name('BridgeHeartbeat').frame_id


class PlayedVehicle:
    """Frames at 50 Hz in real time; map transfers answered by a VcuMapReceiver."""

    def __init__(self, ros, namespace, mode='accept', heartbeat_timeout_s=0.0):
        self.bus = TopicCanBus(ros.node('played_vehicle', namespace), side='bus', channel='test')
        self.mode = mode  # 'accept', 'busy' (refuse every commit) or 'silent'
        self.vcu = VcuMapReceiver(DB, DEFAULT, accepting=lambda: self.mode != 'busy',
                                  heartbeat_timeout_s=heartbeat_timeout_s)
        self.map_frames = 0
        self.heartbeats = []
        self._t0 = time.time()
        self._sent = 0

    def pump(self):
        """Send the samples due by now; answer every received frame."""
        due = int((time.time() - self._t0) * 50.0)
        frames = []
        for k in range(self._sent, due):
            t = k / 50.0
            frames += encode_vehicle_sample(DB, {
                'speed_kph': 30.0 + 5.0 * np.sin(t), 'pedal': 0.3, 'brake_bar': 0.0,
                'current_a': 40.0, 'voltage_v': 390.0, 'soc': 0.7, 'motor_torque_nm': 80.0,
                'motor_speed_rpm': 2500.0}, self._t0 + t)
        self._sent = max(self._sent, due)
        # What the bridge sent first, then the VCU's own time-outs: after a stall of this
        # test's loop the heartbeats waiting in the queue must count before the VCU judges
        # the bridge silent (a real VCU reads its bus as frames arrive).
        while True:
            frame = self.bus.recv(timeout=0)
            if frame is None:
                break
            if frame.arbitration_id == HEARTBEAT_ID:
                self.heartbeats.append(time.monotonic())
            else:
                self.map_frames += 1
            if self.mode != 'silent':
                frames += self.vcu.feed(frame, time.time())
        frames += self.vcu.poll(time.time())
        if frames:
            self.bus.send_batch(frames)


class Harness:
    """The vehicle, the bridge's interfaces, and a spin that keeps the vehicle running."""

    def __init__(self, ros, namespace, mode='accept', heartbeat_timeout_s=0.0):
        self.ros = ros
        self.vehicle = PlayedVehicle(ros, namespace, mode, heartbeat_timeout_s)
        probe = ros.node('bridge_probe')
        self.windows, self.maps = [], []
        probe.create_subscription(ObservationWindow, f'/{namespace}/observation/window',
                                  self.windows.append, 100)
        probe.create_subscription(
            TorqueMapMsg, f'/{namespace}/torque_map/active', self.maps.append,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.flash = ActionClient(probe, FlashTorqueMap, f'/{namespace}/flash_torque_map')
        self.episode = probe.create_client(EpisodeControl, f'/{namespace}/episode_control')
        self.lifecycle = LifecycleDriver(ros, f'{namespace}/can_bridge')

    def until(self, predicate, timeout_s=TIMEOUT_S):
        """Spin (and run the vehicle) until predicate() holds."""
        def check():
            self.vehicle.pump()
            return predicate()
        return spin_until(self.ros.executor, check, timeout_s)

    def transition(self, transition_id):
        """Change the bridge's state while the vehicle keeps running (it must answer)."""
        future = self.lifecycle.change.call_async(
            ChangeState.Request(transition=Transition(id=transition_id)))
        assert self.until(future.done), 'no answer to the transition'
        return future.result().success

    def send_map(self, torque_map, row_start, row_count, cancel_after_s=None):
        """Send a flash goal; return (feedback stages, result, status)."""
        assert self.until(self.flash.server_is_ready)
        stages = []
        goal = FlashTorqueMap.Goal(map=torque_map_to_msg(torque_map, 0, row_start, row_count))
        future = self.flash.send_goal_async(goal, feedback_callback=lambda f: stages.append(
            f.feedback.stage))
        assert self.until(future.done), 'goal not answered'
        handle = future.result()
        assert handle.accepted
        if cancel_after_s is not None:
            assert self.until(lambda: FlashTorqueMap.Feedback.STAGE_AWAITING_ACK in stages)
            self.until(lambda: False, cancel_after_s)
            handle.cancel_goal_async()
        result = handle.get_result_async()
        assert self.until(result.done), 'no result'
        return stages, result.result().result, result.result().status


def bridge(tmp_path, name, *params):
    """Start a can_bridge in namespace /<name> (as one vehicle's nodes run)."""
    args = ['-r', f'__ns:=/{name}', '-p', 'vehicle_id:=VIN-BRIDGE',
            # The played vehicle answers from this test's own loop: on a loaded 2-core
            # machine an answer can take a good part of a second to come back.
            '-p', 'flash_timeout_s:=2.0', '-p', 'vehicle_offline_s:=1.0']
    for param in params:
        args += ['-p', param]
    return NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / f'{name}.log', args)


def four_rows(version, value=-0.8, row_start=2):
    action = np.full((4, DEFAULT.shape[1]), value)
    return apply_action(DEFAULT, DEFAULT, action, row_start, policy_version=version)


def test_windows_flash_round_trip_and_restore_on_deactivate(tmp_path):
    with bridge(tmp_path, 'bridge_main', 'republish_raw:=true',
                'diagnostics_period_s:=0.5') as process, RosContext() as ros:
        h = Harness(ros, 'bridge_main')
        raw, diagnostics = [], []
        probe = ros.node('raw_and_diagnostics_probe')
        probe.create_subscription(CanFrameBatch, '/bridge_main/can/frames', raw.append, 100)
        probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 100)
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert h.until(lambda: h.maps), 'no active map published (transient local)'
        assert h.maps[-1].policy_version == 0 and h.maps[-1].origin == 0
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)

        assert h.until(lambda: len(h.windows) >= 2), process.output()
        window = h.windows[0]
        assert window.vehicle_id == 'VIN-BRIDGE' and window.samples_per_signal == 30
        assert list(window.units) == ['km/h', '1', 'bar', 'A', 'V']
        pedal = np.frombuffer(window.samples, np.float32).reshape(5, 30)[1]
        np.testing.assert_allclose(pedal, 0.3, atol=1e-3)
        assert window.flagged_signals == []

        # Raw frames are republished for recording; diagnostics count what was read.
        assert h.until(lambda: raw and any(
            float(v.value) > 0 for d in diagnostics for st in d.status
            if 'CAN bridge' in st.name for v in st.values if v.key == 'frames'))
        assert {f.id for batch in raw for f in batch.frames} >= {0x100, 0x110, 0x120}
        status = [st for d in diagnostics for st in d.status if 'CAN bridge' in st.name][-1]
        values = {v.key: v.value for v in status.values}
        assert values['unknown_ids'] == '0' and values['decode_errors'] == '0'
        # 3 frames x 50 Hz, once a whole diagnostics period had frames
        assert h.until(lambda: float(_diagnostic_values(diagnostics)['frames_per_s']) > 100.0)
        assert status.hardware_id == 'VIN-BRIDGE'

        proposed = four_rows(version=7)
        stages, result, _ = h.send_map(proposed, 2, 4)
        assert result.success and result.error_code == RESULT.ERROR_NONE, result.message
        assert stages[0] == FlashTorqueMap.Feedback.STAGE_VALIDATING
        assert FlashTorqueMap.Feedback.STAGE_AWAITING_ACK in stages
        assert result.active_map.policy_version == 7
        np.testing.assert_allclose(h.vehicle.vcu.active_map.torque_nm, proposed.torque_nm,
                                   atol=0.25)
        assert h.until(lambda: h.maps[-1].policy_version == 7)

        too_big = DEFAULT.with_torque(DEFAULT.torque_nm + 100.0, policy_version=8)
        frames_before = h.vehicle.map_frames
        _, rejected, _ = h.send_map(too_big, 0, 4)
        assert rejected.error_code == RESULT.ERROR_REJECTED_BY_SAFETY_GATE
        assert 'above' in rejected.message and rejected.active_map.policy_version == 7
        assert h.vehicle.map_frames == frames_before, 'a rejected map reached the bus'

        # Deactivating restores the default map on the vehicle.
        assert h.transition(Transition.TRANSITION_DEACTIVATE)
        assert h.vehicle.vcu.active_version == 0
        np.testing.assert_allclose(h.vehicle.vcu.active_map.torque_nm, DEFAULT.torque_nm,
                                   atol=0.25)
        assert h.until(lambda: h.maps[-1].policy_version == 0)
        assert h.lifecycle.transition(Transition.TRANSITION_CLEANUP)
        assert h.lifecycle.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert process.wait(TIMEOUT_S) == 0
    assert 'deactivating: default map restored' in process.output()


@pytest.mark.parametrize('mode, cancel, expected', [
    ('busy', None, RESULT.ERROR_REFUSED_BY_VCU),
    ('silent', None, RESULT.ERROR_TIMEOUT),
    ('silent', 0.1, RESULT.ERROR_CANCELED),
])
def test_refusal_time_out_and_cancellation_keep_the_last_good_map(tmp_path, mode, cancel,
                                                                  expected):
    name = f'bridge_{mode}_{"cancel" if cancel else "wait"}'
    with bridge(tmp_path, name, 'vehicle_offline_s:=5.0') as process, RosContext() as ros:
        h = Harness(ros, name, mode)
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert h.until(lambda: h.windows)
        _, result, _ = h.send_map(four_rows(version=3), 2, 4, cancel_after_s=cancel)
        assert not result.success and result.error_code == expected, result.message
        assert result.active_map.policy_version == 0
        assert h.vehicle.vcu.active_version == 0


def test_watchdog_restores_the_default_map_without_heartbeat(tmp_path):
    with bridge(tmp_path, 'bridge_watchdog', 'watchdog_timeout_s:=1.5') as process, \
            RosContext() as ros:
        h = Harness(ros, 'bridge_watchdog')
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert h.until(lambda: h.windows)
        _, result, _ = h.send_map(four_rows(version=11, row_start=4), 4, 4)
        assert result.success, result.message
        assert h.vehicle.vcu.active_version == 11
        assert h.until(lambda: h.vehicle.vcu.active_version == 0), process.output()
        assert h.until(lambda: h.maps[-1].policy_version == 0)
    assert 'watchdog: no map or agent heartbeat for 1.5 s' in process.output()


def test_no_goal_rewrites_the_whole_map_or_claims_to_be_the_default(tmp_path):
    with bridge(tmp_path, 'bridge_total') as process, RosContext() as ros:
        h = Harness(ros, 'bridge_total')
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert h.until(lambda: h.windows)
        # changed_row_count 0 used to mean "the whole map": every row changed at once.
        whole = DEFAULT.with_torque(DEFAULT.torque_nm - 200.0, policy_version=5)
        frames_before = h.vehicle.map_frames
        _, result, _ = h.send_map(whole, 0, 0)
        assert result.error_code == RESULT.ERROR_REJECTED_BY_SAFETY_GATE
        assert 'row_count' in result.message
        assert h.vehicle.map_frames == frames_before and h.vehicle.vcu.active_version == 0
        # A changed map that says it is the default is an agent's map all the same.
        claimed = four_rows(version=6)
        claimed = claimed.with_torque(claimed.torque_nm, 6, origin=0)
        _, result, _ = h.send_map(claimed, 2, 4)
        assert result.success, result.message
        assert result.active_map.origin == 1
        assert h.until(lambda: h.maps[-1].policy_version == 6 and h.maps[-1].origin == 1)
        # ...so deactivating still restores the real default.
        assert h.transition(Transition.TRANSITION_DEACTIVATE)
        assert h.vehicle.vcu.on_reference
        assert h.until(lambda: h.maps[-1].origin == 0 and h.maps[-1].policy_version == 0)


def test_the_vcu_falls_back_on_its_own_when_the_bridge_is_killed(tmp_path):
    with bridge(tmp_path, 'bridge_killed', 'watchdog_timeout_s:=0.0') as process, \
            RosContext() as ros:
        h = Harness(ros, 'bridge_killed', heartbeat_timeout_s=0.5)
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert h.until(lambda: len(h.vehicle.heartbeats) >= 10), 'no heartbeat from the bridge'
        beats = np.diff(h.vehicle.heartbeats[-10:])
        assert 0.05 < float(np.median(beats)) < 0.2, beats  # 10 Hz
        _, result, _ = h.send_map(four_rows(version=21), 2, 4)
        assert result.success, result.message
        h.until(lambda: False, 1.0)  # the heartbeat keeps the map
        assert h.vehicle.vcu.active_version == 21 and not h.vehicle.vcu.fallback_active
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert h.until(lambda: h.vehicle.vcu.on_reference, 5.0), 'the VCU kept the map'
        # The VCU's time-out (0.5 s), plus this test's polling of the played VCU under load.
        assert time.monotonic() - killed < 0.5 + 0.5
        assert h.vehicle.vcu.fallback_active and h.vehicle.vcu.stats['fallbacks'] == 1


def test_episodes_from_the_service_and_the_udp_hmi_stamp_windows(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]  # free now; the bridge binds it next
    with bridge(tmp_path, 'bridge_episodes', f'hmi_udp_port:={port}',
                'episode_countdown_s:=0.0') as process, RosContext() as ros:
        h = Harness(ros, 'bridge_episodes')
        events = []
        ros.node('event_probe').create_subscription(
            EpisodeEvent, '/bridge_episodes/episode/event', events.append, EVENT_QOS)
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert h.until(lambda: h.windows)
        assert h.windows[-1].episode_id == ''
        assert h.until(h.episode.service_is_ready)
        refused = call(ros.executor, h.episode, EpisodeControl.Request(
            command=EpisodeControl.Request.END_VALID))
        assert not refused.accepted and 'no episode' in refused.message
        started = call(ros.executor, h.episode, EpisodeControl.Request(
            command=EpisodeControl.Request.START))
        assert started.accepted and started.state == EpisodeControl.Response.STATE_RUNNING
        count = len(h.windows)
        assert h.until(lambda: len(h.windows) >= count + 3)
        in_episode = [w for w in h.windows[count:] if w.episode_id == started.episode_id]
        assert in_episode and in_episode[0].step_index == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hmi:
            hmi.sendto(json.dumps({'status': 'end_invalid'}).encode(), ('127.0.0.1', port))
        count = len(h.windows)
        assert h.until(lambda: len(h.windows) > count and h.windows[-1].episode_id == '')
        assert h.until(lambda: len(events) >= 2)
        assert [(e.event, e.episode_id) for e in events] == [
            (EpisodeEvent.STARTED, started.episode_id),
            (EpisodeEvent.DISCARDED, started.episode_id)]
        assert events[0].vehicle_id and events[0].driver_id == 'driver0'
        start_ns = time_to_ns(events[0].episode_start)
        assert time_to_ns(events[1].episode_start) == start_ns
        assert time_to_ns(events[1].episode_end) >= start_ns
        # A valid end with no countdown: stored at once (no ending phase).
        second = call(ros.executor, h.episode, EpisodeControl.Request(
            command=EpisodeControl.Request.START))
        stored = call(ros.executor, h.episode, EpisodeControl.Request(
            command=EpisodeControl.Request.END_VALID))
        assert second.accepted and stored.accepted and stored.message == 'stored'
        assert h.until(lambda: len(events) >= 4)
        assert [(e.event, e.episode_id) for e in events[2:]] == [
            (EpisodeEvent.STARTED, second.episode_id), (EpisodeEvent.STORED, second.episode_id)]
    assert f'episode {started.episode_id} discarded' in process.output()


def _diagnostic_values(arrays):
    """Return the key/values of the latest bridge status in a list of DiagnosticArrays."""
    for array in reversed(arrays):
        for status in array.status:
            if 'CAN bridge' in status.name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_hostile_hmi_datagrams_never_stop_the_bridge_and_are_in_diagnostics(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    with bridge(tmp_path, 'bridge_hmi_fuzz', f'hmi_udp_port:={port}',
                'diagnostics_period_s:=0.2') as process, RosContext() as ros:
        h = Harness(ros, 'bridge_hmi_fuzz')
        diagnostics = []
        ros.node('diag_probe').create_subscription(DiagnosticArray, '/diagnostics',
                                                   diagnostics.append, 100)
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert h.until(lambda: h.windows)
        hostile = [b'{"status": ["begin"]}', b'{"status": {"a": 1}}', b'[' * 4000,
                   b'{"status": ' + b'[' * 1500 + b']' * 1500 + b'}', b'\xff' * 10,
                   b'x' * 9000, b'{"status": 7}', b'null']
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hmi:
            for _ in range(40):  # a flood of 320 hostile datagrams
                for payload in hostile:
                    hmi.sendto(payload, ('127.0.0.1', port))
            count = len(h.windows)
            # The bridge goes on: windows keep coming.
            assert h.until(lambda: len(h.windows) >= count + 3), process.output()
            # A valid HMI command after the flood still starts an episode; it also carries
            # the kernel's count of the datagrams dropped on the full queue (SO_RXQ_OVFL).
            hmi.sendto(json.dumps({'status': 'begin'}).encode(), ('127.0.0.1', port))
            assert h.until(lambda: h.windows[-1].episode_id != ''), process.output()

            def hmi_values():
                return {k: int(v) for k, v in _diagnostic_values(diagnostics).items()
                        if k.startswith('hmi_') and v.lstrip('-').isdigit()}
            # Every datagram is accounted for: received (and rejected by reason) or dropped.
            assert h.until(lambda: hmi_values().get('hmi_accepted') == 1), hmi_values()
            values = hmi_values()
            assert values['hmi_received'] + values['hmi_kernel_drops'] == 321, values
            assert values['hmi_rejected'] == values['hmi_received'] - 1
            assert values['hmi_rejected_bad_status_type'] > 0
            assert values['hmi_rejected_too_deep'] > 0
            assert values['hmi_rejected_too_large'] > 0
            assert values['hmi_errors'] == 0
        assert process.wait(0.0) is None  # still running


def test_unavailable_interface_fails_configure_and_the_node_lives_on(tmp_path):
    with bridge(tmp_path, 'bridge_kvaser', 'can_interface:=kvaser',
                'can_channel:=0') as process, RosContext() as ros:
        node = LifecycleDriver(ros, 'bridge_kvaser/can_bridge')
        assert not node.transition(Transition.TRANSITION_CONFIGURE)
        assert process.wait(0.0) is None
        assert node.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert "cannot open CAN interface 'kvaser'" in process.output()


def test_map_messages_round_trip_with_float32_rounding():
    proposed = four_rows(version=5)
    back = torque_map_from_msg(torque_map_to_msg(proposed, 0, 2, 4), reference=DEFAULT)
    assert back.same_breakpoints(DEFAULT)
    np.testing.assert_allclose(back.torque_nm, proposed.torque_nm, rtol=1e-6)
    assert (back.policy_version, back.origin) == (5, proposed.origin)


def test_sigterm_restores_the_default_map_before_the_process_exits(tmp_path):
    with bridge(tmp_path, 'bridge_sigterm') as process, RosContext() as ros:
        h = Harness(ros, 'bridge_sigterm')
        assert h.lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert h.lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert h.until(lambda: h.windows)
        _, result, _ = h.send_map(four_rows(version=13), 2, 4)
        assert result.success and h.vehicle.vcu.active_version == 13
        process.process.terminate()  # SIGTERM to the bridge's PID
        assert h.until(lambda: h.vehicle.vcu.active_version == 0), process.output()
        assert h.until(lambda: process.process.poll() is not None)
    assert process.process.returncode == 0
    assert 'shutting down: default map restored' in process.output()
