"""
``python -m tspace_ros.cloud_sim``: the simulated telematics cloud on a real HTTP server.

An aiohttp application serves tspace's RemoteCAN contract for one simulated
van (``vehicle.tbox.TelematicsVan``) on 127.0.0.1:

- ``POST /get_signal`` and ``POST /set_torque`` (JSON bodies, bearer token
  when one is configured: a missing or wrong token is HTTP 401), answered
  after a latency drawn from the configured distribution;
- ``GET /status``: what the van does (time, speed, map version, counts).

HTTPS when a certificate and key are given. ``CloudSimServer`` runs it in a
thread of its own for tests and the main job. Exit codes of the command: 0
stopped by a signal, 2 bad options.
"""

import argparse
import asyncio
import datetime
import hmac
import json
import queue
import signal
import ssl
import sys
import threading
import time
from typing import Optional

from aiohttp import web

from tspace_ros.cloud.client import load_secret, SecretError
from tspace_ros.cloud.object_batches import object_name, second_object
from tspace_ros.cloud.remote_can import RemoteCode
from tspace_ros.task.contract import load_task
from tspace_ros.vehicle.tbox import cloud_profile, CloudSimConfig, TelematicsVan

MAX_BODY_BYTES = 1024 * 1024
ADVANCE_PERIOD_S = 0.05


def _refusal(code: RemoteCode, status: int = 200) -> web.Response:
    return web.json_response({'success': False, 'reason': {'why': {'code': int(code)}}},
                             status=status)


def make_app(van: TelematicsVan, token: str = '') -> web.Application:
    """Return the aiohttp application of one van."""
    expected = f'Bearer {token}'.encode() if token else b''

    async def body_of(request: web.Request):
        if expected and not hmac.compare_digest(
                request.headers.get('Authorization', '').encode(), expected):
            raise web.HTTPUnauthorized(text='{"success": false}',
                                       content_type='application/json')
        try:
            return json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return None

    async def get_signal(request: web.Request) -> web.Response:
        body = await body_of(request)
        if body is None:
            return _refusal(RemoteCode.BAD_PARAMETER, 400)
        await asyncio.sleep(van.latency('read'))
        return web.json_response(van.get_signal(body, time.time()))

    async def set_torque(request: web.Request) -> web.Response:
        body = await body_of(request)
        if body is None:
            return _refusal(RemoteCode.BAD_PARAMETER, 400)
        latency = van.latency('flash')
        reply = van.set_torque(body, time.time(), latency)
        await asyncio.sleep(latency)
        return web.json_response(reply)

    async def status(request: web.Request) -> web.Response:
        van.advance(time.time())
        return web.json_response(van.state())

    async def drive(app: web.Application):
        async def loop():
            while True:
                van.advance(time.time())
                await asyncio.sleep(ADVANCE_PERIOD_S)
        task = asyncio.get_running_loop().create_task(loop())
        yield
        task.cancel()

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes([web.post('/get_signal', get_signal), web.post('/set_torque', set_torque),
                    web.get('/status', status)])
    app.cleanup_ctx.append(drive)
    return app


class ObjectUploader:
    """The TBox's uploads: one object per second, put by a thread of its own."""

    def __init__(self, filesystem, bucket: str, prefix: str, vin: str):
        """Take a pyarrow filesystem (S3) and the folder <bucket>/<prefix>/<vin>."""
        self.fs = filesystem
        self.folder = '/'.join(p for p in (bucket, prefix.strip('/'), vin) if p)
        self.queue: 'queue.Queue' = queue.Queue(maxsize=3600)
        self.uploaded = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name='tbox_upload', daemon=True)
        self._thread.start()

    def __call__(self, utc_ns: int, second) -> None:
        """Queue one second (never blocks; a full queue drops it, counted)."""
        try:
            self.queue.put_nowait((utc_ns, second))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            utc_ns, second = item
            try:
                with self.fs.open_output_stream(f'{self.folder}/{object_name(utc_ns)}') as out:
                    out.write(second_object(second))
                self.uploaded += 1
            except (OSError, ValueError):
                self.failed += 1

    def close(self) -> None:
        """Upload what is queued, then stop."""
        self.queue.put(None)
        self._thread.join(timeout=30.0)


