"""
Bags replayed end to end: recorded data trains a trainer, recorded CAN rebuilds windows.

The first test writes a bag of two episodes (transitions and episode
messages), replays it with the replay command into a storage node, checks
that the pool holds exactly the bag's transitions, and trains an offline
trainer on that pool. The second writes a bag of raw CAN frames of the
simulated van and replays them onto a CAN bridge's bus topic, which rebuilds
observation windows on the bag's (simulated) time.
"""

import subprocess
import sys

from lifecycle_msgs.msg import Transition as LifecycleTransition
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from ros_test_support import NodeProcess, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.msg import (CanFrameBatch, EpisodeSummary, ObservationWindow,
                                   PolicyUpdate, TrainerStatus)

from tspace_ros.agents.policy_exchange import PolicyBlob
from tspace_ros.bags import bag_info, BagRecorder, qos_profile_yaml, typestore_with_ours
from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.frames import encode_vehicle_sample
from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.nodes.messages import (episode_to_msg, frame_to_msg, time_from_ns, time_to_ns,
                                       transition_to_msg)
from tspace_ros.nodes.qos import POLICY_UPDATE_QOS, RECORD_QOS, WINDOW_QOS
from tspace_ros.storage import open_pool, PoolConfig
from tspace_ros.task.contract import load_task

TIMEOUT_S = 30.0
TRAINER_TIMEOUT_S = 60.0
REPLAY_TIMEOUT_S = 60.0
REPLAY = [sys.executable, '-m', 'tspace_ros.nodes.replay']
T0_NS = 1_795_000_000_000_000_000
STEP_NS = 1_500_000_000
STEPS = 60
UPDATES = 20


