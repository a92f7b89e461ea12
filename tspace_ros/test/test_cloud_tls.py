"""
The RemoteCAN client over HTTPS against the simulated cloud: TLS failures are typed.

With the right CA the calls succeed; a client that trusts another CA, a server
certificate that has expired, and plain HTTP against an HTTPS server each end
in a typed connection failure that names TLS, never an exception, and nothing
reaches the van.
"""

import pytest

from tspace_ros import servers
from tspace_ros.cloud.batches import BatchDecoder
from tspace_ros.cloud.client import RemoteCanClient
from tspace_ros.cloud.link import CloudLink
from tspace_ros.cloud.remote_can import RemoteCode
from tspace_ros.cloud_sim import CloudSimServer
from tspace_ros.task.contract import load_task
from tspace_ros.vehicle.tbox import CloudSimConfig

TASK = load_task()
CONFIG = {'real_time_factor': 40.0, 'read_latency_s': (0, 0, 0), 'flash_latency_s': (0, 0, 0)}


@pytest.fixture(scope='module')
def certificates(tmp_path_factory):
    return (servers.make_certificates(tmp_path_factory.mktemp('good')),
            servers.make_certificates(tmp_path_factory.mktemp('other')),
            servers.make_certificates(tmp_path_factory.mktemp('expired'), expired=True))


def _serve(files):
    return CloudSimServer(CloudSimConfig(**CONFIG), certfile=str(files.cert),
                          keyfile=str(files.key))


def test_https_with_the_right_ca_works_and_a_wrong_ca_is_refused(certificates):
    good, other, _ = certificates
    with _serve(good) as cloud:
        assert cloud.url.startswith('https://')
        trusted = RemoteCanClient(cloud.url, cloud.van.vin, ca_bundle=str(good.ca_cert))
        table = TASK.default_map.torque_nm
        assert trusted.set_torque(table[0:1] - 10.0, 0, table.shape).ok
        untrusted = RemoteCanClient(cloud.url, cloud.van.vin, ca_bundle=str(other.ca_cert),
                                    read_retries=0)
        before = cloud.van.state()['counts'].get('set_torque_ok', 0)
        for reply in (untrusted.get_signal(), untrusted.set_torque(table[0:1], 0, table.shape)):
            assert reply.code == RemoteCode.CONNECTION and 'TLS' in reply.message
            assert reply.http_status == 0
        # What the diagnostics show of it: the code and the reason, through the link.
        link = CloudLink(untrusted, BatchDecoder(), table.shape)
        assert link.poll_once() == 0
        stats = link.stats()
        assert stats['get_signal_1000'] == 1 and 'TLS' in stats['last_get_signal']
        assert cloud.van.state()['counts'].get('set_torque_ok', 0) == before
        plain = RemoteCanClient(cloud.url.replace('https://', 'http://'), cloud.van.vin,
                                read_retries=0)
        assert plain.get_signal().code == RemoteCode.CONNECTION


def test_an_expired_server_certificate_is_refused(certificates):
    _, _, expired = certificates
    with _serve(expired) as cloud:
        client = RemoteCanClient(cloud.url, cloud.van.vin, ca_bundle=str(expired.ca_cert),
                                 read_retries=0)
        reply = client.get_signal()
        assert reply.code == RemoteCode.CONNECTION and 'TLS' in reply.message
        assert 'expired' in reply.message.lower() or 'certificate' in reply.message.lower()
