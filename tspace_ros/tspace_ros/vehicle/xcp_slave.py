"""
An XCP-on-CAN calibration slave for the simulated VCU (ASAM MCD-1 XCP 1.x, CTO commands).

The simulated van's VCU holds its torque map in a calibration segment with two
pages: page 0 the reference (the default map, write-protected) and page 1 the
working page. A calibration master (pyxcp, INCA, CANape) connects, unlocks
calibration with seed and key, writes the working page (SET_MTA, DOWNLOAD,
DOWNLOAD_NEXT), checks it (BUILD_CHECKSUM, UPLOAD), then switches the page the
ECU uses (SET_CAL_PAGE), as tspace's A/B switch did. Every malformed or
out-of-place command is answered with the standard error packet; nothing raises.

The VCU's own fallback: while the ECU uses the working page, a master that
stays silent for ``timeout_s`` (no command, no SYNCH) makes the ECU return to
the reference page by itself, as an ECU does when its calibration master is
gone.
"""

from dataclasses import dataclass, field
import struct
from typing import Callable, Dict, List, Optional
import zlib

import can

from tspace_ros.can.xcp_link import sim_van_key, SIM_VAN_MASTER_ID, SIM_VAN_SLAVE_ID

PID_RES, PID_ERR = 0xFF, 0xFE
CONNECT, DISCONNECT, GET_STATUS, SYNCH, GET_COMM_MODE_INFO = 0xFF, 0xFE, 0xFD, 0xFC, 0xFB
GET_SEED, UNLOCK, SET_MTA, UPLOAD, SHORT_UPLOAD, BUILD_CHECKSUM = 0xF8, 0xF7, 0xF6, 0xF5, \
    0xF4, 0xF3
DOWNLOAD, DOWNLOAD_NEXT, SET_CAL_PAGE, GET_CAL_PAGE = 0xF0, 0xEF, 0xEB, 0xEA
ERR_CMD_SYNCH, ERR_CMD_UNKNOWN, ERR_CMD_SYNTAX, ERR_OUT_OF_RANGE = 0x00, 0x20, 0x21, 0x22
ERR_WRITE_PROTECTED, ERR_ACCESS_DENIED, ERR_ACCESS_LOCKED = 0x23, 0x24, 0x25
ERR_PAGE_NOT_VALID, ERR_MODE_NOT_VALID, ERR_SEGMENT_NOT_VALID, ERR_SEQUENCE = 0x26, 0x27, \
    0x28, 0x29
RESOURCE_CAL_PAG = 0x01
CHECKSUM_CRC_32 = 0x09
MODE_ECU, MODE_XCP, MODE_ALL = 0x01, 0x02, 0x80
MAX_CTO = 8
# DOWNLOAD_NEXT frames in one block: as many as a block's byte count (255) allows, so that
# a 4-row write (272 bytes) takes two round trips, not three.
MAX_BS = 255 // (MAX_CTO - 2)


default_key = sim_van_key  # the simulated van's seed-and-key algorithm


