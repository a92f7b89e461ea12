"""
XCP calibration: pyxcp as the master against the simulated VCU's XCP slave, on a CAN bus.

The slave answers on a python-can virtual bus in a thread of its own; pyxcp
connects, unlocks with seed and key, writes the working page, checks it, and
switches pages, through ``XcpLink`` and the bridge core; every error packet the
slave sends for a wrong command is checked; the slave falls back to its
reference page when the master goes silent.
"""

import logging
import struct
import threading
import time
import uuid

import can
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from storage_support import wait_until

from tspace_ros.can.bridge import CanBridgeCore, FlashError
from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.can.xcp_link import (decode_map, encode_rows, xcp_master_factory, XcpLink,
                                     XcpMapLayout)
from tspace_ros.task.files import load_default_map
from tspace_ros.torque_map import apply_action
from tspace_ros.torque_map.safety_gate import SafetyGate
from tspace_ros.vehicle import xcp_slave as xs

DEFAULT = load_default_map()
ADDRESS = 0x80010000
LAYOUT = XcpMapLayout(ADDRESS, *DEFAULT.shape)


class SlaveOnBus:
    """The slave behind a virtual CAN channel, answering in its own thread."""

    def __init__(self, **kwargs):
        self.channel = f'xcp_{uuid.uuid4().hex[:8]}'
        self.slave = xs.XcpSlave(encode_rows(DEFAULT.torque_nm), ADDRESS, **kwargs)
        self.bus = can.Bus(interface='virtual', channel=self.channel, receive_own_messages=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            frame = self.bus.recv(timeout=0.01)
            now = time.monotonic()
            if frame is not None:
                for answer in self.slave.on_frame(frame, now):
                    self.bus.send(answer)
            self.slave.poll(now)

    def close(self):
        self._stop.set()
        self._thread.join(2.0)
        self.bus.shutdown()


@pytest.fixture
def slave():
    logging.getLogger('pyxcp').setLevel(logging.CRITICAL)
    on_bus = SlaveOnBus(timeout_s=0.0)
    yield on_bus
    on_bus.close()


def _link(on_bus, key_of=xs.default_key):
    return XcpLink(xcp_master_factory('virtual', on_bus.channel, 0x7E0, 0x7E1, timeout_s=0.5),
                   LAYOUT, key_of=key_of)


def test_a_flash_through_the_core_writes_the_working_page_and_switches_to_it(slave):
    link = _link(slave)
    gate = SafetyGate(DEFAULT, 250.0, 1.0, 4, resolution_nm=0.0)
    core = CanBridgeCore(load_dbc(), DEFAULT, gate, WindowBuilder(), link=link)
    proposed = apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), -0.4), 5,
                            policy_version=9)
    started = core.begin_flash(proposed, 5, 4)
    core.commit_sent(0.0)
    result = core.poll(0.0)
    assert result is not None and result.error == FlashError.NONE, result
    assert slave.slave.ecu_page == 1 and not slave.slave.fallback_active
    used = slave.slave.stats
    for command in (xs.CONNECT, xs.GET_SEED, xs.UNLOCK, xs.SET_CAL_PAGE, xs.SET_MTA,
                    xs.DOWNLOAD, xs.DOWNLOAD_NEXT, xs.BUILD_CHECKSUM):
        assert used.get(f'command_{command:#04x}'), (hex(command), used)
    # pyxcp reads the working page back (SET_MTA, UPLOAD): what the core admitted.
    master = link._master
    master.setMta(ADDRESS)
    page = bytes(master.fetch(LAYOUT.size))
    assert used.get(f'command_{xs.UPLOAD:#04x}')
    assert np.allclose(decode_map(page, LAYOUT), started.flashed_map.torque_nm, atol=1e-3)
    assert bytes(master.shortUpload(4, ADDRESS)) == page[:4]
    held = decode_map(slave.slave.active_bytes, LAYOUT)
    assert np.allclose(held, started.flashed_map.torque_nm, atol=1e-3)
    assert np.allclose(held[:5], DEFAULT.torque_nm[:5])
    assert not np.allclose(held[5:9], DEFAULT.torque_nm[5:9])
    # The default back: the switch to the reference page, no values sent.
    core.begin_restore_default()
    core.commit_sent(0.1)
    assert core.poll(0.1).success and slave.slave.ecu_page == 0 and core.active_is_default
    # After the switch back the working page still holds the old rows: the next flash
    # writes the whole map, so the ECU holds exactly what the core admitted.
    again = apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), -0.2), 1,
                         policy_version=10)
    started = core.begin_flash(again, 1, 4)
    assert core.poll(0.2).success and link.full_writes == 2  # the first write, and this one
    assert np.allclose(decode_map(slave.slave.active_bytes, LAYOUT),
                       started.flashed_map.torque_nm, atol=1e-3)
    link.close()


