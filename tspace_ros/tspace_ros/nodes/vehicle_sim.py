"""
Lifecycle node: the simulated electric van on a CAN bus, driven through a drive cycle.

A thin adapter around ``tspace_ros.vehicle.can_vehicle.CanVehicle``. While
active, a wall-clock timer advances the simulation by ``step_s`` simulated
seconds every ``step_s / real_time_factor`` wall seconds (every millisecond
when real_time_factor is 0: as fast as it goes, at most step_s x 1000 times
real time; raise step_s to go faster) and puts the van's frames on
the bus: drive signals at 50 Hz, VcuStatus at 10 Hz, VcuDiagnostics at 1 Hz,
stamped with the simulated UTC time ``start_utc + t``. Torque-map transfers
that arrive on the bus go to the simulated VCU, which answers with MapAck
frames and drives with an accepted map from the next step on. XCP commands
(flash_protocol xcp: pyxcp writes the map's working page) are answered as they
arrive, by a thread that reads the bus (``vehicle.bus_reader.VanBusReader``), as
a real ECU's XCP driver does, not once per step; the step holds the vehicle's
lock from reading the frames to publishing the clock, so a page switch falls
between two steps. The van answers XCP while configured (also while inactive,
its clock standing still: a parked van's ECU is still powered).

The bus: ``can_interface`` 'ros_topic' (default) is a TopicCanBus, side 'bus':
the van sends on ``from_can_bus`` and receives on ``to_can_bus`` (relative
names, so they follow the namespace); any other value is a python-can
interface opened with ``can_channel``.

Topics (lifecycle publishers: silent unless active):

- ``/clock`` (rosgraph_msgs/Clock), after every step: the simulated UTC time,
  equal to the stamp of the newest frame of that step. Reliable, keep last 10:
  matches rclpy's and rclcpp's best-effort clock subscriptions and reliable
  ones. Off with ``publish_clock`` false (one clock per graph: with several
  simulated vans, let one publish). The node itself never uses sim time: its
  timers run on the steady clock.
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), once per wall second and
  when the cycle ends, stamped with the simulated time: real-time factor,
  simulated time, speed, state of charge, energy, map version, frame counts.

When the cycle ends (unless ``repeat_cycle``) the node logs the episode's
metrics once and stops advancing; it still answers map transfers. Parameters
are declared with descriptors; a wrong value (unknown cycle, unreadable
vehicle file, bus that cannot be opened, malformed start time) makes configure
fail with a log line that names the parameter and the reason.
"""

import datetime
import math
import sys
import time

import can
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg

from tspace_ros.can.dbc import load_dbc
from tspace_ros.nodes.can_bus import CanBusUnavailable, open_can_bus
from tspace_ros.nodes.diagnostics import diagnostic_array, ERROR, OK, WARN
from tspace_ros.nodes.lifecycle import run_lifecycle_node, TspaceLifecycleNode
from tspace_ros.nodes.messages import time_from_ns
from tspace_ros.vehicle import (BatteryEmptyError, drive_cycle, DriveCycleError,
                                load_vehicle_parameters, VehicleConfigError, VehicleSimulation)
from tspace_ros.vehicle.bus_reader import VanBusReader
from tspace_ros.vehicle.can_vehicle import CanVehicle

CLOCK_TOPIC = '/clock'
VCU_HEARTBEAT_TIMEOUT_S = 0.5
"""A vehicle VCU's time-out on the bridge's heartbeat, s (wall time)."""
DIAGNOSTICS_TOPIC = '/diagnostics'

# Reliable keep-last: a reliable publisher serves best-effort subscribers too (rclpy's
# TimeSource subscribes best effort, depth 1), and reliable ones lose no tick.
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

FASTEST_PERIOD_S = 0.001
"""Timer period when real_time_factor is 0 (and the shortest one at any factor), s."""

DIAGNOSTICS_PERIOD_S = 1.0
"""Wall seconds between /diagnostics messages."""

FINISHED = 'cycle finished'
"""The reason the node stops advancing at a cycle's normal end."""

