"""
The cloud bridge lifecycle node: a vehicle behind a telematics cloud (tspace's RemoteCAN).

The same node as the CAN bridge (``nodes.vehicle_bridge``: windows,
``torque_map/active``, the ``flash_torque_map`` action, ``episode_control``,
``/diagnostics``, the same ``BridgeCore`` with its gate, time-outs, watchdog
and episodes), with another link: ``cloud.link.CloudLink``.

- Signals: ``get_signal`` polled every ``signal_poll_period_s`` (the last
  ``signal_duration_s`` s), or the TBox's one-second uploads read straight from
  object storage (``signal_source: object_storage``, ``object_storage_uri``);
  ragged one-second lists in the site's local time
  (``time_zone``) are resampled onto the task's window grid, each bad sample
  flagged, duplicate, late and future seconds counted. "Future" and the data
  age are measured against this node's clock (the wall, or ``/clock`` with
  ``use_sim_time``): the one clock the windows' consumers also use.
- Flashing: ``set_torque`` with only the admitted rows, never retried; a failed
  flash keeps the last good map and the step is reported as not applied. A
  flash takes seconds (tspace: 3.2 s median, up to 30 s): ``flash_timeout_s``
  defaults to 35 s, and the agent waits for the result before it acts again
  (one flash in flight; windows keep coming and the cruncher's elastic step
  waits for the map to be active).
- HMI: tspace's remote codes over MQTT (``mqtt_port`` > 0), TLS and a password.
- Security: HTTPS with ``cloud_ca_file`` (or the system's CAs), a bearer token
  from ``cloud_token_env`` or ``cloud_token_file``; the MQTT password likewise.
  Secrets are never parameters.
- The vehicle side falls back on its own: the TBox reverts to the default map
  when the polls stop.
"""

import functools
import os
import sys

from rclpy.executors import MultiThreadedExecutor

from tspace_ros.bounded_yaml import read_bounded
from tspace_ros.bridge.core import BridgeCore
from tspace_ros.can.windowing import SignalMapping, WindowBuilder
from tspace_ros.cloud.batches import BatchDecoder, default_cloud_mapping
from tspace_ros.cloud.client import load_secret, RemoteCanClient, SecretError
from tspace_ros.cloud.link import CloudLink
from tspace_ros.cloud.object_batches import ObjectBatchSource
from tspace_ros.episodes.hmi_mqtt import HmiMqttListener
from tspace_ros.nodes.lifecycle import run_lifecycle_node
from tspace_ros.nodes.vehicle_bridge import ConfigureFailure, VehicleBridgeNode


