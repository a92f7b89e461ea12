"""
The telematics cloud of the main job over the cloud (``scripts/run --link cloud``).

``CloudWorld`` starts, on 127.0.0.1 and free ports, everything a remote van
sits behind, and stops it by PID:

- the simulated cloud (``cloud_sim.CloudSimServer``: the van, its TBox and
  tspace's RemoteCAN on HTTPS with a bearer token), its durations in the van's
  seconds, so that a profile's latencies mean the same at any real-time factor;
  the van is parked (its clock stopped) until ``van.resume``;
- a CA and server certificate made at start (the bridge trusts only that CA);
- an MQTT broker (mosquitto) over TLS with a user and a generated password:
  the driver's remote HMI, which the job uses to begin and end episodes;
- with ``signals='object_storage'``, an S3 server (SeaweedFS) that the TBox
  uploads its one-second batches to and the bridge reads them from.

The secrets (token, MQTT password, S3 keys) are generated at start and live in
a private temporary directory (mode 0700, files 0600) removed at stop; the
bridge reads them from files there (``bridge_parameters``), never from a
parameter or the run directory. No ROS here: the job publishes the van's clock
(``van.true_time_s``) and drives the HMI through ``hmi``.
"""

import json
import os
import pathlib
import secrets
import shutil
import tempfile
import threading
from typing import Any, Dict, Optional

from tspace_ros import servers
from tspace_ros.cloud_sim import CloudSimServer
from tspace_ros.vehicle.tbox import CloudSimConfig

SIGNAL_SOURCES = ('get_signal', 'object_storage')
BUCKET = 'tbox'
HMI_PREFIX = 'tspace/hmi'
MQTT_USER = 'tspace_job'


