"""
The cruncher: observation windows, the agent's decisions and episode events become experience.

ROS-free and numpy only; the cruncher node converts messages into
``AgentActionRecord``/``EpisodeEventRecord`` and publishes the
``TransitionRecord``/``EpisodeSummaryRecord`` that ``Cruncher`` returns.

Step model (elastic steps, after tmrl's real-time gym; tspace's fixed
active + dummy half steps are its two-window special case)::

    windows:  W_k | W_k+1 | W_k+2 | ...      (1.5 s each, abutting)
    decision for W_k: flashed, active since t_a
    step k:   state s_k = state(W_k); it ends at W' = the first window after W_k
              with start >= t_a (the first window wholly under the new map);
              next state = state(W'), reward and energy over W_k+1 .. W';
              W' is the observation of step k+1.

- The agent's decision for W_k is matched by episode id and observation step
  index. It usually arrives before W_k+1 (one window per step); a slow flash
  stretches the step over two or more windows. The agent must then act on W'
  (skip windows that began before its last map became active, as tspace's
  dummy half step did): a decision for any other window is stale.
- Time-out: when ``max_step_windows`` windows have followed W_k and none began
  under a flashed decision, the step ends at the latest of them with a zero
  action, policy version 0 and ``timed_out=True`` (kept or dropped by
  ``keep_timed_out``); that window starts step k+1. A decision for W_k that
  comes later is stale.
- A refused or failed flash (``flashed=False``) ends the step without a
  transition (counted by error code); the next window starts a new step. So do
  an unusable decision, a gap in the windows' step indices and a window that
  cannot become a state (all counted).
- A decision for any window other than the current step's observation (stale,
  duplicate, another episode) is counted and ignored.
- Past actions: with ``recent_actions`` > 0 each state ends with the actions of
  the previous transitions (zeros for timed-out ones and before the first).
- The episode's step energies sum to the energy of its windows after the first
  observation (less those of abandoned steps); the episode summary covers every
  window of the episode.

Episodes: windows carry their episode id ('' outside episodes: no transitions);
STARTED gives the episode's start (else the start its id encodes). The newest
transition of a running episode is held back until the next one is built, so
that the last transition of a STORED episode comes out with ``done=True``
through ``Cruncher.finished()``; a DISCARDED episode's held-back transition is
dropped. An episode is finished once its STORED/DISCARDED event and every
window up to its end have arrived (or a later window, or ``flush()``).
"""

from tspace_ros.cruncher.core import (AgentActionRecord, Cruncher, CruncherConfig,
                                      episode_start_ns_from_id, EpisodeEventRecord,
                                      FinishedEpisode)
from tspace_ros.cruncher.reward import RewardConfig

__all__ = ['AgentActionRecord', 'Cruncher', 'CruncherConfig', 'EpisodeEventRecord',
           'FinishedEpisode', 'RewardConfig', 'episode_start_ns_from_id']
