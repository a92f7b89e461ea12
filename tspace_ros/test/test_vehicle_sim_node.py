"""
The vehicle_sim lifecycle node, seen from the CAN bridge's side over ROS topics.

The node runs in its own process (stopped by PID), driven over its lifecycle
services; the test reads the bus with a TopicCanBus client, as the bridge
does: frames decode to plausible values, /clock follows the frame stamps, a
torque map flashed over the topics is accepted (and an out-of-bounds one
refused), and wrong parameters fail configure without killing the process.
"""

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
import numpy as np
from rcl_interfaces.srv import ListParameters, SetParameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_test_support import call, NodeProcess, PACKAGE_DIR, RosContext, spin_for, spin_until
from rosgraph_msgs.msg import Clock
from test_window_source_lifecycle import LifecycleDriver

from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.decoder import capture_time_ns, FrameDecoder
from tspace_ros.can.frames import VcuState
from tspace_ros.can.transfer import TorqueMapSender, TransferStatus
from tspace_ros.nodes.messages import time_to_ns
from tspace_ros.nodes.topic_bus import TopicCanBus
from tspace_ros.nodes.vehicle_sim import parse_utc_ns, VehicleSim
from tspace_ros.vehicle import DriveCycle, load_vehicle_parameters, VehicleSimulation
from tspace_ros.vehicle.can_vehicle import CanVehicle
import yaml

MODULE = 'tspace_ros.nodes.vehicle_sim'
CONFIG = PACKAGE_DIR / 'config' / 'vehicle_sim.yaml'
START = '2030-01-02T03:04:05.250Z'  # far from the wall time: sim time must be told apart
START_NS = parse_utc_ns(START)
TIMEOUT_S = 15.0
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
DB = load_dbc()
PARAMS = load_vehicle_parameters()
DEFAULT_MAP = PARAMS.load_default_map()


def lowered(rows, by_nm, version):
    """Return the default map with rows lowered by by_nm."""
    table = np.array(DEFAULT_MAP.torque_nm)
    table[rows] -= by_nm
    return DEFAULT_MAP.with_torque(table, policy_version=version)


class BridgeSide:
    """What the CAN bridge sees: every frame from the bus, and the outcome of its flashes."""

    def __init__(self, ros):
        """Attach a TopicCanBus client to a node of the test's own."""
        self.ros = ros
        self.node = ros.node('bridge_probe')
        self.client = TopicCanBus(self.node, side='client')
        self.sender = TorqueMapSender(DB)
        self.frames = []
        self.outcomes = []

    def drain(self):
        """Take every frame received so far; return the number of frames in total."""
        while (frame := self.client.recv(timeout=0)) is not None:
            self.frames.append(frame)
            outcome = self.sender.on_frame(frame)
            if outcome is not None:
                self.outcomes.append(outcome)
        return len(self.frames)

    def flash(self, torque_map, row_start, transfer_id, version):
        """Send a 4-row transfer as one batch; return the VCU's outcome."""
        transfer = self.sender.prepare(torque_map, row_start, 4, transfer_id, version)
        self.client.send_batch(transfer.frames)
        self.sender.commit_sent(time.monotonic())
        count = len(self.outcomes)
        assert spin_until(self.ros.executor, lambda: self.drain() and
                          len(self.outcomes) > count, TIMEOUT_S), 'no MapAck'
        return self.outcomes[-1]

    def decoded(self, name):
        """Return (signals, frame) of every frame received so far of a DBC message."""
        decoder = FrameDecoder(DB)
        rows = [(decoder.decode_with_name(frame), frame) for frame in self.frames]
        assert decoder.stats.rejected == 0, decoder.stats.as_dict()
        return [(named[1], frame) for named, frame in rows if named[0] == name]


def status_version_seen(bridge, version):
    """Return a predicate: a VcuStatus frame reports the active map version."""
    def seen():
        bridge.drain()
        frames = bridge.frames[-40:]
        return any(frame.arbitration_id == 0x200 and frame.data[1] == version
                   for frame in frames)
    return seen


