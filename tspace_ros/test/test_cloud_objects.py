"""
TBox batches through real object storage (SeaweedFS S3 on loopback).

The simulated TBox uploads one object per second; the cloud link reads them
straight from the bucket in place of get_signal polling, and the task's windows
come out; objects that are not seconds are counted and skipped, and a bucket
the link cannot list is a typed reply, never an exception.
"""

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
