"""The trainer-to-vehicle path: a DDPG agent's actor, exported, runs the same on LiteRT."""

import os

import numpy as np

from tspace_ros.agents.litert import LiteRtActor
from tspace_ros.agents.policy_exchange import PolicyBlob
from tspace_ros.agents.vehicle_policy import ActionMapper, StateBuilder
from tspace_ros.signals.synthetic import SyntheticDrive
from tspace_ros.signals.window import NS_PER_S
from tspace_ros.vehicle import load_vehicle_parameters

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def test_ddpg_actor_exported_through_a_policy_update_acts_like_keras():
    from tspace_ros.agents.ddpg import DdpgAgent, DdpgConfig
    from tspace_ros.agents.export import weights_to_blob

    states = StateBuilder()
    mapper = ActionMapper(load_vehicle_parameters().load_default_map())
    agent = DdpgAgent(states.state_dim, mapper.action_dim, DdpgConfig(seed=7))
    blob = weights_to_blob(agent.actor, 'ddpg', 5, states.state_dim, mapper.action_dim,
                           inference_model=agent.actor)
    # Through a PolicyUpdate message and back, as the agent node receives it.
    received = PolicyBlob.from_msg(blob.to_msg(), expected_algorithm='ddpg')
    actor = LiteRtActor.from_blob(received)
    drive = SyntheticDrive(seed=1)
    for k in range(20):
        state = states.state(drive.window((1_790_000_000 + 2 * k) * NS_PER_S))
        np.testing.assert_allclose(actor.infer(state), agent.act(state, explore=False),
                                   atol=1e-5)
