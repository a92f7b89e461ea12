"""
Benchmark: several vehicles through the cloud, in one process or in one process each.

N simulated vans (the simulated cloud, one HTTP server each, real time) are
polled by N ``CloudLink``s (get_signal every 0.5 s, decoded and windowed):

- one process holding all N links (a cloud bridge serving several VINs);
- N processes holding one link each (one cloud bridge per VIN).

Prints, side by side, the CPU time per van and second, the resident memory per
van, and the windows built, with the ratio of the two set-ups. The anchor is the
single process.
"""

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'))

from tspace_ros.can.decoder import DecodedFrame  # noqa: E402
from tspace_ros.can.windowing import WindowBuilder  # noqa: E402
from tspace_ros.cloud.batches import BatchDecoder  # noqa: E402
from tspace_ros.cloud.client import RemoteCanClient  # noqa: E402
from tspace_ros.cloud.link import CloudLink  # noqa: E402
from tspace_ros.task.contract import load_task  # noqa: E402

VANS = 8
SECONDS = 12.0
POLL_S = 0.5


def worker(urls, seconds: float) -> dict:
    """Poll every URL's van for `seconds`; return CPU time, peak RSS and windows."""
    task = load_task()
    links, builders = [], []
    for i, url in enumerate(urls):
        link = CloudLink(RemoteCanClient(url, task.vehicle_id), BatchDecoder(),
                         task.default_map.shape, poll_period_s=POLL_S)
        links.append(link)
        builders.append(WindowBuilder(link.decoder.mapping, task.sample_rate_hz,
                                      task.samples_per_window, f'VAN{i}', 'driver0'))
    start_cpu = time.process_time()
    for link in links:
        link.start()
    windows = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        for link, builder in zip(links, builders):
            for name, t, value in link.take_samples():
                message, signal = name.split('.', 1)
                windows += len(builder.feed(t, DecodedFrame(message, {signal: value})))
    cpu_s = time.process_time() - start_cpu
    for link in links:
        link.close()
    return {'cpu_s': cpu_s, 'rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'windows': windows, 'vans': len(urls)}


def run_workers(groups, seconds: float):
    """Start one worker process per group of URLs; return their results."""
    procs = [subprocess.Popen([sys.executable, __file__, '--worker', ','.join(group),
                               '--seconds', str(seconds)], stdout=subprocess.PIPE, text=True)
             for group in groups]
    return [json.loads(p.communicate(timeout=seconds + 60)[0].strip().splitlines()[-1])
            for p in procs]


def main():
    """Serve the vans, run both set-ups, print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--worker', default='')
    parser.add_argument('--seconds', type=float, default=SECONDS)
    parser.add_argument('--vans', type=int, default=VANS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker.split(','), args.seconds)))
        return
    from tspace_ros.cloud_sim import CloudSimServer
    from tspace_ros.vehicle.tbox import CloudSimConfig
    servers = [CloudSimServer(CloudSimConfig(read_latency_s=(0.02, 0.2, 0.2), seed=i)).start()
               for i in range(args.vans)]
    try:
        time.sleep(5.0)  # a few seconds of signals in every van's history
        urls = [s.url for s in servers]
        (one,) = run_workers([urls], args.seconds)
        each = run_workers([[u] for u in urls], args.seconds)
    finally:
        for server in servers:
            server.stop()
    n = args.vans
    one_cpu = one['cpu_s'] / args.seconds / n * 100
    each_cpu = sum(r['cpu_s'] for r in each) / args.seconds / n * 100
    one_rss, each_rss = one['rss_mib'] / n, sum(r['rss_mib'] for r in each) / n
    print(f'{n} vans, get_signal every {POLL_S} s, {args.seconds:g} s (the simulated cloud in '
          'another process)')
    print(f'  one process for all:    {one_cpu:5.2f} % of a core per van, {one_rss:6.1f} MiB '
          f'per van ({one["rss_mib"]:.0f} MiB in all), {one["windows"]} windows')
    print(f'  one process per van:    {each_cpu:5.2f} % of a core per van, {each_rss:6.1f} MiB '
          f'per van, {sum(r["windows"] for r in each)} windows')
    print(f'  per-van cost, one process per van / one for all: CPU {each_cpu / one_cpu:.1f}x, '
          f'memory {each_rss / one_rss:.1f}x')


if __name__ == '__main__':
    main()
