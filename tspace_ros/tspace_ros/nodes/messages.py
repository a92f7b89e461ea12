"""Conversions between the ROS-free core types and tspace_interfaces messages."""

import array

from builtin_interfaces.msg import Time
import numpy as np
from tspace_interfaces.msg import ObservationWindow

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
