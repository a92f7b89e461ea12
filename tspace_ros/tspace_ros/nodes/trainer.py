"""
The trainer lifecycle node: samples in, policy updates out.

A thin adapter around ``tspace_ros.training.TrainerCore`` (see it for the
modes, the update ratio, checkpoints and TensorBoard). This node imports
TensorFlow; the vehicle-side agent never does. Topics (relative, in its
namespace):

- subscribes ``episode/stored`` (EpisodeSummary from the storage: the episode
  is durable, train on it in ``episode`` mode), ``transitions`` and ``episode``
  (with ``sample_source: topic``, they fill the trainer's own buffer; in
  ``continuous`` mode each transition counts as a new sample) and
  ``torque_map/active`` (logged as an image with each episode);
- publishes ``policy/update`` (PolicyUpdate, transient local: the initial
  policy on activate, then every ``publish_every`` updates and after each
  training burst), ``trainer/status`` (TrainerStatus: losses, update rate,
  policy version, for rqt_plot) and ``/diagnostics``.

Samples come from the storage pool: in the same process (``sample_source:
auto`` in the single-process suite: the storage node is handed over), or
through the storage node's ``sample_batch`` service (``service``: for a
trainer in a process or on a machine of its own, as the launch files run it;
``training.fetched``), so that a restarted trainer finds all the replay data
the storage holds and resumes from its checkpoint. ``topic`` keeps a private
buffer filled from the topics instead (lost on restart). In ``offline`` mode
without the service, a Parquet pool is opened at ``pool_root``.
"""

import os
import sys
import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from tspace_interfaces.msg import (Episode, EpisodeSummary, PolicyUpdate,
                                   TorqueMap as TorqueMapMsg, TrainerStatus, Transition)
from tspace_interfaces.srv import SampleBatch

from tspace_ros.agents import registry
from tspace_ros.nodes.diagnostics import diagnostic_array, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import (episode_from_msg, summary_from_msg, torque_map_from_msg,
                                       transition_from_msg)
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS, POLICY_UPDATE_QOS, RECORD_QOS

SOURCES = ('auto', 'service', 'topic')
# The trainer's seed seeds the agent too: the config field of that name is not a parameter.
_NOT_OPTIONS = ('seed',)


