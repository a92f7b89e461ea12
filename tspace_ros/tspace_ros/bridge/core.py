"""
The vehicle bridge's core: vehicle data in, windows out; torque maps through the gate.

ROS-free and transport-free: it reads no clock (every call that depends on
time is given a ``Now``: the node clock, which may be a simulation's running
20-40x real time, and the wall clock, a steady one) and opens nothing. The
transport to the vehicle's map is a ``VehicleLink`` (``can.links``: the
simulated van's CAN transfer protocol, XCP, read-only; a telematics cloud
next); frames for the vehicle go to the ``send`` callable it is given. An
adapter (the ``can_bridge`` node) turns its ROS callbacks and timers into
calls with times, and the core's outputs (``take_outputs``) into publications.

Inputs, by what a link delivers:

- ``receive(frames, now)``: CAN frames. The link sees each first (its answers to
  a write, the VCU's status), then ``FrameDecoder`` and ``WindowBuilder``;
- ``receive_samples(samples, now)``: already decoded, timestamped samples
  (``Sample``: ``'<message>.<signal>'`` as the signal mapping routes it, UTC
  ns, value) from a link that is not CAN. Hostile samples are counted by
  reason (``SAMPLE_REJECTIONS``), never raised;
- ``receive_status(status, now)``: the vehicle's own report of its map from
  such a link (a CAN link's status arrives inside its frames).

What it owns, all driven by the times given:

- the gate: ``flash`` sends a map only after ``SafetyGate.admit`` passed it,
  and sends the admitted map (the active map with the action's rows, quantized
  to the link's resolution), never the proposal. The default map goes back by
  the link's restore (the VCU's own default), never as values;
- the active (last good) map, and what the VCU is believed to hold: every
  MapAck and VcuStatus carries the CRC of the VCU's whole map. A VCU that went
  back to its default by itself is followed; any other difference is a
  mismatch, answered by restoring the default;
- flash time-outs: an answer is overdue once ``flash_timeout_s`` passed both
  on the bus clock (the capture time of the newest frame or sample, else the
  node clock: a bridge lagging a fast simulation must not time out what the
  VCU answered in time) and on the wall clock (a simulation faster than real
  time must not shorten the VCU's time to answer); and on the wall clock alone
  once a generous limit passed (the bus clock stopped);
- offline: no frame or sample for ``vehicle_offline_s`` of wall time ends a
  pending flash (VEHICLE_OFFLINE) and is an ERROR in the diagnostics;
- the agent watchdog: no map and no agent heartbeat for ``watchdog_timeout_s``
  of node time restores the default map;
- the heartbeat to the VCU every 100 ms (``HEARTBEAT_PERIOD_S``), so that it
  falls back to its default map on its own when the bridge goes silent;
- episodes (``EpisodeControl``): commands from the service and from command
  sources polled each tick (the HMI UDP listener), their events, and the
  episode id stamped on windows;
- counters and diagnostic values (``diagnostics``: a level, a message and a
  plain dict).

Every failure goes towards the default map: a time-out or a lost link keeps
the last good map as the reference and, where the VCU's map is in doubt,
restores the default.
"""

from collections import Counter
from dataclasses import dataclass, field
import math
from typing import (Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Protocol,
                    Sequence, Tuple, Union)

import can

from tspace_ros.bridge.vehicle_map import (BUS_VERSION_MODULO, FlashError, FlashResult,
                                           HEARTBEAT_PERIOD_S, np_equal, VehicleMap, Watchdog)
from tspace_ros.can.decoder import (capture_time_ns, DecodedFrame, DecoderStats, FrameDecoder,
                                    MAX_CAPTURE_TIME_NS)
from tspace_ros.can.links import LinkStatus, LinkWrite, VehicleLink
from tspace_ros.can.transfer import MapTransfer
from tspace_ros.can.windowing import WindowBuilder, WindowResult
from tspace_ros.episodes.control import (Answer, CONFIGURE, ENDING, Episode, EpisodeControl,
                                         EXITED)
from tspace_ros.torque_map.map import TorqueMap
from tspace_ros.torque_map.safety_gate import SafetyGate