def test_a_wrong_key_is_a_typed_refusal_and_the_map_stays_the_default(slave):
    link = _link(slave, key_of=lambda seed: b'\x00' * len(seed))
    gate = SafetyGate(DEFAULT, 250.0, 1.0, 4, resolution_nm=0.0)
    core = CanBridgeCore(load_dbc(), DEFAULT, gate, WindowBuilder(), link=link)
    proposed = apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), -0.4), 5,
                            policy_version=9)
    core.begin_flash(proposed, 5, 4)
    result = core.poll(0.0)
    assert result.error == FlashError.TRANSPORT and 'XCP' in result.message
    assert core.map_in_doubt  # the node reverts: the switch to the reference page
    assert slave.slave.ecu_page == 0 and slave.slave.stats.get('wrong_keys') == 1
    link.close()


def test_an_ecu_that_does_not_answer_is_a_time_out():
    link = XcpLink(xcp_master_factory('virtual', f'xcp_nobody_{uuid.uuid4().hex[:6]}', 0x7E0,
                                      0x7E1, timeout_s=0.2), LAYOUT, key_of=xs.default_key)
    gate = SafetyGate(DEFAULT, 250.0, 1.0, 4, resolution_nm=0.0)
    core = CanBridgeCore(load_dbc(), DEFAULT, gate, WindowBuilder(), link=link)
    proposed = apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), -0.4), 5,
                            policy_version=9)
    start = time.monotonic()
    core.begin_flash(proposed, 5, 4)
    result = core.poll(0.0)
    assert result.error == FlashError.TIMEOUT, result.message
    assert time.monotonic() - start < 5.0 and core.active_map is not None
    link.close()


def _cmd(slave, *payload):
    return [bytes(m.data) for m in slave.on_frame(can.Message(
        arbitration_id=0x7E0, is_extended_id=False, data=bytes(payload)), 0.0)]


@pytest.mark.parametrize('payload, error', [
    ((0xC0,), xs.ERR_CMD_UNKNOWN),
    ((xs.SYNCH,), xs.ERR_CMD_SYNCH),
    ((xs.UNLOCK, 4, 1, 2, 3, 4), xs.ERR_SEQUENCE),  # no GET_SEED first
    ((xs.SET_CAL_PAGE, xs.MODE_ECU, 0, 1), xs.ERR_ACCESS_LOCKED),
    ((xs.SET_CAL_PAGE, xs.MODE_ECU, 3, 1), xs.ERR_SEGMENT_NOT_VALID),
    ((xs.SET_CAL_PAGE, xs.MODE_ECU, 0, 7), xs.ERR_PAGE_NOT_VALID),
    ((xs.GET_CAL_PAGE, 0x40, 0), xs.ERR_MODE_NOT_VALID),
    ((xs.GET_SEED, 0, 0x04), xs.ERR_OUT_OF_RANGE),
    ((xs.UPLOAD, 9), xs.ERR_OUT_OF_RANGE),
    ((xs.SHORT_UPLOAD, 4, 0, 0, *struct.pack('<I', 0x10)), xs.ERR_ACCESS_DENIED),
    ((xs.DOWNLOAD, 2, 1, 2), xs.ERR_ACCESS_LOCKED),
    ((xs.DOWNLOAD_NEXT, 2, 1, 2), xs.ERR_SEQUENCE),
    ((xs.SET_MTA,), xs.ERR_CMD_SYNTAX),
])
def test_every_wrong_command_gets_its_error_packet(payload, error):
    slave = xs.XcpSlave(encode_rows(DEFAULT.torque_nm), ADDRESS)
    assert _cmd(slave) == [bytes([0xFE, xs.ERR_CMD_SYNTAX])]  # an empty frame
    assert _cmd(slave, xs.GET_STATUS) == []  # not connected: silent
    assert _cmd(slave, xs.CONNECT, 0)[0][0] == 0xFF
    assert _cmd(slave, *payload) == [bytes([0xFE, error])]