class CloudSimServer:
    """The simulated cloud in a thread of its own, on 127.0.0.1 and a free port."""

    def __init__(self, config: CloudSimConfig, token: str = '', certfile: str = '',
                 keyfile: str = '', port: int = 0, upload_fs=None, upload_root: str = '',
                 simulation=None, parked: bool = False):
        """
        Build the van; start() serves it.

        simulation: the van's VehicleSimulation (default: the shipped van on config.cycle);
        parked: the van waits (its clock stopped) until ``van.resume``.

        upload_fs, upload_root ('bucket/prefix'): the TBox also uploads every second to
        object storage, ``<bucket>/<prefix>/<vin>/<utc ms>.json``.
        """
        self.uploader = None
        if upload_fs is not None:
            bucket, _, prefix = upload_root.strip('/').partition('/')
            self.uploader = ObjectUploader(upload_fs, bucket, prefix,
                                           config.vin or load_task().vehicle_id)
        self.van = TelematicsVan(config, time.time(), simulation=simulation,
                                 upload=self.uploader, parked=parked)
        self.token = token
        self._ssl = None
        if certfile:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(certfile, keyfile or None)
        self._port = port
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    @property
    def url(self) -> str:
        """Return the base URL (http or https)."""
        return f'{"https" if self._ssl else "http"}://127.0.0.1:{self.port}'

    def start(self) -> 'CloudSimServer':
        """Serve in a thread; return once the port is bound."""
        ready = threading.Event()
        failure = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner = web.AppRunner(make_app(self.van, self.token), access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, '127.0.0.1', self._port,
                                   ssl_context=self._ssl)
                loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]
            except Exception as error:  # noqa: B902 - reported to start()
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name='cloud_sim', daemon=True)
        self._thread.start()
        ready.wait(10.0)
        if failure:
            raise OSError(f'cloud_sim cannot serve: {failure[0]}')
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10.0)
            self._thread = None
        if self.uploader is not None:
            self.uploader.close()
            self.uploader = None

    def __enter__(self):
        """Start serving."""
        return self.start()

    def __exit__(self, *exc):
        """Stop serving."""
        self.stop()


def _triple(text: str):
    values = tuple(float(v) for v in text.split(','))
    if len(values) != 3 or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError('expected median,sigma,max (>= 0), e.g. 3.2,0.5,30')
    return values


def _codes(text: str):
    return tuple(int(v) for v in text.split(',') if v)