class TrainerNode(TspaceLifecycleNode):
    """Lifecycle adapter of the TrainerCore."""

    def __init__(self, node_name: str = 'trainer', local_storage=None, **kwargs):
        """
        Declare the parameters; nothing is built before configure.

        local_storage: the storage node of the same process (its ``pool`` is
        sampled directly), or None.
        """
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('algorithm', 'ddpg', f'One of {", ".join(registry.names())} (agents.registry).')
        d('mode', 'episode', 'episode (train after each stored episode), continuous '
          '(train as samples arrive, within max_update_ratio) or offline.')
        d('updates_per_episode', 0, 'Episode mode: updates per episode (0: ratio x new '
          'samples).', (0, 10**9))
        d('max_update_ratio', 1.0, 'At most this many updates per new sample.', (1e-6, 1e6))
        d('min_samples', 0, "Samples before the first update (0: the algorithm's: 1000 "
          'transitions for ddpg and td3, 2 episodes for rdpg).', (0, 10**9))
        d('publish_every', 200, 'Updates between policy publications.', (1, 10**9))
        d('checkpoint_every', 2000, 'Updates between checkpoints (0: episode ends only).',
          (0, 10**9))
        d('checkpoint_dir', '', "Checkpoints (resumed from when present; '' = none).")
        d('log_dir', '', "TensorBoard event files ('' = none).")
        d('sample_service', 'sample_batch', "sample_source service: the storage's "
          'SampleBatch service.')
        d('sample_timeout_s', 30.0, 'sample_source service: wait at most this for a batch, s.',
          (0.1, 3600.0))
        d('prefetch_batches', 16, 'sample_source service: batches fetched per call.',
          (1, 10000))
        d('sample_source', 'auto', 'auto (the storage pool in this process), service (the '
          "storage's sample_batch service: the pool of another process) or topic (own "
          'buffer from the transitions/episode topics; lost on a restart).')
        d('pool_root', '', 'Offline mode: the Parquet pool to train from.')
        d('offline_updates', 0, 'Offline mode: updates to run once activated.', (0, 10**9))
        d('buffer_capacity', 1_000_000, 'Topic source: transitions kept.', (1, 10**9))
        d('vehicles', [], 'Topic source: namespaces of the vehicles whose transitions and '
          'episodes to take ([] = its own namespace).')
        self.declare_task_file()  # the state and action sizes
        self.declare_agent_options()
        d('rdpg_max_length', 0, 'RDPG: steps per sampled episode window (0: whole).',
          (0, 100000))
        d('seed', 0, 'Seed of weights and sampling.', (0, 2**31 - 1))
        self._local_storage = local_storage
        self._core = None
        self._lock = threading.Lock()
        self._entities = []
        self._buffer = None
        self._sample_client = None
        self._refreshed_at = 0.0
        self._map = None
        self._last_problem = ''
        self.episodes_handled = 0  # stored episodes taken (trained on, published)

    @property
    def core(self):
        """Return the trainer core, or None unless configured."""
        return self._core

    def _p(self, name):
        return self.get_parameter(name).value

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Build the agent and its trainer (TensorFlow loads here), the source and topics."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        try:
            core = self._build_core()
            source = self._build_source(core)
        except (ValueError, OSError, RuntimeError) as error:
            self.configure_failed(f'{error}')
            return TransitionCallbackReturn.FAILURE
        core.set_source(source)
        self._core = core
        train_group = MutuallyExclusiveCallbackGroup()
        input_group = MutuallyExclusiveCallbackGroup()
        self._policy_pub = self.create_publisher(PolicyUpdate, 'policy/update',
                                                 POLICY_UPDATE_QOS)
        self._status_pub = self.create_publisher(TrainerStatus, 'trainer/status', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._entities = [
            self.create_subscription(EpisodeSummary, 'episode/stored', self._on_stored,
                                     RECORD_QOS, callback_group=train_group),
            self.create_subscription(TorqueMapMsg, 'torque_map/active', self._on_map,
                                     ACTIVE_MAP_QOS, callback_group=input_group),
            self.wall_timer(1.0, self._publish_status, callback_group=input_group),
        ]
        prefixes = [f'/{ns.strip("/")}/' for ns in self.string_list('vehicles')] or ['']
        for prefix in prefixes:
            if self._buffer is not None:
                self._entities += [
                    self.create_subscription(Transition, prefix + 'transitions',
                                             self._on_transition, RECORD_QOS,
                                             callback_group=train_group),
                    self.create_subscription(Episode, prefix + 'episode', self._on_episode,
                                             RECORD_QOS, callback_group=train_group)]
            elif self._p('mode') == 'continuous':
                self._entities.append(self.create_subscription(
                    Transition, prefix + 'transitions', self._on_transition, RECORD_QOS,
                    callback_group=train_group))
        status = core.status()
        self.get_logger().info(
            f'configured: {self._p("algorithm")} in {self._p("mode")} mode, '
            f'{status["update_count"]} updates so far, policy version '
            f'{status["policy_version"]}, {len(source)} samples available')
        return TransitionCallbackReturn.SUCCESS

    def declare_agent_options(self):
        """
        Declare a parameter for every field of every registered algorithm's config.

        They are declared without a value: one that is not set keeps the
        algorithm's own default (``agents.configs``), so no default is typed
        twice. A value is checked when the agent is built (an int is taken
        where a number is wanted; 0 is None for an optional field such as
        grad_clip_norm).
        """
        for name, field in registry.option_fields().items():
            if name in _NOT_OPTIONS:
                continue
            none = ' (0: none)' if field.optional else ''
            self.declare_parameter(name, None, ParameterDescriptor(
                name=name, dynamic_typing=True,
                description=f'Agent option{none}: {field.description}; unset: the '
                'default of the algorithm.'))

    def agent_config(self):
        """Return the algorithm's config from the option parameters (ValueError if wrong)."""
        algorithm = registry.get(self._p('algorithm'))

        def option(name):
            return self._p('seed') if name == 'seed' else self._p(name)
        return registry.config_from_options(algorithm, option)

    def _build_core(self):
        from tspace_ros.training.trainer import TrainerConfig, TrainerCore
        algorithm = self._p('algorithm')
        task = self.load_task()
        agent_config = self.agent_config()
        config = TrainerConfig(
            algorithm=algorithm, mode=self._p('mode'),
            updates_per_episode=self._p('updates_per_episode'),
            max_update_ratio=self._p('max_update_ratio'),
            min_samples=self._p('min_samples') or None,
            publish_every=self._p('publish_every'),
            checkpoint_every=self._p('checkpoint_every'),
            rdpg_max_length=self._p('rdpg_max_length') or None, seed=self._p('seed'))
        return TrainerCore(config, task.state_dim, task.action_dim, agent_config,
                           checkpoint_dir=_path(self._p('checkpoint_dir')),
                           log_dir=_path(self._p('log_dir')), publish=self._publish_blob)

    def _build_source(self, core):
        """Return the sample source for the core (see the module docstring)."""
        records = registry.get(self._p('algorithm')).samples == 'records'
        self._buffer = None
        if self._p('sample_source') not in SOURCES:
            raise ValueError(f"parameter 'sample_source': expected one of {SOURCES}, got "
                             f'{self._p("sample_source")!r}')
        service = self._p('sample_source') == 'service' or (
            self._p('sample_source') == 'auto' and self._local_storage is None
            and self._p('mode') != 'offline')
        if service:
            from tspace_ros.training.fetched import FetchedEpisodes, FetchedRecords
            self._sample_client = self.create_client(
                SampleBatch, self._p('sample_service'),
                callback_group=ReentrantCallbackGroup())
            if records:
                return FetchedRecords(self._fetch, core.state_dim, core.action_dim,
                                      self._p('prefetch_batches'))
            return FetchedEpisodes(self._fetch, core.state_dim, core.action_dim)
        if self._p('mode') == 'offline':
            from tspace_ros.storage import open_pool, PoolConfig
            if not self._p('pool_root'):
                raise ValueError("parameter 'pool_root': offline mode needs the pool to "
                                 'train from')
            self._offline_pool = open_pool(PoolConfig(root=_path(self._p('pool_root'))))
            pool = self._offline_pool
        elif self._p('sample_source') == 'auto' and self._local_storage is not None:
            pool = self._local_storage.pool
            if pool is None:
                raise RuntimeError('the storage node of this process is not configured: '
                                   'configure it before the trainer')
        else:
            from tspace_ros.agents.episode_buffer import EpisodeBuffer
            from tspace_ros.agents.replay import InMemoryReplay
            self._buffer = InMemoryReplay(self._p('buffer_capacity'), core.state_dim,
                                          core.action_dim) if records else \
                EpisodeBuffer(core.state_dim, core.action_dim)
            return self._buffer
        include = core.config.include_timed_out
        return pool.records_source(include_timed_out=include) if records else \
            pool.episodes_source()

    def _fetch(self, kind: str, size: int):
        """Sample the storage's pool through its service: (items, available); FetchError."""
        from tspace_ros.training.fetched import FetchError, RECORDS
        client, timeout = self._sample_client, self._p('sample_timeout_s')
        if client is None:
            raise FetchError('the trainer is not configured')
        if not client.wait_for_service(timeout_sec=min(timeout, 5.0)):
            raise FetchError(f'no storage answers on {client.srv_name}')
        request = SampleBatch.Request(size=size, kind=(
            SampleBatch.Request.KIND_RECORD if kind == RECORDS
            else SampleBatch.Request.KIND_EPISODE))
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            raise FetchError(f'{client.srv_name} did not answer within {timeout:g} s')
        response = future.result()
        if response is None or not response.success:
            raise FetchError(f'{client.srv_name}: '
                             f'{response.message if response else "no response"}')
        try:
            if kind == RECORDS:
                # (the service leaves out timed-out transitions, as the pool's sources do)
                items = [transition_from_msg(m) for m in response.records]
            else:
                items = [episode_from_msg(m)[1] for m in response.episodes]
        except ValueError as error:
            raise FetchError(f'{client.srv_name} sent a malformed sample: {error}') from None
        return items, response.available

    def _refresh(self) -> bool:
        """Update a fetched source's pool size; False (and the reason kept) if it failed."""
        source = self._core.source if self._core is not None else None
        if not hasattr(source, 'refresh'):
            return True
        from tspace_ros.training.fetched import FetchError
        try:
            source.refresh()
            return True
        except FetchError as error:
            self._last_problem = f'sampling the pool: {error}'
            self.get_logger().warn(self._last_problem, throttle_duration_sec=10.0)
            return False

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Publish the current policy (initial or resumed) so agents can start acting."""
        result = super().on_activate(state)
        with self._lock:
            self._publish_blob(self._core.current_blob())
        if self._p('mode') == 'offline' and self._p('offline_updates') > 0:
            self._entities.append(self.wall_timer(
                0.01, self._train_offline_once, callback_group=MutuallyExclusiveCallbackGroup()))
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Checkpoint (when a directory is set)."""
        with self._lock:
            if self._core is not None and self._core.checkpoint_dir is not None:
                self._core.save_checkpoint()
        return super().on_deactivate(state)

    def release(self):
        """Close the core (final checkpoint, TensorBoard files), drop the entities."""
        publishers = ('_policy_pub', '_status_pub', '_diag_pub')
        self.destroy_entities(*self._entities, *(getattr(self, n, None) for n in publishers))
        self._entities = []
        for name in publishers:
            setattr(self, name, None)
        with self._lock:
            if self._core is not None:
                self._core.close()
            self._core = None
            if getattr(self, '_offline_pool', None) is not None:
                self._offline_pool.close()
                self._offline_pool = None
        if self._sample_client is not None:
            self.destroy_client(self._sample_client)
            self._sample_client = None
        self._buffer = None

    # ---- input -------------------------------------------------------------------------------

    def _active(self) -> bool:
        return self._core is not None and self._state_machine.current_state[1] == 'active'

    def _on_stored(self, msg: EpisodeSummary):
        if not self._active():
            return
        from tspace_ros.training.fetched import FetchError
        summary = summary_from_msg(msg)
        with self._lock:
            self._refresh()
            try:
                metrics = self._core.on_episode(summary)
            except FetchError as error:   # trained as far as the pool answered; next time
                metrics = None
                self._last_problem = f'training on {summary.episode_id} stopped: {error}'
                self.get_logger().error(self._last_problem)
            if self._map is not None:
                self._core.log.torque_map('torque_map/active', self._map,
                                          self._core.episodes_seen)
        self.episodes_handled += 1
        if metrics:
            self.get_logger().info(
                f'episode {summary.episode_id}: {metrics.get("updates", 0)} updates, critic '
                f'loss {metrics.get("critic_loss", float("nan")):.4g}, policy version '
                f'{self._core.policy_version}')
        self._publish_status()

    def _on_transition(self, msg: Transition):
        if not self._active():
            return
        try:
            record = transition_from_msg(msg)
        except ValueError as error:
            self._last_problem = f'transition rejected: {error}'
            return
        with self._lock:
            if self._buffer is not None and self._core.algorithm.samples == 'records' and \
                    self._core.wants_transition(record):
                self._buffer.add(record.state, record.action, record.reward,
                                 record.next_state, record.done)
            if self._p('mode') == 'continuous' and self._core.wants_transition(record):
                self._continuous_sample()

    def _continuous_sample(self):
        """Count one new sample in continuous mode (a fetched source: its size refreshed)."""
        from tspace_ros.training.fetched import FetchError
        now = time.monotonic()
        if not self._core.ready and now - self._refreshed_at >= 1.0:
            self._refreshed_at = now
            self._refresh()   # a fetched source learns the pool's size (every fetch also)
        try:
            self._core.on_samples(1)
        except FetchError as error:
            self._last_problem = f'continuous training stopped: {error}'
            self.get_logger().error(self._last_problem, throttle_duration_sec=10.0)

    def _on_episode(self, msg: Episode):
        if not self._active() or self._core.algorithm.samples != 'episodes' or \
                not msg.summary.valid:
            return
        try:
            _, transitions = episode_from_msg(msg)
        except ValueError as error:
            self._last_problem = f'episode rejected: {error}'
            return
        if transitions:
            with self._lock:
                self._buffer.add_episode(
                    np.stack([t.state for t in transitions]),
                    np.stack([t.action for t in transitions]),
                    np.array([t.reward for t in transitions], np.float32),
                    np.stack([t.next_state for t in transitions]),
                    np.array([t.done for t in transitions], np.float32))

    def _on_map(self, msg: TorqueMapMsg):
        try:
            self._map = torque_map_from_msg(msg)
        except ValueError as error:
            self._last_problem = f'unusable active map: {error}'

    def _train_offline_once(self):
        timer = self._entities.pop()
        self.destroy_timer(timer)
        from tspace_ros.training.fetched import FetchError
        with self._lock:
            try:
                if not self._refresh() or len(self._core.source) == 0:
                    raise FetchError(self._last_problem or 'the pool holds no samples')
                metrics = self._core.train(self._p('offline_updates'))
            except FetchError as error:
                self._last_problem = f'offline training failed: {error}'
                self.get_logger().error(self._last_problem)
                return
            if self._core.checkpoint_dir is not None:
                self._core.save_checkpoint()
        self.get_logger().info(f'offline training: {metrics["updates"]} updates, critic loss '
                               f'{metrics["critic_loss"]:.4g}, policy version '
                               f'{metrics["policy_version"]}')
        self._publish_status()

    # ---- output ------------------------------------------------------------------------------

    def _publish_blob(self, blob):
        if getattr(self, '_policy_pub', None) is not None and blob is not None:
            self._policy_pub.publish(blob.to_msg())

    def _publish_status(self):
        if self._core is None or getattr(self, '_status_pub', None) is None:
            return
        status = self._core.status()
        msg = TrainerStatus(
            algorithm=str(status['algorithm']), update_count=int(status['update_count']),
            buffer_size=int(status['buffer_size']),
            critic_loss=float(status.get('critic_loss') or 0.0),
            actor_loss=float(status.get('actor_loss') or 0.0),
            updates_per_second=float(status.get('updates_per_second') or 0.0),
            policy_version=int(status['policy_version']))
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)
        values = dict(status)
        values['last_problem'] = self._last_problem or '-'
        ready = self._core.ready
        self._diag_pub.publish(diagnostic_array(
            msg.header.stamp, self.get_fully_qualified_name(), 'tspace_ros',
            OK if ready and not self._last_problem else WARN,
            f'{status["update_count"]} updates, policy {status["policy_version"]}' if ready
            else f'waiting for samples ({status["buffer_size"]} so far)', values))


def _path(text: str) -> Optional[str]:
    return os.path.expanduser(text) if text else None


def main(args=None) -> int:
    """Run the trainer node until it is shut down (several threads: it waits on a service)."""
    from rclpy.executors import MultiThreadedExecutor
    # A burst holds one thread while it waits for the storage's answer; the answer, the
    # lifecycle services and the status timer need their own.
    return run_lifecycle_node(TrainerNode, args,
                              executor_class=lambda: MultiThreadedExecutor(num_threads=6))


if __name__ == '__main__':
    sys.exit(main())