def _run_replay(tmp_path, name, arguments):
    """Run the replay command to its end; return its exit code and output."""
    log = tmp_path / f'{name}.log'
    with open(log, 'wb') as stream:
        try:
            code = subprocess.run(REPLAY + arguments, stdout=stream, stderr=subprocess.STDOUT,
                                  timeout=REPLAY_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:  # run() kills it (by its PID) on the time-out
            code = None
    return code, log.read_text(errors='replace')


# ---- a bag of transitions trains a trainer offline ------------------------------------------


def episode_records(episode: int, start_ns: int):
    """Return an episode's transitions (random, finite) and its valid summary."""
    rng = np.random.default_rng(100 + episode)
    records = [TransitionRecord(
        'VIN-BAG', 'driver-b', f'ep{episode}', start_ns, step,
        rng.normal(size=90), rng.uniform(-1, 1, 68), 4 * episode, 4, -float(rng.uniform(0, 5)),
        float(rng.uniform(0, 5)), rng.normal(size=90), step == STEPS - 1, False, episode,
        start_ns + (step + 1) * STEP_NS, start_ns + (step + 2) * STEP_NS)
        for step in range(STEPS)]
    summary = EpisodeSummaryRecord(
        'VIN-BAG', 'driver-b', f'ep{episode}', start_ns, records[-1].next_state_stamp_ns,
        STEPS, float(sum(r.reward for r in records)), float(sum(r.energy_wh for r in records)),
        0.5 * STEPS, True, episode, episode)
    return records, summary


def write_transition_bag(path):
    """Write two episodes as a cruncher sends them; return the transitions written."""
    written = []
    with BagRecorder(path, typestore_with_ours(), custom_data={'namespace': '/VAN_R'}) as bag:
        bag.add_topic('/VAN_R/transitions', 'tspace_interfaces/msg/Transition',
                      qos_profile_yaml(depth=1000))
        bag.add_topic('/VAN_R/episode', 'tspace_interfaces/msg/Episode',
                      qos_profile_yaml(depth=1000))
        start_ns = T0_NS
        for episode in range(2):
            records, summary = episode_records(episode, start_ns)
            for record in records:  # each step as it is crunched ...
                bag.write('/VAN_R/transitions', record.next_state_stamp_ns,
                          serialize_message(transition_to_msg(record,
                                                              record.next_state_stamp_ns)))
            end_ns = summary.episode_end_ns + 1  # ... then the whole episode at its end
            bag.write('/VAN_R/episode', end_ns,
                      serialize_message(episode_to_msg(summary, records, end_ns)))
            written += records
            start_ns = end_ns + STEP_NS
    return written


def test_bag_of_transitions_fills_the_pool_and_trains_offline(tmp_path):
    bag, pool_root = tmp_path / 'episodes_bag', tmp_path / 'pool'
    written = write_transition_bag(bag)
    info = bag_info(bag)
    assert info['counts'] == {'/VAN_R/transitions': 2 * STEPS, '/VAN_R/episode': 2}
    assert info['start_ns'] < info['end_ns']

    # Replay the bag into a storage node.
    with NodeProcess('tspace_ros.nodes.storage', tmp_path / 'storage.log', [
            '-r', '__ns:=/VAN_R', '-p', f'root:={pool_root}']) as storage, \
            RosContext() as ros:
        probe = ros.node('bag_storage_probe')
        stored = []
        stored_sub = probe.create_subscription(EpisodeSummary, '/VAN_R/episode/stored',
                                               stored.append, RECORD_QOS)
        node = LifecycleDriver(ros, 'VAN_R/storage')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), storage.output()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), storage.output()
        assert spin_until(ros.executor, lambda: stored_sub.get_publisher_count() > 0,
                          TIMEOUT_S), storage.output()
        # Both replayed topics wait for the storage's subscription to them.
        code, output = _run_replay(tmp_path, 'replay_episodes', [
            '--bag', str(bag), '--rate', '0', '--wait-for-subscribers', '1'])
        assert code == 0, output
        assert f'replay done: {2 * STEPS + 2} messages' in output, output
        assert 'starting anyway' not in output, output
        assert spin_until(ros.executor, lambda: len(stored) >= 2, TIMEOUT_S), \
            (len(stored), storage.output())
        assert [(s.episode_id, s.valid, s.step_count) for s in stored] == \
            [('ep0', True, STEPS), ('ep1', True, STEPS)]
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
        assert node.transition(LifecycleTransition.TRANSITION_CLEANUP)
        assert spin_until(ros.executor, lambda: 'pool closed' in storage.output(), TIMEOUT_S)
    assert 'rejected' not in storage.output(), storage.output()

    # Exactly the bag's transitions are in the pool, values and all.
    with open_pool(PoolConfig(root=str(pool_root))) as pool:
        stats = pool.stats()
        assert (stats['records'], stats['episodes_valid'], stats['episodes_running']) == \
            (len(written), 2, 0)
        kept = {record.key: record for record in pool.read_records()}
    assert sorted(kept) == sorted(record.key for record in written)
    for record in (written[0], written[STEPS + 17], written[-1]):
        got = kept[record.key]
        assert got.state.dtype == np.float32
        np.testing.assert_array_equal(got.state, record.state)
        np.testing.assert_array_equal(got.action, record.action)
        np.testing.assert_array_equal(got.next_state, record.next_state)
        assert (got.reward, got.done, got.state_stamp_ns) == \
            (np.float32(record.reward), record.done, record.state_stamp_ns)

    # An offline trainer learns from that pool.
    with NodeProcess('tspace_ros.nodes.trainer', tmp_path / 'trainer.log', [
            '-r', '__ns:=/VAN_R', '-p', 'mode:=offline', '-p', f'pool_root:={pool_root}',
            '-p', f'offline_updates:={UPDATES}', '-p', 'batch_size:=16',
            '-p', f'checkpoint_dir:={tmp_path / "ckpt"}']) as trainer, \
            RosContext() as ros:
        probe = ros.node('bag_trainer_probe')
        policies, statuses = [], []
        probe.create_subscription(PolicyUpdate, '/VAN_R/policy/update', policies.append,
                                  POLICY_UPDATE_QOS)
        probe.create_subscription(TrainerStatus, '/VAN_R/trainer/status', statuses.append, 10)
        node = LifecycleDriver(ros, 'VAN_R/trainer')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), trainer.output()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), trainer.output()
        assert spin_until(ros.executor, lambda: any(p.version == UPDATES for p in policies) and
                          any(s.update_count == UPDATES for s in statuses),
                          TRAINER_TIMEOUT_S), \
            ([p.version for p in policies], [s.update_count for s in statuses],
             trainer.output())
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
    update = next(p for p in policies if p.version == UPDATES)
    blob = PolicyBlob.from_msg(update, expected_algorithm='ddpg')
    assert (blob.version, blob.state_dim, blob.action_dim) == (UPDATES, 90, 68)
    status = next(s for s in statuses if s.update_count == UPDATES)
    assert status.buffer_size == len(written), status
    assert np.isfinite(status.critic_loss)
    assert f'offline training: {UPDATES} updates' in trainer.output()
    assert (tmp_path / 'ckpt' / 'trainer.json').is_file()


# ---- raw CAN frames in a bag rebuild windows through the bridge -----------------------------

FRAME_RATE_HZ = 50.0
SECONDS = 6.0
T0_S = 1_790_000_000.0
WINDOW_RATE_HZ = load_task().sample_rate_hz   # the shipped task's window grid
WINDOW_SAMPLES = load_task().samples_per_window


def speed_at(t_s: float) -> float:
    """Return the encoded speed, km/h, t_s seconds after the first frame."""
    return 36.0 + 2.0 * t_s


