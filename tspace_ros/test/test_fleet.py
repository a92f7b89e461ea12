"""
Two simulated vans, one storage and one trainer: the fleet in one process.

Each van has its own namespace, CAN bus, bridge, cruncher and agent; the shared
storage keeps both vans' transitions (with their vehicle and driver ids), the trainer
trains on both, and its policy updates reach both agents.
"""

import time

import rclpy
from tspace_interfaces.srv import EpisodeControl

from tspace_ros.suite import Suite

VANS = ('VAN_A', 'VAN_B')
TIMEOUT_S = 120.0


def wait(predicate, what: str, timeout_s: float = TIMEOUT_S):
    """Wait for predicate() while the suite's executor spins in its thread."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.02)


def command(node, client, code):
    assert client.wait_for_service(timeout_sec=TIMEOUT_S)
    future = client.call_async(EpisodeControl.Request(command=code))
    wait(future.done, f'episode command {code}')
    answer = future.result()
    assert answer.accepted, answer.message
    return answer.episode_id


def test_two_vans_share_one_storage_and_trainer(tmp_path):
    rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
    suite = Suite('fleet', vehicles=VANS, overrides={
        'storage': {'root': str(tmp_path / 'pool')},
        'trainer': {'min_samples': 10, 'batch_size': 16},
        'vehicle_sim': {'cycle_end_s': 120.0, 'real_time_factor': 30.0}})
    try:
        assert suite.manager.node_names == ['storage', 'trainer'] + [
            f'/{van}/{name}' for van in VANS for name in ('can_bridge', 'cruncher', 'agent')]
        ok, message = suite.startup()
        assert ok, message
        job = rclpy.create_node('fleet_job')
        suite.executor.add_node(job)
        clients = {van: job.create_client(EpisodeControl, f'/{van}/episode_control')
                   for van in VANS}
        episodes = {van: command(job, clients[van], EpisodeControl.Request.START)
                    for van in VANS}
        sims = {van: suite[f'{van}/vehicle_sim'].vehicle.sim for van in VANS}
        wait(lambda: all(sim.t_s >= 60.0 for sim in sims.values()), '60 s of driving')
        for van in VANS:
            command(job, clients[van], EpisodeControl.Request.END_VALID)
        trainer = suite['trainer']
        wait(lambda: trainer.episodes_handled >= 2, 'the trainer to take both episodes')
        version = trainer.core.policy_version
        assert version > 0
        # The policy reached both vans' agents.
        wait(lambda: all(suite[f'{van}/agent']._actor_version == version for van in VANS),
             f'both agents to run policy version {version}')
        pool = suite['storage'].pool
        stats = pool.stats()
        assert stats['vehicles'] == 2 and stats['episodes_valid'] == 2
        for van in VANS:
            records = pool.read_records(vehicle_id=van)
            assert len(records) > 10
            assert {r.episode_id for r in records} == {episodes[van]}
            assert {r.driver_id for r in records} == {'driver0'}
        assert stats['records'] == sum(len(pool.read_records(vehicle_id=v)) for v in VANS)
        assert trainer.core.status()['buffer_size'] == stats['records'] - stats['timed_out']
    finally:
        suite.shutdown()
        suite.close()
        rclpy.try_shutdown()
