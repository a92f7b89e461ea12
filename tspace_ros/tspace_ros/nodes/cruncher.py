"""
The cruncher lifecycle node: windows, decisions and episode events in; transitions out.

A thin adapter around ``tspace_ros.cruncher.Cruncher`` (see it for the step
model: elastic real-time steps, time-outs, rewards). Topics (relative, in the
vehicle's namespace):

- subscribes ``observation/window`` (from the CAN bridge), ``agent/action``
  (AgentAction, from the agent) and ``episode/event`` (EpisodeEvent, from the
  node serving ``episode_control``: the bridge);
- publishes ``transitions`` (Transition, as each step completes),
  ``episode`` (Episode: the summary and every transition of a finished episode;
  no transitions when it was discarded), ``episode/summary`` (EpisodeSummary),
  ``cruncher/running_reward`` and ``cruncher/episode_energy_per_km``
  (std_msgs/Float64, for rqt_plot) and ``/diagnostics``.

All input is handled in one callback group, in arrival order.
"""

import sys
import threading
from typing import Dict, List

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Float64
from tspace_interfaces.msg import (AgentAction, Episode, EpisodeEvent, EpisodeSummary,
                                   ObservationWindow, Transition)

from tspace_ros.cruncher import (AgentActionRecord, Cruncher, CruncherConfig,
                                 EpisodeEventRecord, RewardConfig)
from tspace_ros.episodes.records import TransitionRecord
from tspace_ros.nodes.diagnostics import diagnostic_array, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import (episode_to_msg, float32_values, summary_to_msg,
                                       time_to_ns, transition_to_msg, window_from_msg)
from tspace_ros.nodes.qos import EVENT_QOS, RECORD_QOS, WINDOW_QOS
from tspace_ros.signals.window import WindowError


def action_from_msg(msg: AgentAction) -> AgentActionRecord:
    """Return the core's record of an AgentAction message."""
    return AgentActionRecord(
        vehicle_id=msg.vehicle_id, episode_id=msg.episode_id,
        observation_step_index=msg.observation_step_index,
        observation_end_ns=time_to_ns(msg.observation_end),
        action=float32_values(msg.action), row_start=msg.row_start, row_count=msg.row_count,
        policy_version=msg.policy_version, flashed=msg.flashed,
        active_since_ns=time_to_ns(msg.active_since), error_code=msg.error_code,
        message=msg.message, inference_ms=msg.inference_ms, flash_ms=msg.flash_ms)


def event_from_msg(msg: EpisodeEvent) -> EpisodeEventRecord:
    """Return the core's record of an EpisodeEvent message."""
    return EpisodeEventRecord(
        event=msg.event, vehicle_id=msg.vehicle_id, driver_id=msg.driver_id,
        episode_id=msg.episode_id, stamp_ns=time_to_ns(msg.header.stamp),
        episode_start_ns=time_to_ns(msg.episode_start),
        episode_end_ns=time_to_ns(msg.episode_end))


