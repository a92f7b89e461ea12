"""The control tool: a checkpoint's policy as a policy file, pool and bag summaries, errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from tspace_ros import ctl  # noqa: E402
from tspace_ros.agents.litert import LiteRtActor  # noqa: E402
from tspace_ros.agents.policy_exchange import PolicyBlob  # noqa: E402
from tspace_ros.agents.registry import get  # noqa: E402
from tspace_ros.agents.replay import InMemoryReplay  # noqa: E402
from tspace_ros.training.trainer import TrainerConfig, TrainerCore  # noqa: E402

S, A = 3, 2
TINY = {'actor_units': (8,), 'critic_state_units': (4,), 'critic_action_units': (4,),
        'critic_units': (8,), 'batch_size': 4}


def test_export_policy_writes_the_checkpoints_policy_for_infer_mode(tmp_path):
    core = TrainerCore(TrainerConfig(algorithm='td3', mode='offline', export_litert=False),
                       S, A, get('td3').make_config(TINY), checkpoint_dir=tmp_path / 'ckpt')
    replay = InMemoryReplay(100, S, A)
    rng = np.random.default_rng(0)
    replay.add_batch(rng.normal(size=(50, S)), rng.uniform(-1, 1, (50, A)), rng.normal(size=50),
                     rng.normal(size=(50, S)), np.zeros(50))
    core.set_source(replay)
    core.train(3)
    probe = rng.normal(size=(4, S)).astype(np.float32)
    expected = core.agent.act(probe)
    core.close()
    out = tmp_path / 'policy.npz'
    assert ctl.main(['export-policy', str(tmp_path / 'ckpt'), str(out)]) == 0
    blob = PolicyBlob.load(str(out))
    assert (blob.algorithm, blob.version, blob.state_dim, blob.action_dim) == ('td3', 3, S, A)
    # The LiteRT model the vehicle runs acts as the trained agent did.
    actor = LiteRtActor(blob.model, state_dim=S, action_dim=A)
    np.testing.assert_allclose(np.stack([actor.infer(s) for s in probe]).reshape(expected.shape),
                               expected, atol=1e-4)
    # The checkpoint is read, not written: the same directory resumes at 3 updates.
    assert TrainerCore(TrainerConfig(algorithm='td3', mode='offline'), S, A,
                       checkpoint_dir=tmp_path / 'ckpt').update_count == 3


def test_errors_are_named_with_exit_code_1_or_2(tmp_path, capsys):
    assert ctl.main(['export-policy', str(tmp_path), str(tmp_path / 'p.npz')]) == 1
    assert 'no trainer checkpoint' in capsys.readouterr().err
    assert ctl.main(['pool', str(tmp_path / 'missing')]) == 1
    assert 'no such pool directory' in capsys.readouterr().err
    assert ctl.main(['bag', str(tmp_path)]) == 1
    with pytest.raises(SystemExit) as exit_info:
        ctl.main(['lifecycle', '/VAN1/storage', 'explode'])
    assert exit_info.value.code == 2
    run = subprocess.run([sys.executable, '-m', 'tspace_ros.ctl', '--help'],
                         capture_output=True, text=True)
    assert run.returncode == 0 and 'export-policy' in run.stdout and 'exit codes' in run.stdout


def test_pool_summary_counts_what_the_pool_holds(tmp_path):
    from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
    from tspace_ros.storage import open_pool, PoolConfig
    start = 1_795_000_000_000_000_000
    with open_pool(PoolConfig(root=str(tmp_path / 'pool'))) as pool:
        pool.append([TransitionRecord('VIN', 'd', 'ep', start, k, np.zeros(S), np.zeros(A), 0,
                                      1, -1.0, 1.0, np.zeros(S), k == 4, False, 0,
                                      start + k, start + k + 1) for k in range(5)])
        pool.end_episode(EpisodeSummaryRecord('VIN', 'd', 'ep', start, start + 5, 5, -5.0, 1.0,
                                              1.0, True, 0, 0))
    summary = ctl.pool_summary(str(tmp_path / 'pool'))
    assert summary['records'] == 5 and summary['episodes_valid'] == 1