def test_the_reference_page_is_write_protected_and_unlocking_opens_calibration():
    slave = xs.XcpSlave(encode_rows(DEFAULT.torque_nm), ADDRESS)
    _cmd(slave, xs.CONNECT, 0)
    seed = _cmd(slave, xs.GET_SEED, 0, xs.RESOURCE_CAL_PAG)[0]
    key = xs.default_key(seed[2:2 + seed[1]])
    assert _cmd(slave, xs.UNLOCK, len(key), *key) == [bytes([0xFF, 0x00])]
    _cmd(slave, xs.SET_MTA, 0, 0, 0, *struct.pack('<I', ADDRESS))
    assert _cmd(slave, xs.DOWNLOAD, 2, 1, 2) == [bytes([0xFE, xs.ERR_WRITE_PROTECTED])]
    assert _cmd(slave, xs.SET_CAL_PAGE, xs.MODE_XCP, 0, 1) == [b'\xff']
    assert _cmd(slave, xs.DOWNLOAD, 2, 1, 2) == [b'\xff']
    assert bytes(slave.working[:2]) == b'\x01\x02' and slave.reference[:2] != b'\x01\x02'


def test_the_vcu_returns_to_its_reference_page_when_the_master_goes_silent():
    slave = xs.XcpSlave(encode_rows(DEFAULT.torque_nm), ADDRESS, timeout_s=0.5)
    _cmd(slave, xs.CONNECT, 0)
    seed = _cmd(slave, xs.GET_SEED, 0, xs.RESOURCE_CAL_PAG)[0]
    key = xs.default_key(seed[2:2 + seed[1]])
    _cmd(slave, xs.UNLOCK, len(key), *key)
    _cmd(slave, xs.SET_CAL_PAGE, xs.MODE_ECU | xs.MODE_XCP, 0, 1)
    assert slave.ecu_page == 1
    slave.poll(0.4)
    assert slave.ecu_page == 1  # a sign of life within the time-out
    slave.poll(0.5)
    assert slave.ecu_page == 0 and slave.fallback_active and slave.stats['fallbacks'] == 1


def test_the_simulated_van_applies_what_xcp_writes_and_falls_back_on_its_own():
    from tspace_ros.vehicle import drive_cycle, load_vehicle_parameters, VehicleSimulation
    from tspace_ros.vehicle.can_vehicle import CanVehicle
    sim = VehicleSimulation(load_vehicle_parameters(), drive_cycle('wltc3b'))
    vehicle = CanVehicle(sim, start_utc_ns=1_790_000_000 * 10 ** 9, heartbeat_timeout_s=0.5)
    channel = f'xcp_van_{uuid.uuid4().hex[:6]}'
    bus = can.Bus(interface='virtual', channel=channel)
    stop = threading.Event()

    def serve():  # the VCU's side of the bus, as vehicle_sim runs it
        while not stop.is_set():
            frame = bus.recv(timeout=0.01)
            for answer in vehicle.receive([frame] if frame is not None else [], 0.0):
                bus.send(answer)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        link = XcpLink(xcp_master_factory('virtual', channel, 0x7E0, 0x7E1, timeout_s=0.5),
                       XcpMapLayout(ADDRESS, *DEFAULT.shape), key_of=xs.default_key)
        gate = SafetyGate(DEFAULT, 250.0, 1.0, 4, resolution_nm=0.0)
        core = CanBridgeCore(load_dbc(), DEFAULT, gate, WindowBuilder(), link=link)
        proposed = apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), -0.6), 2,
                                policy_version=4)
        started = core.begin_flash(proposed, 2, 4)
        assert core.link_result().success
        assert np.allclose(sim.vcu.active_map.torque_nm, started.flashed_map.torque_nm,
                           atol=1e-3)
        link.close()
    finally:
        stop.set()
        thread.join(2.0)
        bus.shutdown()
    vehicle.poll(0.6)  # the master went silent for longer than the VCU's time-out
    assert np.array_equal(sim.vcu.active_map.torque_nm, DEFAULT.torque_nm)
    assert vehicle.xcp.fallback_active


def test_the_map_characteristic_comes_from_the_a2l(tmp_path):
    from tspace_ros.can.a2l import A2lError, map_layout
    from tspace_ros.can.dbc import dbc_dir
    from tspace_ros.can.xcp_link import SIM_VAN_A2L, SIM_VAN_MAP_ADDRESS
    shipped = dbc_dir() / SIM_VAN_A2L
    layout = map_layout(shipped, DEFAULT)
    assert (layout.address, layout.rows, layout.columns) == (SIM_VAN_MAP_ADDRESS, 14, 17)
    text = shipped.read_text()
    for change, reason in ((('FLOAT32_IEEE ROW_DIR', 'FLOAT32_IEEE COLUMN_DIR'), 'ROW_DIR'),
                           (('0 7 10 20', '0 8 10 20'), 'breakpoints'),
                           (('"%8.1" "Nm"', '"%8.1" "kW"'), "'kW'"),
                           (('MAP 0x80010000', 'CURVE 0x80010000'), 'not a MAP'),
                           (('TorqueMap "', 'OtherMap "'), 'no usable characteristic')):
        bad = tmp_path / 'bad.a2l'
        bad.write_text(text.replace(*change))
        with pytest.raises(A2lError, match=reason):
            map_layout(bad, DEFAULT)
    garbage = tmp_path / 'garbage.a2l'
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(A2lError, match='garbage.a2l'):
        map_layout(garbage, DEFAULT)
    with pytest.raises(A2lError, match='does not exist'):
        map_layout(tmp_path / 'missing.a2l', DEFAULT)


