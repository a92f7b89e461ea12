"""
The episode state machine that the driver (HMI) controls.

States and command codes are those of ``tspace_interfaces/srv/EpisodeControl``
(tspace's remote HMI codes: 1 start, 2 end valid, 3 end invalid, 4 exit,
5 configure)::

    UNCONFIGURED --configure--> IDLE --start--> RUNNING --end valid--> ENDING
         |                       ^  ^              |                    | countdown
         |                       |  +--end invalid-+                    v
         +--exit--> EXITED <-----+------exit-------+--------------- IDLE (stored)

"end valid" starts a countdown (tspace: 3 s) during which the episode still
runs, so the last windows belong to it; then the episode is stored. "end
invalid" discards it. "exit" from a running episode discards it, from an ending
one completes it first. A command that makes no sense in the current state is
refused with a message and changes nothing. Time is passed in explicitly (UTC ns).

Episode ids (the UTC start to the millisecond) are unique within a control: an
episode always starts at least 1 ms after the previous one, even when several
commands arrive at the same instant.
"""

from dataclasses import dataclass, field
import datetime
from typing import List, Optional

START, END_VALID, END_INVALID, EXIT, CONFIGURE = 1, 2, 3, 4, 5
UNCONFIGURED, IDLE, RUNNING, ENDING, EXITED = 0, 1, 2, 3, 4

COMMAND_NAMES = {START: 'START', END_VALID: 'END_VALID', END_INVALID: 'END_INVALID',
                 EXIT: 'EXIT', CONFIGURE: 'CONFIGURE'}
ID_RESOLUTION_NS = 1_000_000  # episode ids name the start to the millisecond
STATE_NAMES = {UNCONFIGURED: 'unconfigured', IDLE: 'idle', RUNNING: 'running',
               ENDING: 'ending', EXITED: 'exited'}


@dataclass
class Episode:
    """One episode: who drove, when, and how it ended ('' while running)."""

    vehicle_id: str
    driver_id: str
    episode_id: str
    start_ns: int
    end_ns: Optional[int] = None
    outcome: str = ''  # '', 'stored' or 'discarded'


@dataclass
class Answer:
    """The answer to one command, as the EpisodeControl service returns it."""

    accepted: bool
    state: int
    message: str
    episode_id: str = ''


@dataclass
class EpisodeControl:
    """The state machine; ``events`` lists finished episodes for the caller to collect."""

    countdown_s: float = 3.0
    vehicle_id: str = ''
    driver_id: str = ''
    state: int = UNCONFIGURED
    episode: Optional[Episode] = None
    finished: List[Episode] = field(default_factory=list)
    _ending_deadline_ns: int = 0
    _last_start_ns: Optional[int] = None

    def __post_init__(self):
        """Reject a negative countdown."""
        if not self.countdown_s >= 0:
            raise ValueError(f'countdown_s must be >= 0, got {self.countdown_s}')

    @property
    def state_name(self) -> str:
        """Return the name of the current state."""
        return STATE_NAMES[self.state]

    @property
    def episode_id(self) -> str:
        """Return the id of the episode in progress (running or ending), else ''."""
        return self.episode.episode_id if self.episode else ''

    def command(self, code: int, now_ns: int, vehicle_id: str = '',
                driver_id: str = '') -> Answer:
        """Apply a command at time now_ns (UTC ns); return the service answer."""
        self.tick(now_ns)
        name = COMMAND_NAMES.get(code)
        if name is None:
            return self._refuse(f'unknown command {code} (use 1 start, 2 end valid, '
                                f'3 end invalid, 4 exit, 5 configure)')
        if self.state == EXITED:
            return self._refuse(f'cannot {name}: exited')
        if code == CONFIGURE:
            if self.state not in (UNCONFIGURED, IDLE):
                return self._refuse(f'cannot CONFIGURE while {self.state_name}')
            self.vehicle_id = vehicle_id or self.vehicle_id
            self.driver_id = driver_id or self.driver_id
            if not self.vehicle_id or not self.driver_id:
                return self._refuse('cannot CONFIGURE without a vehicle id and a driver id')
            self.state = IDLE
            return self._accept('ready')
        if code == EXIT:
            if self.state == RUNNING:
                self._finish(now_ns, 'discarded')
            elif self.state == ENDING:
                self._finish(now_ns, 'stored')
            self.state = EXITED
            return self._accept('exited')
        if self.state == UNCONFIGURED:
            return self._refuse(f'cannot {name}: not configured (send CONFIGURE first)')
        if code == START:
            if self.state != IDLE:
                return self._refuse(f'cannot START while {self.state_name}: '
                                    f'episode {self.episode_id} is not finished')
            # Ids are unique: several commands handled at one instant (one poll cycle, a
            # clock that stands still or steps back) still start strictly later episodes,
            # at least one id step (1 ms) apart.
            start_ns = int(now_ns)
            if self._last_start_ns is not None:
                start_ns = max(start_ns, self._last_start_ns + ID_RESOLUTION_NS)
            self._last_start_ns = start_ns
            self.episode = Episode(self.vehicle_id, self.driver_id, episode_id_for(start_ns),
                                   start_ns)
            self.state = RUNNING
            return self._accept('started')
        if self.state == IDLE:
            return self._refuse(f'cannot {name}: no episode is running')
        if code == END_VALID:
            if self.state == ENDING:
                return self._refuse('cannot END_VALID: the episode is already ending')
            self.state = ENDING
            self._ending_deadline_ns = now_ns + round(self.countdown_s * 1e9)
            episode_id = self.episode_id
            self.tick(now_ns)
            if self.state == IDLE:
                return Answer(True, self.state, 'stored', episode_id)
            return self._accept(f'ending in {self.countdown_s:g} s')
        # END_INVALID while running or ending
        episode_id = self.episode_id
        self._finish(now_ns, 'discarded')
        self.state = IDLE
        return Answer(True, self.state, 'discarded', episode_id)

    def tick(self, now_ns: int) -> None:
        """Advance time: complete an ending episode whose countdown has passed."""
        if self.state == ENDING and now_ns >= self._ending_deadline_ns:
            self._finish(self._ending_deadline_ns, 'stored')
            self.state = IDLE

    def collect_finished(self) -> List[Episode]:
        """Return and forget the episodes finished since the last call."""
        finished, self.finished = self.finished, []
        return finished

    def _finish(self, end_ns: int, outcome: str) -> None:
        self.episode.end_ns = max(int(end_ns), self.episode.start_ns)  # never before its start
        self.episode.outcome = outcome
        self.finished.append(self.episode)
        self.episode = None

    def _accept(self, message: str) -> Answer:
        return Answer(True, self.state, message, self.episode_id)

    def _refuse(self, message: str) -> Answer:
        return Answer(False, self.state, message, self.episode_id)


def episode_id_for(start_ns: int) -> str:
    """Return an episode id from its UTC start: ``20261121T184300.123Z``."""
    seconds, rest_ns = divmod(int(start_ns), 1_000_000_000)  # integers: exact to the ns
    start = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return start.strftime('%Y%m%dT%H%M%S.') + f'{rest_ns // ID_RESOLUTION_NS:03d}Z'
