"""
The storage lifecycle node: transitions and episodes into the pool, batches out.

A thin adapter around ``tspace_ros.storage`` (Parquet by default, MongoDB by
configuration; see it for durability and idempotency). Topics and services
(relative, in the vehicle's namespace):

- subscribes ``transitions`` (each is appended durably as it arrives) and
  ``episode`` (those of every namespace in ``vehicles`` when one storage serves a
  fleet) (Episode: any of its transitions not yet stored are appended,
  then the episode is completed, or dropped when discarded);
- publishes ``episode/stored`` (EpisodeSummary, once the episode is durable:
  the trainer's cue in episode mode) and ``/diagnostics`` (counts, bytes, rejections);
- serves ``sample_batch`` (SampleBatch: records or episodes, uniform, filtered by
  vehicle, driver and time).

In the single-process suite the trainer samples the pool directly (``pool``).
Deactivate flushes; cleanup and shutdown close the pool (files complete on disk).
"""

import os
import sys
import threading

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from tspace_interfaces.msg import Episode, EpisodeSummary, Transition
from tspace_interfaces.srv import SampleBatch

from tspace_ros.episodes.records import RecordError
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import (episode_from_msg, episode_to_msg, summary_to_msg,
                                       time_to_ns, transition_from_msg, transition_to_msg)
from tspace_ros.nodes.qos import RECORD_QOS
from tspace_ros.storage import open_pool, PoolConfig, StorageError

MAX_SAMPLE = 100_000


