"""
XCP calibration as a vehicle link: the map written by an XCP master (pyxcp) over CAN.

This is how production ECUs are calibrated (INCA, CANape; tspace flashed its
vans this way). ``XcpLink`` holds a pyxcp ``Master`` on the vehicle's python-can
interface and writes an admitted map's rows into the working page of the map's
calibration segment, then verifies and switches pages:

1. CONNECT (once; the connection is kept), GET_STATUS, and seed and key when
   calibration is protected (GET_SEED, UNLOCK with ``key_of``);
2. SET_CAL_PAGE (XCP access to the working page; once per connection and after
   each restore, the slave keeps it), SET_MTA and DOWNLOAD /
   DOWNLOAD_NEXT of the rows (float32, Intel byte order, row-major); the whole
   map when the working page (as last read back) differs from the admitted map
   outside the rows, for example after a switch back to the reference page;
3. BUILD_CHECKSUM (CRC-32) over the whole working page, compared with the
   CRC of the whole map the core admitted: the ECU holds exactly that map, so
   the whole-map CRC the core checks is that map's (a mismatch after a full
   write is an error, and the map is in doubt);
4. SET_CAL_PAGE (ECU access to the working page): the A/B switch.

Restoring the default is the switch back to the reference page (no values
travel). Every XCP error and time-out becomes a typed refusal
(``TransferStatus``) with the XCP error's name; nothing raises into the core.
The sign of life is a GET_STATUS every ``HEARTBEAT`` (the slave falls back to
its reference page when the master goes silent).
"""

from dataclasses import dataclass
import threading
from typing import Callable, Optional
import zlib

import numpy as np

from tspace_ros.can.links import LinkWrite
from tspace_ros.can.transfer import TransferOutcome, TransferStatus, whole_map_checksum
from tspace_ros.torque_map.map import TorqueMap

MODE_ECU, MODE_XCP = 0x01, 0x02
RESOURCE_CAL_PAG = 0x01
# The simulated van's XCP: CAN ids master -> slave and back, the map's address.
SIM_VAN_MASTER_ID, SIM_VAN_SLAVE_ID = 0x7E0, 0x7E1
SIM_VAN_MAP_ADDRESS = 0x80010000  # as config/dbc/tspace_sim_van.a2l says (tested)
SIM_VAN_A2L = 'tspace_sim_van.a2l'


def sim_van_key(seed: bytes) -> bytes:
    """Return the simulated van's key of a seed (each byte XOR 0x5A, in reverse order)."""
    return bytes(b ^ 0x5A for b in reversed(seed))


# Seed-and-key algorithms by name (a production ECU's comes from its supplier's library).
KEY_ALGORITHMS = {'sim_van_xor': sim_van_key, 'none': None}


@dataclass(frozen=True)
class XcpMapLayout:
    """Where the map lives in the ECU: segment base address, shape, element type (float32)."""

    address: int
    rows: int
    columns: int
    address_extension: int = 0
    segment: int = 0
    working_page: int = 1
    reference_page: int = 0

    def row_address(self, row: int) -> int:
        """Return the address of a row's first value."""
        return self.address + row * self.columns * 4

    @property
    def size(self) -> int:
        """Return the bytes of the whole map."""
        return self.rows * self.columns * 4


def encode_rows(table: np.ndarray) -> bytes:
    """Return map rows as the ECU stores them (float32, Intel byte order, row-major)."""
    return np.ascontiguousarray(table, dtype='<f4').tobytes()


def decode_map(data: bytes, layout: XcpMapLayout) -> np.ndarray:
    """Return the table of a page's bytes."""
    return np.frombuffer(data, dtype='<f4').reshape(layout.rows, layout.columns).astype(float)