def test_frames_clock_and_flashes_over_topics(tmp_path):
    clocks, diagnostics = [], []
    with NodeProcess(MODULE, tmp_path / 'vehicle_sim.log', [
            '-r', '__node:=vehicle_sim_under_test', '-p', 'real_time_factor:=0.0',
            # This bridge side sends no heartbeat: keep the VCU's own fallback out of it.
            '-p', 'heartbeat_timeout_s:=3600.0',
            '-p', f'start_utc:={START}']) as process, RosContext() as ros:
        bridge = BridgeSide(ros)
        clock_sub = bridge.node.create_subscription(Clock, '/clock', clocks.append, RELIABLE)
        bridge.node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append,
                                        RELIABLE)
        sim_time = ros.node('sim_time_probe')
        sim_time.set_parameters([Parameter('use_sim_time', value=True)])
        node = LifecycleDriver(ros, 'vehicle_sim_under_test')
        assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert spin_until(ros.executor, lambda: bridge.client.peers and
                          clock_sub.get_publisher_count(), TIMEOUT_S), 'no bus or clock'
        assert node.transition(Transition.TRANSITION_ACTIVATE)

        # WLTC 3b moves off after 11 s: run 25 simulated seconds.
        assert spin_until(ros.executor, lambda: bridge.drain() and clocks and
                          time_to_ns(clocks[-1].clock) >= START_NS + 25 * 10**9, TIMEOUT_S)
        outcome = bridge.flash(lowered(slice(2, 6), 100.0, 7), 2, transfer_id=1, version=7)
        assert outcome.status == TransferStatus.ACCEPTED, (outcome.message, process.output())
        assert outcome.active_map_version == 7
        assert spin_until(ros.executor, status_version_seen(bridge, 7), TIMEOUT_S)
        outcome = bridge.flash(lowered(slice(2, 6), 400.0, 8), 2, transfer_id=2, version=8)
        assert outcome.status == TransferStatus.OUT_OF_BOUNDS
        assert outcome.active_map_version == 7
        assert spin_until(ros.executor, lambda: any(
            value.key == 'map_version' and value.value == '7'
            for array in diagnostics for value in array.status[0].values), TIMEOUT_S)
        sim_now_ns = sim_time.get_clock().now().nanoseconds

        assert node.transition(Transition.TRANSITION_DEACTIVATE)
        spin_for(ros.executor, 0.2)  # deliver what was published before deactivation
        bridge.drain()
        count, clock_count = len(bridge.frames), len(clocks)
        spin_for(ros.executor, 0.3)
        assert (bridge.drain(), len(clocks)) == (count, clock_count), 'inactive node sends'
        assert node.transition(Transition.TRANSITION_CLEANUP)
        assert node.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert process.wait(TIMEOUT_S) == 0, process.output()
        bridge.client.shutdown()
    assert 'Traceback' not in process.output()

    # Frames: time-ordered, on the 50 Hz grid from START, plausible values.
    stamps = [capture_time_ns(frame) for frame in bridge.frames]
    assert stamps == sorted(stamps) and stamps[0] > START_NS
    assert all(abs((ns - START_NS + 1000) % 20_000_000 - 1000) < 1000 for ns in stamps)
    dynamics = [s for s, _ in bridge.decoded('VehicleDynamics')]
    battery = [s for s, _ in bridge.decoded('BatteryStatus')]
    status = [s for s, _ in bridge.decoded('VcuStatus')]
    assert len(dynamics) >= 1000 and len(bridge.decoded('VcuDiagnostics')) >= 20
    assert max(s['VehicleSpeed'] for s in dynamics) > 10.0
    assert all(0.0 <= s['VehicleSpeed'] < 140.0 and 0.0 <= s['AccelPedalPosition'] <= 100.0
               for s in dynamics)
    assert all(85.0 < s['StateOfCharge'] <= 90.0 and 350.0 < s['BatteryVoltage'] < 470.0
               for s in battery)
    assert {s['VcuState'] for s in status} == {VcuState.DRIVE}
    counters = [s['VcuAliveCounter'] for s in status]
    assert all((b - a) % 16 == 1 for a, b in zip(counters, counters[1:]))
    assert len(bridge.decoded('MapAck')) == 2

    # /clock: 0.1 s steps of simulated UTC time, each the stamp of a frame sent with it.
    clock_ns = [time_to_ns(c.clock) for c in clocks]
    assert all(b - a == 100_000_000 for a, b in zip(clock_ns, clock_ns[1:]))
    frame_us = {round(ns / 1000) for ns in stamps}
    assert all(round(ns / 1000) in frame_us for ns in clock_ns if ns <= stamps[-1])
    assert clock_ns[0] <= sim_now_ns <= clock_ns[-1], 'use_sim_time nodes do not follow'
    values = {v.key: v.value for v in diagnostics[-1].status[0].values}
    assert float(values['sim_time_s']) > 25.0 and values['vcu_state'] == 'DRIVE'
    assert float(values['real_time_factor']) > 1.0 and int(values['acks_sent']) == 2


