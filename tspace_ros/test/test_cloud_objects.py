"""
TBox batches through real object storage (SeaweedFS S3 on loopback).

The simulated TBox uploads one object per second; the cloud link reads them
straight from the bucket in place of get_signal polling, and the task's windows
come out; objects that are not seconds are counted and skipped, and a bucket
the link cannot list is a typed reply, never an exception.
"""

import json

from hypothesis import given, HealthCheck, settings, strategies as st
import pytest
from ros_test_support import poll_until

from tspace_ros import servers
from tspace_ros.can.decoder import DecodedFrame
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.cloud.batches import BatchDecoder
from tspace_ros.cloud.client import RemoteCanClient
from tspace_ros.cloud.link import CloudLink
from tspace_ros.cloud.object_batches import object_name, ObjectBatchSource
from tspace_ros.cloud.remote_can import RemoteCode
from tspace_ros.cloud_sim import CloudSimServer
from tspace_ros.task.contract import load_task
from tspace_ros.vehicle.tbox import CloudSimConfig

TASK = load_task()


@pytest.fixture(scope='module')
def s3():
    try:
        servers.find_weed()
    except servers.ServerUnavailable as error:
        pytest.skip(str(error))
    with servers.S3Server(buckets=['tbox']) as server:
        yield server


def test_the_link_reads_the_tboxs_uploads_into_windows(s3):
    fs = s3.filesystem()
    config = CloudSimConfig(real_time_factor=20.0, time_zone='Europe/Berlin',
                            read_latency_s=(0, 0, 0), flash_latency_s=(0, 0, 0))
    with CloudSimServer(config, upload_fs=fs, upload_root='tbox/fleet') as cloud:
        poll_until(lambda: cloud.uploader.uploaded >= 12, 15.0)
        source = ObjectBatchSource(fs, 'tbox', 'fleet', cloud.van.vin, max_per_fetch=6)
        # Something that is not a second, among the seconds.
        with fs.open_output_stream(f'tbox/fleet/{cloud.van.vin}/{object_name(1)}') as out:
            out.write(b'<html>not a second</html>')
        link = CloudLink(RemoteCanClient(cloud.url, cloud.van.vin), BatchDecoder(
            time_zone='Europe/Berlin'), TASK.default_map.shape, wall=cloud.van.vehicle_time_s,
            source=source)
        builder = WindowBuilder(link.decoder.mapping, TASK.sample_rate_hz,
                                TASK.samples_per_window, cloud.van.vin, 'driver0')
        windows = []
        for _ in range(4):
            link.poll_once()
            for name, t, value in link.take_samples():
                message, signal = name.split('.', 1)
                windows += builder.feed(t, DecodedFrame(message, {signal: value}))
        assert source.counts['not_json'] == 1
        assert source.counts['seconds_read'] >= 12
        assert len(windows) >= 6
        assert windows[-1].window.signal_names == TASK.signal_names
        stats = link.stats()
        assert stats['objects_0'] >= 2 and stats['objects_not_json'] == 1
        assert 'get_signal_0' not in stats  # nothing was polled over HTTP
    assert cloud.van.state()['counts'].get('get_signal_ok', 0) == 0


def test_a_bucket_the_link_cannot_reach_is_a_typed_reply(s3):
    fs = s3.filesystem(retries=1)
    missing = ObjectBatchSource(fs, 'tbox', 'nobody', 'VIN-NONE')
    assert missing.fetch().code == RemoteCode.NOT_ENOUGH_DATA  # nothing uploaded yet
    from pyarrow import fs as pafs
    wrong = pafs.S3FileSystem(access_key='wrong', secret_key='wrong',
                              endpoint_override=s3.endpoint_url.split('://')[1], scheme='http',
                              region=s3.region, connect_timeout=1, request_timeout=2,
                              retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    reply = ObjectBatchSource(wrong, 'tbox', 'fleet', 'VIN1').fetch()
    assert reply.code == RemoteCode.NO_OBJECT_STORAGE_LINK and 'object storage' in reply.message


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(
    st.binary(max_size=400),
    st.dictionaries(st.sampled_from(['timestamp', 'list_speed_1s', 'list_voltage_1s', 'x']),
                    st.one_of(st.none(), st.text(max_size=14), st.integers(),
                              st.lists(st.one_of(st.text(max_size=6), st.floats()), max_size=5)),
                    max_size=4).map(lambda d: json.dumps(d).encode())))
def test_property_any_object_is_a_second_or_counted_never_a_crash(tmp_path, payload):
    # Any object in the vehicle's folder: the source never raises; it is read as a second
    # or counted under a reason, and the decoder downstream never raises either.
    from pyarrow import fs as pafs
    folder = tmp_path / 'bucket' / 'fleet' / 'VIN-P'
    folder.mkdir(parents=True, exist_ok=True)
    name = object_name(len(list(folder.iterdir())) * 10 ** 9 + 10 ** 18)
    (folder / name).write_bytes(payload)
    source = ObjectBatchSource(pafs.LocalFileSystem(), str(tmp_path / 'bucket'), 'fleet',
                               'VIN-P')
    source.last_name = ''
    before = sum(source.counts.values())
    reply = source.fetch()
    if reply.ok:
        assert len(reply.result['timestamps']) >= 1
        BatchDecoder().decode(reply.result, 4 * 10 ** 18)
    else:
        assert reply.code == RemoteCode.NOT_ENOUGH_DATA
        assert sum(source.counts.values()) > before
