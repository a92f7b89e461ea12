"""
The cruncher's core: windows, the agent's decisions and episode events in, transitions out.

ROS-free (numpy only). The cruncher node converts messages into the records
below and calls ``on_window``, ``on_action`` and ``on_event`` as they arrive;
it publishes the transitions these return and, after each call, the episodes
that ``finished`` hands out. The step model is described in
``tspace_ros.cruncher``.

Every transition is handed out exactly once: by ``on_window``/``on_action``
(``done=False``) while its episode runs, or with its episode from ``finished``
(the episode's last one, ``done=True``). Nothing here raises on bad input: a
window, decision or event that cannot be used is counted in ``stats()`` and the
reason kept as ``stats()['last_problem']``.
"""

from collections import deque
from dataclasses import dataclass, field, replace
import datetime
import math
import re
from typing import ClassVar, Deque, Dict, List, Optional, Tuple

import numpy as np

from tspace_ros.agents.vehicle_policy import StateBuilder, StateError
from tspace_ros.cruncher.reward import RewardConfig
from tspace_ros.episodes.records import EpisodeSummaryRecord, RecordError, TransitionRecord
from tspace_ros.signals.energy import distance_km, electrical_energy_wh
from tspace_ros.signals.window import NS_PER_S, SignalWindow

FinishedEpisode = Tuple[EpisodeSummaryRecord, List[TransitionRecord]]

# Completed episode ids remembered to recognise their late windows and events.
_ENDED_MEMORY = 64
# Episodes kept open at most (an episode whose end event never comes is dropped).
_MAX_OPEN_EPISODES = 16

_COUNTERS = ('windows', 'bad_windows', 'gaps', 'missing_windows', 'out_of_order_windows',
             'late_windows', 'actions', 'stale_actions', 'bad_actions', 'flash_failed',
             'events', 'bad_events', 'late_events', 'steps', 'transitions', 'timed_out',
             'timed_out_dropped', 'abandoned_steps', 'speed_tracking_skipped',
             'episodes_stored', 'episodes_discarded', 'episodes_dropped')

_EPISODE_ID = re.compile(r'^(\d{8}T\d{6})\.(\d{3})Z$')


