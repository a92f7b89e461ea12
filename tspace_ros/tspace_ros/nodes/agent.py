"""
The agent lifecycle node: observation windows in, torque-map flash goals out.

The vehicle side stays small: the actor runs through LiteRT and this process
never imports TensorFlow. Topics (relative, in the vehicle's namespace):

- subscribes ``observation/window``, ``torque_map/active`` (the map the VCU
  applies, transient local) and ``policy/update`` (PolicyUpdate, transient local);
- sends goals to the ``flash_torque_map`` action of the CAN bridge, one at a time;
- publishes ``heartbeat`` (std_msgs/Header, feeds the bridge's watchdog),
  ``agent/action`` (AgentAction: each decision, the window it answers and what
  became of its flash, for the cruncher), ``agent/step_latency_ms`` (Float64: window
  received -> map active, wall ms) and ``agent/policy_version`` (UInt64), for
  rqt_plot, and ``/diagnostics``.

After a flash the agent answers the first window that starts once the new map
is active (windows that began under the old map are skipped, counted), which is
where the cruncher's step ends (see ``tspace_ros.cruncher``).

A policy update is verified (sha256 of weights and model, algorithm, state and
action sizes) and swapped in between two inferences; a bad one is rejected and
reported, and the agent keeps the last good policy. Every map it asks for is
built from the default map within the safety gate's limits and still passes the
bridge's gate; if inference fails or the bridge refuses, the vehicle stays on
its last good map. In ``train`` mode exploration noise is added to the actions;
in ``infer`` mode the policy acts deterministically.
"""

import sys
import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.action import ActionClient
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Float64, Header, UInt64
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import (AgentAction, ObservationWindow, PolicyUpdate,
                                   TorqueMap as TorqueMapMsg)

from tspace_ros.agents import registry
from tspace_ros.agents.litert import LiteRtActor, LiteRtRecurrentActor
from tspace_ros.agents.noise import make_noise, NOISE_KINDS
from tspace_ros.agents.policy_exchange import PolicyBlob, PolicyError
from tspace_ros.agents.vehicle_policy import StateError
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import (float32_field, time_from_ns, time_to_ns,
                                       torque_map_from_msg, torque_map_to_msg, window_from_msg)
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, POLICY_UPDATE_QOS, RECORD_QOS, WINDOW_QOS
from tspace_ros.signals.window import WindowError
from tspace_ros.torque_map.map import TorqueMap, TorqueMapError

MODES = ('train', 'infer')