__all__ = ['BridgeCore', 'BridgeSettings', 'BUS_VERSION_MODULO', 'CommandSource',
           'EpisodeNote', 'FlashError', 'FlashResult', 'HEARTBEAT_PERIOD_S', 'Now', 'np_equal',
           'Outputs', 'Sample', 'VehicleMap', 'Watchdog']

# A repeated failure is logged at most once in this long, s (wall clock); always counted.
LOG_THROTTLE_S = 5.0
# A flash still unanswered this long (wall) after its time-outs is abandoned, s.
STALL_MARGIN_S = 5.0
# Bits on the wire of a classic 8-byte frame with an 11-bit id, without stuffing.
BITS_PER_FRAME = 111
# Diagnostic levels (the node maps them to DiagnosticStatus levels).
LEVEL_OK, LEVEL_WARN, LEVEL_ERROR = 'ok', 'warn', 'error'
# Why a sample was not taken (BridgeCore.sample_counts).
SAMPLE_REJECTIONS = ('not_a_sample', 'bad_name', 'bad_time', 'bad_value', 'unmapped')


class Now(NamedTuple):
    """The present on both clocks: the node clock (UTC ns, maybe simulated) and the wall (s)."""

    node_ns: int
    wall_s: float

    @property
    def node_s(self) -> float:
        """Return the node clock in seconds."""
        return self.node_ns / 1e9


class Sample(NamedTuple):
    """One decoded signal value: '<message>.<signal>', its UTC capture time (ns), the value."""

    name: str
    time_ns: int
    value: float


class CommandSource(Protocol):
    """Episode commands from outside (the HMI UDP listener): poll() never blocks."""

    def poll(self) -> List[int]:
        """Return the command codes received since the last poll, oldest first."""


@dataclass(frozen=True)
class BridgeSettings:
    """The core's time limits and identity (the node's parameters of the same names)."""

    vehicle_id: str = ''
    driver_id: str = ''
    flash_timeout_s: float = 3.0
    vehicle_offline_s: float = 2.0
    watchdog_timeout_s: float = 5.0
    episode_countdown_s: float = 3.0
    bitrate: int = 500_000  # for the bus load estimate, bit/s


@dataclass(frozen=True)
class EpisodeNote:
    """An episode event to publish: kind is started, ending, stored, discarded or exited."""

    kind: str
    vehicle_id: str
    driver_id: str
    episode_id: str = ''
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    stamp_ns: int = 0


@dataclass
class Outputs:
    """What the core produced since the last ``take_outputs``, for the adapter to publish."""

    windows: List[WindowResult] = field(default_factory=list)
    flashes: List[FlashResult] = field(default_factory=list)  # finished flashes and restores
    episode_events: List[EpisodeNote] = field(default_factory=list)
    log: List[Tuple[str, str]] = field(default_factory=list)  # (info|warning|error, text)
    active_map: Optional[TorqueMap] = None  # set when the map the VCU applies changed


def _no_sender(frames: Sequence[can.Message]) -> None:
    raise RuntimeError('this bridge core was given no way to send frames')


