"""Conversions between the ROS-free core types and tspace_interfaces messages."""

import array

from builtin_interfaces.msg import Time
import can
import numpy as np
from tspace_interfaces.msg import CanFrame, ObservationWindow

from tspace_ros.signals.window import NS_PER_S, SignalWindow, WindowError

# Frame of vehicle-level quantities (speed, pedal, ...): the vehicle body.
VEHICLE_FRAME = 'base_link'


def time_from_ns(ns: int) -> Time:
    """Return a builtin_interfaces/Time for integer ns since the epoch (ns >= 0)."""
    if ns < 0:
        raise ValueError(f'cannot represent a time before the epoch: {ns} ns')
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def time_to_ns(stamp: Time) -> int:
    """Return integer ns since the epoch for a builtin_interfaces/Time."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def window_to_msg(window: SignalWindow, frame_id: str = VEHICLE_FRAME) -> ObservationWindow:
    """Build an ObservationWindow message; header.stamp is the newest sample's capture time."""
    msg = ObservationWindow()
    msg.header.stamp = time_from_ns(window.end_ns)
    msg.header.frame_id = frame_id
    msg.vehicle_id = window.vehicle_id
    msg.driver_id = window.driver_id
    msg.episode_id = window.episode_id
    msg.step_index = window.step_index
    msg.sample_rate_hz = window.sample_rate_hz
    msg.signal_names = list(window.signal_names)
    msg.units = list(window.units)
    msg.samples_per_signal = window.n_samples
    # array.array from bytes is ~100x faster than assigning a numpy array.
    msg.samples = array.array('f', np.ascontiguousarray(window.samples).tobytes())
    msg.window_start = time_from_ns(window.start_ns)
    msg.window_end = time_from_ns(window.end_ns)
    return msg


def window_from_msg(msg: ObservationWindow) -> SignalWindow:
    """Rebuild a SignalWindow from a message; raises WindowError if it is inconsistent."""
    n_signals = len(msg.signal_names)
    flat = np.frombuffer(msg.samples, dtype=np.float32) if len(msg.samples) else \
        np.zeros(0, dtype=np.float32)
    n = msg.samples_per_signal
    if n_signals * n != flat.size:
        raise WindowError(
            f'{flat.size} samples do not fill {n_signals} signals x {n} samples')
    return SignalWindow(
        vehicle_id=msg.vehicle_id, driver_id=msg.driver_id, episode_id=msg.episode_id,
        step_index=msg.step_index, sample_rate_hz=msg.sample_rate_hz,
        signal_names=tuple(msg.signal_names), units=tuple(msg.units),
        samples=flat.reshape(n_signals, n),
        start_ns=time_to_ns(msg.window_start), end_ns=time_to_ns(msg.window_end))


def frame_to_msg(frame: can.Message) -> CanFrame:
    """Build a CanFrame message from a python-can Message (timestamp: UTC seconds)."""
    msg = CanFrame()
    msg.stamp = time_from_ns(round(frame.timestamp * NS_PER_S))
    msg.id = frame.arbitration_id
    msg.is_extended = frame.is_extended_id
    msg.is_fd = frame.is_fd
    msg.bitrate_switch = frame.bitrate_switch
    msg.is_remote = frame.is_remote_frame
    msg.is_error = frame.is_error_frame
    msg.length = len(frame.data)
    msg.data = bytes(frame.data)
    return msg


def frame_from_msg(msg: CanFrame) -> can.Message:
    """
    Build a python-can Message from a CanFrame message.

    Raises ValueError when the frame cannot exist on a bus: an id wider than 11
    (standard) or 29 (extended) bits, a length that disagrees with the data, or
    more than 8 data bytes on a classic frame.
    """
    limit = 0x1FFFFFFF if msg.is_extended else 0x7FF
    if msg.id > limit:
        raise ValueError(f'CAN id 0x{msg.id:X} does not fit a '
                         f'{"29" if msg.is_extended else "11"}-bit identifier')
    data = bytes(msg.data)
    if msg.length != len(data) and not msg.is_remote:
        raise ValueError(f'length {msg.length} disagrees with {len(data)} data bytes')
    if len(data) > 8 and not msg.is_fd:
        raise ValueError(f'{len(data)} data bytes on a classic CAN frame (at most 8)')
    return can.Message(
        timestamp=time_to_ns(msg.stamp) / NS_PER_S, arbitration_id=msg.id,
        is_extended_id=msg.is_extended, is_remote_frame=msg.is_remote,
        is_error_frame=msg.is_error, is_fd=msg.is_fd, bitrate_switch=msg.bitrate_switch,
        dlc=msg.length, data=data)