class Agent(TspaceLifecycleNode):
    """Lifecycle adapter: window -> state -> LiteRT actor -> map rows -> flash goal."""

    def __init__(self, node_name: str = 'agent', **kwargs):
        """Declare the parameters; nothing is created before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('algorithm', 'ddpg', 'Policy algorithm, as the trainer has it: '
          f'{", ".join(registry.names())}.')
        d('mode', 'infer', 'train (exploration noise on) or infer (deterministic).')
        d('noise', 'gaussian', 'Exploration noise in train mode: gaussian or ou.')
        d('noise_sigma', 0.1, 'Noise standard deviation (action units).', (0.0, 2.0))
        d('noise_theta', 0.15, 'Ornstein-Uhlenbeck mean reversion.', (0.0, 10.0))
        d('seed', 0, 'Seed of the exploration noise.', (0, 2**31 - 1))
        self.declare_task_file()  # signals, window, map, rows per action, gate limits
        d('policy_topic', 'policy/update',
          "Where policies arrive (e.g. a fleet trainer's /fleet/policy/update).")
        d('policy_file', '', "Policy blob (.npz) to start with ('' = wait for policy/update).")
        d('goal_timeout_s', 30.0, 'Give up waiting for a flash result after this, s (wall).',
          (0.1, 600.0))
        self._lock = threading.Lock()
        self.release()

    # ---- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the default map, the optional initial policy; create the interfaces."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = self._param
        problems = [f'{name} must be one of {allowed}, got {p(name)!r}'
                    for name, allowed in (('algorithm', registry.names()), ('mode', MODES),
                                          ('noise', NOISE_KINDS))
                    if p(name) not in allowed]
        try:
            task = self.load_task()
            default_map, mapper, states = task.default_map, task.action_mapper(), \
                task.state_builder()
        except (OSError, ValueError) as error:
            problems.append(f'{type(error).__name__}: {error}')
        if problems:
            for problem in problems:
                self.configure_failed(f'{problem}')
            return TransitionCallbackReturn.FAILURE
        self._mapper, self._states, self._current_map = mapper, states, default_map
        self._noise = make_noise(p('noise'), mapper.action_dim, p('noise_sigma'),
                                 p('noise_theta'), seed=p('seed'))
        if p('policy_file'):
            try:
                self._install(PolicyBlob.load(p('policy_file')), f'file {p("policy_file")}')
            except (OSError, PolicyError) as error:
                self.configure_failed(f'policy_file: {error}')
                return TransitionCallbackReturn.FAILURE
        self._flash = ActionClient(self, FlashTorqueMap, 'flash_torque_map')
        self._heartbeat = self.create_lifecycle_publisher(Header, 'heartbeat', 10)
        self._action_pub = self.create_publisher(AgentAction, 'agent/action', RECORD_QOS)
        # For rqt_plot: window -> map active (wall ms), and the policy version in use.
        self._latency_pub = self.create_publisher(Float64, 'agent/step_latency_ms', 10)
        self._version_pub = self.create_publisher(UInt64, 'agent/policy_version', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._subs = [
            self.create_subscription(ObservationWindow, 'observation/window', self._on_window,
                                     WINDOW_QOS),
            self.create_subscription(TorqueMapMsg, 'torque_map/active', self._on_active_map,
                                     ACTIVE_MAP_QOS),
            self.create_subscription(PolicyUpdate, p('policy_topic'), self._on_policy,
                                     POLICY_UPDATE_QOS),
        ]
        self._diag_timer = self.wall_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f'configured: {p("algorithm")} in {p("mode")} mode, state {states.state_dim}, '
            f'action {mapper.action_dim}, policy '
            f'{self._actor_version if self._actor else "none yet (waiting for policy/update)"}')
        return TransitionCallbackReturn.SUCCESS

    def release(self):
        """Drop the policy, subscriptions, clients and publishers."""
        for sub in getattr(self, '_subs', []):
            self.destroy_subscription(sub)
        if getattr(self, '_diag_timer', None) is not None:
            self.destroy_timer(self._diag_timer)
        if getattr(self, '_flash', None) is not None:
            self._flash.destroy()
        if getattr(self, '_heartbeat', None) is not None:
            self.destroy_lifecycle_publisher(self._heartbeat)
        for name in ('_diag_pub', '_action_pub', '_latency_pub', '_version_pub'):
            if getattr(self, name, None) is not None:
                self.destroy_publisher(getattr(self, name))
        self._subs, self._diag_timer, self._flash = [], None, None
        self._heartbeat = self._diag_pub = self._action_pub = None
        self._latency_pub = self._version_pub = None
        self._decision: Optional[AgentAction] = None
        self._goal_sent_at: Optional[float] = None
        self._settled_ns = 0  # when the last flashed map became active (UTC ns)
        self._actor = None
        self._actor_version: Optional[int] = None
        self._mapper = self._states = self._current_map = self._noise = None
        self._goal_pending_since: Optional[float] = None
        self._episode_id: Optional[str] = None
        self._last_action = None
        self._counts = {'windows': 0, 'goals': 0, 'flashed': 0, 'refused': 0,
                        'skipped_busy': 0, 'skipped_settling': 0, 'skipped_no_policy': 0,
                        'bad_windows': 0,
                        'inference_errors': 0, 'policy_updates': 0, 'policy_rejected': 0}
        self._last_problem = ''
        self._rejections = {}
        self._latency_ms = []

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop acting (windows are ignored while inactive)."""
        self._goal_pending_since = None
        return super().on_deactivate(state)

    def _param(self, name):
        return self.get_parameter(name).value

    # ---- policy ------------------------------------------------------------------------------

    def _install(self, blob: PolicyBlob, source: str) -> None:
        """Verify a policy and swap it in; PolicyError if it does not fit this agent."""
        blob.verify(algorithm=self._param('algorithm'), state_dim=self._states.state_dim,
                    action_dim=self._mapper.action_dim)
        if blob.model_format != 'tflite' or not blob.model:
            raise PolicyError('the policy carries no LiteRT (tflite) model for the vehicle')
        recurrent = registry.get(self._param('algorithm')).recurrent
        kind = LiteRtRecurrentActor if recurrent else LiteRtActor
        actor = kind(blob.model, state_dim=blob.state_dim, action_dim=blob.action_dim)
        with self._lock:  # between two inferences
            self._actor, self._actor_version = actor, blob.version
        if self._version_pub is not None:
            self._version_pub.publish(UInt64(data=blob.version))
        self.get_logger().info(f'policy {blob.algorithm} version {blob.version} installed '
                               f'from {source}')

    def _on_policy(self, msg: PolicyUpdate):
        if self._states is None:
            return
        self._counts['policy_updates'] += 1
        try:
            blob = PolicyBlob.from_msg(msg, expected_algorithm=self._param('algorithm'))
            if self._actor_version is not None and blob.version <= self._actor_version:
                raise PolicyError(f'version {blob.version} is not newer than the installed '
                                  f'{self._actor_version}')
            self._install(blob, 'policy/update')
        except Exception as error:  # noqa: B902 - no update may stop the agent
            # A PolicyError is a diagnosed refusal; anything else is a defect, still counted.
            reason = 'invalid' if isinstance(error, PolicyError) else type(error).__name__
            self._counts['policy_rejected'] += 1
            self._rejections[reason] = self._rejections.get(reason, 0) + 1
            self._last_problem = f'policy update rejected ({reason}): {error}'
            self.get_logger().error(f'{self._last_problem}; keeping version '
                                    f'{self._actor_version}', throttle_duration_sec=5.0)

    def _on_active_map(self, msg: TorqueMapMsg):
        if self._mapper is None:
            return
        try:
            self._current_map = torque_map_from_msg(msg, reference=self._mapper.default_map)
        except TorqueMapError as error:
            self._last_problem = f'unusable active map: {error}'

    # ---- acting ------------------------------------------------------------------------------

    def _on_window(self, msg: ObservationWindow):
        if self._state_machine.current_state[1] != 'active' or self._states is None:
            return
        self._counts['windows'] += 1
        self._heartbeat.publish(Header(stamp=self.get_clock().now().to_msg()))
        started = time.perf_counter()
        if self._goal_pending_since is not None:
            if time.monotonic() - self._goal_pending_since < self._param('goal_timeout_s'):
                self._counts['skipped_busy'] += 1
                return
            self._last_problem = 'no result from the bridge; giving up on the last goal'
            self._goal_pending_since = None
        try:
            window = window_from_msg(msg)
            state = self._states.state(window)
        except (WindowError, StateError) as error:
            self._counts['bad_windows'] += 1
            self._last_problem = f'window {msg.step_index} unusable: {error}'
            return
        if window.start_ns < self._settled_ns and window.episode_id == self._episode_id:
            # This window began under the previous map: the cruncher's step ends at the
            # first window wholly under the new one, so that is the one to answer.
            self._counts['skipped_settling'] += 1
            return
        if window.episode_id != self._episode_id:  # a new episode: fresh memory
            self._episode_id = window.episode_id
            self._states.reset()
            self._last_action = np.zeros(self._mapper.action_dim, np.float32)
            if isinstance(self._actor, LiteRtRecurrentActor):
                self._actor.reset()
        with self._lock:
            actor, version = self._actor, self._actor_version
            if actor is None:
                self._counts['skipped_no_policy'] += 1
                return
            try:
                if isinstance(actor, LiteRtRecurrentActor):
                    # The recurrent actor carries its LSTM state; it is fed the action
                    # actually sent last (noise included), as in training.
                    action = actor.step(state, self._last_action)
                else:
                    action = actor.infer(state)
                if self._param('mode') == 'train':
                    action = np.clip(action + self._noise.sample(), -1.0, 1.0)
                proposed, row_start, row_count = self._mapper.to_map(
                    action, float(window.signal('speed').max()), self._current_map, version)
            except (ValueError, RuntimeError) as error:  # LiteRtError is a ValueError
                self._counts['inference_errors'] += 1
                self._last_problem = f'inference failed, no map sent: {error}'
                self.get_logger().error(self._last_problem, throttle_duration_sec=5.0)
                return
        self._last_action = np.asarray(action, np.float32)
        inference_ms = (time.perf_counter() - started) * 1e3
        self._decision = AgentAction(
            vehicle_id=window.vehicle_id, episode_id=window.episode_id,
            observation_step_index=window.step_index,
            observation_end=time_from_ns(window.end_ns), action=float32_field(action),
            row_start=row_start, row_count=row_count, policy_version=version,
            inference_ms=inference_ms)
        self._send_goal(proposed, row_start, row_count)
        self._latency_ms.append((time.perf_counter() - started) * 1e3)

    def _conclude(self, flashed: bool, error_code: int, message: str, active_since=None):
        """Publish the pending decision with the bridge's answer (for the cruncher)."""
        decision, self._decision = self._decision, None
        if decision is None or self._action_pub is None:
            return
        decision.header.stamp = self.get_clock().now().to_msg()
        decision.flashed, decision.error_code, decision.message = flashed, error_code, message
        if active_since is not None:
            decision.active_since = active_since
        if self._goal_sent_at is not None:
            decision.flash_ms = (time.monotonic() - self._goal_sent_at) * 1e3
        self._action_pub.publish(decision)
        if flashed:
            self._latency_pub.publish(Float64(data=decision.inference_ms + decision.flash_ms))

    def _send_goal(self, proposed: TorqueMap, row_start: int, row_count: int):
        self._goal_sent_at = None
        if not self._flash.server_is_ready():
            self._last_problem = 'the CAN bridge (flash_torque_map) is not available'
            self._conclude(False, FlashTorqueMap.Result.ERROR_VEHICLE_OFFLINE,
                           self._last_problem)
            return
        goal = FlashTorqueMap.Goal(map=torque_map_to_msg(
            proposed, self.get_clock().now().nanoseconds, row_start, row_count))
        self._goal_pending_since = self._goal_sent_at = time.monotonic()
        self._counts['goals'] += 1
        self._flash.send_goal_async(goal).add_done_callback(self._on_goal_answer)

    def _on_goal_answer(self, future):
        handle = future.result()
        if not handle.accepted:
            self._goal_pending_since = None
            self._counts['refused'] += 1
            self._last_problem = 'the bridge did not accept the flash goal'
            self._conclude(False, FlashTorqueMap.Result.ERROR_TRANSPORT, self._last_problem)
            return
        handle.get_result_async().add_done_callback(self._on_result)

    def _on_result(self, future):
        self._goal_pending_since = None
        result = future.result().result
        self._conclude(result.success, result.error_code, result.message,
                       result.active_map.header.stamp if result.success else None)
        if result.success:
            self._settled_ns = time_to_ns(result.active_map.header.stamp)
            # Past actions in the state are those that took effect, as the cruncher counts.
            self._states.remember(self._last_action)
            self._counts['flashed'] += 1
        else:
            self._counts['refused'] += 1
            self._last_problem = (f'flash refused (error {result.error_code}): '
                                  f'{result.message}; the vehicle keeps its last good map')
            self.get_logger().warning(self._last_problem, throttle_duration_sec=5.0)

    # ---- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self):
        if self._states is None:
            return
        latencies = sorted(self._latency_ms)
        self._latency_ms = []
        values = dict(self._counts)
        values.update({f'policy_rejected_{k}': v for k, v in self._rejections.items()})
        values.update({
            'policy_version': self._actor_version if self._actor_version is not None else '-',
            'mode': self._param('mode'),
            'window_to_goal_ms_median': latencies[len(latencies) // 2] if latencies else 0.0,
            'window_to_goal_ms_max': latencies[-1] if latencies else 0.0,
            'last_problem': self._last_problem or '-',
        })
        if self._actor is None:
            level, message = WARN, 'no policy yet'
        elif self._counts['policy_rejected'] or self._counts['inference_errors']:
            level, message = ERROR if self._counts['inference_errors'] else WARN, \
                self._last_problem
        else:
            level, message = OK, f'acting with policy version {self._actor_version}'
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f'{self.get_fully_qualified_name()}: agent',
            self._mapper.default_map.vehicle_id, level, message, values))


def main(args=None) -> int:
    """Run the agent node until it is shut down."""
    return run_lifecycle_node(Agent, args)


if __name__ == '__main__':
    sys.exit(main())