class StorageNode(TspaceLifecycleNode):
    """Lifecycle adapter of a transition pool."""

    def __init__(self, node_name: str = 'storage', **kwargs):
        """Declare the parameters; nothing is opened before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('backend', 'parquet', 'Pool backend: parquet (embedded) or mongodb.')
        d('root', 'pool', 'Parquet: directory of the dataset (created if missing).')
        d('mongodb_uri_env', 'TSPACE_MONGODB_URI',
          'MongoDB: environment variable holding the connection string.')
        d('mongodb_uri_file', '', 'MongoDB: file holding the connection string (a secret).')
        d('mongodb_database', 'tspace', 'MongoDB: database name.')
        d('max_bytes', 0, 'Retention: largest size on disk, bytes (0: unlimited).',
          (0, 2**62))
        d('max_age_s', 0.0, 'Retention: oldest episode kept, s (0: unlimited).', (0.0, 1e10))
        self.declare_task_file()  # the observation specification stored with the data
        d('site_name', 'simulation', 'Site name in the observation specification.')
        d('time_zone', 'UTC', 'Site time zone (IANA name) in the observation specification.')
        d('vehicles', [], 'Namespaces of the vehicles this storage serves ([] = its own '
          'namespace): their transitions and episode topics are stored.')
        d('diagnostics_period_s', 1.0, 'How often /diagnostics is published, s.', (0.1, 60.0))
        self._pool = None
        self._lock = threading.Lock()
        self._rejected = 0
        self._last_problem = ''
        self._entities = []
        self._rng = np.random.default_rng()

    @property
    def pool(self):
        """Return the open pool, the in-process sampling API; None unless configured."""
        return self._pool

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Open the pool; create the subscriptions, the service and the publishers."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = {name: self.get_parameter(name).value for name in (
            'backend', 'root', 'mongodb_uri_env', 'mongodb_uri_file', 'mongodb_database',
            'max_bytes', 'max_age_s', 'site_name', 'time_zone')}
        try:
            spec = self.load_task().observation_spec(p['site_name'], p['time_zone'])
            config = PoolConfig(
                backend=p['backend'], root=os.path.expanduser(p['root']),
                mongodb_uri_env=p['mongodb_uri_env'], mongodb_uri_file=p['mongodb_uri_file'],
                mongodb_database=p['mongodb_database'], max_bytes=p['max_bytes'],
                max_age_s=p['max_age_s'], spec=spec)
            pool = open_pool(config)
        except (StorageError, ValueError) as error:
            self.configure_failed(f'{error}')
            return TransitionCallbackReturn.FAILURE
        self._pool, self._rejected, self._last_problem = pool, 0, ''
        stats = pool.stats()
        self.get_logger().info(f'{p["backend"]} pool open: {stats["records"]} records, '
                               f'{stats["episodes_valid"]} episodes')
        group = MutuallyExclusiveCallbackGroup()
        self._stored_pub = self.create_lifecycle_publisher(EpisodeSummary, 'episode/stored',
                                                           RECORD_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        prefixes = [f'/{ns.strip("/")}/' for ns in self.string_list('vehicles')] or ['']
        self._entities = [
            self.create_subscription(kind, prefix + topic, callback, RECORD_QOS,
                                     callback_group=group)
            for prefix in prefixes
            for kind, topic, callback in ((Transition, 'transitions', self._on_transition),
                                          (Episode, 'episode', self._on_episode))]
        self._entities += [
            self.create_service(SampleBatch, 'sample_batch', self._on_sample,
                                callback_group=MutuallyExclusiveCallbackGroup()),
            self.wall_timer(self.get_parameter('diagnostics_period_s').value,
                            self._publish_diagnostics, callback_group=group),
        ]
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Flush what is buffered (everything acknowledged is already durable)."""
        with self._lock:
            if self._pool is not None:
                self._pool.flush()
        return super().on_deactivate(state)

    def release(self):
        """Close the pool; drop subscriptions, service and publishers."""
        self.destroy_entities(*self._entities, getattr(self, '_stored_pub', None),
                              getattr(self, '_diag_pub', None))
        self._entities, self._stored_pub, self._diag_pub = [], None, None
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self.get_logger().info('pool closed')
            self._pool = None

    def _reject(self, what: str, error: Exception):
        self._rejected += 1
        self._last_problem = f'{what} rejected: {error}'
        self.get_logger().error(self._last_problem, throttle_duration_sec=5.0)

    # ---- input -------------------------------------------------------------------------------

    def _on_transition(self, msg: Transition):
        if self._pool is None:
            return
        try:
            record = transition_from_msg(msg)
            with self._lock:
                self._pool.append([record])
        except (RecordError, StorageError) as error:
            self._reject(f'transition {msg.episode_id}#{msg.step_index}', error)

    def _on_episode(self, msg: Episode):
        if self._pool is None:
            return
        try:
            summary, transitions = episode_from_msg(msg)
            with self._lock:
                if transitions:
                    self._pool.append(transitions)
                self._pool.end_episode(summary)
        except (RecordError, StorageError) as error:
            self._reject(f'episode {msg.summary.episode_id}', error)
            return
        if self._state_machine.current_state[1] == 'active':
            self._stored_pub.publish(summary_to_msg(summary,
                                                    self.get_clock().now().nanoseconds))

    def _on_sample(self, request, response):
        if self._pool is None:
            response.success, response.message = False, 'storage is not configured'
            return response
        if not 1 <= request.size <= MAX_SAMPLE:
            response.success = False
            response.message = f'size must be within 1..{MAX_SAMPLE}, got {request.size}'
            return response
        filters = {'vehicle_id': request.vehicle_id or None,
                   'driver_id': request.driver_id or None,
                   'start_ns': time_to_ns(request.start_time) or None,
                   'end_ns': time_to_ns(request.end_time) or None}
        now_ns = self.get_clock().now().nanoseconds
        try:
            with self._lock:
                if request.kind == SampleBatch.Request.KIND_RECORD:
                    source = self._pool.records_source(**filters)
                    response.available = len(source)
                    if response.available:
                        response.records = [transition_to_msg(r, now_ns) for r in
                                            self._pool.get_records(request.size, self._rng,
                                                                   **filters)]
                elif request.kind == SampleBatch.Request.KIND_EPISODE:
                    response.available = len(self._pool.episodes_source(**filters))
                    if response.available:
                        response.episodes = [
                            episode_to_msg(s, t, now_ns) for s, t in
                            self._pool.get_episodes(request.size, self._rng, **filters)]
                else:
                    response.success = False
                    response.message = f'kind must be 0 (records) or 1 (episodes), ' \
                                       f'got {request.kind}'
                    return response
        except (StorageError, ValueError) as error:
            response.success, response.message = False, str(error)
            return response
        response.success = True
        response.message = f'{len(response.records) + len(response.episodes)} of ' \
                           f'{response.available} available'
        return response

    def _publish_diagnostics(self):
        with self._lock:
            if self._pool is None:
                return
            stats = self._pool.stats()
        stats['rejected'] = self._rejected
        stats['last_problem'] = self._last_problem or '-'
        level = WARN if self._rejected else OK
        message = f'{stats["records"]} records, {stats["episodes_valid"]} episodes'
        if self._last_problem and self._rejected > stats['records']:
            level = ERROR
        if stats.get('quarantined_files'):
            level = ERROR  # corrupt files were found on open: moved aside, data missing
            message += (f'; {stats["quarantined_files"]} corrupt file(s) quarantined '
                        f'(last: {stats["last_quarantined"]})')
        elif stats.get('log_truncated_batches'):
            level = max(level, WARN)
            message += f'; {stats["log_truncated_batches"]} interrupted log write(s) dropped'
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), self.get_fully_qualified_name(), 'tspace_ros',
            level, message, stats))


def main(args=None) -> int:
    """Run the storage node until it is shut down."""
    return run_lifecycle_node(StorageNode, args)


if __name__ == '__main__':
    sys.exit(main())
