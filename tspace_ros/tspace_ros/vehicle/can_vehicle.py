"""
The simulated van as seen on its CAN bus: drive signals, VCU status and diagnostics, map flashing.

``CanVehicle`` wraps a ``VehicleSimulation`` and speaks the shipped DBC
(``config/dbc/tspace_sim_van.dbc``), the way the real van's gateway would:

- ``advance(duration_s)`` simulates and returns every frame the van sends in
  that time, in time order: VehicleDynamics, BatteryStatus and MotorStatus for
  every sample of the simulation (50 Hz by default), VcuStatus at the status
  rate (10 Hz) and VcuDiagnostics at the diagnostics rate (1 Hz). Periodic
  frames fall on whole multiples of their period in simulated time (the first
  one period after the start); at equal times the drive signals come first.
- ``receive(frames, now_s)`` feeds frames from the bus to the VCU's
  torque-map receiver (``VcuMapReceiver``) and returns its acknowledgements; an
  accepted map becomes the simulation's active map at once
  (``sim.vcu.set_map``). ``poll(now_s)`` lets an open transfer time out.
- XCP (``is_xcp``: the XCP slave's master -> slave id) goes to the VCU's XCP
  slave through ``receive`` too; a real ECU answers XCP commands as they arrive,
  so the van's bus reader (``vehicle.bus_reader``) answers them at once, from a
  thread of its own, rather than once per simulation step.

Threads: ``lock`` (re-entrant) guards the simulation and the VCU. ``advance``,
``receive`` and ``poll`` take it; whoever steps the simulation holds it for the
whole step (the node: receive, advance, send, publish the clock), so an XCP
command answered from another thread, and the page switch it may make, fall
between two steps, never inside one: a map is applied for whole steps only.

Time: every frame is stamped with the UTC time of the simulated instant,
``start_utc_ns + t`` (python-can timestamps: float seconds since the Unix
epoch). ``now_s`` of ``receive`` and ``poll`` is simulated time in seconds
since the start (normally ``t_s``), so the VCU's transfer time-out runs in
simulated time too.

VcuStatus: state DRIVE while the cycle runs, MAP_UPDATE while a transfer is
open, READY once the cycle has finished (never with ``repeat_cycle``); the
active map version; an alive counter that counts status frames modulo 16; no
faults.

VcuDiagnostics: a deliberately simple lumped thermal model, not calibrated to
any vehicle, so that the temperatures move plausibly. Each of motor, inverter
and battery is one heat capacity C (J/K) coupled through a thermal resistance
R (K/W) to coolant at ``AMBIENT_C`` (25 degC); all start at ambient:

- motor: 60 % of the motor and inverter losses (``Motor.loss_w``),
  R 0.02 K/W, C 15 kJ/K (time constant 5 min; 1 kW of loss -> +12 K);
- inverter: the other 40 %, R 0.03 K/W, C 2 kJ/K (time constant 1 min);
- battery: its I^2 R loss, R 0.02 K/W, C 450 kJ/K (time constant 2.5 h).

Losses are integrated once per sample (``dT = dt / C x (P - (T - T_amb) / R)``).
The 12 V supply is constant at ``SUPPLY_VOLTAGE_V`` (DC/DC converter).

The VCU's own fallback: once a map other than the default is active and the
bridge has been silent for ``heartbeat_timeout_s`` of simulated time (no
BridgeHeartbeat with a new alive counter, no transfer frame), the VCU applies
its default map again by itself and reports ``MapFallback`` in VcuStatus
(which also carries the CRC of the whole active map). The simulated clock
stands still once the cycle has ended, and so does this time-out.

The VCU's own check of incoming maps (refusal OUT_OF_BOUNDS): every value of
the transferred rows within ``torque_limits(default, torque_budget_nm,
upper_bound)`` (the safety gate's limits around the vehicle's default map),
exactly: the bridge quantizes to the bus's 0.5 Nm inside those limits.
"""

from dataclasses import dataclass
import math
import threading
from typing import Iterable, List, Optional

import can
import numpy as np

from tspace_ros.can.dbc import Database, load_dbc
from tspace_ros.can.frames import (encode_vcu_diagnostics, encode_vcu_status,
                                   encode_vehicle_sample, VcuState)