def test_wrong_parameters_fail_configure_naming_them_and_the_node_recovers(tmp_path):
    bad = {'cycle': 'moon', 'vehicle_config': '/nonexistent/van.yaml',
           'can_interface': 'no_such_bus', 'start_utc': 'yesterday'}
    params = yaml.safe_load(CONFIG.read_text())['/**/vehicle_sim']['ros__parameters']
    with NodeProcess(MODULE, tmp_path / 'bad.log', [
            '-r', '__node:=vehicle_sim_bad', '--params-file', str(CONFIG),
            *[arg for name, value in bad.items() for arg in ('-p', f'{name}:={value}')]]) \
            as process, RosContext() as ros:
        lister = ros.node('param_lister').create_client(
            ListParameters, '/vehicle_sim_bad/list_parameters')
        assert spin_until(ros.executor, lister.service_is_ready, TIMEOUT_S)
        declared = set(call(ros.executor, lister, ListParameters.Request()).result.names)
        assert set(params) <= declared, sorted(set(params) - declared)
        node = LifecycleDriver(ros, 'vehicle_sim_bad')
        assert not node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert process.wait(0.0) is None, 'a bad parameter crashed the node'
        setter = ros.node('param_setter').create_client(
            SetParameters, '/vehicle_sim_bad/set_parameters')
        assert spin_until(ros.executor, setter.service_is_ready, TIMEOUT_S)
        good = {'cycle': 'nedc', 'vehicle_config': '', 'can_interface': 'ros_topic',
                'start_utc': START}
        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in good.items()])
        assert all(result.successful for result in call(ros.executor, setter, request).results)
        assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert node.state() == State.PRIMARY_STATE_INACTIVE
        assert node.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert process.wait(TIMEOUT_S) == 0, process.output()
    output = process.output()
    for name, value in bad.items():
        assert f"configure failed: parameter '{name}'" in output and value in output, output
    assert 'unknown drive cycle' in output and 'unknown CAN interface' in output, output
    assert 'Traceback' not in output, output


def test_the_node_stops_at_the_cycle_end_and_says_so():
    """In-process, with a 3 s cycle (cycles are named in parameters, none is that short)."""
    clocks, diagnostics = [], []
    with RosContext() as ros:
        sim = VehicleSim('vehicle_sim_short', context=ros.context, parameter_overrides=[
            Parameter('real_time_factor', value=0.0), Parameter('start_utc', value=START)])
        ros.executor.add_node(sim)
        try:
            probe = ros.node('short_probe')
            clock_sub = probe.create_subscription(Clock, '/clock', clocks.append, RELIABLE)
            probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append,
                                      RELIABLE)
            assert sim.trigger_configure() == TransitionCallbackReturn.SUCCESS
            short = DriveCycle.from_arrays([0.0, 1.0, 2.0, 3.0], [0.0, 5.0, 5.0, 0.0])
            sim._vehicle = CanVehicle(VehicleSimulation(PARAMS, short, default_map=DEFAULT_MAP),
                                      DB, START_NS)
            assert spin_until(ros.executor, clock_sub.get_publisher_count, TIMEOUT_S)
            assert sim.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert spin_until(ros.executor, lambda: diagnostics and
                              diagnostics[-1].status[0].message == 'cycle finished', TIMEOUT_S)
            spin_for(ros.executor, 0.1)
            assert time_to_ns(clocks[-1].clock) == START_NS + 3 * 10**9
            status = diagnostics[-1].status[0]
            assert status.level == DiagnosticStatus.OK
            values = {v.key: v.value for v in status.values}
            assert values['finished'] == 'True' and values['vcu_state'] == 'READY'
            assert float(values['distance_km']) > 0.0
            assert sim.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert sim.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
            assert sim.finalized
        finally:
            ros.executor.remove_node(sim)
            sim.destroy_node()