class CloudBridge(VehicleBridgeNode):
    """The bridge to a vehicle through the telematics cloud (see the module docstring)."""

    TITLE = 'cloud bridge'
    DEFAULT_FLASH_TIMEOUT_S = 35.0
    # Signals come in polls, not frames: tspace's reads took 2.5 s (up to 10 s) and one in
    # ten failed, so windows (and the agent's heartbeats, one per window) arrive in bursts
    # seconds apart, and a few failed reads in a row are normal. The TBox's own fallback
    # (30 s without a request) protects the vehicle meanwhile.
    DEFAULT_WATCHDOG_TIMEOUT_S = 30.0
    DEFAULT_VEHICLE_OFFLINE_S = 30.0

    def __init__(self, node_name: str = 'cloud_bridge', **kwargs):
        """Declare the parameters; nothing is opened before configure."""
        super().__init__(node_name, **kwargs)
        d = self.declare_described
        d('cloud_url', '', 'Base URL of the RemoteCAN API (https://...; http only on loopback).')
        d('cloud_ca_file', '', "CA bundle for HTTPS ('' = the system's).")
        d('cloud_token_env', 'TSPACE_CLOUD_TOKEN', 'Environment variable holding the bearer '
          "token ('' = none).")
        d('cloud_token_file', '', 'File holding the bearer token (wins over the variable).')
        d('time_zone', 'UTC', "The vehicle's local time zone (IANA): the TBox's stamps.")
        d('max_clock_skew_s', 5.0, 'A second this far in the future is refused, s.',
          (0.0, 3600.0))
        d('signal_poll_period_s', 2.0, 'How often get_signal is called, s.', (0.05, 60.0))
        d('signal_duration_s', 4, 'Seconds of signals asked for per get_signal.', (1, 60))
        d('max_signal_duration_s', 30, 'After a failed or slow read, get_signal asks for the '
          'seconds missed, up to this many.', (1, 60))
        d('read_timeout_s', 10.0, 'get_signal time-out, s.', (0.1, 600.0))
        d('read_retries', 3, 'get_signal retries on 413/429/5xx and connection errors.',
          (0, 10))
        d('abswitch', True, 'Ask the vehicle to switch to the written (B) page.')
        d('signal_source', 'get_signal', 'Where signals come from: get_signal (polled over '
          "HTTP) or object_storage (the TBox's one-second uploads, object_storage_uri).")
        d('object_storage_uri', '', 'signal_source object_storage: s3://bucket/prefix (the '
          "vehicle's seconds under <prefix>/<vin>/).")
        d('s3_endpoint', '', "S3 endpoint http(s)://host:port ('' = TSPACE_S3_ENDPOINT, else "
          'AWS); credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or s3_credentials_file.')
        d('s3_credentials_file', '', 'An AWS-style credentials file ([default] section).')
        d('mqtt_host', '127.0.0.1', 'MQTT broker of the remote HMI.')
        d('mqtt_port', 0, 'MQTT broker port (0: no remote HMI).', (0, 65535))
        d('mqtt_ca_file', '', "CA bundle for MQTT over TLS ('' = no TLS).")
        d('mqtt_username', '', 'MQTT user name.')
        d('mqtt_password_env', 'TSPACE_MQTT_PASSWORD', 'Environment variable holding the MQTT '
          'password.')
        d('mqtt_password_file', '', 'File holding the MQTT password (wins over the variable).')
        d('mqtt_prefix', 'tspace/hmi', 'Topic prefix: <prefix>/<driver>/<vin>.')

    def _reset_members(self):
        super()._reset_members()
        self.link = None

    @staticmethod
    def _secret(env: str, file: str, what: str, required: bool) -> str:
        """Return the secret of file or env; '' when optional and neither holds one."""
        if not file and not required and os.environ.get(env, '').strip() == '':
            return ''
        try:
            return load_secret(env, file, what)
        except SecretError as error:
            raise ConfigureFailure(str(error)) from None

    def _build(self, task) -> str:
        """Build the client, the link, the windows, the gate and the core; connect the HMI."""
        p = self._param
        url = p('cloud_url')
        if not url.startswith(('https://', 'http://127.0.0.1', 'http://localhost')):
            raise ConfigureFailure(f'cloud_url must be https:// (http only on loopback), got '
                                   f'{url!r}')
        token = self._secret(p('cloud_token_env'), p('cloud_token_file'), 'cloud token',
                             required=False)
        mapping = default_cloud_mapping()
        if p('signal_mapping_file'):
            mapping = SignalMapping.from_dicts(read_bounded(p('signal_mapping_file'),
                                                            'signal mapping file'))
        mapping.check_task(task.required_signals)
        decoder = BatchDecoder(mapping, p('time_zone'), max_clock_skew_s=p('max_clock_skew_s'))
        client = RemoteCanClient(url, task.vehicle_id, token=token, ca_bundle=p('cloud_ca_file'),
                                 timeout_s=p('read_timeout_s'),
                                 flash_timeout_s=p('flash_timeout_s'),
                                 read_retries=p('read_retries'))
        # The clock rule: the TBox's stamps (the vehicle's clock) are compared with this
        # node's clock (the wall, or /clock with use_sim_time), never with another one.
        link = CloudLink(client, decoder, task.default_map.shape, p('signal_poll_period_s'),
                         p('signal_duration_s'), p('abswitch'),
                         wall=lambda: self.get_clock().now().nanoseconds / 1e9,
                         max_signal_duration_s=p('max_signal_duration_s'),
                         source=self._object_source(task.vehicle_id))
        windows = WindowBuilder(mapping, task.sample_rate_hz, task.samples_per_window,
                                task.vehicle_id, p('driver_id'), '', 0, p('max_gap_s'),
                                p('stale_after_s'))
        core = BridgeCore(task.vehicle_default_map(), task.safety_gate(link.resolution_nm),
                          windows, link, settings=self.settings(task),
                          send=lambda frames: None, config_values={'cloud_url': url})
        # Polled samples arrive seconds late, stamped in UTC by the TBox: a map's activation
        # is on the node clock (UTC, within max_clock_skew_s of the TBox's).
        core.window_clock = 'node'
        if p('mqtt_port'):
            password = self._secret(p('mqtt_password_env'), p('mqtt_password_file'),
                                    'MQTT password', required=bool(p('mqtt_username')))
            try:
                hmi = HmiMqttListener(p('mqtt_host'), p('mqtt_port'), task.vehicle_id,
                                      p('driver_id'), p('mqtt_prefix'), p('mqtt_ca_file'),
                                      p('mqtt_username'), password)
            except (OSError, ValueError) as error:
                raise ConfigureFailure(f'remote HMI: {error}') from None
            core.command_sources = (hmi,)
        with self._lock:
            self.core, self.link = core, link
        return f'cloud {url} ({p("time_zone")})'

    def _object_source(self, vin: str):
        """Return the object-storage source of signal_source object_storage, else None."""
        p = self._param
        if p('signal_source') == 'get_signal':
            return None
        if p('signal_source') != 'object_storage':
            raise ConfigureFailure(f'signal_source must be get_signal or object_storage, got '
                                   f'{p("signal_source")!r}')
        from tspace_ros.storage import StorageError
        from tspace_ros.storage.s3_pool import s3_folder
        try:
            filesystem, bucket, prefix = s3_folder(
                p('object_storage_uri'), p('s3_endpoint'), p('s3_credentials_file'))
        except StorageError as error:
            raise ConfigureFailure(f'object_storage_uri: {error}') from None
        return ObjectBatchSource(filesystem, bucket, prefix, vin)

    def on_activate(self, state):
        """Start polling the cloud, then the core."""
        self.link.start()
        return super().on_activate(state)

    def on_deactivate(self, state):
        """Stop polling (the TBox falls back once the polls stop) and restore the default."""
        result = super().on_deactivate(state)
        self.link.stop()
        return result

    def _read(self, core: BridgeCore, now):
        """Feed the core the samples the link polled since the last cycle."""
        samples = self.link.take_samples()
        if samples:
            core.receive_samples(samples, now)
        return None

    def _release_transport(self) -> None:
        """Do nothing: the link is closed with the core (its polling thread stops)."""


def main(args=None) -> int:
    """Run the cloud_bridge node until it is shut down."""
    return run_lifecycle_node(CloudBridge, args,
                              executor_class=functools.partial(MultiThreadedExecutor, 4))


if __name__ == '__main__':
    sys.exit(main())
