"""
A stateful property test of the safety gate, the bridge core and the VCU.

Hypothesis drives a ``CanBridgeCore`` and a ``VcuMapReceiver`` (the simulated
VCU, with its heartbeat time-out) over a bus that may lose frames, through any
sequence of: flash goals from any origin, with any rows and any values (NaN,
inf, huge, within and beyond the budget); policy versions that jump; restores
(deactivate, the watchdog); time passing with and without the bridge's
heartbeat (the bridge dies); acks that never come (VCU time-outs); and status
frames. After every step:

- the map on the VCU is within the gate's limits with no tolerance at all;
- every change of the VCU's map is either a return to its default or touches at
  most ``rows_per_action`` consecutive rows;
- after the bridge's silence for the VCU's time-out, the VCU is on its default;
- no exception escapes the bridge core, and when the bridge believes the
  default is active, it is (or the bridge says it is in doubt).
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule, RuleBasedStateMachine
import numpy as np
import pytest
from torque_map_support import tspace_like_map

from tspace_ros.can.bridge import CanBridgeCore, FlashResult
from tspace_ros.can.dbc import load_dbc
from tspace_ros.can.frames import encode_vcu_status, VcuState
from tspace_ros.can.transfer import TORQUE_RESOLUTION_NM, VcuMapReceiver
from tspace_ros.can.windowing import WindowBuilder
from tspace_ros.torque_map import SafetyGate, TorqueMap, TorqueMapError

DB = load_dbc()
DEFAULT = tspace_like_map('VIN-STATEFUL')
ROWS_PER_ACTION = 4
HEARTBEAT_TIMEOUT_S = 0.5
STRICT = SafetyGate(DEFAULT, rows_per_action=ROWS_PER_ACTION, tolerance_nm=0.0)

values = st.one_of(
    st.floats(-250.0, 0.0),                         # offsets within the budget
    st.floats(-300.0, 50.0),                        # and around it
    st.sampled_from([float('nan'), float('inf'), -float('inf'), 1e30, -1e30, 250.0,
                     -250.0, -250.2, -249.8, 0.24, 0.26]))
starts = st.one_of(st.integers(0, 13), st.integers(-2, 15))
counts = st.one_of(st.integers(1, ROWS_PER_ACTION), st.integers(-1, 6))


class GateBridgeVcu(RuleBasedStateMachine):
    """The bridge core and the VCU on a lossy bus; see the module docstring."""

    def __init__(self):
        super().__init__()
        gate = SafetyGate(DEFAULT, rows_per_action=ROWS_PER_ACTION,
                          resolution_nm=TORQUE_RESOLUTION_NM)
        self.core = CanBridgeCore(DB, DEFAULT, gate, WindowBuilder(vehicle_id='VIN-STATEFUL'),
                                  ack_timeout_s=3.0)
        self.vcu = VcuMapReceiver(DB, DEFAULT, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
        self.now_s = 0.0
        self.alive = True           # the bridge process runs (and sends its heartbeat)
        self.last_sign_s = None     # last frame from the bridge that the VCU received
        self.previous = self.vcu.active_map.torque_nm.copy()
        self.transfer = None

    # ---- the bus --------------------------------------------------------------------------

    def _to_vcu(self, frames, lose=()):
        acks = []
        for k, frame in enumerate(frames):
            if k in lose:
                continue
            acks += self.vcu.feed(frame, self.now_s)
            self.last_sign_s = self.now_s
        self._check_change()
        return acks

    def _to_bridge(self, frames):
        if not self.alive:
            return
        for frame in frames:
            self.core.on_frame(frame)

    def _check_change(self):
        """Check a change of the VCU map: back to the default, or a few consecutive rows."""
        now = self.vcu.active_map.torque_nm
        changed = np.flatnonzero(np.any(now != self.previous, axis=1))
        if changed.size and not np.array_equal(now, DEFAULT.torque_nm):
            assert changed.size <= ROWS_PER_ACTION, changed
            assert changed[-1] - changed[0] < ROWS_PER_ACTION, changed
        self.previous = now.copy()

    # ---- rules ----------------------------------------------------------------------------

    @precondition(lambda self: self.alive)
    @rule(row_start=starts, row_count=counts,
          origin=st.sampled_from([0, 1, 2]), version=st.integers(0, 2 ** 40),
          offsets=st.lists(values, min_size=1, max_size=3), others=st.booleans(),
          lose=st.sets(st.integers(0, 30), max_size=2), answer=st.booleans())
    def flash_goal(self, row_start, row_count, origin, version, offsets, others, lose, answer):
        table = np.array(self.core.active_map.torque_nm)
        target = np.resize(np.asarray(offsets), table.shape)
        rows = slice(max(row_start, 0), max(row_start + row_count, 0))
        table[rows] = DEFAULT.torque_nm[rows] + target[rows]
        if others:  # the client also scribbles outside its rows
            table[0] += target[0]
        try:
            proposed = TorqueMap(DEFAULT.speed_breakpoints_kph, DEFAULT.pedal_breakpoints,
                                 table, 'VIN-STATEFUL', version, origin)
        except TorqueMapError:
            return  # a non-finite map never gets past the message conversion
        started = self.core.begin_flash(proposed, row_start, row_count)
        if isinstance(started, FlashResult):
            assert not started.success
            return
        self.core.commit_sent(self.now_s)
        acks = self._to_vcu(started.frames, lose)
        if answer:
            self._to_bridge(acks)

    @precondition(lambda self: self.alive)
    @rule(lose=st.booleans())
    def restore_default(self, lose):
        """Deactivate, shutdown or the watchdog: revert the VCU to its default."""
        transfer = self.core.begin_restore_default()
        self.core.commit_sent(self.now_s)
        acks = self._to_vcu(transfer.frames, {0} if lose else ())
        self._to_bridge(acks)

    @rule(dt=st.floats(0.01, 2.0), heartbeat=st.booleans())
    def time_passes(self, dt, heartbeat):
        """Time passes; the living bridge sends its heartbeat (unless it stalls)."""
        steps = max(1, int(dt / 0.05))
        for _ in range(steps):
            self.now_s += dt / steps
            if self.alive and heartbeat:
                frame = self.core.heartbeat_frame(self.now_s, self.now_s)
                if frame is not None:
                    self._to_vcu([frame])
            acks = self.vcu.poll(self.now_s)
            self._check_change()
            self._to_bridge(acks)
            if self.alive:
                self.core.poll(self.now_s)

    @rule()
    def vcu_status(self):
        """Deliver the VCU 10 Hz status frame to the bridge."""
        frame = encode_vcu_status(DB, VcuState.DRIVE, self.vcu.active_version, 0, (),
                                  1_790_000_000.0 + self.now_s, self.vcu.active_checksum,
                                  self.vcu.fallback_active)
        self._to_bridge([frame])

    @precondition(lambda self: self.alive)
    @rule()
    def bridge_dies(self):
        self.alive = False

    # ---- invariants -----------------------------------------------------------------------

    @invariant()
    def the_vcu_map_is_within_the_limits(self):
        verdict = STRICT.check_full_map(self.vcu.active_map)
        assert verdict.ok, verdict.message

    @invariant()
    def silence_brings_the_default_back(self):
        if self.last_sign_s is not None and \
                self.now_s - self.last_sign_s >= HEARTBEAT_TIMEOUT_S + 0.05:
            self.vcu.poll(self.now_s)
            assert self.vcu.on_reference

    @invariant()
    def the_bridge_does_not_believe_a_wrong_default(self):
        if self.alive and self.core.active_is_default and not self.core.flash_pending:
            # What the bridge calls the default is the default, unless an unanswered
            # flash is still open on the VCU's side (its answer or status will tell).
            assert self.vcu.on_reference or self.vcu.open_transfer_id is not None or \
                self.core.active_checksum != self.vcu.active_checksum


GateBridgeVcu.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                           deadline=None)
test_gate_bridge_and_vcu = GateBridgeVcu.TestCase


@pytest.mark.parametrize('origin', [0, 1, 2])
def test_the_admitted_map_decides_its_own_origin(origin):
    gate = SafetyGate(DEFAULT, resolution_nm=TORQUE_RESOLUTION_NM)
    changed = np.array(DEFAULT.torque_nm)
    changed[3:7] -= 100.0
    _, admitted = gate.admit(DEFAULT.with_torque(changed, 4, origin), DEFAULT, 3, 4)
    assert admitted.origin == 1
    _, same = gate.admit(DEFAULT.with_torque(DEFAULT.torque_nm, 4, origin), DEFAULT, 3, 4)
    # The default rows round to bus steps inside the limits: equal to the default only
    # where the default itself lies on the grid.
    assert same is not None
    assert same.origin == (0 if np.array_equal(same.torque_nm, DEFAULT.torque_nm) else 1)


def test_the_origin_field_is_validated():
    with pytest.raises(TorqueMapError, match='origin'):
        DEFAULT.with_torque(DEFAULT.torque_nm, 1, origin=7)
    with pytest.raises(TorqueMapError, match='policy_version'):
        DEFAULT.with_torque(DEFAULT.torque_nm, -1)