def test_the_node_answers_xcp_as_frames_arrive_a_flash_fits_the_time_out_at_40x():
    """In-process on a virtual bus: pyxcp flashes the node's VCU while it steps at 40x."""
    import logging
    import threading
    import uuid

    from tspace_ros.can.xcp_link import (SIM_VAN_MAP_ADDRESS, xcp_master_factory, XcpLink,
                                         XcpMapLayout)
    from tspace_ros.torque_map import apply_action
    from tspace_ros.vehicle.xcp_slave import default_key
    logging.getLogger('pyxcp').setLevel(logging.CRITICAL)
    channel = f'xcp_node_{uuid.uuid4().hex[:6]}'
    with RosContext() as ros:
        sim = VehicleSim('vehicle_sim_xcp', context=ros.context, parameter_overrides=[
            Parameter('real_time_factor', value=40.0), Parameter('step_s', value=0.5),
            Parameter('can_interface', value='virtual'), Parameter('can_channel', value=channel),
            Parameter('repeat_cycle', value=True), Parameter('publish_clock', value=False),
            Parameter('start_utc', value=START)])
        ros.executor.add_node(sim)
        link = XcpLink(xcp_master_factory('virtual', channel, 0x7E0, 0x7E1, timeout_s=0.5),
                       XcpMapLayout(SIM_VAN_MAP_ADDRESS, *DEFAULT_MAP.shape), key_of=default_key)
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ros.executor.spin_once(timeout_sec=0.01)
        spinner = threading.Thread(target=spin, daemon=True)
        try:
            assert sim.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert sim.trigger_activate() == TransitionCallbackReturn.SUCCESS
            spinner.start()  # the node's timer steps the van at 40x meanwhile
            deadline = time.monotonic() + TIMEOUT_S
            while sim.vehicle.t_s < 1.0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sim.vehicle.t_s >= 1.0, 'the node does not step'
            link._connected()  # CONNECT, seed and key once, as the bridge's first flash does
            held, simulated = DEFAULT_MAP, []
            for i in range(6):
                proposed = apply_action(DEFAULT_MAP, held,
                                        np.full((4, DEFAULT_MAP.shape[1]), -0.2), 2 * i,
                                        policy_version=i + 1)
                t0 = sim.vehicle.t_s
                link.write(proposed, 2 * i, 4, i + 1, i + 1)
                assert link.take_outcome().accepted
                simulated.append(sim.vehicle.t_s - t0)
                held = proposed
                with sim.vehicle.lock:
                    assert np.allclose(sim.vehicle.active_map.torque_nm, proposed.torque_nm,
                                       atol=1e-3)
            assert max(simulated) < 3.0, simulated  # the bridge's flash_timeout_s
            stop.set()
            spinner.join(5.0)
            assert sim.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            # Parked (inactive, its clock standing still), the van's ECU still answers XCP.
            link.restore(DEFAULT_MAP, 99)
            assert link.take_outcome().accepted
            assert sim.vehicle.xcp.ecu_page == 0
            assert sim.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        finally:
            stop.set()
            if spinner.is_alive():
                spinner.join(5.0)
            link.close()
            ros.executor.remove_node(sim)
            sim.destroy_node()
