"""
The storage node in its own process: episodes in, durable acknowledgements and batches out.

The test plays the cruncher (transitions and episodes) and the trainer (the
sample_batch service, the episode/stored cue).
"""

from lifecycle_msgs.msg import Transition as LifecycleTransition
import numpy as np
from ros_test_support import call, NodeProcess, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.msg import Episode, EpisodeSummary, Transition
from tspace_interfaces.srv import SampleBatch

from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.nodes.messages import episode_to_msg, transition_to_msg
from tspace_ros.nodes.qos import RECORD_QOS
from tspace_ros.storage import open_pool, PoolConfig

NS = 'storage_test'
TIMEOUT_S = 30.0
START_NS = 1_795_000_000_000_000_000


def records(episode: int, steps: int, vehicle='VIN-STORE'):
    start = START_NS + episode * 10**12
    rng = np.random.default_rng(episode)
    return [TransitionRecord(
        vehicle, 'd1', f'ep{episode}', start, step, rng.normal(size=90), rng.uniform(-1, 1, 68),
        2, 4, -float(step), float(step), rng.normal(size=90), step == steps - 1, False,
        episode, start + step * 1_500_000_000, start + (step + 1) * 1_500_000_000)
        for step in range(steps)]


def summary(episode: int, steps: int, valid=True):
    start = START_NS + episode * 10**12
    return EpisodeSummaryRecord('VIN-STORE', 'd1', f'ep{episode}', start,
                                start + steps * 1_500_000_000, steps if valid else 0,
                                -float(sum(range(steps))), 10.0, 0.1, valid, episode, episode)


def test_storage_node_stores_acknowledges_and_samples(tmp_path):
    root = tmp_path / 'pool'
    with NodeProcess('tspace_ros.nodes.storage', tmp_path / 'storage.log', [
            '-r', f'__ns:=/{NS}', '-p', f'root:={root}']) as process, RosContext() as ros:
        probe = ros.node('storage_probe', NS)
        stored = []
        probe.create_subscription(EpisodeSummary, 'episode/stored', stored.append, RECORD_QOS)
        transitions = probe.create_publisher(Transition, 'transitions', RECORD_QOS)
        episodes = probe.create_publisher(Episode, 'episode', RECORD_QOS)
        sample = probe.create_client(SampleBatch, 'sample_batch')
        node = LifecycleDriver(ros, f'{NS}/storage')
        assert node.transition(LifecycleTransition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(LifecycleTransition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: transitions.get_subscription_count() and
                          episodes.get_subscription_count(), TIMEOUT_S)

        # Episode 0 arrives step by step (one transition sent twice), then its end.
        first = records(0, 5)
        for record in first + first[:1]:
            transitions.publish(transition_to_msg(record))
        episodes.publish(episode_to_msg(summary(0, 5), first[-1:]))
        # Episode 1 is discarded after two transitions; episode 2 comes whole at its end.
        for record in records(1, 2):
            transitions.publish(transition_to_msg(record))
        episodes.publish(episode_to_msg(summary(1, 2, valid=False), []))
        episodes.publish(episode_to_msg(summary(2, 3), records(2, 3)))
        assert spin_until(ros.executor, lambda: len(stored) == 3, TIMEOUT_S), process.output()
        assert [(s.episode_id, s.valid) for s in stored] == [
            ('ep0', True), ('ep1', False), ('ep2', True)]

        assert spin_until(ros.executor, sample.service_is_ready, TIMEOUT_S)
        answer = call(ros.executor, sample, SampleBatch.Request(
            size=64, kind=SampleBatch.Request.KIND_RECORD, vehicle_id='VIN-STORE'))
        assert answer.success and answer.available == 8 and len(answer.records) == 64
        assert {r.episode_id for r in answer.records} == {'ep0', 'ep2'}
        # Uniform over the 2 stored episodes: 32 draws all alike would be a 2^-31 chance.
        answer = call(ros.executor, sample, SampleBatch.Request(
            size=32, kind=SampleBatch.Request.KIND_EPISODE))
        assert answer.success and answer.available == 2 and len(answer.episodes) == 32
        assert {len(e.transitions) for e in answer.episodes} == {5, 3}
        answer = call(ros.executor, sample, SampleBatch.Request(
            size=4, kind=SampleBatch.Request.KIND_RECORD, vehicle_id='NOBODY'))
        assert answer.success and answer.available == 0 and not answer.records
        for bad in (SampleBatch.Request(size=0), SampleBatch.Request(size=1, kind=7)):
            answer = call(ros.executor, sample, bad)
            assert not answer.success and answer.message
        assert node.transition(LifecycleTransition.TRANSITION_DEACTIVATE)
        assert node.transition(LifecycleTransition.TRANSITION_CLEANUP)
    assert 'pool closed' in process.output()
    # On disk: every acknowledged transition of the kept episodes, once.
    with open_pool(PoolConfig(root=str(root))) as pool:
        stats = pool.stats()
        assert stats['records'] == 8 and stats['episodes_valid'] == 2
        assert stats['episodes_discarded'] == 1
        kept = pool.read_records()
        assert sorted((r.episode_id, r.step_index) for r in kept) == \
            [('ep0', s) for s in range(5)] + [('ep2', s) for s in range(3)]
