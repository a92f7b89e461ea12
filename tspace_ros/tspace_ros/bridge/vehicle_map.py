"""
The map a vehicle holds, as the bridge knows it: gated writes, answers, status, restores.

``VehicleMap`` is the part of the bridge core (``bridge.core.BridgeCore``)
that stands between the safety gate and the link (``can.links``): it owns the
active (last good) map and what the VCU is believed to hold, and is driven by
explicit times.

Safety:

- the only way a map goes to the VCU is ``SafetyGate.admit`` (``begin_flash``):
  the map sent is the active map with only the action's rows changed,
  quantized to the link's resolution inside the limits, and checked again
  after quantization. The default map goes back by the link's restore
  (``MapRevert``: the VCU's own default), never as values;
- the bridge knows the map the VCU holds: every MapAck and VcuStatus carries
  the CRC of the VCU's whole active map, compared with the map the bridge
  expects (``active_map``). A VCU that went back to its default by itself is
  followed; any other difference is a mismatch (counted) that the bridge
  answers by reverting to the default map;
- ``heartbeat_frame`` gives the BridgeHeartbeat to send every 100 ms, so that
  the VCU falls back to its default map on its own when the bridge goes silent.
"""

from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
import math
from typing import List, Optional, Tuple, Union

import can

from tspace_ros.can.decoder import capture_time_ns
from tspace_ros.can.links import LinkStatus, LinkWrite, VehicleLink
from tspace_ros.can.transfer import MapTransfer, TransferStatus, whole_map_checksum
from tspace_ros.torque_map.map import ORIGIN_DEFAULT, TorqueMap
from tspace_ros.torque_map.safety_gate import SafetyGate

# Versions on the bus are 24 bits wide (the DBC's CommitMapVersion).
BUS_VERSION_MODULO = 2 ** 24
# How often the bridge's heartbeat goes to the VCU, s (the DBC's cycle time).
HEARTBEAT_PERIOD_S = 0.1


class FlashError(IntEnum):
    """Typed outcome of a flash (the FlashTorqueMap action's ERROR_* codes)."""

    NONE = 0
    REJECTED_BY_SAFETY_GATE = 1
    TIMEOUT = 2
    VEHICLE_OFFLINE = 3
    TRANSPORT = 4
    REFUSED_BY_VCU = 5
    CANCELED = 6
    VCU_MAP_MISMATCH = 7
    NO_FLASH_PROTOCOL = 8


@dataclass(frozen=True)
class FlashResult:
    """What became of a flash; active_map is the map on the vehicle afterwards."""

    error: FlashError
    message: str
    active_map: TorqueMap

    @property
    def success(self) -> bool:
        """Whether the VCU acknowledged and applies the new map."""
        return self.error == FlashError.NONE


class Watchdog:
    """Expires when nothing fed it for timeout_s (0 disables it); reports each expiry once."""

    def __init__(self, timeout_s: float):
        """Arm with a time-out in seconds (0: never expires)."""
        if not timeout_s >= 0:
            raise ValueError(f'watchdog time-out must be >= 0, got {timeout_s}')
        self.timeout_s = float(timeout_s)
        self._last_s: Optional[float] = None
        self._fired = False

    def feed(self, now_s: float) -> None:
        """Record a sign of life (a heartbeat or a new map) at now_s."""
        self._last_s = now_s
        self._fired = False

    def expired(self, now_s: float) -> bool:
        """Return True once per silence longer than the time-out (counted from the first feed)."""
        if self.timeout_s == 0 or self._last_s is None or self._fired:
            return False
        if now_s - self._last_s >= self.timeout_s:
            self._fired = True
            return True
        return False


