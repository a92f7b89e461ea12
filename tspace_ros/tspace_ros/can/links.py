"""
Vehicle links: how the bridge core reaches a vehicle's map, one transport each.

The core (``bridge.core.BridgeCore``; ``CanBridgeCore`` on CAN) owns the
safety logic: the gate, the active and last good map, what the VCU is believed
to hold, restores, time-outs. A link owns the transport only. It turns an
admitted map into what goes on the wire, recognises the vehicle's answers
(``TransferOutcome``: accepted or a typed refusal, with the CRC of the VCU's
whole map) and its unsolicited status (``LinkStatus``: the map CRC and the
fallback flag), says when an answer is overdue, and encodes the sign of life.
``make_link`` builds the configured one:

- ``transfer``: ``CanTransferLink``, the simulated van's MapSegment / MapCommit /
  MapAck protocol with MapRevert, VcuStatus and BridgeHeartbeat;
- ``xcp``: ``XcpLink`` (``can.xcp_link``), XCP calibration of the map's
  working page through pyxcp, as production ECUs are calibrated;
- ``none``: ``ReadOnlyLink``, for a vehicle whose maps we may not write (a
  production DBC without a flash protocol): nothing is ever sent.

A link of another transport (XCP calibration, a telematics cloud) implements
the same methods (``VehicleLink``). Its data reach the core by its own entry,
not as frames: ``on_frame`` is only called for frames the core receives (a
CAN bus), so a link without a bus returns nothing from it. A link that writes
by itself (XCP, an HTTP call) hands its answer back by ``take_outcome()``,
polled every cycle; the vehicle's decoded signals go to
``BridgeCore.receive_samples`` (timestamped ``Sample``s) and its report of the
map to ``BridgeCore.receive_status`` (a ``LinkStatus``).
"""

from dataclasses import dataclass
from typing import Optional, Protocol, Tuple, Union

import can

from tspace_ros.can.dbc import (Database, MSG_MAP_ACK, MSG_MAP_COMMIT, MSG_MAP_SEGMENT,
                                MSG_VCU_STATUS)
from tspace_ros.can.decoder import capture_time_ns
from tspace_ros.can.transfer import (bus_torque_resolution_nm, encode_heartbeat, MapTransfer,
                                     MSG_BRIDGE_HEARTBEAT, revert_transfer, TorqueMapSender,
                                     TransferOutcome)
from tspace_ros.torque_map.map import TorqueMap

FLASH_PROTOCOLS = ('transfer', 'xcp', 'none')
TRANSFER_MESSAGES = (MSG_MAP_SEGMENT, MSG_MAP_COMMIT, MSG_MAP_ACK)


@dataclass(frozen=True)
class LinkWrite:
    """
    One write to the vehicle, as a link returns it (``MapTransfer`` is the CAN one).

    ``frames`` go on the bus in order (none for a transport that sends itself);
    ``flashed_map`` is the map the vehicle holds once it accepts.
    """

    transfer_id: int
    map_version: int
    frames: Tuple[can.Message, ...]
    flashed_map: TorqueMap

    @property
    def n_segments(self) -> int:
        """Return how many frames the bridge sends (progress feedback)."""
        return len(self.frames)


@dataclass(frozen=True)
class LinkStatus:
    """The vehicle's own report of its map: whole-map CRC, fallback flag, capture time."""

    checksum: int
    fallback: bool
    stamp_ns: int


class VehicleLink(Protocol):
    """What the bridge core needs of a transport (see the module docstring)."""

    name: str
    writes_maps: bool        # False: every admitted map is refused NO_FLASH_PROTOCOL
    reports_status: bool     # whether the vehicle reports its map by itself
    resolution_nm: float     # the torque step on the link (0: exact)
    ack_timeout_s: float

    def on_frame(self, frame: can.Message) -> Tuple[Optional[TransferOutcome],
                                                    Optional[LinkStatus], bool]:
        """
        Return (an answer to the pending write, a status report, a bad status frame).

        Called for every frame the core receives (CAN links only).
        """

    def write(self, admitted: TorqueMap, row_start: int, row_count: int, transfer_id: int,
              version: int) -> Union[MapTransfer, LinkWrite]:
        """Return the write of an admitted map's rows (its frames, the map it makes)."""

    def restore(self, default_map: TorqueMap,
                transfer_id: int) -> Union[MapTransfer, LinkWrite]:
        """Return the write that puts the vehicle back on its own default map."""

    def commit_sent(self, now_s: float) -> None:
        """Record that the pending write went out at now_s (its answer is due from then)."""

    def overdue(self, now_s: float) -> bool:
        """Return True (once) when the pending write's answer is overdue."""

    def cancel(self) -> None:
        """Forget the pending write."""

    def heartbeat(self, counter: int, version: int, checksum: int) -> Optional[can.Message]:
        """Return the sign-of-life frame, or None if the link has none."""


def _message(db: Database, name: str):
    try:
        return db.get_message_by_name(name)
    except KeyError:
        return None


