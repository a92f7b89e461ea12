"""
Vehicle links: the bridge core's one seam to a transport.

The transfer link of the simulated van, the read-only link, the configuration
that picks one, and a link of another transport (written here, answering on
commit with exact torques) that plugs into the same core: the core's safety
logic (gate, active map, CRC check, restore) does not depend on the transport.
"""

import can
import numpy as np
import pytest

from tspace_ros.can.bridge import CanBridgeCore, FlashError
from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.links import CanTransferLink, LinkWrite, make_link, ReadOnlyLink
from tspace_ros.can.transfer import TransferOutcome, TransferStatus, whole_map_checksum
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.task.files import load_default_map
from tspace_ros.torque_map import apply_action
from tspace_ros.torque_map.safety_gate import SafetyGate

DB = load_dbc()
DEFAULT = load_default_map()


def test_make_link_picks_the_configured_transport():
    assert isinstance(make_link(DB, 'transfer'), CanTransferLink)
    assert isinstance(make_link(DB, 'none'), ReadOnlyLink)
    with pytest.raises(ValueError, match='flash_protocol must be one of transfer, xcp, none'):
        make_link(DB, 'xcp?')
    link = make_link(DB, 'transfer', 1.5)
    assert link.resolution_nm == 0.5 and link.ack_timeout_s == 1.5 and link.reports_status


def test_the_transfer_link_reads_status_and_counts_a_corrupt_one():
    link = CanTransferLink(DB)
    status = DB.get_message_by_name('VcuStatus')
    values = {s.name: 0 for s in status.signals}
    values.update(ActiveMapChecksum=0x1234, MapFallback=1)
    frame = can.Message(arbitration_id=status.frame_id, is_extended_id=False,
                        data=status.encode(values), timestamp=1_790_000_000.0)
    outcome, report, bad = link.on_frame(frame)
    assert outcome is None and not bad
    assert (report.checksum, report.fallback) == (0x1234, True)
    short = can.Message(arbitration_id=status.frame_id, is_extended_id=False, data=b'\x01',
                        timestamp=1.0)
    assert link.on_frame(short) == (None, None, True)


class ExactLink:
    """Another transport: exact torques, answered when the write is committed."""

    name = 'exact'
    writes_maps = True
    reports_status = False
    resolution_nm = 0.0
    ack_timeout_s = 1.0

    def __init__(self):
        self.vcu_map = DEFAULT
        self.writes = []
        self.pending = None

    def on_frame(self, frame):
        return None, None, False

    def write(self, admitted, row_start, row_count, transfer_id, version):
        self.pending = LinkWrite(transfer_id, version, (), admitted)
        self.writes.append((row_start, row_count))
        return self.pending

    def restore(self, default_map, transfer_id):
        self.pending = LinkWrite(transfer_id, 0, (), default_map)
        return self.pending

    def commit_sent(self, now_s):
        self.vcu_map = self.pending.flashed_map

    def answer(self):
        transfer, self.pending = self.pending, None
        return TransferOutcome(transfer.transfer_id, TransferStatus.ACCEPTED,
                               transfer.map_version, 0, whole_map_checksum(self.vcu_map))

    def overdue(self, now_s):
        return False

    def cancel(self):
        self.pending = None

    def heartbeat(self, counter, version, checksum):
        return None


def test_a_link_of_another_transport_plugs_into_the_same_core():
    link = ExactLink()
    gate = SafetyGate(DEFAULT, 250.0, 1.0, 4, resolution_nm=0.0)
    core = CanBridgeCore(DB, DEFAULT, gate, WindowBuilder(), link=link)
    assert core.flash_protocol == 'exact'
    proposed = apply_action(DEFAULT, DEFAULT, np.full((4, DEFAULT.shape[1]), -0.37), 3,
                            policy_version=5)
    started = core.begin_flash(proposed, 3, 4)
    assert isinstance(started, LinkWrite) and link.writes == [(3, 4)]
    core.commit_sent(0.0)
    result = core._settle(link.answer())
    assert result.error == FlashError.NONE and core.active_map.policy_version == 5
    assert not np.allclose(core.active_map.torque_nm, DEFAULT.torque_nm)
    # The gate still rules (and a link with a resolution other than the gate's is refused).
    bad = DEFAULT.with_torque(DEFAULT.torque_nm - 1000.0, 6, 1)
    assert core.begin_flash(bad, 3, 4).error == FlashError.REJECTED_BY_SAFETY_GATE
    with pytest.raises(ValueError, match='resolution_nm=0.5'):
        CanBridgeCore(DB, DEFAULT, gate, WindowBuilder(), link=CanTransferLink(DB))
    core.begin_restore_default()
    core.commit_sent(1.0)
    assert core._settle(link.answer()).success and core.active_is_default
