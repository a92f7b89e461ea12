"""Conversions between the ROS-free core types and tspace_interfaces messages."""

import array
import importlib
from typing import Optional, Sequence

from builtin_interfaces.msg import Time
import can
import numpy as np
from tspace_interfaces.msg import (CanFrame, Episode, EpisodeSummary, ObservationWindow,
                                   TorqueMap as TorqueMapMsg, Transition)

from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.signals.window import NS_PER_S, SignalWindow, WindowError
from tspace_ros.torque_map.map import TorqueMap, TorqueMapError

# Frame of vehicle-level quantities (speed, pedal, ...): the vehicle body.
VEHICLE_FRAME = 'base_link'


def float32_field(values) -> array.array:
    """Return values as float32 for a ``float32[]`` field (row-major for 2-D)."""
    # array.array from bytes is ~100x faster than assigning a numpy array.
    return array.array('f', np.ascontiguousarray(values, dtype=np.float32).tobytes())


def float32_values(field) -> np.ndarray:
    """Return a ``float32[]`` field as a numpy array (zero-copy when not empty)."""
    return np.frombuffer(field, dtype=np.float32) if len(field) else np.zeros(0, np.float32)


def time_from_ns(ns: int) -> Time:
    """Return a builtin_interfaces/Time for integer ns since the epoch (ns >= 0)."""
    if ns < 0:
        raise ValueError(f'cannot represent a time before the epoch: {ns} ns')
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def time_to_ns(stamp: Time) -> int:
    """Return integer ns since the epoch for a builtin_interfaces/Time."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def window_to_msg(window: SignalWindow, frame_id: str = VEHICLE_FRAME,
                  flagged_signals: Sequence[str] = ()) -> ObservationWindow:
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
    msg.samples = float32_field(window.samples)
    msg.flagged_signals = list(flagged_signals)
    msg.window_start = time_from_ns(window.start_ns)
    msg.window_end = time_from_ns(window.end_ns)
    return msg


def window_from_msg(msg: ObservationWindow) -> SignalWindow:
    """Rebuild a SignalWindow from a message; raises WindowError if it is inconsistent."""
    n_signals = len(msg.signal_names)
    flat = float32_values(msg.samples)
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


def torque_map_to_msg(torque_map: TorqueMap, stamp_ns: int = 0, changed_row_start: int = 0,
                      changed_row_count: int = 0) -> TorqueMapMsg:
    """Build a TorqueMap message (float32 values, row-major)."""
    msg = TorqueMapMsg()
    msg.header.stamp = time_from_ns(stamp_ns)
    msg.vehicle_id = torque_map.vehicle_id
    msg.speed_breakpoints_kph = float32_field(torque_map.speed_breakpoints_kph)
    msg.pedal_breakpoints = float32_field(torque_map.pedal_breakpoints)
    msg.torque_nm = float32_field(torque_map.torque_nm)
    msg.changed_row_start = changed_row_start
    msg.changed_row_count = changed_row_count
    msg.policy_version = torque_map.policy_version
    msg.origin = torque_map.origin
    return msg


def torque_map_from_msg(msg: TorqueMapMsg, reference: Optional[TorqueMap] = None) -> TorqueMap:
    """
    Rebuild a TorqueMap from a message; TorqueMapError says what is inconsistent.

    Messages carry float32. With a reference map (the vehicle's default),
    breakpoints equal to the reference's up to float32 rounding take the
    reference's exact values, so that the safety gate compares like with like.
    """
    speeds = float32_values(msg.speed_breakpoints_kph)
    pedals = float32_values(msg.pedal_breakpoints)
    torque = float32_values(msg.torque_nm)
    if torque.size != speeds.size * pedals.size:
        raise TorqueMapError(f'{torque.size} torque values do not fill {speeds.size} speed '
                             f'rows x {pedals.size} pedal columns')
    speeds, pedals = speeds.astype(np.float64), pedals.astype(np.float64)
    if reference is not None:
        speeds = _snap(speeds, reference.speed_breakpoints_kph)
        pedals = _snap(pedals, reference.pedal_breakpoints)
    return TorqueMap(speeds, pedals,
                     torque.astype(np.float64).reshape(speeds.size, pedals.size),
                     msg.vehicle_id, msg.policy_version, msg.origin)


def _snap(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return reference if values equal it up to float32 rounding, else values."""
    if values.shape == reference.shape and np.allclose(values, reference, rtol=1e-6, atol=1e-6):
        return reference
    return values


def transition_to_msg(record: TransitionRecord, stamp_ns: int = 0) -> Transition:
    """Build a Transition message from a record."""
    msg = Transition(
        vehicle_id=record.vehicle_id, driver_id=record.driver_id, episode_id=record.episode_id,
        episode_start=time_from_ns(record.episode_start_ns), step_index=record.step_index,
        state=float32_field(record.state), action=float32_field(record.action),
        action_row_start=record.action_row_start, action_row_count=record.action_row_count,
        reward=record.reward, energy_wh=record.energy_wh,
        next_state=float32_field(record.next_state), done=record.done,
        timed_out=record.timed_out, policy_version=record.policy_version,
        state_stamp=time_from_ns(record.state_stamp_ns),
        next_state_stamp=time_from_ns(record.next_state_stamp_ns))
    msg.header.stamp = time_from_ns(stamp_ns)
    return msg


def transition_from_msg(msg: Transition) -> TransitionRecord:
    """Rebuild a record from a Transition message; RecordError says what is wrong."""
    return TransitionRecord(
        vehicle_id=msg.vehicle_id, driver_id=msg.driver_id, episode_id=msg.episode_id,
        episode_start_ns=time_to_ns(msg.episode_start), step_index=msg.step_index,
        state=float32_values(msg.state).copy(), action=float32_values(msg.action).copy(),
        action_row_start=msg.action_row_start, action_row_count=msg.action_row_count,
        reward=msg.reward, energy_wh=msg.energy_wh,
        next_state=float32_values(msg.next_state).copy(), done=msg.done,
        timed_out=msg.timed_out, policy_version=msg.policy_version,
        state_stamp_ns=time_to_ns(msg.state_stamp),
        next_state_stamp_ns=time_to_ns(msg.next_state_stamp))


def summary_to_msg(summary: EpisodeSummaryRecord, stamp_ns: int = 0) -> EpisodeSummary:
    """Build an EpisodeSummary message from a record."""
    msg = EpisodeSummary(
        vehicle_id=summary.vehicle_id, driver_id=summary.driver_id,
        episode_id=summary.episode_id, episode_start=time_from_ns(summary.episode_start_ns),
        episode_end=time_from_ns(summary.episode_end_ns), step_count=summary.step_count,
        total_reward=summary.total_reward, energy_wh=summary.energy_wh,
        distance_km=summary.distance_km, energy_per_km_wh=summary.energy_per_km_wh,
        valid=summary.valid, first_policy_version=summary.first_policy_version,
        last_policy_version=summary.last_policy_version)
    msg.header.stamp = time_from_ns(stamp_ns)
    return msg


def summary_from_msg(msg: EpisodeSummary, timed_out_steps: int = 0) -> EpisodeSummaryRecord:
    """Rebuild a summary record from an EpisodeSummary message."""
    return EpisodeSummaryRecord(
        vehicle_id=msg.vehicle_id, driver_id=msg.driver_id, episode_id=msg.episode_id,
        episode_start_ns=time_to_ns(msg.episode_start),
        episode_end_ns=time_to_ns(msg.episode_end), step_count=msg.step_count,
        total_reward=msg.total_reward, energy_wh=msg.energy_wh, distance_km=msg.distance_km,
        valid=msg.valid, first_policy_version=msg.first_policy_version,
        last_policy_version=msg.last_policy_version, timed_out_steps=timed_out_steps)


def episode_to_msg(summary: EpisodeSummaryRecord, transitions: Sequence[TransitionRecord],
                   stamp_ns: int = 0) -> Episode:
    """Build an Episode message: the summary and the episode's transitions in order."""
    return Episode(summary=summary_to_msg(summary, stamp_ns),
                   transitions=[transition_to_msg(t, stamp_ns) for t in transitions])


def episode_from_msg(msg: Episode):
    """Return (summary, transitions) from an Episode message; RecordError if inconsistent."""
    transitions = [transition_from_msg(t) for t in msg.transitions]
    summary = summary_from_msg(
        msg.summary, timed_out_steps=sum(1 for t in transitions if t.timed_out))
    return summary, transitions


def message_class(type_name: str):
    """Return the rclpy message class of 'pkg/msg/Name' (or 'pkg/Name'); ValueError if none."""
    parts = type_name.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f'not a message type name: {type_name!r}')
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f'message type {type_name} is not installed: {error}') from None