def write_frame_bag(path, custom_data=None):
    """Write 6 s of the van's frames in 0.1 s batches; return every frame time, ns."""
    db = load_dbc()
    batches, times = [], []
    for k in range(int(SECONDS * FRAME_RATE_HZ)):
        t = k / FRAME_RATE_HZ
        sample = {'speed_kph': speed_at(t), 'pedal': 0.25, 'brake_bar': 0.0,
                  'current_a': 50.0, 'voltage_v': 400.0, 'soc': 0.8,
                  'motor_torque_nm': 100.0, 'motor_speed_rpm': 3000.0}
        frames = [frame_to_msg(frame) for frame in encode_vehicle_sample(db, sample, T0_S + t)]
        if k % round(FRAME_RATE_HZ / 10) == 0:
            batches.append(CanFrameBatch())
            batches[-1].header.frame_id = 'can0'
        batches[-1].frames += frames
        times += [time_to_ns(frame.stamp) for frame in frames]
    with BagRecorder(path, typestore_with_ours(), custom_data=custom_data) as bag:
        bag.add_topic('/VAN_C/can/frames', 'tspace_interfaces/msg/CanFrameBatch',
                      qos_profile_yaml(depth=1000))
        for batch in batches:
            stamp_ns = time_to_ns(batch.frames[-1].stamp)  # when the batch was complete
            batch.header.stamp = time_from_ns(stamp_ns)
            bag.write('/VAN_C/can/frames', stamp_ns, serialize_message(batch))
    return times


@pytest.mark.parametrize('named', [True, False], ids=['our_bag', 'unnamed_namespace'])
def test_bag_of_can_frames_rebuilds_windows_through_the_bridge(tmp_path, named):
    # Our recorder names the namespace in the bag; `ros2 bag record` does not: the frames
    # must reach the bridge's bus in the namespace they were recorded in either way.
    bag = tmp_path / 'frames_bag'
    times = write_frame_bag(bag, custom_data={'namespace': '/VAN_C'} if named else None)
    first_ns = times[0]
    info = bag_info(bag)
    assert info['counts'] == {'/VAN_C/can/frames': round(SECONDS * 10)}
    assert info['start_ns'] >= first_ns and info['end_ns'] == times[-1]
    period_ns = round(1e9 / WINDOW_RATE_HZ)
    span_ns = (WINDOW_SAMPLES - 1) * period_ns

    with NodeProcess('tspace_ros.nodes.can_bridge', tmp_path / 'bridge.log', [
            '-r', '__ns:=/VAN_C', '-p', 'can_interface:=ros_topic',
            '-p', 'use_sim_time:=true', '-p', 'vehicle_id:=VIN-BAG-C']) as bridge, \
            RosContext() as ros:
        probe = ros.node('bag_bridge_probe')
        windows = []
        window_sub = probe.create_subscription(ObservationWindow, '/VAN_C/observation/window',
                                               windows.append, WINDOW_QOS)
        raw = []
        probe.create_subscription(CanFrameBatch, '/VAN_C/can/frames', raw.append, RECORD_QOS)
        node = LifecycleDriver(ros, 'VAN_C/can_bridge')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), bridge.output()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE), bridge.output()
        assert spin_until(ros.executor, lambda: window_sub.get_publisher_count() > 0,
                          TIMEOUT_S), bridge.output()
        code, output = _run_replay(tmp_path, 'replay_frames', [
            '--bag', str(bag), '--topics', 'can/frames', '--frames-to-bus', '--rate', '0',
            '--wait-for-subscribers', '1'] + (['--remap-namespace', '/VAN_C'] if named else []))
        assert code == 0, output
        assert '/VAN_C/can/frames -> /VAN_C/from_can_bus' in output, output
        assert 'starting anyway' not in output, output
        # 6 s of frames at 20 Hz x 30 samples (1.5 s): the first four windows are complete.
        expected = int(SECONDS * WINDOW_RATE_HZ) // WINDOW_SAMPLES
        assert spin_until(ros.executor, lambda: len(windows) >= expected, TIMEOUT_S), \
            (len(windows), bridge.output())
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
    assert raw == [], 'the frames went to can/frames, not to the bus'

    assert len(windows) == expected
    assert [w.step_index for w in windows] == list(range(windows[0].step_index,
                                                         windows[0].step_index + expected))
    starts = [time_to_ns(w.window_start) for w in windows]
    # On the bag's time (not the wall clock): the grid starts at the first frame, and
    # each window follows the last one by exactly 1.5 s.
    assert abs(starts[0] - first_ns) <= period_ns, (starts[0], first_ns)
    assert abs(starts[0] - first_ns) < 1000, 'the grid is anchored at the first frame'
    assert starts == [starts[0] + k * WINDOW_SAMPLES * period_ns for k in range(expected)]
    for window, start_ns in zip(windows, starts):
        assert window.vehicle_id == 'VIN-BAG-C'
        assert list(window.flagged_signals) == [], window.flagged_signals
        assert time_to_ns(window.window_end) == start_ns + span_ns
        assert time_to_ns(window.header.stamp) == time_to_ns(window.window_end)
        assert first_ns - period_ns <= start_ns and start_ns + span_ns <= times[-1]
        assert window.samples_per_signal == WINDOW_SAMPLES
        samples = np.frombuffer(window.samples, np.float32).reshape(-1, WINDOW_SAMPLES)
        speed = samples[list(window.signal_names).index('speed')]
        stamps_s = (start_ns - first_ns + np.arange(WINDOW_SAMPLES) * period_ns) / 1e9
        np.testing.assert_allclose(speed, speed_at(stamps_s), atol=0.2)
        pedal = samples[list(window.signal_names).index('pedal')]
        np.testing.assert_allclose(pedal, 0.25, atol=1e-3)