@dataclass
class CruncherConfig:
    """
    How the cruncher builds states, rewards and steps.

    Attributes
    ----------
    reward:
        The reward's terms (``RewardConfig``).
    samples_per_window, action_dim, recent_actions, signals:
        As ``StateBuilder`` takes them: samples per signal and window, the
        length of one action, how many past actions states carry, state signal
        -> (unit, scale). None: the shipped task contract's (``for_task`` builds
        the configuration of any task).
    max_step_windows:
        The elastic bound: a step stretches over at most this many windows after
        its observation while it waits for its action to take effect (3).
    keep_timed_out:
        True: a timed-out step becomes a transition marked ``timed_out`` with a
        zero action; False: it is dropped (and counted).

    """

    reward: RewardConfig = field(default_factory=RewardConfig)
    samples_per_window: Optional[int] = None
    action_dim: Optional[int] = None
    recent_actions: Optional[int] = None
    signals: Optional[Dict[str, Tuple[str, float]]] = None
    max_step_windows: int = 3
    keep_timed_out: bool = True

    @classmethod
    def for_task(cls, task, **kwargs) -> 'CruncherConfig':
        """Return the configuration of a ``TaskContract``'s states and actions (and kwargs)."""
        return cls(samples_per_window=task.samples_per_window, action_dim=task.action_dim,
                   recent_actions=task.recent_actions, signals=task.state_signals, **kwargs)

    def __post_init__(self):
        """Fill sizes left None from the shipped task; reject any that cannot work."""
        if None in (self.samples_per_window, self.action_dim, self.recent_actions):
            from tspace_ros.task.contract import shipped_task
            task = shipped_task()
            for name in ('samples_per_window', 'action_dim', 'recent_actions'):
                if getattr(self, name) is None:
                    setattr(self, name, getattr(task, name))
        if not isinstance(self.reward, RewardConfig):
            raise ValueError(f'reward must be a RewardConfig, got {type(self.reward).__name__}')
        for name, least in (('samples_per_window', 1), ('action_dim', 1),
                            ('recent_actions', 0), ('max_step_windows', 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < least:
                raise ValueError(f'{name} must be an integer >= {least}, got {value!r}')


@dataclass(frozen=True)
class AgentActionRecord:
    """
    One decision of the agent and what became of it (``tspace_interfaces/msg/AgentAction``).

    Attributes
    ----------
    vehicle_id, episode_id:
        Who, and the episode of the observation window.
    observation_step_index, observation_end_ns:
        The window the decision answers: its step index and UTC end, ns.
    action:
        float32, the policy's action in [-1, 1] (row_count x pedal columns, row-major).
    row_start, row_count:
        The torque-map rows the action applies to.
    policy_version:
        Version of the policy that chose the action.
    flashed:
        True when the map is active on the vehicle since ``active_since_ns`` (UTC, ns);
        otherwise ``error_code`` and ``message`` say why not.
    inference_ms, flash_ms:
        Wall-clock latencies: window received -> goal sent, goal sent -> result, ms.

    """

    vehicle_id: str
    episode_id: str
    observation_step_index: int
    observation_end_ns: int
    action: np.ndarray
    row_start: int
    row_count: int
    policy_version: int
    flashed: bool
    active_since_ns: int = 0
    error_code: int = 0
    message: str = ''
    inference_ms: float = 0.0
    flash_ms: float = 0.0

    def __post_init__(self):
        """Normalise the action to a flat float32 array (a copy)."""
        object.__setattr__(self, 'action',
                           np.array(self.action, dtype=np.float32).reshape(-1))


@dataclass(frozen=True)
class EpisodeEventRecord:
    """
    A change of an episode's state (``tspace_interfaces/msg/EpisodeEvent``).

    ``event`` is one of the class constants. ``episode_end_ns`` is set for
    STORED and DISCARDED; all stamps are UTC ns.
    """

    STARTED: ClassVar[int] = 1
    ENDING: ClassVar[int] = 2
    STORED: ClassVar[int] = 3
    DISCARDED: ClassVar[int] = 4
    EXITED: ClassVar[int] = 5

    event: int
    vehicle_id: str
    driver_id: str
    episode_id: str
    stamp_ns: int
    episode_start_ns: int = 0
    episode_end_ns: int = 0


def episode_start_ns_from_id(episode_id: str) -> Optional[int]:
    """
    Return the UTC start (ns, millisecond precision) that an episode id encodes.

    The inverse of ``episodes.control.episode_id_for``: ``20261121T184300.123Z``
    -> ns since the Unix epoch. None for an id in another format.
    """
    match = _EPISODE_ID.match(episode_id)
    if match is None:
        return None
    try:
        start = datetime.datetime.strptime(match.group(1), '%Y%m%dT%H%M%S')
    except ValueError:
        return None
    epoch = datetime.datetime(1970, 1, 1)
    seconds = (start - epoch) // datetime.timedelta(seconds=1)
    return seconds * NS_PER_S + int(match.group(2)) * 1_000_000


@dataclass
class _Episode:
    """What the cruncher knows of one episode while it is open."""

    episode_id: str
    vehicle_id: str = ''
    driver_id: str = ''
    start_ns: Optional[int] = None  # from STARTED; fixed once a record used it
    start_fixed: bool = False
    outcome: int = 0  # STORED or DISCARDED once its event arrived
    end_ns: int = 0
    ending: bool = False
    windows: int = 0
    first_window_start_ns: Optional[int] = None
    last_end_ns: Optional[int] = None
    span_ns: int = 0  # how far the next abutting window ends after the last one
    windows_closed: bool = False  # windows of a later stream have arrived
    energy_wh: float = 0.0
    distance_km: float = 0.0
    next_step: int = 0
    kept: int = 0
    timed_out: int = 0
    total_reward: float = 0.0
    first_policy_version: Optional[int] = None
    last_policy_version: int = 0
    held: Optional[TransitionRecord] = None


class Cruncher:
    """Pair windows with the agent's decisions into transitions; summarise episodes."""

    def __init__(self, config: Optional[CruncherConfig] = None):
        """Start with no episode; ValueError for an unusable configuration."""
        self.config = config if config is not None else CruncherConfig()
        cfg = self.config
        self._states = StateBuilder(cfg.samples_per_window, cfg.action_dim,
                                    cfg.recent_actions, cfg.signals)
        self._episodes: Dict[str, _Episode] = {}
        self._ended: Deque[str] = deque(maxlen=_ENDED_MEMORY)
        self._current: Optional[_Episode] = None  # the episode whose windows arrive
        self._last_seen: Optional[Tuple[str, int]] = None
        self._latest_end_ns = -1
        # The step in progress: its observation, the windows after it, its decision.
        self._obs: Optional[SignalWindow] = None
        self._obs_state: Optional[np.ndarray] = None
        self._after: List[SignalWindow] = []
        self._decision: Optional[AgentActionRecord] = None
        self._finished: List[FinishedEpisode] = []
        self._counts: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._flash_errors: Dict[int, int] = {}
        self._last_problem = ''
        self._last_summary: Optional[EpisodeSummaryRecord] = None

    # ---- input -------------------------------------------------------------------------------

    def on_window(self, window: SignalWindow) -> List[TransitionRecord]:
        """Take the next observation window; return the transitions it completed."""
        self._counts['windows'] += 1
        gap = self._check_sequence(window)
        if gap is None:
            return []
        self._latest_end_ns = max(self._latest_end_ns, window.end_ns)
        episode = self._episode_for(window)
        if episode is not self._current:
            self._leave_current()
            if episode is not None:
                self._current = episode
                self._states.reset()
        emitted = []
        if episode is not None:
            if gap:
                self._abandon(f'window {window.step_index} follows a gap')
            emitted = self._take(window, episode)
        self._complete_ready()
        return emitted

    def on_action(self, record: AgentActionRecord) -> List[TransitionRecord]:
        """Take one of the agent's decisions; return the transitions it completed."""
        self._counts['actions'] += 1
        obs = self._obs
        label = f'{record.episode_id or "-"}#{record.observation_step_index}'
        if obs is None or record.episode_id != obs.episode_id \
                or record.observation_step_index != obs.step_index \
                or (record.observation_end_ns and record.observation_end_ns != obs.end_ns) \
                or (record.vehicle_id and obs.vehicle_id and record.vehicle_id != obs.vehicle_id) \
                or self._decision is not None:
            self._counts['stale_actions'] += 1
            current = f'{obs.episode_id}#{obs.step_index}' if obs is not None else 'none'
            self._problem(f'decision for window {label} ignored: the current step observes '
                          f'{current}')
            return []
        if not record.flashed:
            self._counts['flash_failed'] += 1
            code = int(record.error_code)
            self._flash_errors[code] = self._flash_errors.get(code, 0) + 1
            self._abandon(f'flash for window {label} failed (error {code}): {record.message}')
            return []
        action = record.action
        if action.size != self.config.action_dim or not np.all(np.isfinite(action)) \
                or record.row_start < 0 or record.row_count < 0 or record.policy_version < 0:
            self._counts['bad_actions'] += 1
            self._abandon(f'decision for window {label} is unusable: {action.size} action '
                          f'values (expected {self.config.action_dim}), rows '
                          f'{record.row_start}+{record.row_count}, version '
                          f'{record.policy_version}')
            return []
        self._decision = record
        return self._advance()

    def on_event(self, record: EpisodeEventRecord) -> List[TransitionRecord]:
        """
        Follow an episode event; return the transitions it completed (none).

        An event never completes a step: an episode it ends hands its last
        transition out through ``finished``. The return keeps the three ``on_``
        calls alike for the node.
        """
        self._counts['events'] += 1
        code = record.event
        if code == EpisodeEventRecord.EXITED:
            return []
        if code not in (EpisodeEventRecord.STARTED, EpisodeEventRecord.ENDING,
                        EpisodeEventRecord.STORED, EpisodeEventRecord.DISCARDED) \
                or not record.episode_id:
            self._counts['bad_events'] += 1
            self._problem(f'event {code} for episode {record.episode_id!r} ignored')
            return []
        if record.episode_id in self._ended:
            self._counts['late_events'] += 1
            self._problem(f'event {code} for the finished episode {record.episode_id} ignored')
            return []
        episode = self._episode(record.episode_id)
        episode.vehicle_id = episode.vehicle_id or record.vehicle_id
        episode.driver_id = episode.driver_id or record.driver_id
        if record.episode_start_ns > 0 and record.episode_start_ns != episode.start_ns:
            if episode.start_fixed:
                self._problem(f'episode {record.episode_id}: start {record.episode_start_ns} '
                              f'arrived after its records used {episode.start_ns}')
            else:
                episode.start_ns = int(record.episode_start_ns)
        if code == EpisodeEventRecord.ENDING:
            episode.ending = True
        elif code in (EpisodeEventRecord.STORED, EpisodeEventRecord.DISCARDED) \
                and not episode.outcome:
            episode.outcome = code
            episode.end_ns = int(record.episode_end_ns or record.stamp_ns)
        self._complete_ready()
        return []

    def finished(self) -> List[FinishedEpisode]:
        """
        Return the episodes completed since the last call, oldest first.

        Each is (summary, transitions): for a STORED episode ``valid`` is True and
        the list holds its last transition (``done=True``; the others were handed
        out as they were built); for a DISCARDED one ``valid`` is False and the
        list is empty (the storage drops the ones handed out, by episode).
        """
        finished, self._finished = self._finished, []
        return finished

    def flush(self) -> List[FinishedEpisode]:
        """
        End of input: complete every episode whose end event has arrived; return ``finished()``.

        Such an episode no longer waits for its last windows. An episode without a
        STORED or DISCARDED event stays open, its last transition held back: only
        the driver ends an episode, and more input may still come.
        """
        for episode in list(self._episodes.values()):
            if episode.outcome:
                self._finish(episode)
        return self.finished()

    def stats(self) -> dict:
        """
        Return counters and the running episode's figures, for diagnostics.

        ``steps``: steps that ended with a transition (kept or dropped);
        ``transitions``: transitions kept (handed out or held back);
        ``abandoned_steps``: steps ended without one (flash failure, unusable
        decision, gap, bad window); ``flash_errors``: error code -> count. The
        ``episode_*`` figures (id, ending, windows, kept steps, energy, distance,
        energy per km) and ``running_reward`` are those of the episode whose windows
        arrive ('' and zeros between episodes); ``last_episode`` holds the last
        completed episode's figures (empty before the first).
        """
        stats = dict(self._counts)
        stats['flash_errors'] = dict(self._flash_errors)
        episode = self._current
        stats['episode_id'] = episode.episode_id if episode else ''
        stats['episode_ending'] = episode.ending if episode else False
        stats['episode_windows'] = episode.windows if episode else 0
        stats['episode_steps'] = episode.kept if episode else 0
        stats['running_reward'] = episode.total_reward if episode else 0.0
        energy = episode.energy_wh if episode else 0.0
        distance = episode.distance_km if episode else 0.0
        stats['episode_energy_wh'] = energy
        stats['episode_distance_km'] = distance
        stats['episode_energy_per_km_wh'] = energy / distance if distance > 0 else 0.0
        stats['open_episodes'] = len(self._episodes)
        summary = self._last_summary
        stats['last_episode'] = {} if summary is None else {
            'episode_id': summary.episode_id, 'valid': summary.valid,
            'step_count': summary.step_count, 'total_reward': summary.total_reward,
            'energy_wh': summary.energy_wh, 'distance_km': summary.distance_km,
            'energy_per_km_wh': summary.energy_per_km_wh,
            'timed_out_steps': summary.timed_out_steps}
        stats['last_problem'] = self._last_problem
        return stats

    # ---- windows -----------------------------------------------------------------------------

    def _check_sequence(self, window: SignalWindow) -> Optional[bool]:
        """Count gaps in the step indices; True after a gap, None for a window to ignore."""
        last = self._last_seen
        if last is not None and last[0] == window.episode_id:
            if window.step_index <= last[1]:
                self._counts['out_of_order_windows'] += 1
                self._problem(f'window {window.episode_id or "-"}#{window.step_index} came '
                              f'after #{last[1]}: ignored')
                return None
            missing = window.step_index - last[1] - 1
        else:
            # A new stream: an episode's windows count from 0.
            missing = window.step_index if window.episode_id else 0
        self._last_seen = (window.episode_id, window.step_index)
        if missing > 0:
            self._counts['gaps'] += 1
            self._counts['missing_windows'] += missing
        return missing > 0

    def _episode_for(self, window: SignalWindow) -> Optional[_Episode]:
        """Return the open episode a window belongs to (None: outside any, or too late)."""
        episode_id = window.episode_id
        if not episode_id:
            return None
        if episode_id in self._ended:
            self._late_window(window, 'its episode is finished')
            return None
        episode = self._episode(episode_id)
        if episode.windows_closed:
            self._late_window(window, 'windows of a later stream came before it')
            return None
        if episode.outcome and window.end_ns > episode.end_ns:
            self._late_window(window, f'it ends after the episode ({episode.end_ns})')
            return None
        return episode

    def _late_window(self, window: SignalWindow, why: str) -> None:
        self._counts['late_windows'] += 1
        self._problem(f'window {window.episode_id}#{window.step_index} ignored: {why}')

    def _take(self, window: SignalWindow, episode: _Episode) -> List[TransitionRecord]:
        """Add a window of the running episode: its figures, then the step machine."""
        problems = self._measure(window, episode)
        episode.vehicle_id = episode.vehicle_id or window.vehicle_id
        episode.driver_id = episode.driver_id or window.driver_id
        if not episode.vehicle_id or not episode.driver_id:
            problems.append('no vehicle_id or driver_id')
        state = None
        try:
            state = self._states.state(window)
        except StateError as error:
            problems.append(str(error))
        if problems:
            self._counts['bad_windows'] += 1
            reason = f'window {window.episode_id}#{window.step_index} rejected: ' + \
                '; '.join(problems)
            if self._obs is not None:
                self._abandon(reason)
            else:
                self._problem(reason)
            return []
        if self._obs is None:
            self._obs, self._obs_state = window, state
            return []
        self._after.append(window)
        return self._advance()

    def _measure(self, window: SignalWindow, episode: _Episode) -> List[str]:
        """Add a window's energy and distance to its episode; return what was unusable."""
        reward = self.config.reward
        episode.windows += 1
        if episode.first_window_start_ns is None:
            episode.first_window_start_ns = window.start_ns
        episode.last_end_ns = window.end_ns
        episode.span_ns = round(window.n_samples * NS_PER_S / window.sample_rate_hz)
        energy, energy_problem = _measured(
            window, 'energy', electrical_energy_wh, reward.current_signal, reward.voltage_signal)
        distance, distance_problem = _measured(
            window, 'distance', distance_km, reward.speed_signal)
        episode.energy_wh += energy
        episode.distance_km += distance
        return [problem for problem in (energy_problem, distance_problem) if problem]

    # ---- steps -------------------------------------------------------------------------------

    def _advance(self) -> List[TransitionRecord]:
        """End every step that can end now: its action took effect, or it timed out."""
        emitted: List[TransitionRecord] = []
        limit = self.config.max_step_windows
        while self._obs is not None and self._after:
            end = None
            if self._decision is not None:
                active_since = self._decision.active_since_ns
                end = next((i for i, window in enumerate(self._after[:limit])
                            if window.start_ns >= active_since), None)
            if end is not None:
                emitted += self._end_step(end, self._decision)
            elif len(self._after) >= limit:
                emitted += self._end_step(limit - 1, None)
            else:
                break
        return emitted

    def _end_step(self, last: int, decision: Optional[AgentActionRecord]
                  ) -> List[TransitionRecord]:
        """End the step at ``_after[last]`` (None: timed out); that window observes the next."""
        episode, obs = self._current, self._obs
        windows, rest = self._after[:last + 1], self._after[last + 1:]
        timed_out = decision is None
        if timed_out:
            action = np.zeros(self.config.action_dim, np.float32)
        else:
            action = decision.action
        notes: List[str] = []
        try:
            reward, energy_wh, _ = self.config.reward.compute(windows, obs, action, notes)
        except (KeyError, ValueError) as error:
            self._abandon(f'no reward for the step observing #{obs.step_index}: {error}')
            return []
        if notes:
            self._counts['speed_tracking_skipped'] += 1
            self._problem('; '.join(notes))
        self._states.remember(action)
        next_window = windows[-1]
        next_state = self._states.state(next_window)  # checked when the window came
        try:
            record = TransitionRecord(
                vehicle_id=episode.vehicle_id, driver_id=episode.driver_id,
                episode_id=episode.episode_id, episode_start_ns=self._start_of(episode),
                step_index=episode.next_step, state=self._obs_state, action=action,
                action_row_start=0 if timed_out else decision.row_start,
                action_row_count=0 if timed_out else decision.row_count,
                reward=reward, energy_wh=energy_wh, next_state=next_state, done=False,
                timed_out=timed_out, policy_version=0 if timed_out else decision.policy_version,
                state_stamp_ns=obs.end_ns, next_state_stamp_ns=next_window.end_ns)
        except RecordError as error:
            self._abandon(f'no transition for the step observing #{obs.step_index}: {error}')
            return []
        episode.next_step += 1
        self._counts['steps'] += 1
        self._obs, self._obs_state, self._after, self._decision = \
            next_window, next_state, rest, None
        if timed_out:
            self._counts['timed_out'] += 1
            episode.timed_out += 1
            if not self.config.keep_timed_out:
                self._counts['timed_out_dropped'] += 1
                return []
        return self._hold(episode, record)

    def _hold(self, episode: _Episode, record: TransitionRecord) -> List[TransitionRecord]:
        """Hold back the newest transition; hand out the one it replaces (not the last)."""
        emitted = []
        if episode.held is not None:
            emitted.append(self._release(episode, episode.held, done=False))
        episode.held = record
        episode.kept += 1
        episode.total_reward += record.reward
        self._counts['transitions'] += 1
        if not record.timed_out:
            if episode.first_policy_version is None:
                episode.first_policy_version = record.policy_version
            episode.last_policy_version = record.policy_version
        return emitted

    def _release(self, episode: _Episode, record: TransitionRecord,
                 done: bool) -> TransitionRecord:
        """Return a held transition as it is handed out: its episode start fixed, done set."""
        return replace(record, episode_start_ns=self._start_of(episode, fix=True), done=done)

    def _abandon(self, reason: Optional[str]) -> None:
        """End the step in progress without a transition; the next good window starts one."""
        if self._obs is not None and reason is not None:
            self._counts['abandoned_steps'] += 1
        if reason is not None:
            self._problem(reason)
        self._obs, self._obs_state, self._after, self._decision = None, None, [], None

    # ---- episodes ----------------------------------------------------------------------------

    def _episode(self, episode_id: str) -> _Episode:
        """Return the open episode with this id, opening it if needed."""
        episode = self._episodes.get(episode_id)
        if episode is None:
            if len(self._episodes) >= _MAX_OPEN_EPISODES:
                oldest = next(iter(self._episodes.values()))
                if oldest is self._current:
                    self._leave_current()
                del self._episodes[oldest.episode_id]
                self._ended.append(oldest.episode_id)
                self._counts['episodes_dropped'] += 1
                self._problem(f'episode {oldest.episode_id} dropped: no end event came '
                              f'while {_MAX_OPEN_EPISODES} episodes were open')
            episode = self._episodes[episode_id] = _Episode(episode_id)
        return episode

    def _leave_current(self) -> None:
        """Windows of another stream arrive: the running episode gets no more windows."""
        if self._current is not None:
            self._current.windows_closed = True
        self._current = None
        self._abandon(None)  # the last observation of an episode starts no step

    def _start_of(self, episode: _Episode, fix: bool = False) -> int:
        """Return an episode's start: STARTED's, else the id's, else its first window's."""
        if episode.start_ns is None:
            start = episode_start_ns_from_id(episode.episode_id)
            if start is None:
                start = episode.first_window_start_ns or 0
            if not fix:
                return start
            episode.start_ns = start
        episode.start_fixed = episode.start_fixed or fix
        return episode.start_ns

    def _complete_ready(self) -> None:
        """Finish every ended episode whose windows up to its end have all arrived."""
        for episode in list(self._episodes.values()):
            if not episode.outcome:
                continue
            next_end = None if episode.last_end_ns is None \
                else episode.last_end_ns + episode.span_ns
            if episode.windows_closed or self._latest_end_ns > episode.end_ns or \
                    (next_end is not None and next_end > episode.end_ns):
                self._finish(episode)

    def _finish(self, episode: _Episode) -> None:
        """Summarise an ended episode and queue it for ``finished``."""
        if episode is self._current:
            self._current = None
            self._abandon(None)
        stored = episode.outcome == EpisodeEventRecord.STORED
        transitions = []
        if episode.held is not None and stored:
            transitions.append(self._release(episode, episode.held, done=True))
        episode.held = None
        summary = EpisodeSummaryRecord(
            vehicle_id=episode.vehicle_id, driver_id=episode.driver_id,
            episode_id=episode.episode_id, episode_start_ns=self._start_of(episode, fix=True),
            episode_end_ns=episode.end_ns, step_count=episode.kept,
            total_reward=episode.total_reward, energy_wh=episode.energy_wh,
            distance_km=episode.distance_km, valid=stored,
            first_policy_version=episode.first_policy_version or 0,
            last_policy_version=episode.last_policy_version,
            timed_out_steps=episode.timed_out)
        self._counts['episodes_stored' if stored else 'episodes_discarded'] += 1
        self._finished.append((summary, transitions))
        self._last_summary = summary
        del self._episodes[episode.episode_id]
        self._ended.append(episode.episode_id)

    def _problem(self, message: str) -> None:
        self._last_problem = message


def _measured(window: SignalWindow, what: str, measure, *names: str) -> Tuple[float, str]:
    """Return (measure(window, *names), '') or (0, why the window has no such figure)."""
    missing = [repr(name) for name in names if name not in window.signal_names]
    if missing:
        return 0.0, f'no {" or ".join(missing)} signal for the {what}'
    try:
        value = measure(window, *names)
    except ValueError as error:
        return 0.0, str(error)
    if not math.isfinite(value):
        return 0.0, f'the {what} is not finite'
    return value, ''