@dataclass
class XcpSlave:
    """The slave: frames in (master -> slave id), answers out (see the module docstring)."""

    reference: bytes
    base_address: int
    master_id: int = SIM_VAN_MASTER_ID
    slave_id: int = SIM_VAN_SLAVE_ID
    timeout_s: float = 0.5
    seed: bytes = b'\x13\x37\xc0\xde'
    key_of: Callable[[bytes], bytes] = default_key
    protected: bool = True
    connected: bool = False
    ecu_page: int = 0
    xcp_page: int = 0
    fallback_active: bool = False
    stats: Dict[str, int] = field(default_factory=dict)
    on_page_change: Optional[Callable[[int, bytes], None]] = None

    def __post_init__(self):
        """Make the working page a copy of the reference page."""
        self.reference = bytes(self.reference)
        self.working = bytearray(self.reference)
        self._mta: Optional[int] = None
        self._locked = self.protected
        self._seed_asked = False
        self._block_left = 0
        self._last_s: Optional[float] = None

    # ---- what the ECU applies ------------------------------------------------------------
    @property
    def active_bytes(self) -> bytes:
        """Return the calibration page the ECU uses now."""
        return bytes(self.working) if self.ecu_page == 1 else self.reference

    def _set_ecu_page(self, page: int) -> None:
        if page != self.ecu_page:
            self.ecu_page = page
            if self.on_page_change is not None:
                self.on_page_change(page, self.active_bytes)

    def poll(self, now_s: float) -> None:
        """Fall back to the reference page when the master has been silent too long."""
        if self.ecu_page == 1 and self._last_s is not None and self.timeout_s > 0 and \
                now_s - self._last_s >= self.timeout_s:
            self._set_ecu_page(0)
            self.fallback_active = True
            self._bump('fallbacks')

    # ---- frames --------------------------------------------------------------------------
    def _bump(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _reply(self, *payload: int) -> List[can.Message]:
        return [can.Message(arbitration_id=self.slave_id, is_extended_id=False,
                            data=bytes(payload))]

    def _error(self, code: int) -> List[can.Message]:
        self._bump(f'error_{code:#04x}')
        return self._reply(PID_ERR, code)

    def on_frame(self, frame: can.Message, now_s: float) -> List[can.Message]:
        """Answer one frame addressed to the slave; others are ignored. Never raises."""
        if frame.arbitration_id != self.master_id or frame.is_error_frame or \
                frame.is_remote_frame:
            return []
        data = bytes(frame.data)
        if not data:
            return self._error(ERR_CMD_SYNTAX)
        self._last_s = now_s
        self._bump('commands')
        self._bump(f'command_{data[0]:#04x}')
        try:
            return self._command(data)
        except (IndexError, struct.error):
            return self._error(ERR_CMD_SYNTAX)

    def _command(self, data: bytes) -> List[can.Message]:
        cmd = data[0]
        if cmd == CONNECT:
            self.connected = True
            self._block_left = 0
            # RESOURCE: CAL/PAG; COMM_MODE_BASIC: Intel byte order, byte granularity,
            # optional info (GET_COMM_MODE_INFO); MAX_CTO, MAX_DTO; protocol 1, transport 1.
            return self._reply(PID_RES, RESOURCE_CAL_PAG, 0x80, MAX_CTO,
                               *struct.pack('<H', 8), 0x01, 0x01)
        if not self.connected:
            return []  # a slave that is not connected stays silent (the master times out)
        if self._block_left and cmd != DOWNLOAD_NEXT:
            self._block_left = 0
            return self._error(ERR_SEQUENCE)
        if cmd == DISCONNECT:
            self.connected = False
            self._locked = self.protected
            return self._reply(PID_RES)
        if cmd == GET_STATUS:
            protection = RESOURCE_CAL_PAG if self._locked else 0
            return self._reply(PID_RES, 0x00, protection, 0x00, 0x00, 0x00)
        if cmd == SYNCH:
            return self._error(ERR_CMD_SYNCH)
        if cmd == GET_COMM_MODE_INFO:
            # COMM_MODE_OPTIONAL: master block mode; MAX_BS, MIN_ST 0, QUEUE 0, driver 1.0
            return self._reply(PID_RES, 0x00, 0x01, 0x00, MAX_BS, 0x00, 0x00, 0x10)
        if cmd == GET_SEED:
            mode, resource = data[1], data[2]
            if mode != 0 or resource != RESOURCE_CAL_PAG:
                return self._error(ERR_OUT_OF_RANGE)
            if not self._locked:
                return self._reply(PID_RES, 0x00)  # seed length 0: already unlocked
            self._seed_asked = True
            return self._reply(PID_RES, len(self.seed), *self.seed)
        if cmd == UNLOCK:
            if not self._seed_asked:
                return self._error(ERR_SEQUENCE)
            length = data[1]
            key = data[2:2 + length]
            self._seed_asked = False
            if key != self.key_of(self.seed):
                self.connected = False  # the standard: a wrong key ends the session
                self._bump('wrong_keys')
                return self._error(ERR_ACCESS_LOCKED)
            self._locked = False
            return self._reply(PID_RES, 0x00)
        if cmd == SET_MTA:
            self._mta = struct.unpack_from('<I', data, 4)[0]
            return self._reply(PID_RES)
        if cmd in (UPLOAD, SHORT_UPLOAD):
            length = data[1]
            address = struct.unpack_from('<I', data, 4)[0] if cmd == SHORT_UPLOAD else self._mta
            if length < 1 or length > MAX_CTO - 1:
                return self._error(ERR_OUT_OF_RANGE)
            block = self._read(address, length)
            if block is None:
                return self._error(ERR_ACCESS_DENIED)
            if cmd == UPLOAD:
                self._mta = address + length
            return self._reply(PID_RES, *block)
        if cmd == BUILD_CHECKSUM:
            size = struct.unpack_from('<I', data, 4)[0]
            block = self._read(self._mta, size)
            if block is None or size == 0:
                return self._error(ERR_OUT_OF_RANGE)
            self._mta += size
            return self._reply(PID_RES, CHECKSUM_CRC_32, 0, 0,
                               *struct.pack('<I', zlib.crc32(block)))
        if cmd == DOWNLOAD:
            return self._download(data[1], data[2:], first=True)
        if cmd == DOWNLOAD_NEXT:
            if not self._block_left:
                return self._error(ERR_SEQUENCE)
            return self._download(data[1], data[2:], first=False)
        if cmd == SET_CAL_PAGE:
            mode, segment, page = data[1], data[2], data[3]
            if segment != 0:
                return self._error(ERR_SEGMENT_NOT_VALID)
            if page not in (0, 1):
                return self._error(ERR_PAGE_NOT_VALID)
            if not mode & (MODE_ECU | MODE_XCP):
                return self._error(ERR_MODE_NOT_VALID)
            if self._locked:
                return self._error(ERR_ACCESS_LOCKED)
            if mode & MODE_XCP:
                self.xcp_page = page
            if mode & MODE_ECU:
                self.fallback_active = False
                self._set_ecu_page(page)
            return self._reply(PID_RES)
        if cmd == GET_CAL_PAGE:
            mode, segment = data[1], data[2]
            if segment != 0:
                return self._error(ERR_SEGMENT_NOT_VALID)
            if mode not in (MODE_ECU, MODE_XCP):
                return self._error(ERR_MODE_NOT_VALID)
            return self._reply(PID_RES, 0, 0, self.ecu_page if mode == MODE_ECU
                               else self.xcp_page)
        return self._error(ERR_CMD_UNKNOWN)

    def _download(self, count: int, payload: bytes, first: bool) -> List[can.Message]:
        if self._locked:
            self._block_left = 0
            return self._error(ERR_ACCESS_LOCKED)
        if self.xcp_page != 1:
            self._block_left = 0
            return self._error(ERR_WRITE_PROTECTED)  # the reference page is read-only
        if first:
            if count < 1 or count > MAX_BS * (MAX_CTO - 2):
                return self._error(ERR_OUT_OF_RANGE)
            self._block_left = count
        elif count != self._block_left:
            self._block_left = 0
            return self._error(ERR_SEQUENCE)
        chunk = payload[:min(self._block_left, MAX_CTO - 2)]
        if not self._write(self._mta, chunk):
            self._block_left = 0
            return self._error(ERR_ACCESS_DENIED)
        self._mta += len(chunk)
        self._block_left -= len(chunk)
        if self._block_left:
            return []  # block mode: the answer comes after the last frame
        return self._reply(PID_RES)

    def _offset(self, address: Optional[int], length: int) -> Optional[int]:
        if address is None:
            return None
        offset = address - self.base_address
        if offset < 0 or offset + length > len(self.reference):
            return None
        return offset

    def _read(self, address, length) -> Optional[bytes]:
        offset = self._offset(address, length)
        if offset is None:
            return None
        page = self.working if self.xcp_page == 1 else self.reference
        return bytes(page[offset:offset + length])

    def _write(self, address, chunk: bytes) -> bool:
        offset = self._offset(address, len(chunk))
        if offset is None:
            return False
        self.working[offset:offset + len(chunk)] = chunk
        if self.ecu_page == 1 and self.on_page_change is not None:
            self.on_page_change(1, bytes(self.working))
        return True