from tspace_ros.can.transfer import VcuMapReceiver
from tspace_ros.can.xcp_link import decode_map, encode_rows, SIM_VAN_MAP_ADDRESS, XcpMapLayout
from tspace_ros.torque_map import torque_limits, TorqueMap
from tspace_ros.vehicle.powertrain import RPM_PER_RAD_S
from tspace_ros.vehicle.simulation import DriveMetrics, VehicleSimulation
from tspace_ros.vehicle.xcp_slave import XcpSlave

NS_PER_S = 1_000_000_000

AMBIENT_C = 25.0
"""Coolant and ambient temperature of the thermal model, degC."""

SUPPLY_VOLTAGE_V = 13.8
"""The 12 V network's voltage reported in VcuDiagnostics, V."""

MOTOR_LOSS_SHARE = 0.6
"""Share of ``Motor.loss_w`` (motor + inverter) heating the motor; the rest heats the inverter."""


@dataclass
class ThermalMass:
    """
    One lumped heat capacity coupled to the coolant: temperature over heat input.

    Attributes
    ----------
    resistance_k_per_w:
        Thermal resistance to the coolant, K/W.
    capacity_j_per_k:
        Heat capacity, J/K.
    temperature_c:
        Present temperature, degC.

    """

    resistance_k_per_w: float
    capacity_j_per_k: float
    temperature_c: float = AMBIENT_C

    def step(self, heat_w: float, dt_s: float) -> float:
        """Add heat_w watts for dt_s seconds (explicit Euler); return the new temperature."""
        cooling_w = (self.temperature_c - AMBIENT_C) / self.resistance_k_per_w
        self.temperature_c += dt_s * (heat_w - cooling_w) / self.capacity_j_per_k
        return self.temperature_c


def _periodic_times(rate_hz: float, index: int, t_end_s: float):
    """Return (times of events index, index + 1, ... at or before t_end_s, next index)."""
    period = 1.0 / rate_hz
    times = []
    while index * period <= t_end_s + 1e-9:
        times.append(index * period)
        index += 1
    return times, index


