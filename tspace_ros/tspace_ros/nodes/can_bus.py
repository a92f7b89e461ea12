"""
Open the CAN bus a node is configured for: any python-can interface, or ROS topics.

``interface`` is a python-can interface name (``socketcan``, ``kvaser``, ``pcan``,
``vector``, ``virtual``, ...), ``ros_topic`` for :class:`TopicCanBus`, or ``log``
to play a recorded drive (``channel``: the log file; ASC, BLF, candump, TRC, CSV)
at ``log_rate`` x log speed (0: as fast as possible), read-only. A missing
driver (for example no Kvaser canlib, which even raises SystemExit on import)
becomes a :class:`CanBusUnavailable` with a message that says what to install,
so ``on_configure`` can fail cleanly instead of the process dying.
"""

from typing import Optional

import can

from tspace_ros.can.log_bus import LogBus, LogBusError
from tspace_ros.nodes.topic_bus import TopicCanBus

ROS_TOPIC_INTERFACE = 'ros_topic'
LOG_INTERFACE = 'log'
# Multicast leaves the host; this project never uses it.
FORBIDDEN_INTERFACES = {'udp_multicast': 'it sends multicast traffic off this host'}


class CanBusUnavailable(RuntimeError):
    """The configured CAN bus cannot be opened; the message says why and what to do."""


def open_can_bus(node, interface: str, channel: str, bitrate: Optional[int] = None,
                 fd: bool = False, side: str = 'client', callback_group=None,
                 log_rate: float = 1.0) -> can.BusABC:
    """
    Open and return the bus; raise CanBusUnavailable with a clear reason on failure.

    side and callback_group apply to the ``ros_topic`` interface (see TopicCanBus).
    """
    if interface == ROS_TOPIC_INTERFACE:
        return TopicCanBus(node, side=side, channel=channel or 'ros',
                           callback_group=callback_group)
    if interface == LOG_INTERFACE:
        try:
            return LogBus(channel, rate=log_rate)
        except LogBusError as error:
            raise CanBusUnavailable(f'cannot play the log: {error}') from None
    if interface in FORBIDDEN_INTERFACES:
        raise CanBusUnavailable(
            f'CAN interface {interface!r} is not allowed: {FORBIDDEN_INTERFACES[interface]}')
    valid = sorted(set(can.interfaces.VALID_INTERFACES) - set(FORBIDDEN_INTERFACES))
    if interface not in can.interfaces.VALID_INTERFACES:
        raise CanBusUnavailable(
            f'unknown CAN interface {interface!r}; use {ROS_TOPIC_INTERFACE!r}, '
            f'{LOG_INTERFACE!r} or one of '
            f'{", ".join(valid)}')
    options = {'fd': fd} if fd else {}
    if interface == 'virtual':
        # Keep the sender's timestamps: a simulated vehicle stamps frames with its own
        # (simulated) clock, which the windows must follow, not the wall clock.
        options['preserve_timestamps'] = True
    if bitrate:
        options['bitrate'] = bitrate
    try:
        return can.Bus(interface=interface, channel=channel, **options)
    except BaseException as error:  # noqa: B902 - canlib raises SystemExit without a driver
        if isinstance(error, KeyboardInterrupt):
            raise
        raise CanBusUnavailable(
            f'cannot open CAN interface {interface!r} channel {channel!r}: '
            f'{type(error).__name__}: {error or "no reason given"}. Check that the '
            f"interface's driver/library is installed (Kvaser: canlib; PCAN: PCANBasic; "
            f'Vector: XL driver) and the channel exists.') from error
