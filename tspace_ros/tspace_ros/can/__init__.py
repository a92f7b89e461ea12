"""
The CAN core: DBC, frame encoding and decoding, windowing, torque-map transfer.

ROS-free: the can_bridge and vehicle_sim nodes wrap it. Bit packing is done
by cantools from the DBC, never by hand; frames are python-can messages.
"""

from tspace_ros.can.dbc import default_dbc_path, load_dbc
from tspace_ros.can.decoder import capture_time_ns, DecoderStats, FrameDecoder
from tspace_ros.can.frames import (encode_vcu_diagnostics, encode_vcu_status,
                                   encode_vehicle_sample, VcuState)
from tspace_ros.can.transfer import (decode_ack, encode_transfer, MapTransfer, TorqueMapSender,
                                     TransferOutcome, TransferStatus, VcuMapReceiver)
from tspace_ros.can.windowing import MappedSignal, SignalMapping, WindowBuilder, WindowResult

__all__ = ['default_dbc_path', 'load_dbc', 'capture_time_ns', 'DecoderStats', 'FrameDecoder',
           'encode_vcu_diagnostics', 'encode_vcu_status', 'encode_vehicle_sample', 'VcuState',
           'decode_ack', 'encode_transfer', 'MapTransfer', 'TorqueMapSender', 'TransferOutcome',
           'TransferStatus', 'VcuMapReceiver', 'MappedSignal', 'SignalMapping', 'WindowBuilder',
           'WindowResult']