NS_PER_S = 1_000_000_000
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def parse_utc_ns(text: str) -> int:
    """
    Return integer ns since the Unix epoch for an ISO-8601 time.

    A time without a UTC offset is UTC ('2026-11-21T18:30:00', '...Z',
    '...+01:00' all work). ValueError, saying what is expected, otherwise.
    """
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an ISO-8601 time such as '2026-11-21T18:30:00Z' (or '' "
                         f'for the wall time at configure), got {text!r}') from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    delta = moment - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000
    if ns < 0:
        raise ValueError(f'expected a time after 1970-01-01T00:00:00Z, got {text!r}')
    return ns


def vcu_heartbeat_timeout_s(p: dict) -> float:
    """
    Return the simulated VCU's heartbeat time-out, simulated s, from the node's parameters.

    An explicit ``heartbeat_timeout_s`` is taken as it is. 0 (auto) is the
    vehicle's 0.5 s in wall time: 0.5 x real_time_factor simulated seconds
    (the simulation may run much faster than real time), at least four steps
    (the VCU reads the bus once per step); as fast as possible (factor 0),
    step_s x 1000 x 0.5.
    """
    if p['heartbeat_timeout_s'] > 0:
        return float(p['heartbeat_timeout_s'])
    factor = p['real_time_factor'] if p['real_time_factor'] > 0 else \
        p['step_s'] / FASTEST_PERIOD_S
    return max(VCU_HEARTBEAT_TIMEOUT_S * max(factor, 1.0), 4 * p['step_s'])


