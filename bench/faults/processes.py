"""
Fault class: processes killed with SIGKILL while they work.

- the CAN bridge, in the middle of driving with an agent's map on the VCU: the
  (played) VCU must be back on its default map within its heartbeat time-out;
- a pool writer (the storage's core) in the middle of appending and compacting:
  reopened, every acknowledged transition must be there, unchanged.

Each kill is a case: a clean rejection when the vehicle fell back in time and
nothing acknowledged was lost; data_lost counts the acknowledged transitions
missing (or a VCU that kept the map).
"""

import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import tempfile
import time

from faults import FaultTally

VCU_TIMEOUT_S = 0.5
WRITER = """
import json, sys
import numpy as np
from tspace_ros.episodes.records import TransitionRecord
from tspace_ros.storage import open_pool, PoolConfig
root, run = sys.argv[1], int(sys.argv[2])
pool = open_pool(PoolConfig(root=root, compact_every=130))
for batch in range(100000):
    start = 1_790_000_000 * 10 ** 9 + run * 3600 * 10 ** 9 + (batch // 5) * 1000
    records = [TransitionRecord(
        vehicle_id='VIN-KILL', driver_id='d', episode_id=f'e{start}', episode_start_ns=start,
        step_index=(batch % 5) * 20 + i, state=np.full(8, batch, np.float32),
        action=np.full(4, i, np.float32), action_row_start=2, action_row_count=4,
        reward=float(batch), energy_wh=float(i), next_state=np.full(8, i, np.float32),
        done=False, timed_out=False, policy_version=1, state_stamp_ns=start + i,
        next_state_stamp_ns=start + i + 1) for i in range(20)]
    pool.append(records)
    print(json.dumps([[start, r.step_index, batch] for r in records]), flush=True)
"""


def _env():
    """Return the children's environment: ROS on loopback, a domain and logs of our own."""
    env = dict(os.environ)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
    env.setdefault('ROS_HOME', tempfile.mkdtemp(prefix='tspace_fault_suite_'))
    return env


