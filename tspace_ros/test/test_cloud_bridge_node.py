"""
The cloud_bridge node in its own process, against the simulated telematics cloud.

The same interfaces as the CAN bridge (windows, torque_map/active, the flash
action, diagnostics) over tspace's RemoteCAN contract on a real HTTP server:
windows of the task from ragged one-second batches, a gated flash of only the
admitted rows reaches the van, a map outside the gate never leaves the bridge,
a failed flash keeps the last good map, deactivating restores the default, a
missing token fails configure naming the cause.
"""

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
import numpy as np
from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_test_support import NodeProcess, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.action import FlashTorqueMap
from tspace_interfaces.msg import ObservationWindow, TorqueMap as TorqueMapMsg

from tspace_ros.cloud_sim import CloudSimServer
from tspace_ros.nodes.messages import torque_map_to_msg
from tspace_ros.task.contract import load_task
from tspace_ros.torque_map import apply_action
from tspace_ros.vehicle.tbox import CloudSimConfig

TIMEOUT_S = 25.0
TASK = load_task()
DEFAULT = TASK.vehicle_default_map()
RESULT = FlashTorqueMap.Result
TOKEN = 'cloud-bridge-test-token'


def _bridge(tmp_path, name, url, *params, token=TOKEN):
    args = ['-r', f'__ns:=/{name}', '-p', f'cloud_url:={url}', '-p', 'time_zone:=Europe/Berlin',
            '-p', 'signal_poll_period_s:=0.5', '-p', 'flash_timeout_s:=5.0',
            '-p', 'vehicle_offline_s:=5.0', '-p', 'diagnostics_period_s:=0.5']
    for param in params:
        args += ['-p', param]
    return NodeProcess('tspace_ros.nodes.cloud_bridge', tmp_path / f'{name}.log', args,
                       env={'TSPACE_CLOUD_TOKEN': token} if token else {})


def _send(ros, client, torque_map, row_start, row_count):
    assert spin_until(ros.executor, client.server_is_ready, TIMEOUT_S)
    future = client.send_goal_async(FlashTorqueMap.Goal(
        map=torque_map_to_msg(torque_map, 0, row_start, row_count)))
    assert spin_until(ros.executor, future.done, TIMEOUT_S)
    handle = future.result()
    assert handle.accepted
    result = handle.get_result_async()
    assert spin_until(ros.executor, result.done, TIMEOUT_S)
    return result.result().result


def test_windows_gated_flashes_and_restore_over_the_cloud(tmp_path):
    config = CloudSimConfig(time_zone='Europe/Berlin', read_latency_s=(0.05, 0.2, 0.5),
                            flash_latency_s=(0.3, 0.2, 1.0), seed=3)
    with CloudSimServer(config, token=TOKEN) as cloud, \
            _bridge(tmp_path, 'cloud_van', cloud.url) as process, RosContext() as ros:
        windows, maps, diagnostics = [], [], []
        probe = ros.node('cloud_probe')
        probe.create_subscription(ObservationWindow, '/cloud_van/observation/window',
                                  windows.append, 50)
        probe.create_subscription(TorqueMapMsg, '/cloud_van/torque_map/active', maps.append,
                                  QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                             durability=DurabilityPolicy.TRANSIENT_LOCAL))
        probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 50)
        flash = ActionClient(probe, FlashTorqueMap, '/cloud_van/flash_torque_map')
        lifecycle = LifecycleDriver(ros, 'cloud_van/cloud_bridge')
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE), process.output()
        assert spin_until(ros.executor, lambda: len(windows) >= 2, TIMEOUT_S), process.output()
        window = windows[-1]
        assert window.vehicle_id == TASK.vehicle_id
        assert window.samples_per_signal == TASK.samples_per_window
        assert list(window.units) == ['km/h', '1', 'bar', 'A', 'V']
        samples = np.frombuffer(window.samples, np.float32).reshape(5, -1)
        assert np.all(np.isfinite(samples)) and samples[4].min() > 300.0

        action = np.full((4, DEFAULT.shape[1]), -0.6)
        proposed = apply_action(DEFAULT, DEFAULT, action, 3, policy_version=5)
        result = _send(ros, flash, proposed, 3, 4)
        assert result.success, result.message
        assert result.active_map.policy_version == 5
        assert spin_until(ros.executor, lambda: not cloud.van.state()['on_default_map'], 5.0)
        np.testing.assert_allclose(cloud.van.sim.vcu.active_map.torque_nm, proposed.torque_nm,
                                   atol=1e-3)
        flashes = cloud.van.state()['counts'].get('set_torque_ok', 0)

        # Outside the gate: refused before anything is sent.
        too_low = DEFAULT.with_torque(DEFAULT.torque_nm - 400.0, policy_version=6)
        rejected = _send(ros, flash, too_low, 0, 4)
        assert rejected.error_code == RESULT.ERROR_REJECTED_BY_SAFETY_GATE
        assert cloud.van.state()['counts'].get('set_torque_ok', 0) == flashes

        # A flash the cloud refuses keeps the last good map.
        cloud.van.config.flash_success = 0.0
        cloud.van.config.flash_failure_codes = (2001,)
        refused = _send(ros, flash, apply_action(DEFAULT, proposed, action * 0.5, 3,
                                                 policy_version=7), 3, 4)
        assert not refused.success and 'ab_switch_failed' in refused.message
        assert refused.active_map.policy_version == 5
        cloud.van.config.flash_success = 1.0

        assert spin_until(ros.executor, lambda: any(
            'cloud bridge' in st.name and any(v.key.startswith('link_get_signal_p99')
                                              for v in st.values)
            for d in diagnostics for st in d.status), TIMEOUT_S)

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert spin_until(ros.executor, lambda: cloud.van.state()['on_default_map'], 5.0)
        assert spin_until(ros.executor, lambda: maps and maps[-1].policy_version == 0, 5.0)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
        assert lifecycle.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert process.wait(TIMEOUT_S) == 0, process.output()


