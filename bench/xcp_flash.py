"""
Benchmark: a 4-row torque-map flash by XCP (pyxcp master, the simulated VCU's slave).

Over a python-can virtual bus, each flash goes through ``XcpLink`` and the bridge
core as on a vehicle: gate, (first time: CONNECT, seed and key), working page
written with DOWNLOAD/DOWNLOAD_NEXT, BUILD_CHECKSUM, read-back UPLOAD of the
whole page, page switch. Prints the median and p99 of the whole flash and of
the restore (page switch back), next to tspace's XCP script (about 3 s per
flash on its vans, over a real bus and a telematics box).
"""

import logging
import pathlib
import statistics
import sys
import threading
import time
import uuid

import can
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'))

from tspace_ros.can.bridge import CanBridgeCore  # noqa: E402
from tspace_ros.can.dbc import load_dbc  # noqa: E402
from tspace_ros.can.windowing import WindowBuilder  # noqa: E402
from tspace_ros.can.xcp_link import (encode_rows, xcp_master_factory, XcpLink,  # noqa: E402
                                     XcpMapLayout)
from tspace_ros.task.files import load_default_map  # noqa: E402
from tspace_ros.torque_map import apply_action  # noqa: E402
from tspace_ros.torque_map.safety_gate import SafetyGate  # noqa: E402
from tspace_ros.vehicle.xcp_slave import default_key, XcpSlave  # noqa: E402

ADDRESS = 0x80010000
FLASHES = 200


def percentiles(samples):
    """Return (median, p99) of a list of numbers."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1,
                                                   round(0.99 * (len(ordered) - 1)))]


def main():
    """Flash FLASHES times, restore as often; print the figures."""
    logging.getLogger('pyxcp').setLevel(logging.CRITICAL)
    default = load_default_map()
    channel = f'xcp_bench_{uuid.uuid4().hex[:6]}'
    slave = XcpSlave(encode_rows(default.torque_nm), ADDRESS, timeout_s=0.0)
    bus = can.Bus(interface='virtual', channel=channel)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            frame = bus.recv(timeout=0.01)
            if frame is not None:
                for answer in slave.on_frame(frame, time.monotonic()):
                    bus.send(answer)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    link = XcpLink(xcp_master_factory('virtual', channel, 0x7E0, 0x7E1, timeout_s=1.0),
                   XcpMapLayout(ADDRESS, *default.shape), key_of=default_key)
    gate = SafetyGate(default, 250.0, 1.0, 4, resolution_nm=0.0)
    core = CanBridgeCore(load_dbc(), default, gate, WindowBuilder(), link=link)
    rng = np.random.default_rng(0)
    flash_ms, restore_ms, failures = [], [], 0
    for i in range(FLASHES):
        row = int(rng.integers(0, default.shape[0] - 4))
        proposed = apply_action(default, core.active_map,
                                rng.uniform(-1, 0, (4, default.shape[1])), row,
                                policy_version=i + 1)
        start = time.perf_counter()
        core.begin_flash(proposed, row, 4)
        result = core.poll(0.0)
        flash_ms.append((time.perf_counter() - start) * 1e3)
        failures += not result.success
        if not result.success and failures <= 3:
            print('  failed:', result.error.name, result.message[:300])
        if i % 10 == 9:
            start = time.perf_counter()
            core.begin_restore_default()
            failures += not core.poll(0.0).success
            restore_ms.append((time.perf_counter() - start) * 1e3)
    link.close()
    stop.set()
    thread.join(2.0)
    bus.shutdown()
    first = flash_ms[0]
    median, p99 = percentiles(flash_ms[1:])
    r_median, r_p99 = percentiles(restore_ms)
    print(f'XCP flash of 4 rows x {default.shape[1]} (float32), pyxcp over a python-can '
          f'virtual bus, {FLASHES} flashes, {failures} failed')
    print(f'  first flash (CONNECT, seed and key): {first:.1f} ms')
    print(f'  flash: median {median:.1f} ms, p99 {p99:.1f} ms  '
          f'(tspace XCP script: ~3000 ms, ratio {3000 / median:.0f}x)')
    print(f'  restore (switch to the reference page): median {r_median:.1f} ms, '
          f'p99 {r_p99:.1f} ms')
    print(f'  slave: {slave.stats["commands"]} commands, '
          f'{slave.stats.get("command_0xef", 0)} DOWNLOAD_NEXT')
    return 0 if failures == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