def _kill_writer(root: str, run: int, after: int) -> dict:
    """Run the writer, SIGKILL it after `after` acknowledged batches; return {key: batch}."""
    proc = subprocess.Popen([sys.executable, '-c', WRITER, root, str(run)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acked, count, pending = {}, 0, b''
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + 60.0
    try:
        while count < after and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            chunk = os.read(fd, 1 << 16) if ready else b''
            if ready and not chunk:
                break
            *lines, pending = (pending + chunk).split(b'\n')
            for line in lines:
                for start, step, batch in json.loads(line):
                    acked[(start, step)] = batch
                count += len(lines)
    finally:
        proc.kill()  # by PID: no close, no cleanup
        proc.wait(timeout=30)
    for line in (pending + proc.stdout.read()).split(b'\n'):
        if line.strip():
            for start, step, batch in json.loads(line):
                acked[(start, step)] = batch
    proc.stdout.close()
    proc.stderr.close()
    return acked


def _writer_cases(tally: FaultTally, cases: int, seed: int) -> None:
    from tspace_ros.storage import open_pool, PoolConfig
    with tempfile.TemporaryDirectory() as where:
        root = os.path.join(where, 'pool')
        acked = {}
        for run in range(cases):
            acked.update(_kill_writer(root, run, after=10 + (seed + 7 * run) % 40))
            try:
                with open_pool(PoolConfig(root=root)) as pool:
                    stored = {(r.episode_start_ns, r.step_index): r.reward
                              for r in pool.read_records()}
            except Exception as error:  # noqa: B902 - what the boundary let through
                tally.escape(error)
                continue
            lost = sum(1 for key, batch in acked.items() if stored.get(key) != float(batch))
            if lost:
                tally.accept()
                tally.lose(lost)
                tally.reasons['acknowledged lost'] = tally.reasons.get('acknowledged lost', 0) + 1
            else:
                tally.reject('storage writer killed: nothing acknowledged lost')


def _bridge_cases(tally: FaultTally, cases: int) -> None:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    import numpy as np
    import rclpy
    from rclpy.action import ActionClient
    from tspace_interfaces.action import FlashTorqueMap
    from tspace_ros.can.dbc import load_dbc
    from tspace_ros.can.frames import encode_vehicle_sample
    from tspace_ros.can.transfer import VcuMapReceiver
    from tspace_ros.node_process import NodeProcess
    from tspace_ros.nodes.messages import torque_map_to_msg
    from tspace_ros.nodes.topic_bus import TopicCanBus
    from tspace_ros.torque_map import apply_action
    from tspace_ros.vehicle import load_vehicle_parameters

    os.environ.update(_env())  # the bridge process inherits it (NodeProcess)
    db = load_dbc()
    default = load_vehicle_parameters().load_default_map()
    rclpy.init()
    executor = rclpy.executors.SingleThreadedExecutor()
    try:
        for case in range(cases):
            ns = f'fault_kill_{os.getpid()}_{case}'
            node = rclpy.create_node('fault_probe', namespace=ns)
            executor.add_node(node)
            bus = TopicCanBus(node, side='bus', channel='test')
            vcu = VcuMapReceiver(db, default, heartbeat_timeout_s=VCU_TIMEOUT_S)
            t0, sent = time.time(), 0

            def pump():
                nonlocal sent
                due = int((time.time() - t0) * 50.0)
                frames = []
                for k in range(sent, due):
                    frames += encode_vehicle_sample(db, {
                        'speed_kph': 30.0, 'pedal': 0.3, 'brake_bar': 0.0, 'current_a': 40.0,
                        'voltage_v': 390.0, 'soc': 0.7, 'motor_torque_nm': 80.0,
                        'motor_speed_rpm': 2500.0}, t0 + k / 50.0)
                sent = max(sent, due)
                frames += vcu.poll(time.time())
                while True:
                    frame = bus.recv(timeout=0)
                    if frame is None:
                        break
                    frames += vcu.feed(frame, time.time())
                if frames:
                    bus.send_batch(frames)

            def until(predicate, timeout_s):
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.01)
                    pump()
                    if predicate():
                        return True
                return False

            with tempfile.TemporaryDirectory() as where, NodeProcess(
                    'tspace_ros.nodes.can_bridge', pathlib.Path(where) / 'bridge.log',
                    ['-r', f'__ns:=/{ns}', '-p', 'vehicle_id:=VIN-KILL',
                     '-p', 'can_channel:=test', '-p', 'watchdog_timeout_s:=0.0']) as bridge:
                change = node.create_client(ChangeState, f'/{ns}/can_bridge/change_state')
                ok = until(change.service_is_ready, 30.0)
                for transition in (Transition.TRANSITION_CONFIGURE,
                                   Transition.TRANSITION_ACTIVATE):
                    future = change.call_async(ChangeState.Request(
                        transition=Transition(id=transition)))
                    ok = ok and until(future.done, 30.0) and future.result().success
                flash = ActionClient(node, FlashTorqueMap, f'/{ns}/flash_torque_map')
                proposed = apply_action(default, default, np.full((4, default.shape[1]), -0.8),
                                        2, policy_version=30 + case)
                ok = ok and until(flash.server_is_ready, 30.0)
                if ok:
                    goal = flash.send_goal_async(FlashTorqueMap.Goal(
                        map=torque_map_to_msg(proposed, 0, 2, 4)))
                    ok = until(goal.done, 30.0) and goal.result().accepted
                    result = goal.result().get_result_async() if ok else None
                    ok = ok and until(result.done, 30.0) and result.result().result.success
                if not ok or vcu.on_reference:
                    tally.escape(RuntimeError(f'setup failed: {bridge.output()[-300:]}'))
                    continue
                os.kill(bridge.pid, signal.SIGKILL)
                killed = time.monotonic()
                back = until(lambda: vcu.on_reference, 5.0)
                latency = time.monotonic() - killed
                if back and latency <= VCU_TIMEOUT_S + 0.3:
                    tally.reject('bridge killed: VCU on its default map in time')
                else:
                    tally.accept()
                    tally.lose()
                    key = f'VCU kept the map {latency:.2f} s' if back else 'VCU kept the map'
                    tally.reasons[key] = tally.reasons.get(key, 0) + 1
            bus.shutdown()
            executor.remove_node(node)
            node.destroy_node()
    finally:
        rclpy.try_shutdown()


def run(cases: int, seed: int) -> FaultTally:
    """Kill `cases` pool writers and max(1, cases // 3) CAN bridges, each mid-work."""
    tally = FaultTally('process kills')
    _writer_cases(tally, cases, seed)
    _bridge_cases(tally, max(1, cases // 3))
    return tally