class CruncherNode(TspaceLifecycleNode):
    """Lifecycle adapter of the Cruncher core."""

    def __init__(self, node_name: str = 'cruncher', **kwargs):
        """Declare the parameters; nothing is created before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        self.declare_task_file()  # the states' signals and sizes, the action's length
        d('max_step_windows', 3, 'Elastic bound: windows a step may wait for its action.',
          (1, 100))
        d('keep_timed_out', True, 'Keep timed-out steps as transitions marked timed_out.')
        d('kinetic_energy_mass_kg', 0.0,
          'Reward shaping by kinetic energy (potential-based), vehicle mass in kg; 0: off.',
          (0.0, 100000.0))
        d('shaping_gamma', 0.99, "Discount of the shaping term (the agent's gamma).",
          (0.0, 1.0))
        d('speed_tracking_weight', 0.0,
          'Penalty per (km/h)^2 of mean squared speed error (needs a target_speed signal).',
          (0.0, 1e6))
        d('action_weight', 0.0, 'Penalty per unit of squared action norm.', (0.0, 1e6))
        d('jerk_weight', 0.0,
          'Drivability: penalty per (m/s^3)^2 of mean squared jerk of the speed; 0: off.',
          (0.0, 1e6))
        d('band_weight', 0.0,
          'Drivability: penalty per second the speed is outside +-band_kph of the target '
          'speed (needs a target_speed signal); 0: off.', (0.0, 1e6))
        d('band_kph', 2.0, 'Half-width of the speed band of band_weight, km/h (WLTP: 2).',
          (0.1, 50.0))
        d('diagnostics_period_s', 1.0, 'How often /diagnostics is published, s.', (0.1, 60.0))
        self._core = None
        self._lock = threading.Lock()
        self._open: Dict[str, List[TransitionRecord]] = {}
        self._entities = []

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Build the core from the parameters; create publishers and subscriptions."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = self.get_parameter
        try:
            reward = RewardConfig(
                kinetic_energy_mass_kg=p('kinetic_energy_mass_kg').value,
                shaping_gamma=p('shaping_gamma').value,
                speed_tracking_weight=p('speed_tracking_weight').value,
                action_weight=p('action_weight').value,
                jerk_weight=p('jerk_weight').value,
                band_weight=p('band_weight').value,
                band_kph=p('band_kph').value)
            config = CruncherConfig.for_task(
                self.load_task(), reward=reward, max_step_windows=p('max_step_windows').value,
                keep_timed_out=p('keep_timed_out').value)
            core = Cruncher(config)
        except ValueError as error:
            self.configure_failed(f'{error}')
            return TransitionCallbackReturn.FAILURE
        self._core, self._open = core, {}
        group = MutuallyExclusiveCallbackGroup()
        self._transition_pub = self.create_lifecycle_publisher(Transition, 'transitions',
                                                               RECORD_QOS)
        self._episode_pub = self.create_lifecycle_publisher(Episode, 'episode', RECORD_QOS)
        self._summary_pub = self.create_lifecycle_publisher(EpisodeSummary, 'episode/summary',
                                                            RECORD_QOS)
        self._reward_pub = self.create_lifecycle_publisher(Float64, 'cruncher/running_reward',
                                                           10)
        self._energy_pub = self.create_lifecycle_publisher(
            Float64, 'cruncher/episode_energy_per_km', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._entities = [
            self.create_subscription(ObservationWindow, 'observation/window', self._on_window,
                                     WINDOW_QOS, callback_group=group),
            self.create_subscription(AgentAction, 'agent/action', self._on_action, RECORD_QOS,
                                     callback_group=group),
            self.create_subscription(EpisodeEvent, 'episode/event', self._on_event, EVENT_QOS,
                                     callback_group=group),
            self.wall_timer(p('diagnostics_period_s').value, self._publish_diagnostics,
                            callback_group=group),
        ]
        return TransitionCallbackReturn.SUCCESS

    def release(self):
        """Drop the core, publishers and subscriptions."""
        publishers = ('_transition_pub', '_episode_pub', '_summary_pub', '_reward_pub',
                      '_energy_pub', '_diag_pub')
        self.destroy_entities(*self._entities, *(getattr(self, n, None) for n in publishers))
        self._entities = []
        for name in publishers:
            setattr(self, name, None)
        self._core, self._open = None, {}

    @property
    def core(self):
        """Return the cruncher core, or None unless configured."""
        return self._core

    def _active(self) -> bool:
        return self._core is not None and self._state_machine.current_state[1] == 'active'

    # ---- input -------------------------------------------------------------------------------

    def _on_window(self, msg: ObservationWindow):
        if not self._active():
            return
        try:
            window = window_from_msg(msg)
        except WindowError as error:
            self.get_logger().warning(f'window {msg.step_index} unusable: {error}',
                                      throttle_duration_sec=5.0)
            return
        with self._lock:
            self._emit(self._core.on_window(window))
            stats = self._core.stats()
        self._reward_pub.publish(Float64(data=float(stats['running_reward'])))
        self._energy_pub.publish(Float64(data=float(stats['episode_energy_per_km_wh'])))

    def _on_action(self, msg: AgentAction):
        if self._active():
            with self._lock:
                self._emit(self._core.on_action(action_from_msg(msg)))

    def _on_event(self, msg: EpisodeEvent):
        if self._active():
            with self._lock:
                self._emit(self._core.on_event(event_from_msg(msg)))

    # ---- output ------------------------------------------------------------------------------

    def _emit(self, transitions):
        now_ns = self.get_clock().now().nanoseconds
        for record in transitions:
            self._open.setdefault(record.episode_id, []).append(record)
            self._transition_pub.publish(transition_to_msg(record, now_ns))
        for summary, last in self._core.finished():
            kept = self._open.pop(summary.episode_id, [])
            for record in last:
                self._transition_pub.publish(transition_to_msg(record, now_ns))
            transitions = kept + list(last) if summary.valid else []
            self._episode_pub.publish(episode_to_msg(summary, transitions, now_ns))
            self._summary_pub.publish(summary_to_msg(summary, now_ns))
            self.get_logger().info(
                f'episode {summary.episode_id} {"stored" if summary.valid else "discarded"}: '
                f'{summary.step_count} steps, reward {summary.total_reward:.1f}, '
                f'{summary.energy_wh:.1f} Wh over {summary.distance_km:.2f} km = '
                f'{summary.energy_per_km_wh:.1f} Wh/km, {summary.timed_out_steps} timed out')

    def _publish_diagnostics(self):
        if self._core is None:
            return
        with self._lock:
            stats = self._core.stats()
        last = stats.pop('last_episode') or {}
        values = {key: value for key, value in stats.items() if key != 'flash_errors'}
        values['flash_errors'] = ', '.join(f'{code}: {count}' for code, count in
                                           sorted(stats['flash_errors'].items())) or '-'
        values.update({f'last_episode/{key}': value for key, value in last.items()})
        problem = stats.get('last_problem') or ''
        level = WARN if problem else OK
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), self.get_fully_qualified_name(), 'tspace_ros',
            level, problem or f'episode {stats["episode_id"] or "-"}', values))


def main(args=None) -> int:
    """Run the cruncher node until it is shut down."""
    return run_lifecycle_node(CruncherNode, args)


if __name__ == '__main__':
    sys.exit(main())