class XcpLink:
    """A vehicle link that calibrates the map through XCP (see the module docstring)."""

    name = 'xcp'
    writes_maps = True
    reports_status = False
    resolution_nm = 0.0  # float32 on the ECU: the gate's values travel as they are
    # GET_STATUS is a blocking round trip, and the ECU's sign-of-life time-out runs on its
    # own (real) time: one every 100 ms of wall time, not of a fast simulation's time.
    heartbeat_on_wall_clock = True

    def __init__(self, master_factory: Callable[[], object], layout: XcpMapLayout,
                 key_of: Optional[Callable[[bytes], bytes]] = None, ack_timeout_s: float = 3.0):
        """Take a factory of connected-on-demand pyxcp masters and the map's layout."""
        self._factory = master_factory
        self._master = None
        self.layout = layout
        self.key_of = key_of
        self.ack_timeout_s = float(ack_timeout_s)
        self._outcome: Optional[TransferOutcome] = None
        self._lock = threading.Lock()
        self._working: Optional[np.ndarray] = None  # the working page, as last read back
        self._xcp_on_working = False  # XCP access is on the working page (SET_CAL_PAGE done)
        self.errors: dict = {}
        self.full_writes = 0
        self.bytes_written = 0

    # ---- the master ----------------------------------------------------------------------
    def _connected(self):
        if self._master is None:
            master = self._factory()
            master.connect()
            if master.slaveProperties.optionalCommMode:
                master.getCommModeInfo()  # block mode and its sizes, for DOWNLOAD_NEXT
            status = master.getStatus()
            if status.resourceProtectionStatus.calpag:
                if self.key_of is None:
                    master.disconnect()
                    raise PermissionError('calibration is protected and no key algorithm '
                                          'is configured')
                seed = bytes(master.getSeed(0, RESOURCE_CAL_PAG).seed)
                key = self.key_of(seed)
                master.unlock(len(key), key)
            self._master = master
        return self._master

    def _drop(self) -> None:
        master, self._master = self._master, None
        self._working = None  # unknown until read back again
        self._xcp_on_working = False
        if master is not None:
            try:
                master.disconnect()
            except Exception:  # noqa: B902 - a master that is gone is gone
                pass
            try:
                master.close()
            except Exception:  # noqa: B902
                pass

    def _fail(self, transfer_id: int, error: BaseException) -> TransferOutcome:
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        self._drop()  # reconnect next time
        timed_out = isinstance(error, TimeoutError) or 'timeout' in name.lower() or \
            'time-out' in str(error).lower() or 'timeout' in str(error).lower()
        status = TransferStatus.NO_ACK if timed_out else TransferStatus.LINK_ERROR
        return TransferOutcome(transfer_id, status, None, 0, 0,
                               detail=f'XCP: {name}: {str(error)[:200]}')

    # ---- VehicleLink -----------------------------------------------------------------------
    def write(self, admitted: TorqueMap, row_start: int, row_count: int, transfer_id: int,
              version: int) -> LinkWrite:
        """Write the rows to the working page, verify the whole page, switch the ECU to it."""
        layout = self.layout
        if admitted.shape != (layout.rows, layout.columns):
            raise ValueError(f'the map is {admitted.shape}, the ECU holds '
                             f'{(layout.rows, layout.columns)}')
        table = np.asarray(admitted.torque_nm, dtype=np.float64)
        page = encode_rows(table)  # the whole page as the ECU must hold it afterwards
        write = LinkWrite(transfer_id, version, (), admitted)
        with self._lock:
            try:
                master = self._connected()
                if not self._xcp_on_working:  # once per connection and after each restore
                    master.setCalPage(MODE_XCP, layout.segment, layout.working_page)
                    self._xcp_on_working = True
                full = self._working is None or not np.array_equal(
                    np.delete(self._working, np.s_[row_start:row_start + row_count], 0),
                    np.delete(table, np.s_[row_start:row_start + row_count], 0)
                    .astype(np.float32))
                if full:
                    # The working page may hold other rows (an earlier write, before a switch
                    # back to the reference page): write the whole admitted map.
                    self.full_writes += 1
                    self._download(master, 0, layout.rows, table)
                else:
                    self._download(master, row_start, row_count, table)
                if not self._page_matches(master, page):
                    if full:
                        raise ValueError('the working page does not hold the map written '
                                         '(BUILD_CHECKSUM over the page differs)')
                    self.full_writes += 1
                    self._download(master, 0, layout.rows, table)
                    if not self._page_matches(master, page):
                        raise ValueError('the working page does not hold the map written, '
                                         'even after writing it whole')
                self._working = table.astype(np.float32)
                master.setCalPage(MODE_ECU, layout.segment, layout.working_page)
                held = admitted.with_torque(decode_map(page, layout), admitted.policy_version,
                                            admitted.origin)
                self._outcome = TransferOutcome(transfer_id, TransferStatus.ACCEPTED, version, 0,
                                                whole_map_checksum(held))
            except Exception as error:  # noqa: B902 - every XCP failure is a typed refusal
                self._outcome = self._fail(transfer_id, error)
        return write

    def _download(self, master, row_start: int, row_count: int, table: np.ndarray) -> None:
        data = encode_rows(table[row_start:row_start + row_count])
        master.push(self.layout.row_address(row_start), self.layout.address_extension, data)
        self.bytes_written += len(data)

    def _page_matches(self, master, page: bytes) -> bool:
        """Whether the ECU's checksum (CRC-32) over the whole working page is the page's."""
        master.setMta(self.layout.address, self.layout.address_extension)
        return int(master.buildChecksum(self.layout.size).checksum) == zlib.crc32(page)

    def restore(self, default_map: TorqueMap, transfer_id: int) -> LinkWrite:
        """Switch the ECU back to the reference page (no values travel)."""
        write = LinkWrite(transfer_id, 0, (), default_map)
        with self._lock:
            try:
                master = self._connected()
                self._xcp_on_working = False
                master.setCalPage(MODE_ECU | MODE_XCP, self.layout.segment,
                                  self.layout.reference_page)
                self._outcome = TransferOutcome(transfer_id, TransferStatus.ACCEPTED, 0, 0,
                                                whole_map_checksum(default_map))
            except Exception as error:  # noqa: B902
                self._outcome = self._fail(transfer_id, error)
        return write

    def take_outcome(self) -> Optional[TransferOutcome]:
        """Return (once) the outcome of the last write or restore."""
        outcome, self._outcome = self._outcome, None
        return outcome

    def on_frame(self, frame):
        """Return nothing: XCP answers arrive through the master, not the bridge's bus."""
        return None, None, False

    def commit_sent(self, now_s):
        """Do nothing: the write was done synchronously."""

    def overdue(self, now_s):
        """Return False: XCP time-outs come back as outcomes."""
        return False

    def cancel(self):
        """Forget the pending write's outcome."""
        self._outcome = None

    def heartbeat(self, counter, version, checksum):
        """Send the sign of life (GET_STATUS) while connected; return no frame."""
        with self._lock:
            if self._master is not None:
                try:
                    self._master.getStatus()
                except Exception:  # noqa: B902 - counted; the next write reconnects
                    self.errors['heartbeat'] = self.errors.get('heartbeat', 0) + 1
                    self._drop()
        return None

    def close(self) -> None:
        """Disconnect the master."""
        with self._lock:
            self._drop()


def xcp_master_factory(interface: str, channel: str, master_id: int, slave_id: int,
                       timeout_s: float = 0.5, bitrate: Optional[int] = None,
                       fd: bool = False) -> Callable[[], object]:
    """
    Return a factory of pyxcp masters on a python-can interface (any: kvaser, socketcan, ...).

    ``master_id``/``slave_id`` are the CAN ids master -> slave and slave ->
    master (bit 31 set: extended); ``timeout_s`` the XCP response time-out.
    pyxcp is imported only when a master is made.
    """
    def make():
        import logging

        from pyxcp.config import create_application_from_config
        from pyxcp.master import Master
        can_config = {'interface': interface, 'channel': channel, 'can_id_master': master_id,
                      'can_id_slave': slave_id, 'max_dlc_required': False}
        if fd:
            can_config['fd'] = True
        if bitrate:
            can_config['bitrate'] = int(bitrate)
        app = create_application_from_config({'Transport': {'CAN': can_config}},
                                             log_level=logging.WARNING)
        app.transport.layer = 'CAN'
        app.transport.timeout = float(timeout_s)
        master = Master('CAN', config=app)
        master.transport.connect()  # opens the python-can bus (the transport, not XCP)
        return master
    return make
