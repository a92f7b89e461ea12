"""
Benchmark: the cloud path, through the real HTTP client and server on loopback.

1. get_signal to windows: one poll of the simulated cloud (aiohttp, no injected
   latency) until its samples are windows; and the decoding part alone.
2. A flash round trip (set_torque of 4 rows, write to outcome) under the
   configured flash latency (tspace's vans: a median of 3.2 s; here scaled by
   1/10 to keep the bench short; the bridge adds what is printed on top).
3. Vehicles per process: the decoding and windowing of one 4 s get_signal
   result per vehicle, as a bridge serving many VINs does it; how many vans one
   core keeps up with at one poll per 4 s, against the goal of 200.

Prints median and p99 of each, and the ratio against the named anchor.
"""

import datetime
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'))

from tspace_ros.can.windowing import WindowBuilder  # noqa: E402
from tspace_ros.cloud.batches import BatchDecoder  # noqa: E402
from tspace_ros.cloud.client import RemoteCanClient  # noqa: E402
from tspace_ros.cloud.link import CloudLink  # noqa: E402
from tspace_ros.cloud_sim import CloudSimServer  # noqa: E402
from tspace_ros.task.contract import load_task  # noqa: E402
from tspace_ros.vehicle.tbox import CloudSimConfig  # noqa: E402

TASK = load_task()
POLLS = 60
FLASHES = 30
GOAL_VANS = 200
TSPACE_FLASH_S = 3.2


def percentiles(values):
    """Return (median, p99) of a list of numbers."""
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def synthetic_result(start: datetime.datetime, seconds: int = 4):
    """Return a get_signal result of ``seconds`` s from start (UTC), as the TBox sends it."""
    stamps = [(start + datetime.timedelta(seconds=k)).strftime('%y%m%d%H%M%S') + '00'
              for k in range(seconds)]
    rng = np.random.default_rng(0)

    def lists(low, high, n=50):
        return [[f'{v:.2f}' for v in rng.uniform(low, high, n)] for _ in range(seconds)]
    return {'timestamps': stamps, 'list_speed_1s': lists(20, 60),
            'list_pedal_1s': lists(0, 40), 'list_brake_pressure_1s': lists(0, 5),
            'list_current_1s': lists(-50, 150), 'list_voltage_1s': lists(370, 390, 25)}


def feed(builder, decoder, result, now_ns):
    """Decode one get_signal result into the builder; return the windows."""
    windows = []
    for t, frame in decoder.decode(result, now_ns).samples:
        windows += builder.feed(t, frame)
    return windows


def main():
    """Run the three measurements and print them."""
    config = CloudSimConfig(real_time_factor=20.0, read_latency_s=(0, 0, 0),
                            flash_latency_s=(TSPACE_FLASH_S / 10, 0.5, 3.0), seed=0)
    with CloudSimServer(config) as cloud:
        van = cloud.van
        while van.state()['seconds'] < 8:
            time.sleep(0.05)
        client = RemoteCanClient(cloud.url, van.vin)
        link = CloudLink(client, BatchDecoder(), TASK.default_map.shape,
                         wall=van.vehicle_time_s)
        builder = WindowBuilder(link.decoder.mapping, TASK.sample_rate_hz,
                                TASK.samples_per_window, van.vin, 'driver0')
        poll_ms, decode_ms, windows = [], [], 0
        for _ in range(POLLS):
            time.sleep(0.1)  # 2 s of the van's time at 20x: new seconds to take
            start = time.perf_counter()
            reply = client.get_signal(4)
            got = time.perf_counter()
            windows += len(feed(builder, link.decoder, reply.result,
                                int(van.vehicle_time_s() * 1e9)))
            done = time.perf_counter()
            poll_ms.append((done - start) * 1e3)
            decode_ms.append((done - got) * 1e3)
        p50, p99 = percentiles(poll_ms)
        d50, d99 = percentiles(decode_ms)
        print(f'get_signal -> windows ({POLLS} polls of 4 s, {windows} windows): median '
              f'{p50:.1f} ms, p99 {p99:.1f} ms; decoding and windowing alone: median '
              f'{d50:.2f} ms, p99 {d99:.2f} ms (anchor: the upload of a 2 s window by tspace, '
              f'about 2500 ms: {2500 / p50:.0f}x)')

        default = TASK.vehicle_default_map()
        flash_ms = []
        for i in range(FLASHES):
            table = np.array(default.torque_nm)
            table[2:6] -= 10.0 * (i % 5 + 1)
            start = time.perf_counter()
            link.write(default.with_torque(table, policy_version=i + 1), 2, 4, i % 256, i + 1)
            while (outcome := link.take_outcome()) is None:
                time.sleep(0.001)
            flash_ms.append((time.perf_counter() - start) * 1e3)
            assert outcome.accepted, outcome.message
        f50, f99 = percentiles(flash_ms)
        print(f'flash round trip, 4 rows, configured latency median '
              f'{TSPACE_FLASH_S / 10 * 1e3:.0f} ms (tspace/10): median {f50:.0f} ms, p99 '
              f'{f99:.0f} ms; overhead over the configured median '
              f'{f50 - TSPACE_FLASH_S / 10 * 1e3:.1f} ms')
        client.close()

    # Vehicles per process: one 4 s result per van (50 Hz, voltage 25 Hz), decoded and windowed.
    vans = 50
    decoders = [BatchDecoder() for _ in range(vans)]
    builders = [WindowBuilder(decoders[0].mapping, TASK.sample_rate_hz,
                              TASK.samples_per_window, f'VAN{i}', 'driver0')
                for i in range(vans)]
    per_van_ms = []
    start_utc = datetime.datetime(2026, 7, 1, 12, 0, 0)
    for round_ in range(4):
        result = synthetic_result(start_utc + datetime.timedelta(seconds=4 * round_))
        for decoder, builder in zip(decoders, builders):
            start = time.perf_counter()
            feed(builder, decoder, result, int(4e18))
            per_van_ms.append((time.perf_counter() - start) * 1e3)
    v50, v99 = percentiles(per_van_ms)
    capacity = 4000.0 / v50
    print(f'one 4 s result per van, decoded and windowed: median {v50:.2f} ms, p99 '
          f'{v99:.2f} ms -> one core keeps up with about {capacity:.0f} vans at one poll per '
          f'4 s ({capacity / GOAL_VANS:.1f}x the goal of {GOAL_VANS})')


if __name__ == '__main__':
    main()