def format_utc(ns: int) -> str:
    """Return an ISO-8601 UTC string (ms resolution) for ns since the Unix epoch."""
    moment = _EPOCH + datetime.timedelta(microseconds=ns // 1000)
    return moment.isoformat(timespec='milliseconds').replace('+00:00', 'Z')


class VehicleSim(TspaceLifecycleNode):
    """The simulated van on a CAN bus while active; see the module docstring."""

    def __init__(self, node_name: str = 'vehicle_sim', **kwargs):
        """Declare the parameters; nothing is created before configure."""
        super().__init__(node_name, **kwargs)
        self.declare_described('vehicle_config', '',
                               "Vehicle parameter file (YAML); '' for the shipped sim_van.")
        self.declare_described('cycle', 'wltc3b', 'Drive cycle: wltc3b, wltc3a or nedc.')
        self.declare_described('cycle_end_s', 0.0,
                               'Drive only the first this many seconds of the cycle (0: all).',
                               (0.0, 1e6))
        self.declare_described('driver_model', '',
                               'Simulated driver: pi (meets the trace, inverting the map) or '
                               'dyno (a test driver within the tolerance band of the cycle); '
                               "'' = driver.model of the vehicle file.")
        self.declare_described('repeat_cycle', False,
                               'Start the cycle again at its end (endless operation).')
        self.declare_described('real_time_factor', 1.0,
                               'Simulated seconds per wall second; 0 runs as fast as possible.',
                               (0.0, 1.0e6))
        self.declare_described('step_s', 0.1, 'Simulated seconds per timer tick.',
                               (0.001, 10.0))
        self.declare_described('can_interface', 'ros_topic',
                               "CAN bus: 'ros_topic' (from_can_bus/to_can_bus topics) or a "
                               'python-can interface (socketcan, kvaser, virtual, ...).')
        self.declare_described('can_channel', '',
                               "CAN channel of the interface ('' = its default; a number or "
                               'a name such as can0).', any_type=True)
        self.declare_described('publish_clock', True,
                               'Publish the simulated UTC time on /clock.')
        self.declare_described('start_utc', '',
                               "UTC time of the cycle's start, ISO-8601; '' = the wall time "
                               'at configure.')
        self.declare_described('torque_budget_nm', 250.0,
                               "The VCU's bound for incoming maps: at most this far below the "
                               'default map, Nm.', (0.1, 10000.0))
        self.declare_described('vehicle_id', '', "Vehicle id (VIN); '' = the vehicle file's.")
        self.declare_described(
            'heartbeat_timeout_s', 0.0,
            "The VCU's own fallback: back to the default map after this much simulated time "
            "without the bridge's heartbeat, s; 0 = auto: 0.5 s of wall time at the "
            'real-time factor (0.5 x factor, at least 4 steps).', (0.0, 3600.0))
        self._vehicle = None
        self._bus = None
        self._reader = None
        self._clock_publisher = None
        self._diagnostics_publisher = None
        self._tick_timer = None
        self._diagnostics_timer = None
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._settings = {}
        self._stopped = ''
        self._final_real_time_factor = math.nan
        self._can_errors = 0
        self._reader_errors = 0
        self._active_since = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def vehicle(self):
        """Return the simulated van on its bus (a CanVehicle), or None unless configured."""
        return self._vehicle

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Build the simulated van and open its CAN bus; FAILURE (logged) on a wrong value."""
        if not self.parameters_valid():
            return TransitionCallbackReturn.FAILURE
        p = {name: self.get_parameter(name).value for name in (
            'vehicle_config', 'cycle', 'cycle_end_s', 'repeat_cycle', 'real_time_factor',
            'step_s', 'can_interface', 'can_channel', 'publish_clock', 'start_utc',
            'torque_budget_nm', 'vehicle_id', 'heartbeat_timeout_s', 'driver_model')}
        errors = []
        start_ns = time.time_ns()
        if p['start_utc'].strip():
            try:
                start_ns = parse_utc_ns(p['start_utc'])
            except ValueError as error:
                errors.append(f"parameter 'start_utc': {error}")
        cycle = None
        try:
            cycle = drive_cycle(p['cycle'])
            if p['cycle_end_s'] > 0:
                cycle = cycle.truncated(p['cycle_end_s'])
        except DriveCycleError as error:
            errors.append(f"parameter 'cycle': {error}")
        params = default_map = None
        try:
            params = load_vehicle_parameters(p['vehicle_config'] or None)
            default_map = params.load_default_map()
        except VehicleConfigError as error:
            errors.append(f"parameter 'vehicle_config': {error}")
        vehicle = None
        if not errors:
            try:
                sim = VehicleSimulation(params, cycle, default_map=default_map,
                                        repeat_cycle=p['repeat_cycle'],
                                        driver_model=p['driver_model'] or None)
                vehicle = CanVehicle(sim, load_dbc(), start_ns,
                                     torque_budget_nm=p['torque_budget_nm'],
                                     heartbeat_timeout_s=vcu_heartbeat_timeout_s(p))
            except (OSError, ValueError) as error:  # VehicleConfigError is a ValueError
                errors.append(f'cannot build the simulated vehicle: {error}')
        bus = None
        try:
            bus = open_can_bus(self, p['can_interface'], str(p['can_channel']), side='bus')
        except CanBusUnavailable as error:
            errors.append(f"parameter 'can_interface': {error}")
        if errors:
            for message in errors:
                self.configure_failed(f'{message}')
            if bus is not None:
                self._shutdown_bus(bus)
            return TransitionCallbackReturn.FAILURE
        self._vehicle, self._bus = vehicle, bus
        self._reader = VanBusReader(bus, lambda: self._vehicle)
        self._settings = dict(p, vehicle_id=p['vehicle_id'] or params.vehicle_id)
        self._stopped = ''
        self._final_real_time_factor = math.nan
        self._can_errors = self._reader_errors = 0
        if p['publish_clock']:
            self._clock_publisher = self.create_lifecycle_publisher(
                ClockMsg, CLOCK_TOPIC, CLOCK_QOS)
        self._diagnostics_publisher = self.create_lifecycle_publisher(
            DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self.get_logger().info(
            f'configured: vehicle {self._settings["vehicle_id"]} ({params.source}), cycle '
            f'{p["cycle"]} ({vehicle.sim.trace.duration_s:g} s'
            f'{", repeated" if p["repeat_cycle"] else ""}) from {format_utc(start_ns)}, '
            f'{p["step_s"]:g} s per step every {self._period_s():g} s (real-time factor '
            f'{p["real_time_factor"]:g}), CAN {p["can_interface"]} '
            f'{getattr(bus, "channel_info", "")}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Start the simulation: activate the publishers, start the wall-clock timers."""
        result = super().on_activate(state)
        self._active_since = (time.monotonic(), self._vehicle.t_s)
        self._tick_timer = self.create_timer(self._period_s(), self._tick, clock=self._steady)
        self._diagnostics_timer = self.create_timer(
            DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, clock=self._steady)
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Pause the simulation: stop the timers first, then deactivate the publishers."""
        self._destroy_timers()
        self._active_since = None
        return super().on_deactivate(state)

    # -- the simulation step --------------------------------------------------------------

    def _period_s(self) -> float:
        factor, step = self._settings['real_time_factor'], self._settings['step_s']
        return FASTEST_PERIOD_S if factor <= 0.0 else max(FASTEST_PERIOD_S, step / factor)

    def _tick(self):
        """Answer the frames that arrived, advance one step, send its frames and the clock."""
        vehicle = self._vehicle
        if vehicle is None:
            return
        # The whole step under the vehicle's lock: an XCP command (answered by the bus
        # reader's thread) falls before or after it, never between its frames.
        with vehicle.lock:
            self._step(vehicle)

    def _step(self, vehicle):
        try:
            acks = vehicle.receive(self._received()) + vehicle.poll()
            if acks:
                self._send(acks)
                self.get_logger().info(f'VCU: {vehicle.receiver.last_message}')
            if self._stopped:
                return
            step_s = self._settings['step_s']
            if not vehicle.sim.repeat_cycle:  # end exactly at the cycle's end
                step_s = min(step_s, vehicle.sim.trace.duration_s - vehicle.t_s)
            try:
                frames = vehicle.advance(step_s)
            except BatteryEmptyError as error:
                self._stop(f'battery empty ({error})')
                return
            self._send(frames)
            if self._clock_publisher is not None:
                self._clock_publisher.publish(ClockMsg(clock=time_from_ns(vehicle.utc_ns)))
            if vehicle.finished:
                self._stop(FINISHED)
        except Exception as error:  # noqa: B902 - a failing step must not kill the node
            self._stop(f'simulation step failed: {type(error).__name__}: {error}')

    def _received(self):
        """Return the frames that wait for this step (the reader answered XCP already)."""
        reader = self._reader
        if reader is None:
            return []
        errors = reader.errors
        if errors != self._reader_errors:
            self._can_errors += errors - self._reader_errors - 1
            self._reader_errors = errors
            self._count_bus_error('receive', reader.last_error)
        return reader.take()

    def _send(self, frames):
        if not frames:
            return
        try:
            if hasattr(self._bus, 'send_batch'):
                self._bus.send_batch(frames)
            else:
                for frame in frames:
                    self._bus.send(frame)
        except can.CanError as error:
            self._count_bus_error('send', error)

    def _count_bus_error(self, what: str, error: Exception):
        self._can_errors += 1
        self.get_logger().error(f'CAN {what} failed ({self._can_errors} errors so far): '
                                f'{error}', throttle_duration_sec=5.0)

    def _stop(self, reason: str):
        """Stop advancing (once), log the episode's metrics and publish diagnostics."""
        if self._stopped:
            return
        self._final_real_time_factor = self._real_time_factor()
        self._stopped = reason
        m = self._vehicle.metrics
        text = (f'{reason} at t = {m.duration_s:.1f} s: {m.distance_km:.3f} km, battery energy '
                f'{m.battery_energy_wh:.1f} Wh = {m.energy_per_km_wh:.1f} Wh/km (regenerated '
                f'{m.regenerated_wh:.1f} Wh), speed error RMS {m.rms_speed_error_kph:.3f} '
                f'km/h (max {m.max_speed_error_kph:.2f}), SoC {m.soc_start:.4f} -> '
                f'{m.soc_end:.4f}, real-time factor {self._real_time_factor():.1f} '
                f'(simulation alone {m.real_time_factor:.0f}); map version '
                f'{self._vehicle.active_version}')
        if reason == FINISHED:
            self.get_logger().info(text)
        else:
            self.get_logger().error(text)
        self._publish_diagnostics()

    def _real_time_factor(self) -> float:
        """Return simulated / wall s since activation, frozen once stopped (nan: unknown)."""
        if self._stopped:
            return self._final_real_time_factor
        if self._active_since is None:
            return math.nan
        wall_start, sim_start = self._active_since
        wall = time.monotonic() - wall_start
        return (self._vehicle.t_s - sim_start) / wall if wall > 0.0 else math.nan

    def _publish_diagnostics(self):
        vehicle = self._vehicle
        if vehicle is None or self._diagnostics_publisher is None:
            return
        m = vehicle.metrics
        if self._stopped and self._stopped != FINISHED:
            level, message = ERROR, self._stopped
        elif self._can_errors:
            level, message = WARN, f'{self._can_errors} CAN errors'
        else:
            level, message = OK, self._stopped or f'driving {self._settings["cycle"]}'
        values = {
            'real_time_factor': f'{self._real_time_factor():.2f}',
            'target_real_time_factor': f'{self._settings["real_time_factor"]:g}',
            'sim_time_s': f'{vehicle.t_s:.3f}',
            'sim_utc': format_utc(vehicle.utc_ns),
            'cycle': self._settings['cycle'],
            'finished': str(vehicle.finished),
            'speed_kph': f'{vehicle.sim.speed_kph:.2f}',
            'soc': f'{vehicle.sim.battery.soc:.5f}',
            'battery_energy_wh': f'{m.battery_energy_wh:.2f}',
            'distance_km': f'{m.distance_km:.4f}',
            'energy_per_km_wh': f'{m.energy_per_km_wh:.2f}',
            'regenerated_wh': f'{m.regenerated_wh:.2f}',
            'friction_brake_wh': f'{m.friction_brake_wh:.2f}',
            'speed_error_rms_kph': f'{m.rms_speed_error_kph:.3f}',
            'speed_error_max_kph': f'{m.max_speed_error_kph:.3f}',
            'map_version': str(vehicle.active_version),
            'map_checksum': str(vehicle.receiver.active_checksum),
            'map_fallback': str(vehicle.receiver.fallback_active),
            'vcu_fallbacks': str(vehicle.receiver.stats['fallbacks']),
            'vcu_heartbeat_timeout_s': f'{vehicle.receiver.heartbeat_timeout_s:g}',
            'vcu_state': vehicle.state.name,
            'frames_sent': str(vehicle.frames_sent),
            'acks_sent': str(vehicle.acks_sent),
            'frames_received': str(vehicle.frames_received),
            'can_errors': str(self._can_errors),
            'xcp_commands': str(vehicle.xcp.stats.get('commands', 0)),
            'xcp_page': str(vehicle.xcp.ecu_page),
            'xcp_fallbacks': str(vehicle.xcp.stats.get('fallbacks', 0)),
            'frames_dropped': str(self._reader.dropped if self._reader is not None else 0),
        }
        self._diagnostics_publisher.publish(diagnostic_array(
            time_from_ns(vehicle.utc_ns), f'{self.get_fully_qualified_name()}: simulated vehicle',
            self._settings['vehicle_id'], level, message, values))

    # -- releasing -----------------------------------------------------------------------

    def _destroy_timers(self):
        for name in ('_tick_timer', '_diagnostics_timer'):
            timer = getattr(self, name)
            if timer is not None:
                self.destroy_timer(timer)
                setattr(self, name, None)

    def _shutdown_bus(self, bus):
        try:
            bus.shutdown()
        except Exception as error:  # noqa: B902 - releasing must go on
            self.get_logger().warning(f'closing the CAN bus failed: {error}')

    def release(self):
        """Release the timers, publishers and what configure built."""
        self._destroy_timers()
        if self._reader is not None:
            if not self._reader.stop():
                self.get_logger().warning('the CAN bus reader did not stop in time')
            self._reader = None
        if self._bus is not None:
            self._shutdown_bus(self._bus)
            self._bus = None
        for name in ('_clock_publisher', '_diagnostics_publisher'):
            publisher = getattr(self, name)
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
                setattr(self, name, None)
        self._vehicle = None
        self._settings = {}
        self._active_since = None


def main(args=None) -> int:
    """Run the vehicle_sim node until it is shut down."""
    return run_lifecycle_node(VehicleSim, args)


if __name__ == '__main__':
    sys.exit(main())
