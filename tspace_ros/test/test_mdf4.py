"""
MDF4: a recorded run's windows exported for INCA/CANape/asammdf, and MF4 CAN logs as a bus.

A bag of observation windows (two vehicles) is exported and read back with
asammdf: every sample, its unit and its UTC time are there. A CAN log written
as MF4 by python-can plays through ``LogBus`` like the other formats.
"""

import datetime

from asammdf import MDF
import can
import numpy as np
import pytest
from rclpy.serialization import serialize_message

from tspace_ros.bags import BagRecorder, qos_profile_yaml, typestore_with_ours
from tspace_ros.can.log_bus import LogBus
from tspace_ros.export_mdf4 import export_windows, ExportError, main
from tspace_ros.nodes.messages import window_to_msg
from tspace_ros.signals.window import SignalWindow

WINDOW_TYPE = 'tspace_interfaces/msg/ObservationWindow'
T0 = 1_790_000_000 * 10 ** 9
NAMES, UNITS = ('speed', 'pedal', 'brake', 'current', 'voltage'), ('km/h', '1', 'bar', 'A', 'V')


def _window(vehicle, k, offset):
    samples = np.stack([np.arange(30, dtype=np.float32) + 30 * k + offset * (i + 1)
                        for i in range(5)])
    start = T0 + k * 1_500_000_000
    return SignalWindow(vehicle, 'driver0', 'e1', k, 20.0, NAMES, UNITS, samples, start,
                        start + 29 * 50_000_000)


def _bag(path):
    with BagRecorder(path, typestore_with_ours()) as bag:
        for topic in ('/VAN1/observation/window', '/VAN2/observation/window'):
            bag.add_topic(topic, WINDOW_TYPE, qos_profile_yaml(depth=100))
        for k in range(4):
            for topic, vehicle, offset in (('/VAN1/observation/window', 'VAN1', 0.0),
                                           ('/VAN2/observation/window', 'VAN2', 1000.0)):
                window = _window(vehicle, k, offset)
                bag.write(topic, window.end_ns, serialize_message(window_to_msg(window)))
    return path


def test_windows_of_a_bag_become_mdf4_channels_with_units_and_time(tmp_path):
    bag = _bag(tmp_path / 'run_bag')
    result = export_windows(bag, tmp_path / 'run.mf4')
    assert result['groups']['/VAN1/observation/window']['samples'] == 120
    mdf = MDF(str(tmp_path / 'run.mf4'))
    assert mdf.version.startswith('4.1')
    assert mdf.header.start_time.astimezone(datetime.timezone.utc) == \
        datetime.datetime.fromtimestamp(T0 / 1e9, datetime.timezone.utc)
    speed = mdf.get('speed', group=0)
    assert speed.unit == 'km/h' and len(speed.samples) == 120
    assert np.allclose(speed.samples, np.arange(120.0))  # 4 windows of 30, in time order
    assert np.allclose(np.diff(speed.timestamps), 0.05)  # 20 Hz, on the windows' own time
    voltage = mdf.get('voltage', group=1)  # the second vehicle's group
    assert voltage.unit == 'V' and np.allclose(voltage.samples[:3], [5000.0, 5001.0, 5002.0])
    mdf.close()


def test_a_bag_without_windows_or_a_missing_one_is_refused(tmp_path, capsys):
    empty = tmp_path / 'empty_bag'
    with BagRecorder(empty, typestore_with_ours()) as bag:
        bag.add_topic('/x/observation/window', WINDOW_TYPE, qos_profile_yaml(depth=10))
    with pytest.raises(ExportError, match='no tspace_interfaces/msg/ObservationWindow'):
        export_windows(empty, tmp_path / 'x.mf4')
    assert main([str(tmp_path / 'missing_bag'), str(tmp_path / 'y.mf4')]) == 2
    assert 'export_mdf4:' in capsys.readouterr().err


def test_an_mf4_can_log_plays_as_a_bus(tmp_path):
    frames = [can.Message(timestamp=T0 / 1e9 + i * 0.01, arbitration_id=0x100 + i % 3,
                          data=bytes([i % 256] * 8), is_extended_id=False, channel=0)
              for i in range(200)]
    path = tmp_path / 'drive.mf4'
    with can.Logger(str(path)) as logger:
        for frame in frames:
            logger.on_message_received(frame)
    bus = LogBus(str(path), rate=0)
    got = [bus.recv(timeout=0) for _ in range(200)]
    bus.shutdown()
    assert [m.arbitration_id for m in got] == [f.arbitration_id for f in frames]
    assert [bytes(m.data) for m in got] == [bytes(f.data) for f in frames]
    assert got[0].timestamp == pytest.approx(frames[0].timestamp, abs=1e-3)
