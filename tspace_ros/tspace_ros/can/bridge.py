"""
The CAN bridge's core: ``BridgeCore`` on a CAN bus, frames decoded by the DBC.

The logic (the gate, the maps, time-outs, watchdog, episodes, diagnostics) is
``bridge.core.BridgeCore``'s; this adds what a CAN vehicle needs: the DBC's
``FrameDecoder`` for the windows, and the link of a flash protocol
(``can.links.make_link``) unless one is given.
"""

from typing import Optional

from tspace_ros.bridge.core import (BridgeCore, BUS_VERSION_MODULO, FlashError, FlashResult,
                                    HEARTBEAT_PERIOD_S, np_equal, Watchdog)
from tspace_ros.can.dbc import Database
from tspace_ros.can.decoder import FrameDecoder
from tspace_ros.can.links import make_link, VehicleLink
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.torque_map.map import TorqueMap
from tspace_ros.torque_map.safety_gate import SafetyGate

__all__ = ['BUS_VERSION_MODULO', 'BridgeCore', 'CanBridgeCore', 'FlashError', 'FlashResult',
           'HEARTBEAT_PERIOD_S', 'np_equal', 'Watchdog']


class CanBridgeCore(BridgeCore):
    """A BridgeCore whose vehicle is on a CAN bus described by a DBC."""

    def __init__(self, db: Database, default_map: TorqueMap, gate: SafetyGate,
                 windows: WindowBuilder, ack_timeout_s: float = 3.0,
                 flash_protocol: str = 'transfer', link: Optional[VehicleLink] = None,
                 **session):
        """
        Decode frames with the DBC; reach the map through ``link`` or ``flash_protocol``'s.

        'transfer' needs the transfer messages in the DBC (MapSegment,
        MapCommit, MapAck); 'none' reads the vehicle only: every goal is still
        gated, then answered NO_FLASH_PROTOCOL, and nothing is ever sent (a
        production DBC without our messages works this way). ``session``: the
        keyword arguments of ``BridgeCore`` (settings, send, command_sources,
        config_values).
        """
        super().__init__(default_map, gate, windows,
                         link if link is not None else make_link(db, flash_protocol,
                                                                 ack_timeout_s),
                         decoder=FrameDecoder(db), **session)
        self.db = db