def test_a_missing_token_file_and_a_plain_http_remote_fail_configure(tmp_path):
    with _bridge(tmp_path, 'cloud_bad', 'http://example.com',
                 token='') as process, RosContext() as ros:
        lifecycle = LifecycleDriver(ros, 'cloud_bad/cloud_bridge')
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert spin_until(ros.executor, lambda: 'https://' in process.output(), 5.0)
    with _bridge(tmp_path, 'cloud_bad2', 'https://127.0.0.1:9',
                 f'cloud_token_file:={tmp_path / "none"}') as process, RosContext() as ros:
        lifecycle = LifecycleDriver(ros, 'cloud_bad2/cloud_bridge')
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert spin_until(ros.executor, lambda: 'cannot read secret file' in process.output(),
                          5.0)


def test_signals_straight_from_object_storage(tmp_path):
    from tspace_ros import servers
    try:
        servers.find_weed()
    except servers.ServerUnavailable as error:
        import pytest
        pytest.skip(str(error))
    config = CloudSimConfig(time_zone='Europe/Berlin', read_latency_s=(0, 0, 0), seed=4)
    with servers.S3Server(buckets=['tbox']) as s3, \
            CloudSimServer(config, token=TOKEN, upload_fs=s3.filesystem(),
                           upload_root='tbox/fleet') as cloud:
        args = ['-r', '__ns:=/cloud_s3', '-p', f'cloud_url:={cloud.url}',
                '-p', 'time_zone:=Europe/Berlin', '-p', 'signal_poll_period_s:=0.5',
                '-p', 'signal_source:=object_storage',
                '-p', 'object_storage_uri:=s3://tbox/fleet',
                '-p', f's3_endpoint:={s3.endpoint_url}']
        with NodeProcess('tspace_ros.nodes.cloud_bridge', tmp_path / 'cloud_s3.log', args,
                         env={'TSPACE_CLOUD_TOKEN': TOKEN, **s3.environ()}) as process, \
                RosContext() as ros:
            windows = []
            ros.node('s3_probe').create_subscription(
                ObservationWindow, '/cloud_s3/observation/window', windows.append, 50)
            lifecycle = LifecycleDriver(ros, 'cloud_s3/cloud_bridge')
            assert lifecycle.transition(Transition.TRANSITION_CONFIGURE), process.output()
            assert lifecycle.transition(Transition.TRANSITION_ACTIVATE), process.output()
            assert spin_until(ros.executor, lambda: len(windows) >= 2, TIMEOUT_S), \
                process.output()
            assert windows[-1].vehicle_id == TASK.vehicle_id
            assert cloud.van.state()['counts'].get('get_signal_ok', 0) == 0  # not polled
            assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