class VehicleMap:
    """Gate, send and track torque-map writes; follow what the VCU reports of its map."""

    def __init__(self, default_map: TorqueMap, gate: SafetyGate, link: VehicleLink):
        """Start with the default map as the last good (active) map and no write pending."""
        if not gate.default_map.same_breakpoints(default_map) or not np_equal(
                gate.default_map.torque_nm, default_map.torque_nm):
            raise ValueError("the gate's default map is not the bridge's default map")
        self.link = link
        self.flash_protocol = self.link.name
        if self.link.writes_maps and gate.resolution_nm != self.link.resolution_nm:
            resolution = self.link.resolution_nm
            raise ValueError(f'the safety gate quantizes to {gate.resolution_nm:g} Nm, the '
                             f'link carries torques in steps of {resolution:g} Nm: build '
                             f'the gate with resolution_nm={resolution:g}')
        self.gate = gate
        self.default_map = default_map.with_torque(default_map.torque_nm, 0, ORIGIN_DEFAULT)
        self.active_map = self.default_map
        self.flash_counts: Counter = Counter()
        self.vcu_counts: Counter = Counter()
        self.map_in_doubt = False
        self.vcu_events: List[str] = []
        self.vcu_fallback = False
        self.last_vcu_status_ns: Optional[int] = None
        self._settled_ns: Optional[int] = None  # capture time of the last answer
        self._transfer_id = 0
        self._pending: Optional[Tuple[Union[MapTransfer, LinkWrite], TorqueMap]] = None
        self._default_checksum = whole_map_checksum(self.default_map)
        self._active_checksum = self._default_checksum
        self._heartbeat_counter = 0
        self._last_heartbeat: Optional[Tuple[float, float]] = None

    @property
    def flash_pending(self) -> bool:
        """Whether a transfer waits for its acknowledgement."""
        return self._pending is not None

    @property
    def active_checksum(self) -> int:
        """Return the CRC of the whole map the bridge expects the VCU to hold."""
        return self._active_checksum

    @property
    def active_is_default(self) -> bool:
        """Whether the VCU applies the default map: its table equals the default's exactly."""
        return not self.map_in_doubt and np_equal(self.active_map.torque_nm,
                                                  self.default_map.torque_nm)

    def _set_active(self, torque_map: TorqueMap) -> None:
        self.active_map = torque_map
        self._active_checksum = whole_map_checksum(torque_map)

    def link_said(self, frame: can.Message, outcome, status: Optional[LinkStatus],
                  bad_status: bool) -> Optional[FlashResult]:
        """Take what the link read in a frame (``link.on_frame``): settle, follow the VCU."""
        if outcome is not None and self._pending is not None:
            result = self._settle(outcome)
            # Status reports captured before this answer describe the map before it.
            self._settled_ns = capture_time_ns(frame)
            return result
        if status is not None:
            self._on_vcu_status(status)
        elif bad_status:
            self.vcu_counts['bad_status'] += 1
        return None

    def _settle(self, outcome) -> FlashResult:
        transfer, proposed = self._pending
        self._pending = None
        if outcome.status in (TransferStatus.NO_ACK, TransferStatus.LINK_ERROR):
            # A link that writes by itself timed out or failed part way: what the VCU
            # holds is not known unless it reports it; the bridge then reverts.
            self.map_in_doubt = not self.link.reports_status
            error = FlashError.TIMEOUT if outcome.status == TransferStatus.NO_ACK \
                else FlashError.TRANSPORT
            return self._count(FlashResult(error, f'{outcome.message}; the last good map '
                                           'stays the reference', self.active_map))
        if not outcome.accepted and not self.link.reports_status:
            # A typed refusal from a link with no report of the vehicle's map (the cloud's
            # 2001 A/B switch failed, AI mode off, ...): the vehicle kept the map it had.
            return self._count(FlashResult(FlashError.REFUSED_BY_VCU, outcome.message,
                                           self.active_map))
        expected = transfer.flashed_map if outcome.accepted else self.active_map
        if outcome.vcu_checksum != whole_map_checksum(expected):
            self.map_in_doubt = True
            if outcome.accepted:
                self._set_active(expected)
            return self._count(FlashResult(FlashError.VCU_MAP_MISMATCH, (
                f'{outcome.message}, but the VCU reports map checksum '
                f'0x{outcome.vcu_checksum:04x} where 0x{whole_map_checksum(expected):04x} was '
                'expected: reverting to the default map'), self.active_map))
        if not outcome.accepted:
            return self._count(FlashResult(FlashError.REFUSED_BY_VCU, outcome.message,
                                           self.active_map))
        self._set_active(expected)
        self.map_in_doubt = False
        self.vcu_fallback = False
        return self._count(FlashResult(FlashError.NONE, outcome.message, self.active_map))

    def _on_vcu_status(self, status: LinkStatus) -> None:
        """Follow the VCU's own report of its map (whole-map CRC, fallback flag)."""
        checksum, fallback = status.checksum, status.fallback
        self.last_vcu_status_ns = status.stamp_ns
        self.vcu_counts['status'] += 1
        if self._pending is not None:  # the map is changing: judge it by the ack
            return
        if self._settled_ns is not None and 0 <= status.stamp_ns <= self._settled_ns:
            # Captured before the last answer (frames of two topics can cross): it tells
            # of the map before, never a reason to follow the VCU or to call a mismatch.
            self.vcu_counts['stale_status'] += 1
            return
        if fallback and not self.vcu_fallback:
            self.vcu_counts['fallbacks'] += 1
            self.vcu_events.append('the VCU reports it went back to its default map on its own '
                                   '(no heartbeat from the bridge for its time-out)')
        self.vcu_fallback = fallback
        if checksum == self._active_checksum:
            return
        if checksum == self._default_checksum:
            self._set_active(self.default_map)
            self.map_in_doubt = False
            self.vcu_counts['followed_to_default'] += 1
            self.vcu_events.append('the VCU applies its default map: following it')
            return
        if not self.map_in_doubt:
            self.vcu_counts['map_mismatches'] += 1
            self.vcu_events.append(
                f'the VCU holds a map with checksum 0x{checksum:04x}, the bridge expects '
                f'0x{self._active_checksum:04x}: reverting to the default map')
        self.map_in_doubt = True

    def take_vcu_events(self) -> List[str]:
        """Return and clear what the VCU's status told since the last call (for the log)."""
        events, self.vcu_events = self.vcu_events, []
        return events

    def heartbeat_frame(self, bus_now_s: float, wall_now_s: float) -> Optional[can.Message]:
        """
        Return the BridgeHeartbeat to send now, or None if the last one is recent.

        One is due once HEARTBEAT_PERIOD_S has passed on the bus clock (the
        VCU's time, which may run faster than real time in a simulation) or
        on the wall clock (a bus whose time stands still); on the wall clock
        only for a link whose sign of life is a blocking round trip that the
        ECU times on the wall clock (``heartbeat_on_wall_clock``: XCP's
        GET_STATUS). None if the link has no sign of life (no BridgeHeartbeat
        in the DBC, a read-only link).
        """
        if not self.link.writes_maps or not (math.isfinite(bus_now_s) and
                                             math.isfinite(wall_now_s)):
            return None
        if self._last_heartbeat is not None:
            bus_then, wall_then = self._last_heartbeat
            wall_only = getattr(self.link, 'heartbeat_on_wall_clock', False)
            if wall_now_s - wall_then < HEARTBEAT_PERIOD_S and (
                    wall_only or (bus_now_s - bus_then < HEARTBEAT_PERIOD_S and
                                  bus_now_s >= bus_then)):
                return None
        self._last_heartbeat = (bus_now_s, wall_now_s)
        self._heartbeat_counter = (self._heartbeat_counter + 1) % 16
        return self.link.heartbeat(self._heartbeat_counter,
                                   self.active_map.policy_version % BUS_VERSION_MODULO,
                                   self._active_checksum)

    def begin_flash(self, proposed: TorqueMap, row_start: int, row_count: int):
        """
        Gate a proposed map and, if it passes, encode its transfer.

        Returns a MapTransfer (send its frames, then call ``commit_sent``) or a
        FlashResult with REJECTED_BY_SAFETY_GATE. Only the action's rows of
        the proposal are used (see ``SafetyGate.admit``). A flash still
        pending is superseded.
        """
        verdict, admitted = self.gate.admit(proposed, self.active_map, row_start, row_count)
        if admitted is None:
            return self._count(FlashResult(FlashError.REJECTED_BY_SAFETY_GATE,
                                           verdict.message, self.active_map))
        if not self.link.writes_maps:
            return self._count(FlashResult(
                FlashError.NO_FLASH_PROTOCOL, 'the map passed the safety gate, but this bridge '
                'writes no maps (flash_protocol none): the vehicle keeps its map',
                self.active_map))
        try:
            transfer = self.link.write(admitted, row_start, row_count, self._next_id(),
                                       admitted.policy_version % BUS_VERSION_MODULO)
        except ValueError as error:  # outside what the link can carry
            self._pending = None
            return self._count(FlashResult(FlashError.REJECTED_BY_SAFETY_GATE,
                                           f'cannot encode the map: {error}', self.active_map))
        self._pending = (transfer, admitted)
        return transfer

    def begin_restore_default(self) -> Optional[MapTransfer]:
        """
        Begin reverting the VCU to its default map (MapRevert); send, then commit_sent.

        None when the bridge writes no maps (the vehicle never left its own map).
        """
        if not self.link.writes_maps:
            return None
        transfer = self.link.restore(self.default_map, self._next_id())
        self._pending = (transfer, self.default_map)
        return transfer

    def _next_id(self) -> int:
        if self._pending is not None:
            self.flash_counts['superseded'] += 1
        self._transfer_id = (self._transfer_id + 1) % 256
        return self._transfer_id

    def commit_sent(self, now_s: float) -> None:
        """Record that the pending transfer's frames went out at now_s (starts the time-out)."""
        self.link.commit_sent(now_s)

    def poll(self, now_s: float) -> Optional[FlashResult]:
        """
        Return the pending flash's result once it is known without a frame, else None.

        TIMEOUT once the acknowledgement is overdue on the link's (bus) clock;
        for a link that writes by itself (XCP), its outcome once the write is done.
        """
        result = self.link_result()
        if result is not None:
            return result
        if not self.link.overdue(now_s):
            return None
        self._pending = None
        # Unanswered: the VCU may or may not have applied it; only a status report tells.
        self.map_in_doubt = not self.link.reports_status
        return self._count(FlashResult(
            FlashError.TIMEOUT, f'no acknowledgement from the VCU within '
            f'{self.link.ack_timeout_s:g} s; the last good map stays active', self.active_map))

    def link_result(self) -> Optional[FlashResult]:
        """Return the result of a write a link did by itself (XCP) once it is done, else None."""
        take = getattr(self.link, 'take_outcome', None)
        if take is None or self._pending is None:
            return None
        outcome = take()
        return self._settle(outcome) if outcome is not None else None

    def abandon(self, error: FlashError, message: str) -> FlashResult:
        """End the pending flash without an answer (canceled, offline, transport error)."""
        self.link.cancel()
        self._pending = None
        return self._count(FlashResult(error, message, self.active_map))

    def _count(self, result: FlashResult) -> FlashResult:
        self.flash_counts[result.error.name] += 1
        return result


def np_equal(a, b) -> bool:
    """Whether two tables are equal value for value."""
    return a.shape == b.shape and bool((a == b).all())