def test_the_bridge_node_takes_its_xcp_settings_from_the_a2l(tmp_path):
    from lifecycle_msgs.msg import Transition
    from ros_test_support import NodeProcess, RosContext
    from test_window_source_lifecycle import LifecycleDriver
    common = ['-r', '__ns:=/xcp_van', '-p', 'flash_protocol:=xcp']
    with RosContext() as ros:
        with NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / 'topic.log',
                         common + ['-p', 'can_interface:=ros_topic']) as process:
            node = LifecycleDriver(ros, 'xcp_van/can_bridge')
            assert not node.transition(Transition.TRANSITION_CONFIGURE)
        assert 'flash_protocol xcp needs a python-can interface' in process.output()
        with NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / 'virtual.log', common + [
                '-p', 'can_interface:=virtual', '-p', 'can_channel:=xcp_node_test']) as process:
            node = LifecycleDriver(ros, 'xcp_van/can_bridge')
            assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
            assert node.transition(Transition.TRANSITION_CLEANUP)
        assert 'XCP: TorqueMap at 0x80010000 (14 x 17 float32)' in process.output()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x7E0, 0x7E0, 0x7E0, 0x123]),
                          st.binary(min_size=0, max_size=8)), min_size=1, max_size=60))
def test_property_no_frame_makes_the_slave_raise_or_write_its_reference_page(frames):
    slave = xs.XcpSlave(encode_rows(DEFAULT.torque_nm), ADDRESS)
    reference = slave.reference
    for can_id, data in [(0x7E0, bytes([xs.CONNECT, 0]))] + frames:
        answers = slave.on_frame(can.Message(arbitration_id=can_id, is_extended_id=False,
                                             data=data), 0.0)
        assert len(answers) <= 1
        for answer in answers:
            assert answer.arbitration_id == slave.slave_id and 1 <= len(answer.data) <= 8
            assert answer.data[0] in (0xFF, 0xFE)
    assert slave.reference == reference  # the default map is never overwritten
    assert slave.ecu_page in (0, 1) and slave.xcp_page in (0, 1)
    if slave.protected and slave.ecu_page == 1:
        assert slave.stats.get('command_0xf7')  # no page switch without UNLOCK


# ---- the simulated van answers XCP as frames arrive, not once per simulation step ----------

class SteppedVan:
    """
    A CanVehicle on a virtual bus, stepped as vehicle_sim steps it.

    The bus is read by the van's own reader (``VanBusReader``); a step thread (when
    started) advances ``step_s`` simulated seconds every ``step_s / factor`` wall
    seconds, holding the vehicle's lock from reading the frames to sending the step's.
    """

    def __init__(self, heartbeat_timeout_s=20.0):
        from tspace_ros.vehicle import drive_cycle, load_vehicle_parameters, VehicleSimulation
        from tspace_ros.vehicle.bus_reader import VanBusReader
        from tspace_ros.vehicle.can_vehicle import CanVehicle
        self.sim = VehicleSimulation(load_vehicle_parameters(), drive_cycle('wltc3b'),
                                     repeat_cycle=True)
        self.vehicle = CanVehicle(self.sim, start_utc_ns=1_790_000_000 * 10 ** 9,
                                  heartbeat_timeout_s=heartbeat_timeout_s)
        self.channel = f'xcp_stepped_{uuid.uuid4().hex[:6]}'
        self.bus = can.Bus(interface='virtual', channel=self.channel)
        self.reader = VanBusReader(self.bus, lambda: self.vehicle)
        self._stop = threading.Event()
        self._stepper = None

    def start_stepping(self, factor, step_s=0.5):
        def run():
            period = step_s / factor
            next_tick = time.monotonic()
            while not self._stop.is_set():
                with self.vehicle.lock:
                    answers = self.vehicle.receive(self.reader.take()) + self.vehicle.poll()
                    for frame in answers + self.vehicle.advance(step_s):
                        self.bus.send(frame)
                next_tick += period
                self._stop.wait(max(next_tick - time.monotonic(), 0.0))
        self._stepper = threading.Thread(target=run, daemon=True)
        self._stepper.start()

    def close(self):
        self._stop.set()
        if self._stepper is not None:
            self._stepper.join(2.0)
        assert self.reader.stop()
        self.bus.shutdown()