class CanVehicle:
    """
    A VehicleSimulation on a CAN bus: frames out, map transfers in.

    Parameters
    ----------
    sim:
        The simulation (at t = 0, or wherever it is: the frames follow its time).
    db:
        The cantools database (default: the shipped DBC, ``load_dbc()``).
    start_utc_ns:
        UTC time of simulated t = 0, integer ns since the Unix epoch (>= 0).
    status_rate_hz, diagnostics_rate_hz:
        Rates of VcuStatus and VcuDiagnostics, Hz (> 0).
    torque_budget_nm, upper_bound:
        The VCU's bounds for incoming maps (see the module docstring).
    transfer_timeout_s:
        Simulated seconds after which the VCU drops a transfer that went quiet.
    heartbeat_timeout_s:
        Simulated seconds of silence from the bridge after which the VCU goes
        back to its default map by itself (0: never).

    """

    BOUNDS_SLACK_NM = 1e-6
    """Float noise allowed by the VCU's bounds check, Nm (the bridge sends exact steps)."""

    def __init__(self, sim: VehicleSimulation, db: Optional[Database] = None,
                 start_utc_ns: int = 0, status_rate_hz: float = 10.0,
                 diagnostics_rate_hz: float = 1.0, torque_budget_nm: float = 250.0,
                 upper_bound: float = 1.0, transfer_timeout_s: float = 1.0,
                 heartbeat_timeout_s: float = 0.5):
        """Set up the bus side of the simulation; no frame is produced yet."""
        if isinstance(start_utc_ns, bool) or not isinstance(start_utc_ns, (int, np.integer)) \
                or start_utc_ns < 0:
            raise ValueError(f'start_utc_ns must be an integer >= 0 (ns since the Unix epoch), '
                             f'got {start_utc_ns!r}')
        for name, rate in (('status_rate_hz', status_rate_hz),
                           ('diagnostics_rate_hz', diagnostics_rate_hz)):
            if not (math.isfinite(rate) and rate > 0.0):
                raise ValueError(f'{name} must be > 0, got {rate}')
        self.sim = sim
        self.db = db if db is not None else load_dbc()
        self.start_utc_ns = int(start_utc_ns)
        self.status_rate_hz = float(status_rate_hz)
        self.diagnostics_rate_hz = float(diagnostics_rate_hz)
        default = sim.vcu.default_map
        self.torque_budget_nm = float(torque_budget_nm)
        self.upper_bound = float(upper_bound)
        self.lower_nm, self.upper_nm = torque_limits(default.torque_nm, self.torque_budget_nm,
                                                     self.upper_bound)
        self.receiver = VcuMapReceiver(
            self.db, sim.vcu.active_map, sim.vcu.map_version, bounds_check=self._bounds_check,
            apply=sim.vcu.set_map, transfer_timeout_s=transfer_timeout_s,
            reference_map=default, heartbeat_timeout_s=heartbeat_timeout_s)
        # XCP calibration of the same map (flash_protocol xcp): reference page = the
        # default map, working page written by the master, the page switch applies it.
        self.xcp = XcpSlave(encode_rows(default.torque_nm), SIM_VAN_MAP_ADDRESS,
                            timeout_s=heartbeat_timeout_s, on_page_change=self._xcp_page)
        self.motor_thermal = ThermalMass(0.02, 15_000.0)
        self.inverter_thermal = ThermalMass(0.03, 2_000.0)
        self.battery_thermal = ThermalMass(0.02, 450_000.0)
        start = sim.t_s
        self._next_status = int(math.floor(start * self.status_rate_hz + 1e-9)) + 1
        self._next_diagnostics = int(math.floor(start * self.diagnostics_rate_hz + 1e-9)) + 1
        self.alive_counter = 0
        self.frames_sent = 0
        self.acks_sent = 0
        self.frames_received = 0
        self.lock = threading.RLock()

    def is_xcp(self, frame: can.Message) -> bool:
        """Whether a frame is an XCP command for the VCU's slave (answered as it arrives)."""
        return frame.arbitration_id == self.xcp.master_id and not frame.is_extended_id

    @property
    def t_s(self) -> float:
        """Return the simulated time, s since the start."""
        return self.sim.t_s

    def utc_ns_at(self, t_s: float) -> int:
        """Return the UTC time, integer ns since the Unix epoch, of simulated time t_s."""
        return self.start_utc_ns + round(t_s * NS_PER_S)

    def timestamp_s(self, t_s: float) -> float:
        """Return the python-can timestamp (UTC s since the epoch) of simulated time t_s."""
        return self.utc_ns_at(t_s) / NS_PER_S

    @property
    def utc_ns(self) -> int:
        """Return the UTC time of the present simulated instant, ns since the Unix epoch."""
        return self.utc_ns_at(self.t_s)

    @property
    def finished(self) -> bool:
        """Return whether the drive cycle has ended (never with repeat_cycle)."""
        return self.sim.finished

    @property
    def metrics(self) -> DriveMetrics:
        """Return the simulation's metrics so far."""
        return self.sim.metrics

    @property
    def active_map(self) -> TorqueMap:
        """Return the torque map the VCU applies now."""
        return self.sim.vcu.active_map

    @property
    def active_version(self) -> int:
        """Return the version of the active map (0: the default map)."""
        return self.receiver.active_version

    @property
    def state(self) -> VcuState:
        """Return the VCU state the next status frame reports."""
        return self._state_at(self.t_s)

    def _state_at(self, t_s: float) -> VcuState:
        if self.receiver.open_transfer_id is not None:
            return VcuState.MAP_UPDATE
        if not self.sim.repeat_cycle and t_s >= self.sim.trace.duration_s - 1e-9:
            return VcuState.READY
        return VcuState.DRIVE

    def advance(self, duration_s: float) -> List[can.Message]:
        """
        Simulate duration_s seconds; return the frames sent in that time, oldest first.

        Each frame's ``timestamp`` is ``(start_utc_ns + t) / 1e9``: UTC seconds of
        the simulated instant t it belongs to. BatteryEmptyError (from the
        simulation) propagates; the frames of that call are lost with it.
        """
        with self.lock:
            return self._advance(duration_s)

    def _advance(self, duration_s: float) -> List[can.Message]:
        samples = self.sim.advance(duration_s)
        t_end = self.sim.t_s
        db = self.db
        # (t, order, frame): drive signals before status before diagnostics at equal t.
        timed = []
        motor, battery_ohm = self.sim.motor, self.sim.params.battery.internal_resistance_ohm
        dt = 1.0 / self.sim.signal_rate_hz
        motor_t, inverter_t, battery_t = (self.motor_thermal, self.inverter_thermal,
                                          self.battery_thermal)
        for sample in samples:
            stamp = self.timestamp_s(sample.t_s)
            for frame in encode_vehicle_sample(db, sample._asdict(), stamp):
                timed.append((sample.t_s, 0, frame))
            loss_w = motor.loss_w(sample.motor_torque_nm,
                                  sample.motor_speed_rpm / RPM_PER_RAD_S)
            motor_t.step(MOTOR_LOSS_SHARE * loss_w, dt)
            inverter_t.step((1.0 - MOTOR_LOSS_SHARE) * loss_w, dt)
            battery_t.step(sample.current_a * sample.current_a * battery_ohm, dt)
        status_times, self._next_status = _periodic_times(self.status_rate_hz,
                                                          self._next_status, t_end)
        for t in status_times:
            frame = encode_vcu_status(db, self._state_at(t), self.active_version,
                                      self.alive_counter, (), self.timestamp_s(t),
                                      self.receiver.active_checksum,
                                      self.receiver.fallback_active)
            self.alive_counter = (self.alive_counter + 1) % 16
            timed.append((t, 1, frame))
        diagnostic_times, self._next_diagnostics = _periodic_times(
            self.diagnostics_rate_hz, self._next_diagnostics, t_end)
        for t in diagnostic_times:
            timed.append((t, 2, encode_vcu_diagnostics(
                db, motor_t.temperature_c, inverter_t.temperature_c, battery_t.temperature_c,
                SUPPLY_VOLTAGE_V, self.timestamp_s(t))))
        timed.sort(key=lambda item: (item[0], item[1]))
        frames = [frame for _, _, frame in timed]
        self.frames_sent += len(frames)
        return frames

    def receive(self, frames: Iterable[can.Message], now_s: Optional[float] = None
                ) -> List[can.Message]:
        """
        Feed frames from the bus to the VCU; return its acks, stamped at now_s.

        now_s: simulated time, s since the start (default ``t_s``). Frames other
        than MapSegment and MapCommit are ignored; an accepted map is active
        when this returns.
        """
        with self.lock:
            now = self.t_s if now_s is None else float(now_s)
            acks = []
            for frame in frames:
                self.frames_received += 1
                if self.is_xcp(frame):
                    acks += self.xcp.on_frame(frame, now)
                else:
                    acks += self.receiver.feed(frame, now)
            return self._stamp(acks, now)

    def _xcp_page(self, page: int, data: bytes) -> None:
        """Apply the calibration page the ECU now uses (XCP's page switch or a write)."""
        default = self.sim.vcu.default_map
        if page == 0:  # the reference page is the default map itself, exactly
            self.sim.vcu.set_map(default)
            return
        table = decode_map(data, XcpMapLayout(SIM_VAN_MAP_ADDRESS, *default.shape))
        self.sim.vcu.set_map(default.with_torque(table, self.sim.vcu.map_version + 1, 1))

    def poll(self, now_s: Optional[float] = None) -> List[can.Message]:
        """Return the ack of a transfer that timed out by now_s (simulated s), if any."""
        with self.lock:
            now = self.t_s if now_s is None else float(now_s)
            self.xcp.poll(now)  # the ECU's own fallback to its reference page
            return self._stamp(self.receiver.poll(now), now)

    def _stamp(self, acks: List[can.Message], now_s: float) -> List[can.Message]:
        stamp = self.timestamp_s(now_s)
        for ack in acks:
            ack.timestamp = stamp
        self.acks_sent += len(acks)
        return acks

    def _bounds_check(self, proposed: TorqueMap, current: TorqueMap, row_start: int,
                      row_count: int) -> Optional[str]:
        """Return None if the transferred rows are within the VCU's bounds, else why not."""
        rows = slice(row_start, row_start + row_count)
        torque = np.asarray(proposed.torque_nm, dtype=np.float64)[rows]
        slack = self.BOUNDS_SLACK_NM
        lower, upper = self.lower_nm[rows] - slack, self.upper_nm[rows] + slack
        below, above = torque < lower, torque > upper
        if not (below.any() or above.any()):
            return None
        excess = np.maximum(lower - torque, torque - upper)
        r, c = np.unravel_index(np.argmax(excess), excess.shape)
        speed = proposed.speed_breakpoints_kph[row_start + r]
        pedal = proposed.pedal_breakpoints[c]
        side, limit = (('below the lower', self.lower_nm) if below[r, c] else
                       ('above the upper', self.upper_nm))
        return (f'{int(below.sum() + above.sum())} values outside the VCU bounds '
                f'(default - {self.torque_budget_nm:g} Nm .. default + ({self.upper_bound:g} '
                f'- 1) x |default|); worst '
                f'{torque[r, c]:.2f} Nm {side} limit {limit[row_start + r, c]:.2f} Nm at row '
                f'{row_start + r} ({speed:g} km/h), column {c} (pedal {pedal:g})')