class CanTransferLink:
    """The simulated van's transfer protocol over CAN (``can.transfer``)."""

    name = 'transfer'
    writes_maps = True

    def __init__(self, db: Database, ack_timeout_s: float = 3.0):
        """Use the DBC's transfer messages; ValueError naming those it lacks."""
        names = {m.name for m in db.messages}
        missing = [name for name in TRANSFER_MESSAGES if name not in names]
        if missing:
            raise ValueError(f'flash_protocol transfer needs the messages {", ".join(missing)} '
                             'in the DBC, which has none of that name; a production DBC has '
                             'no such messages: use flash_protocol none (read-only)')
        self.db = db
        self.sender = TorqueMapSender(db, ack_timeout_s)
        self.resolution_nm = bus_torque_resolution_nm(db)
        self._heartbeat = _message(db, MSG_BRIDGE_HEARTBEAT)
        status = _message(db, MSG_VCU_STATUS)
        signals = {signal.name for signal in status.signals} if status is not None else set()
        self._status = status if {'ActiveMapChecksum', 'MapFallback'} <= signals else None
        self.reports_status = self._status is not None

    @property
    def ack_timeout_s(self) -> float:
        """Return how long an acknowledgement may take, s."""
        return self.sender.ack_timeout_s

    def on_frame(self, frame):
        """Return (the MapAck of the pending transfer, a VcuStatus report, a bad status)."""
        outcome = self.sender.on_frame(frame)
        if outcome is not None or self._status is None or \
                frame.arbitration_id != self._status.frame_id:
            return outcome, None, False
        try:
            values = self._status.decode(bytes(frame.data), decode_choices=False)
            return None, LinkStatus(int(values['ActiveMapChecksum']),
                                    bool(values['MapFallback']), capture_time_ns(frame)), False
        except Exception:  # noqa: B902 - a corrupt status frame is counted, never raised
            return None, None, True

    def write(self, admitted, row_start, row_count, transfer_id, version):
        """Return the MapSegment/MapCommit transfer of the rows (ValueError: not encodable)."""
        try:
            return self.sender.prepare(admitted, row_start, row_count, transfer_id, version)
        except ValueError:
            self.sender.pending = None
            raise

    def restore(self, default_map, transfer_id):
        """Return the MapRevert transfer (the VCU's own default; no values travel)."""
        return self.sender.hold(revert_transfer(self.db, default_map, transfer_id))

    def commit_sent(self, now_s):
        """Start the acknowledgement time-out."""
        self.sender.commit_sent(now_s)

    def overdue(self, now_s):
        """Return True once when the MapAck is overdue."""
        return self.sender.poll(now_s) is not None

    def cancel(self):
        """Forget the pending transfer (a late MapAck is then ignored)."""
        self.sender.pending = None

    def heartbeat(self, counter, version, checksum):
        """Return a BridgeHeartbeat frame, or None if the DBC has none."""
        if self._heartbeat is None:
            return None
        return encode_heartbeat(self.db, counter, version, checksum)


class ReadOnlyLink:
    """A vehicle whose maps the bridge does not write: nothing is ever sent."""

    name = 'none'
    writes_maps = False
    reports_status = False
    resolution_nm = 0.0
    ack_timeout_s = 0.0

    def on_frame(self, frame):
        """Return no answer and no status: this link writes nothing."""
        return None, None, False

    def write(self, admitted, row_start, row_count, transfer_id, version):
        """Refuse: read-only (the core answers NO_FLASH_PROTOCOL before calling this)."""
        raise RuntimeError('a read-only link writes no maps')

    def restore(self, default_map, transfer_id):
        """Refuse: read-only (the vehicle never left its own map)."""
        raise RuntimeError('a read-only link writes no maps')

    def commit_sent(self, now_s):
        """Do nothing: nothing was sent."""

    def overdue(self, now_s):
        """Return False: nothing is ever pending."""
        return False

    def cancel(self):
        """Do nothing: nothing is ever pending."""

    def heartbeat(self, counter, version, checksum):
        """Return None: no sign of life is sent."""
        return None


def make_link(db: Database, flash_protocol: str = 'transfer',
              ack_timeout_s: float = 3.0, xcp=None) -> VehicleLink:
    """
    Return the link of a flash protocol (FLASH_PROTOCOLS); ValueError for another.

    ``xcp``: for 'xcp', an ``XcpLink`` (``can.xcp_link``; it needs the bus's
    python-can interface, the CAN ids and the map's layout).
    """
    if flash_protocol == 'xcp':
        if xcp is None:
            raise ValueError('flash_protocol xcp needs the XCP settings (interface, CAN ids, '
                             'map address)')
        return xcp
    if flash_protocol == 'transfer':
        return CanTransferLink(db, ack_timeout_s)
    if flash_protocol == 'none':
        return ReadOnlyLink()
    raise ValueError(f'flash_protocol must be one of {", ".join(FLASH_PROTOCOLS)}, got '
                     f'{flash_protocol!r}')
