"""
The CAN bridge's core: frames in, windows out; torque maps through the gate to the VCU.

ROS-free, driven by explicit times so that it is tested without a bus or a
clock. The ``can_bridge`` node feeds it every received frame and the current
time, publishes the windows it returns, and turns flash results into action
results. The bridge keeps the last map the VCU acknowledged (``active_map``);
only a map that passed the safety gate is ever encoded for the VCU.
"""

from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from typing import List, Optional, Tuple

import can

from tspace_ros.can.dbc import Database
from tspace_ros.can.decoder import capture_time_ns, FrameDecoder
from tspace_ros.can.transfer import MapTransfer, TorqueMapSender, TransferStatus
from tspace_ros.can.windowing import WindowBuilder, WindowResult
from tspace_ros.torque_map.map import ORIGIN_DEFAULT, TorqueMap
from tspace_ros.torque_map.safety_gate import SafetyGate

# Versions on the bus are 24 bits wide (the DBC's CommitMapVersion).
BUS_VERSION_MODULO = 2 ** 24


class FlashError(IntEnum):
    """Typed outcome of a flash (the FlashTorqueMap action's ERROR_* codes)."""

    NONE = 0
    REJECTED_BY_SAFETY_GATE = 1
    TIMEOUT = 2
    VEHICLE_OFFLINE = 3
    TRANSPORT = 4
    REFUSED_BY_VCU = 5
    CANCELED = 6


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


class CanBridgeCore:
    """Decode and window the vehicle's frames; gate, send and track torque-map flashes."""

    def __init__(self, db: Database, default_map: TorqueMap, gate: SafetyGate,
                 windows: WindowBuilder, ack_timeout_s: float = 3.0):
        """Start with the default map as the last good (active) map and no flash pending."""
        self.db = db
        self.decoder = FrameDecoder(db)
        self.windows = windows
        self.gate = gate
        self.default_map = default_map
        self.active_map = default_map
        self.sender = TorqueMapSender(db, ack_timeout_s)
        self.flash_counts: Counter = Counter()
        self.last_frame_ns: Optional[int] = None
        self._transfer_id = 0
        self._pending: Optional[Tuple[MapTransfer, TorqueMap]] = None

    @property
    def flash_pending(self) -> bool:
        """Whether a transfer waits for its acknowledgement."""
        return self._pending is not None

    def on_frame(self, frame: can.Message) -> Tuple[List[WindowResult], Optional[FlashResult]]:
        """Take one received frame; return the windows it completed and a finished flash."""
        result = None
        outcome = self.sender.on_frame(frame)
        if outcome is not None and self._pending is not None:
            transfer, proposed = self._pending
            self._pending = None
            if outcome.accepted:
                self.active_map = proposed.with_torque(
                    transfer.flashed_map.torque_nm, proposed.policy_version, proposed.origin)
                result = self._count(FlashResult(FlashError.NONE, outcome.message,
                                                 self.active_map))
            else:
                result = self._count(FlashResult(FlashError.REFUSED_BY_VCU, outcome.message,
                                                 self.active_map))
        decoded = self.decoder.decode(frame)
        if decoded is None:
            return [], result
        stamp = capture_time_ns(frame)
        self.last_frame_ns = stamp
        return self.windows.feed(stamp, decoded), result

    def begin_flash(self, proposed: TorqueMap, row_start: int, row_count: int,
                    whole_map: bool = False):
        """
        Gate a proposed map and, if it passes, encode its transfer.

        Returns a MapTransfer (send its frames, then call ``commit_sent``) or a
        FlashResult with REJECTED_BY_SAFETY_GATE. ``whole_map`` checks a full
        map (restoring the default) instead of an action's rows. A flash still
        pending is superseded.
        """
        verdict = self.gate.check_full_map(proposed) if whole_map else \
            self.gate.check(proposed, self.active_map, row_start, row_count)
        if not verdict.ok:
            return self._count(FlashResult(FlashError.REJECTED_BY_SAFETY_GATE,
                                           verdict.message, self.active_map))
        if whole_map:
            row_start, row_count = 0, proposed.shape[0]
        if self._pending is not None:
            self.flash_counts['superseded'] += 1
        self._transfer_id = (self._transfer_id + 1) % 256
        transfer = self.sender.prepare(proposed, row_start, row_count, self._transfer_id,
                                       proposed.policy_version % BUS_VERSION_MODULO)
        self._pending = (transfer, proposed)
        return transfer

    def begin_restore_default(self):
        """Begin flashing the default map back (whole map); see begin_flash."""
        return self.begin_flash(self.default_map, 0, self.default_map.shape[0], whole_map=True)

    def commit_sent(self, now_s: float) -> None:
        """Record that the pending transfer's frames went out at now_s (starts the time-out)."""
        self.sender.commit_sent(now_s)

    def poll(self, now_s: float) -> Optional[FlashResult]:
        """Return a TIMEOUT result once the pending flash's acknowledgement is overdue."""
        outcome = self.sender.poll(now_s)
        if outcome is None or outcome.status != TransferStatus.NO_ACK:
            return None
        self._pending = None
        return self._count(FlashResult(
            FlashError.TIMEOUT, f'no acknowledgement from the VCU within '
            f'{self.sender.ack_timeout_s:g} s; the last good map stays active', self.active_map))

    def abandon(self, error: FlashError, message: str) -> FlashResult:
        """End the pending flash without an answer (canceled, offline, transport error)."""
        self.sender.pending = None
        self._pending = None
        return self._count(FlashResult(error, message, self.active_map))

    @property
    def active_is_default(self) -> bool:
        """Whether the VCU applies the default map (as far as the bridge knows)."""
        return self.active_map.origin == ORIGIN_DEFAULT or \
            (self.active_map.torque_nm == self.default_map.torque_nm).all()

    def _count(self, result: FlashResult) -> FlashResult:
        self.flash_counts[result.error.name] += 1
        return result