def main(argv=None) -> int:
    """Run the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog='python -m tspace_ros.cloud_sim',
        description="A simulated telematics cloud: the simulated van behind tspace's RemoteCAN "
                    'contract (get_signal, set_torque) on 127.0.0.1.')
    parser.add_argument('--profile', default='', help='a profile of config/cloud/profiles.yaml '
                        "(e.g. tspace_measured: tspace's latencies and success rates); the "
                        'options given win over it')
    parser.add_argument('--port', type=int, default=0, help='0 = a free port (printed)')
    parser.add_argument('--vin', default='', help="default: the task's vehicle id")
    parser.add_argument('--cycle', default='wltc3b')
    parser.add_argument('--time-zone', default='UTC', help='the site (IANA name)')
    parser.add_argument('--real-time-factor', type=float, default=1.0)
    parser.add_argument('--clock-skew-s', type=float, default=0.0)
    parser.add_argument('--read-success', type=float, default=1.0)
    parser.add_argument('--flash-success', type=float, default=1.0)
    parser.add_argument('--read-failure-codes', type=_codes, default=(304, 311))
    parser.add_argument('--flash-failure-codes', type=_codes, default=(2001, 302))
    parser.add_argument('--read-latency', type=_triple, default=(0.05, 0.3, 2.5),
                        help='median,sigma,max s (log-normal)')
    parser.add_argument('--flash-latency', type=_triple, default=(0.2, 0.3, 30.0),
                        help="median,sigma,max s (tspace's vans: 3.2,0.5,30)")
    parser.add_argument('--short-list-probability', type=float, default=0.05)
    parser.add_argument('--voltage-rate-hz', type=int, default=25)
    parser.add_argument('--ai-mode-off', action='store_true')
    parser.add_argument('--tbox-timeout-s', type=float, default=30.0)
    parser.add_argument('--durations-in-vehicle-time', action='store_true',
                        help="latencies and --tbox-timeout-s are the van's seconds (divided "
                        'by --real-time-factor on the wall)')
    parser.add_argument('--token-env', default='', help='bearer token from this variable')
    parser.add_argument('--token-file', default='', help='bearer token from this file')
    parser.add_argument('--cert', default='', help='serve HTTPS with this certificate')
    parser.add_argument('--key', default='')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--s3-uri', default='', help='the TBox also uploads every second to '
                        's3://bucket/prefix/<vin>/ (credentials: AWS_ACCESS_KEY_ID and '
                        'AWS_SECRET_ACCESS_KEY)')
    parser.add_argument('--s3-endpoint', default='', help='S3 endpoint, e.g. '
                        'http://127.0.0.1:8333 (default: TSPACE_S3_ENDPOINT, else AWS)')
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument('--profile', default='')
    try:
        chosen = profile.parse_known_args(argv)[0].profile
        if chosen:
            values = cloud_profile(chosen)
            renamed = {'read_latency_s': 'read_latency', 'flash_latency_s': 'flash_latency',
                       'ai_mode': None, 'history_s': None, 'vcu_budget_nm': None}
            unsupported = [k for k in values if renamed.get(k, k) is None]
            if unsupported:
                raise ValueError(f'profile {chosen}: {unsupported} are not options of cloud_sim')
            parser.set_defaults(**{renamed.get(k, k): v for k, v in values.items()})
    except ValueError as error:
        print(f'cloud_sim: {error}', file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        token = load_secret(args.token_env, args.token_file, 'cloud_sim token')
        config = CloudSimConfig(
            vin=args.vin, cycle=args.cycle, time_zone=args.time_zone,
            real_time_factor=args.real_time_factor, clock_skew_s=args.clock_skew_s,
            read_success=args.read_success, flash_success=args.flash_success,
            read_failure_codes=args.read_failure_codes,
            flash_failure_codes=args.flash_failure_codes, read_latency_s=args.read_latency,
            flash_latency_s=args.flash_latency,
            short_list_probability=args.short_list_probability,
            voltage_rate_hz=args.voltage_rate_hz, ai_mode=not args.ai_mode_off,
            tbox_timeout_s=args.tbox_timeout_s,
            durations_in_vehicle_time=args.durations_in_vehicle_time, seed=args.seed,
            start_utc=datetime.datetime.now(datetime.timezone.utc))
        upload_fs, upload_root = None, ''
        if args.s3_uri:
            from tspace_ros.storage import StorageError
            from tspace_ros.storage.s3_pool import s3_folder
            try:
                upload_fs, bucket, prefix = s3_folder(args.s3_uri, args.s3_endpoint)
                upload_root = '/'.join(p for p in (bucket, prefix) if p)
            except StorageError as error:
                raise ValueError(str(error)) from None
        server = CloudSimServer(config, token, args.cert, args.key, args.port, upload_fs,
                                upload_root).start()
    except (SecretError, ValueError, OSError, ssl.SSLError) as error:
        print(f'cloud_sim: {error}', file=sys.stderr)
        return 2
    print(json.dumps({'url': server.url, 'vin': server.van.vin}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