def test_the_van_answers_an_xcp_command_while_its_simulation_does_not_step():
    van = SteppedVan()
    master = can.Bus(interface='virtual', channel=van.channel)
    try:
        t0 = van.sim.t_s
        master.send(can.Message(arbitration_id=0x7E0, is_extended_id=False,
                                data=bytes([xs.CONNECT, 0])))
        answer = master.recv(timeout=1.0)
        assert answer is not None and answer.arbitration_id == 0x7E1, 'no XCP answer'
        assert answer.data[0] == xs.PID_RES and van.vehicle.xcp.connected
        assert van.sim.t_s == t0  # answered with the simulation standing still
        # Frames that are not XCP wait for the next step, in arrival order.
        master.send(can.Message(arbitration_id=0x123, data=b'\x01'))
        assert wait_until(lambda: van.reader.frames_read >= 2, 2.0)
        assert [f.arbitration_id for f in van.reader.take()] == [0x123]
        assert van.reader.take() == []
    finally:
        master.shutdown()
        van.close()


def test_a_whole_xcp_flash_takes_less_than_the_flash_time_out_in_simulated_time_at_40x():
    # At 40x a step of 0.5 s comes every 12.5 ms of wall time. A slave that answered once
    # per step would spend about half a step per round trip: the 6 to 8 round trips of a
    # 4-row flash would take 3 to 4 simulated seconds, more than the 3 s flash time-out.
    logging.getLogger('pyxcp').setLevel(logging.CRITICAL)
    van = SteppedVan()
    van.start_stepping(factor=40.0)
    link = XcpLink(xcp_master_factory('virtual', van.channel, 0x7E0, 0x7E1, timeout_s=0.5),
                   XcpMapLayout(ADDRESS, *DEFAULT.shape), key_of=xs.default_key)
    try:
        link._connected()  # CONNECT, seed and key once, as the bridge's first flash does
        held, simulated = DEFAULT, []
        for i in range(10):
            row = 2 * i % (DEFAULT.shape[0] - 4)
            proposed = apply_action(DEFAULT, held,
                                    np.full((4, DEFAULT.shape[1]), -0.1 * (i % 3 + 1)), row,
                                    policy_version=i + 1)
            t0 = van.sim.t_s
            link.write(proposed, row, 4, i + 1, i + 1)
            outcome = link.take_outcome()
            simulated.append(van.sim.t_s - t0)
            assert outcome is not None and outcome.accepted, outcome
            held = proposed
            with van.vehicle.lock:  # the VCU drives with the flashed map from the next step
                assert np.allclose(van.sim.vcu.active_map.torque_nm, proposed.torque_nm,
                                   atol=1e-3)
        assert sorted(simulated)[len(simulated) // 2] < 1.5, simulated
        assert max(simulated) < 3.0, simulated  # the bridge's flash_timeout_s
    finally:
        link.close()
        van.close()


def test_the_van_still_falls_back_to_its_reference_page_when_the_xcp_master_goes_silent():
    logging.getLogger('pyxcp').setLevel(logging.CRITICAL)
    van = SteppedVan(heartbeat_timeout_s=2.0)
    van.start_stepping(factor=40.0)
    link = XcpLink(xcp_master_factory('virtual', van.channel, 0x7E0, 0x7E1, timeout_s=0.5),
                   XcpMapLayout(ADDRESS, *DEFAULT.shape), key_of=xs.default_key)
    try:
        proposed = apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), -0.5), 3,
                                policy_version=1)
        link.write(proposed, 3, 4, 1, 1)
        assert link.take_outcome().accepted and van.vehicle.xcp.ecu_page == 1
        # Signs of life (GET_STATUS) keep the working page beyond the VCU's time-out ...
        t0 = van.sim.t_s
        while van.sim.t_s - t0 < 4.0:
            link.heartbeat(0, 1, 0)
            time.sleep(0.01)
        assert van.vehicle.xcp.ecu_page == 1 and not van.vehicle.xcp.fallback_active
        # ... silence makes the VCU go back to its default map by itself, in simulated time.
        t0 = van.sim.t_s
        assert wait_until(lambda: van.vehicle.xcp.fallback_active, 2.0), van.sim.t_s - t0
        assert van.sim.t_s - t0 >= 1.5
        with van.vehicle.lock:
            assert np.array_equal(van.sim.vcu.active_map.torque_nm, DEFAULT.torque_nm)
    finally:
        link.close()
        van.close()