class BridgeCore(VehicleMap):
    """Window the vehicle's data; gate, send and track torque-map flashes; run the session."""

    def __init__(self, default_map: TorqueMap, gate: SafetyGate, windows: WindowBuilder,
                 link: VehicleLink, decoder: Optional[FrameDecoder] = None,
                 settings: Optional[BridgeSettings] = None,
                 send: Callable[[Sequence[can.Message]], None] = _no_sender,
                 command_sources: Sequence[CommandSource] = (),
                 config_values: Optional[Mapping[str, object]] = None):
        """
        Start with the default map as the last good (active) map and no flash pending.

        link: the transport (``can.links``); decoder: the frames' decoder (CAN
        links; without one, frames reach the link only); send: puts frames on
        the vehicle's bus, in order (may raise); command_sources: polled for
        episode commands each tick; config_values: fixed values for the
        diagnostics (e.g. the DBC's warnings).
        """
        super().__init__(default_map, gate, link)
        self.decoder = decoder
        self.windows = windows
        self.last_frame_ns: Optional[int] = None
        self.window_clock = 'capture'   # the clock windows are on: see active_since_ns
        # The session (the calls with times).
        self.settings = settings or BridgeSettings()
        self._send = send
        self.command_sources = tuple(command_sources)
        self.config_values = dict(config_values or {})
        self.watchdog = Watchdog(self.settings.watchdog_timeout_s)
        self.episodes = EpisodeControl(self.settings.episode_countdown_s)
        # The bridge knows its vehicle and driver: ready for START at once, as tspace's
        # local HMI (begin/end/exit) has no configure command.
        self.episodes.command(CONFIGURE, 0, self.settings.vehicle_id, self.settings.driver_id)
        self._episode_seen = ('', self.episodes.state)
        self.counts: Counter = Counter()
        self.sample_counts: Counter = Counter()
        self._sample_routes = {f'{s.message}.{s.signal}' for s in windows.mapping.signals}
        self.running = False
        self._node_ns = 0
        self._seen_wall: Optional[float] = None
        self._commit_wall = -math.inf
        self._stall_wall = math.inf
        self._restoring = ''
        self._published_checksum: Optional[int] = None
        self._map_changed = False
        self._out = Outputs()
        self._logged: Dict[str, float] = {}
        self._latencies_ms: List[float] = []
        self._period_frames = 0
        self._period_start: Optional[float] = None

    # ---- inputs -----------------------------------------------------------------------------

    def on_frame(self, frame: can.Message) -> Tuple[List[WindowResult], Optional[FlashResult]]:
        """Take one received frame; return the windows it completed and a finished flash."""
        result = None
        outcome, status, bad_status = self.link.on_frame(frame)
        if outcome is not None or status is not None or bad_status:
            result = self.link_said(frame, outcome, status, bad_status)
        decoder = self.decoder
        if decoder is None:
            return [], result
        decoded = decoder.decode(frame)
        if decoded is None:
            return [], result
        stamp = capture_time_ns(frame)
        # The bus clock only moves forward on valid capture times: a frame without one (an
        # answer stamped 0 by a driver, a corrupt stamp) must not send it back to 1970,
        # where no flash could time out on it. The window builder counts such frames.
        if stamp >= 0 and (self.last_frame_ns is None or stamp >= self.last_frame_ns):
            self.last_frame_ns = stamp
        return self.windows.feed(stamp, decoded), result

    def start(self, now: Now) -> None:
        """Begin a session (the node's activate): the vehicle counts as seen now."""
        self.running = True
        self._seen(now.wall_s)

    def stop(self) -> None:
        """End the session (deactivate): the watchdog rests until the next start."""
        self.running = False

    def _seen(self, wall_s: float) -> None:
        self._seen_wall = wall_s
        if self._period_start is None:
            self._period_start = wall_s

    def receive(self, frames: Sequence[can.Message], now: Now) -> None:
        """Take frames from a CAN link, in capture order: windows, answers, status reports."""
        if not frames:
            return
        self._node_ns = now.node_ns
        on_frame = self.on_frame
        for frame in frames:
            windows, result = on_frame(frame)
            if windows:
                self._windows_done(windows, now)
            if result is not None:
                self._settled(result)
        self._period_frames += len(frames)
        self._seen(now.wall_s)

    def receive_samples(self, samples: Iterable[Sample], now: Now) -> None:
        """
        Take decoded samples from a link that is not CAN, oldest first; never raises.

        A sample's name is '<message>.<signal>' as the signal mapping names the
        source (so the mapping's conversion and limits apply); samples of one
        message at one instant make one input of the window builder. What is
        not a sample, has no such name, a time that is not UTC ns in range, or a
        value that is not a number is counted in ``sample_counts`` by reason
        (``SAMPLE_REJECTIONS``); a name the mapping does not read is counted
        ``unmapped``. Values the mapping rejects are flagged by the windows.
        """
        self._node_ns = now.node_ns
        counts, routes = self.sample_counts, self._sample_routes
        group: Optional[DecodedFrame] = None
        group_ns = None
        windows: List[WindowResult] = []
        received = 0
        for item in samples:
            received += 1
            reason, name, time_ns, value = _sample_fields(item)
            if reason is None and name not in routes:
                reason = 'unmapped'
            if reason is not None:
                counts[reason] += 1
                continue
            message, signal = name.split('.', 1)
            if group is None or message != group.message or time_ns != group_ns or \
                    signal in group:
                if group is not None:
                    windows += self.windows.feed(group_ns, group)
                group, group_ns = DecodedFrame(message), time_ns
            group[signal] = value
            counts['accepted'] += 1
            self.last_frame_ns = time_ns
        if group is not None:
            windows += self.windows.feed(group_ns, group)
        if received:
            counts['received'] += received
            self._seen(now.wall_s)
        if windows:
            self._windows_done(windows, now)

    def receive_status(self, status: LinkStatus, now: Now) -> None:
        """Take the vehicle's own report of its map from a link that is not CAN."""
        self._node_ns = now.node_ns
        self._seen(now.wall_s)
        self._on_vcu_status(status)

    def _windows_done(self, windows: List[WindowResult], now: Now) -> None:
        for result in windows:
            if result.flagged_signals:
                self.counts['flagged_windows'] += 1
            self.counts['windows'] += 1
            self._latencies_ms.append((now.node_ns - result.completed_ns) / 1e6)
        self._out.windows += windows

    def feed_watchdog(self, now: Now) -> None:
        """Record the agent's heartbeat (a sign of life) at now."""
        self.watchdog.feed(now.node_s)

    def episode_command(self, code: int, now: Now, vehicle_id: str = '',
                        driver_id: str = '') -> Answer:
        """Apply an episode command (the service's codes) at now; return the answer."""
        answer = self.episodes.command(code, now.node_ns, vehicle_id, driver_id)
        self._sync_episode(now)
        return answer

    def reject_malformed(self, message: str) -> FlashResult:
        """Count and return the refusal of a goal whose map could not be read at all."""
        return self._count(FlashResult(FlashError.REJECTED_BY_SAFETY_GATE,
                                       f'malformed map: {message}', self.active_map))

    # ---- the session: flashes and restores --------------------------------------------------

    def active_since_ns(self, now: Now) -> int:
        """
        Return when a map that became active now did, on the WINDOWS' clock (UTC ns).

        Windows are stamped with the capture time of their frames or samples, the
        interface's clock, which need not be the node's: a CAN interface's hardware
        timestamps can be skewed from the node clock by any amount. The agent and
        the cruncher compare a window's start with this stamp (a window that began
        before it began under the previous map), so it is taken on the same clock:
        the newest capture time (with ``window_clock`` 'capture', the CAN links: the
        VCU's acknowledgement is among the newest frames), or the node clock
        (``window_clock`` 'node', a cloud link: its samples are polled seconds late
        and stamped in UTC by the vehicle, as the node clock is), or the node clock
        while no frame arrived yet.
        """
        if self.window_clock == 'capture' and self.last_frame_ns is not None:
            return max(self.last_frame_ns, 0)
        return now.node_ns

    def bus_now_s(self, now: Now) -> float:
        """Return the bus time: the capture time of the newest frame or sample, else the node's."""
        ns = self.last_frame_ns
        return ns / 1e9 if ns is not None else now.node_s

    def flash(self, proposed: TorqueMap, row_start: int, row_count: int, now: Now,
              timeout_s: float = 0.0) -> Union[FlashResult, MapTransfer, LinkWrite]:
        """
        Gate a proposed map and send what the gate admitted; return the write or a result.

        A FlashResult is the final answer (rejected, read-only, not sent);
        otherwise the result comes in ``take_outputs().flashes`` once the VCU
        answered or a time-out passed. timeout_s: the client's time-out, which
        may lengthen (never shorten) the wall-clock limit of a stalled clock.
        """
        self._node_ns = now.node_ns
        started = self.begin_flash(proposed, row_start, row_count)
        if isinstance(started, FlashResult):
            self._log('warning', f'flash rejected by the safety gate: {started.message}')
            return started
        try:
            self._send_frames(started.frames)
        except Exception as error:  # noqa: B902 - a driver may raise anything
            return self.abandon(FlashError.TRANSPORT, f'sending the map failed: {error}')
        self._committed(now, timeout_s)
        return started

    def cancel_flash(self) -> FlashResult:
        """Abandon the pending flash at the client's request."""
        return self.abandon(FlashError.CANCELED, 'canceled by the client; the VCU drops the '
                            'unfinished transfer')

    def _send_frames(self, frames) -> None:
        if frames:
            self._send(frames)

    def _committed(self, now: Now, timeout_s: float = 0.0) -> None:
        self.commit_sent(self.bus_now_s(now))
        self._commit_wall = now.wall_s
        self._stall_wall = now.wall_s + max(timeout_s, self.settings.flash_timeout_s) + \
            self.settings.vehicle_offline_s + STALL_MARGIN_S

    def _settled(self, result: FlashResult) -> None:
        """Record a finished flash or restore."""
        if self._restoring:
            self._log('info', f'{self._restoring}: default map restored ({result.message})'
                      if result.success else f'{self._restoring}: restoring the default map '
                      f'failed: {result.message}')
            self._restoring = ''
        if result.success:
            self.watchdog.feed(self._node_ns / 1e9)
            self._map_changed = True
        self._out.flashes.append(result)

    def check_flash(self, now: Now) -> None:
        """Settle the pending flash if its answer came by the link, is overdue or can't come."""
        self._node_ns = now.node_ns
        done = self.link_result()  # a link that writes by itself (XCP): its result
        if done is not None:
            self._settled(done)
        if self._pending is None:
            return
        if now.wall_s - self._commit_wall >= self.settings.flash_timeout_s:
            timed_out = self.poll(self.bus_now_s(now))
            if timed_out is not None:
                self._settled(timed_out)
                return
        offline_s = self.settings.vehicle_offline_s
        if self.offline(now):
            self._settled(self.abandon(
                FlashError.VEHICLE_OFFLINE, f'no frame from the vehicle for {offline_s:g} s'))
        elif now.wall_s > self._stall_wall:
            self._settled(self.abandon(FlashError.TIMEOUT, 'no acknowledgement and the clock '
                                       'stopped'))

    def offline(self, now: Now) -> bool:
        """Whether nothing came from the vehicle for vehicle_offline_s (wall clock)."""
        return self._seen_wall is None or \
            now.wall_s - self._seen_wall > self.settings.vehicle_offline_s

    def _send_restore(self, why: str, now: Now) -> None:
        """Begin reverting the VCU to its default map (may raise what sending raises)."""
        started = self.begin_restore_default()
        if started is None:  # flash_protocol none: the vehicle never left its own map
            return
        self._restoring = why
        self._send_frames(started.frames)
        self._committed(now)

    def restore_default(self, why: str, now: Now) -> bool:
        """
        Begin reverting the VCU to its default map; return whether to wait for its answer.

        Nothing to do when the VCU is on its default map. No wait when sending
        failed, or when the vehicle sent nothing for vehicle_offline_s: nobody
        would answer, and the VCU falls back by itself once the heartbeat stops.
        """
        self._node_ns = now.node_ns
        if self.active_is_default and not self.flash_pending:
            return False
        try:
            self._send_restore(why, now)
        except Exception as error:  # noqa: B902 - a driver may raise anything
            self._log('error', f'{why}: restoring the default map failed: {error}')
            return False
        if self.offline(now):
            self._log('warning', f'{why}: default map requested; the vehicle is silent, so its '
                      'VCU falls back on its own')
            return False
        return self.flash_pending

    def check_watchdog(self, now: Now) -> None:
        """Restore the default map once the agent went silent (while running)."""
        if not self.running:
            return
        self._node_ns = now.node_ns
        try:
            if self.watchdog.expired(now.node_s) and not self.active_is_default:
                self._log('warning', f'watchdog: no map or agent heartbeat for '
                          f'{self.watchdog.timeout_s:g} s, restoring the default map')
                self.counts['watchdog_restores'] += 1
                if self.flash_pending:
                    self._settled(self.abandon(FlashError.CANCELED,
                                               'superseded by the watchdog restore'))
                self._send_restore('watchdog', now)
        except Exception as error:  # noqa: B902 - the watchdog must outlive any fault
            self.note_error('watchdog_errors', f'watchdog: {type(error).__name__}: {error}', now)

    # ---- the session: each poll cycle -------------------------------------------------------

    def tick(self, now: Now) -> None:
        """After the cycle's input: settle flashes, run episodes, heartbeat, follow the VCU."""
        self._node_ns = now.node_ns
        self.check_flash(now)
        self._poll_episodes(now)
        self._follow_vcu(now)

    def _poll_episodes(self, now: Now) -> None:
        self.episodes.tick(now.node_ns)
        for source in self.command_sources:
            try:
                codes = source.poll()  # the HMI listener never raises; bounded, rate-limited
            except Exception as error:  # noqa: B902 - the HMI never stops the bridge
                self.note_error('hmi_errors', f'HMI poll failed: {error!r}', now)
                codes = []
            for code in codes:
                answer = self.episodes.command(code, now.node_ns)
                self._log('info', f'HMI command {code}: {answer.message}')
        self._sync_episode(now)

    def _sync_episode(self, now: Now) -> None:
        """Follow the episode state machine: window ids, and an event per change."""
        episodes = self.episodes
        # Finished first: an episode that ended (and perhaps a new one that started) since.
        for episode in episodes.collect_finished():
            self._log('info', f'episode {episode.episode_id} {episode.outcome}')
            self._episode_event(episode.outcome, episode, now)
        current = episodes.episode
        if current is not None and current.episode_id != self._episode_seen[0]:
            self._episode_event('started', current, now)
        if current is not None and episodes.state == ENDING and \
                self._episode_seen[1] != ENDING:
            self._episode_event('ending', current, now)
        if episodes.state == EXITED and self._episode_seen[1] != EXITED:
            self._out.episode_events.append(EpisodeNote(
                'exited', episodes.vehicle_id, episodes.driver_id, stamp_ns=now.node_ns))
        self._episode_seen = (current.episode_id if current else '', episodes.state)
        if episodes.episode_id != self.windows.episode_id:
            self.windows.set_episode(episodes.episode_id, 0)

    def _episode_event(self, kind: str, episode: Episode, now: Now) -> None:
        self._out.episode_events.append(EpisodeNote(
            kind, episode.vehicle_id, episode.driver_id, episode.episode_id, episode.start_ns,
            episode.end_ns, now.node_ns))

    def _follow_vcu(self, now: Now) -> None:
        """Send the heartbeat; follow what the VCU reports of its map."""
        heartbeat = self.heartbeat_frame(self.bus_now_s(now), now.wall_s)
        if heartbeat is not None:
            try:
                self._send([heartbeat])
                self.counts['heartbeats_sent'] += 1
            except Exception as error:  # noqa: B902 - a driver may raise anything
                self.note_error('heartbeat_errors', f'sending the heartbeat failed: {error}',
                                now)
        for event in self.take_vcu_events():
            self.counts['vcu_events'] += 1
            self._log('warning', f'VCU: {event}')
        if self.map_in_doubt and not self.flash_pending and \
                now.wall_s - self._commit_wall >= self.settings.flash_timeout_s:
            self.counts['mismatch_reverts'] += 1
            self._send_restore('map checksum mismatch', now)

    # ---- outputs and diagnostics ------------------------------------------------------------

    def _log(self, level: str, message: str) -> None:
        self._out.log.append((level, message))

    def note_error(self, key: str, message: str, now: Now) -> None:
        """Count a failure under key; log it at most once per LOG_THROTTLE_S (wall) per key."""
        self.counts[key] += 1
        last = self._logged.get(key)
        if last is None or now.wall_s - last >= LOG_THROTTLE_S:
            self._logged[key] = now.wall_s
            self._log('error', message)

    def take_outputs(self) -> Outputs:
        """Return and clear what the core produced: windows, results, events, log, the map."""
        out, self._out = self._out, Outputs()
        if self._map_changed or self._active_checksum != self._published_checksum:
            out.active_map = self.active_map
            self._published_checksum = self._active_checksum
            self._map_changed = False
        return out

    def diagnostics(self, now: Now) -> Tuple[str, str, Dict[str, object]]:
        """
        Return (level, message, values) for the diagnostics and start a new period.

        level is LEVEL_OK, LEVEL_WARN or LEVEL_ERROR: ERROR while the vehicle is
        offline, WARN while frames are rejected or windows dropped.
        """
        start = self._period_start
        frames_per_s = 0.0 if start is None else self._period_frames / max(now.wall_s - start,
                                                                           1e-6)
        decoder = self.decoder.stats if self.decoder is not None else DecoderStats()
        windows, counts, vcu = self.windows.stats, self.counts, self.vcu_counts
        latencies = sorted(self._latencies_ms)
        values = {
            'frames': decoder.frames, 'unknown_ids': decoder.unknown,
            'wrong_length': decoder.wrong_length, 'decode_errors': decoder.decode_errors,
            'error_frames': decoder.error_frames, 'windows': windows.windows,
            'dropped_windows': windows.dropped_windows, 'gaps': windows.gaps,
            'flagged_windows': counts['flagged_windows'],
            'window_latency_ms_median': latencies[len(latencies) // 2] if latencies else 0.0,
            'frames_per_s': frames_per_s,
            'bus_load_percent': 100.0 * frames_per_s * BITS_PER_FRAME /
            (self.settings.bitrate or 500_000),
            'active_map_version': self.active_map.policy_version,
            'active_map_is_default': self.active_is_default,
            'episode': self.episodes.episode_id or '-',
            **{f'flash_{name.lower()}': count for name, count in self.flash_counts.items()},
            'watchdog_restores': counts['watchdog_restores'],
            'watchdog_timeout_s': self.watchdog.timeout_s,
            'heartbeats_sent': counts['heartbeats_sent'],
            'heartbeat_errors': counts['heartbeat_errors'],
            'vcu_status_frames': vcu['status'], 'vcu_bad_status': vcu['bad_status'],
            'vcu_fallbacks': vcu['fallbacks'], 'vcu_map_mismatches': vcu['map_mismatches'],
            'vcu_map_checksum_expected': self.active_checksum,
            'map_in_doubt': self.map_in_doubt,
            'mismatch_reverts': counts['mismatch_reverts'],
            'poll_errors': counts['poll_errors'], 'bus_errors': counts['bus_errors'],
            'hmi_errors': counts['hmi_errors'],
            'flash_protocol': self.flash_protocol,
            **self.config_values,
        }
        if self.sample_counts:
            values.update({f'samples_{key}': self.sample_counts[key]
                           for key in ('received', 'accepted') + SAMPLE_REJECTIONS})
        for source in self.command_sources:
            report = getattr(source, 'diagnostics', None)
            if report is not None:
                values.update(report())
        link_stats = getattr(self.link, 'stats', None)  # a link's own figures (the cloud's)
        if link_stats is not None:
            values.update({f'link_{key}': value for key, value in link_stats().items()})
        if self._seen_wall is None or now.wall_s - self._seen_wall > \
                self.settings.vehicle_offline_s:
            level, message = LEVEL_ERROR, 'no frames from the vehicle'
        elif decoder.rejected or windows.dropped_windows:
            level, message = LEVEL_WARN, (f'{decoder.rejected} frames rejected '
                                          f'({decoder.last_rejection or "-"}), '
                                          f'{windows.dropped_windows} windows dropped')
        else:
            level, message = LEVEL_OK, 'ok'
        self._latencies_ms = []
        self._period_frames = 0
        self._period_start = now.wall_s
        return level, message, values

    def close(self) -> None:
        """Close the link (XCP: disconnect) and the command sources that can be closed."""
        for thing in (self.link, *self.command_sources):
            close = getattr(thing, 'close', None)
            if close is not None:
                close()


def _sample_fields(item) -> Tuple[Optional[str], str, int, float]:
    """Return (why it is not a valid sample or None, name, time, value); never raises."""
    try:
        name, time_ns, value = item
    except Exception:  # noqa: B902 - anything at all may arrive
        return 'not_a_sample', '', 0, 0.0
    if type(name) is not str or '.' not in name:
        return 'bad_name', '', 0, 0.0
    if type(time_ns) is not int or not 0 <= time_ns <= MAX_CAPTURE_TIME_NS:
        return 'bad_time', '', 0, 0.0
    if type(value) not in (float, int):
        return 'bad_value', '', 0, 0.0
    return None, name, time_ns, value