def _secret_file(path: pathlib.Path, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as out:
        out.write(text)
    return str(path)


class CloudWorld:
    """The servers of a simulated remote van (see the module docstring); a context manager."""

    def __init__(self, config: CloudSimConfig, driver_id: str, signals: str = 'get_signal',
                 log_dir: Optional[pathlib.Path] = None, simulation=None):
        """
        Take the cloud's configuration (durations in the van's time) and the driver.

        simulation: the van's VehicleSimulation (default: the shipped van on the
        config's cycle); log_dir: where the servers' logs are copied at stop.
        """
        if signals not in SIGNAL_SOURCES:
            raise ValueError(f'signals must be one of {SIGNAL_SOURCES}, got {signals!r}')
        if not config.durations_in_vehicle_time:
            raise ValueError("the main job runs the cloud on the van's time "
                             '(durations_in_vehicle_time)')
        self.config, self.driver_id, self.signals = config, driver_id, signals
        self.log_dir, self.simulation = log_dir, simulation
        self.secrets_dir: Optional[pathlib.Path] = None
        self.certificates = None
        self.broker: Optional[servers.MqttBroker] = None
        self.s3: Optional[servers.S3Server] = None
        self.cloud: Optional[CloudSimServer] = None
        self._files: Dict[str, str] = {}
        self._hmi = None
        self._seq = 0
        self._hmi_lock = threading.Lock()

    @property
    def van(self):
        """Give the simulated van, a ``vehicle.tbox.TelematicsVan``."""
        return self.cloud.van

    def start(self) -> 'CloudWorld':
        """Start the servers (ServerUnavailable naming what to install if one is missing)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.secrets_dir = pathlib.Path(tempfile.mkdtemp(prefix='tspace-cloud-'))
        os.chmod(self.secrets_dir, 0o700)
        self.certificates = servers.make_certificates(self.secrets_dir / 'certs')
        token, password = secrets.token_urlsafe(32), secrets.token_urlsafe(18)
        self._files['token'] = _secret_file(self.secrets_dir / 'token', token)
        self._files['mqtt'] = _secret_file(self.secrets_dir / 'mqtt_password', password)
        self.broker = servers.MqttBroker(self.secrets_dir / 'mqtt', username=MQTT_USER,
                                         password=password,
                                         certificates=self.certificates).start()
        upload_fs, upload_root = None, ''
        if self.signals == 'object_storage':
            self.s3 = servers.S3Server(self.secrets_dir / 's3', buckets=[BUCKET]).start()
            self._files['s3'] = _secret_file(
                self.secrets_dir / 's3_credentials',
                f'[default]\naws_access_key_id = {self.s3.access_key}\n'
                f'aws_secret_access_key = {self.s3.secret_key}\n')
            upload_fs, upload_root = self.s3.filesystem(), f'{BUCKET}/fleet'
        self.cloud = CloudSimServer(self.config, token, str(self.certificates.cert),
                                    str(self.certificates.key), upload_fs=upload_fs,
                                    upload_root=upload_root,
                                    simulation=self.simulation, parked=True).start()
        self._connect_hmi(password)

    def _connect_hmi(self, password: str) -> None:
        import paho.mqtt.client as mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f'tspace_job_{secrets.token_hex(4)}')
        client.username_pw_set(MQTT_USER, password)
        client.tls_set(ca_certs=str(self.certificates.ca_cert))
        connected = threading.Event()
        client.on_connect = lambda c, u, f, reason, p: connected.set() \
            if not reason.is_failure else None
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        if not connected.wait(10.0):
            client.loop_stop()
            raise servers.ServerError('the job cannot connect to the MQTT broker')
        self._hmi = client

    def bridge_parameters(self, poll_period_s: float) -> Dict[str, Any]:
        """Return the cloud bridge's parameters for this world (secrets as file paths)."""
        values: Dict[str, Any] = {
            'cloud_url': self.cloud.url, 'cloud_ca_file': str(self.certificates.ca_cert),
            'cloud_token_file': self._files['token'], 'time_zone': self.config.time_zone,
            'driver_id': self.driver_id, 'signal_poll_period_s': poll_period_s,
            'mqtt_host': self.broker.host, 'mqtt_port': self.broker.port,
            'mqtt_ca_file': str(self.certificates.ca_cert), 'mqtt_username': MQTT_USER,
            'mqtt_password_file': self._files['mqtt'], 'mqtt_prefix': HMI_PREFIX,
            'signal_source': self.signals}
        if self.s3 is not None:
            values.update({'object_storage_uri': f's3://{BUCKET}/fleet',
                           's3_endpoint': self.s3.endpoint_url,
                           's3_credentials_file': self._files['s3']})
        return values

    def hmi(self, code: int) -> None:
        """Send the driver's remote HMI command (tspace's codes); wait for the broker."""
        with self._hmi_lock:
            self._seq += 1
            payload = json.dumps({'code': int(code), 'vin': self.van.vin, 'seq': self._seq})
            info = self._hmi.publish(f'{HMI_PREFIX}/{self.driver_id}/{self.van.vin}', payload,
                                     qos=1)
        info.wait_for_publish(timeout=10.0)
        if not info.is_published():
            raise servers.ServerError(f'the MQTT broker did not take HMI command {code}')

    def stop(self) -> None:
        """Stop everything this world started (by PID) and remove the secrets."""
        if self._hmi is not None:
            self._hmi.disconnect()
            self._hmi.loop_stop()
            self._hmi = None
        if self.cloud is not None:
            self.cloud.stop()
        for server in (self.s3, self.broker):
            if server is not None:
                server.stop()
        if self.secrets_dir is not None:
            if self.log_dir is not None:   # the servers' logs, for troubleshooting
                for name in ('mqtt', 's3'):
                    for log in (self.secrets_dir / name).glob('*.log'):
                        self.log_dir.mkdir(parents=True, exist_ok=True)
                        shutil.copy(log, self.log_dir / f'{name}_{log.name}')
            shutil.rmtree(self.secrets_dir, ignore_errors=True)
            self.secrets_dir = None

    def __enter__(self):
        """Start the servers."""
        return self.start()

    def __exit__(self, *exc):
        """Stop the servers."""
        self.stop()
