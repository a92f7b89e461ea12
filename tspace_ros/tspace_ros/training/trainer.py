"""
The ROS-free trainer core: when to train, publish policies and checkpoint (imports TF).

A ``TrainerCore`` owns one agent of a registered algorithm
(``tspace_ros.agents.registry``: DDPG, TD3, RDPG) and samples its batches from
a source the caller fills (``set_source``: a ``TransitionSource`` for an
algorithm that samples records, an ``EpisodeSource`` for one that samples
episodes). A node (or an
offline job) reports what arrives and the core decides when to train:

- ``mode='episode'``: ``on_episode`` trains after each valid episode,
  ``updates_per_episode`` updates, or (0) ``max_update_ratio`` x the episode's
  new samples; then checkpoints and publishes (tspace trained 6 updates per
  episode);
- ``mode='continuous'``: ``on_samples`` trains as samples arrive, keeping the
  total number of updates at most ``max_update_ratio`` x the samples seen
  (tmrl's cap on updates per environment step), at most ``chunk`` updates per
  call so that a node's callback stays short (a call with 0 new samples works
  off a backlog);
- ``mode='offline'``: only ``train(n_updates)`` trains.

No update runs before the source holds ``min_samples`` samples. A SAMPLE is
what ``len(source)`` counts: a transition for DDPG, a whole episode for RDPG.
An UPDATE is one optimiser step on one batch for DDPG and one batch of
episodes (all its TBPTT windows) for RDPG; ``update_count`` counts them.

Every ``publish_every`` updates, and after each training burst (``train`` and
``on_episode``; not after each ``on_samples`` chunk), the actor becomes a
``PolicyBlob`` whose version is the update count (so versions only increase)
and goes to the ``publish`` callback; with ``export_litert`` it carries the
LiteRT (TFLite) model the vehicle runs: the actor for DDPG, with the state
normalisation built in when the agent normalises states, and the step actor
for RDPG.

Checkpoints (``checkpoint_dir``): every ``checkpoint_every`` updates, at each
valid episode's end in episode mode, on ``save_checkpoint`` and on ``close``.
The agent's checkpoint goes to a new directory ``agent-<n>``; then
``trainer.json`` (counters, the run's figures and the name of that directory)
is replaced atomically, which commits the checkpoint; older ``agent-*``
directories are removed afterwards. A crash at any point leaves the previous
or the new checkpoint, never a mix. A ``TrainerCore`` created on a directory
with a checkpoint resumes from it: agent weights, optimisers, noise and
sampling generator state (so it continues exactly as the saved one would
have), ``update_count``, ``policy_version``, ``samples_seen`` and the rest.
The replay data are not part of it (the source belongs to the caller).
"""

import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Union

import keras
import numpy as np

from tspace_ros.agents import registry
from tspace_ros.agents.episode_buffer import EpisodeBuffer, EpisodeSource
from tspace_ros.agents.export import weights_to_blob
from tspace_ros.agents.policy_exchange import PolicyBlob
from tspace_ros.agents.replay import InMemoryReplay, TransitionSource
from tspace_ros.episodes.records import EpisodeSummaryRecord, TransitionRecord
from tspace_ros.training.tensorboard import TrainingLog

MODES = ('episode', 'continuous', 'offline')
STATE_FILE = 'trainer.json'
STATE_FORMAT = 1
METRICS = ('critic_loss', 'actor_loss', 'q_mean', 'critic_grad_norm', 'actor_grad_norm')
# The run's figures kept for the report (and in the state file): the newest this many.
MAX_HISTORY = 20000

_AGENT_DIR_RE = re.compile(r'^agent-\d{6,}$')
PathLike = Union[str, os.PathLike]


def _integer(name: str, value: Any, minimum: int) -> int:
    """Return value if it is an int >= minimum, else raise ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f'TrainerConfig.{name} must be an integer >= {minimum}, '
                         f'got {value!r}')
    return int(value)


@dataclasses.dataclass
class TrainerConfig:
    """When and how much the trainer trains, publishes and checkpoints (see the module doc)."""

    algorithm: str = 'ddpg'                 # a registered algorithm (agents.registry)
    mode: str = 'episode'                   # 'episode', 'continuous' or 'offline'
    updates_per_episode: int = 0            # episode mode; 0: ratio x new samples (tspace: 6)
    max_update_ratio: float = 1.0           # at most this many updates per sample seen
    min_samples: Optional[int] = None       # samples in the source before any update;
    #                                         None: the algorithm's (ddpg: 1000 transitions)
    publish_every: int = 200                # updates between policy publications
    checkpoint_every: int = 2000            # updates between checkpoints (0: only episode ends)
    export_litert: bool = True              # put the LiteRT (TFLite) model into each blob
    rdpg_max_length: Optional[int] = None   # rdpg: steps per sampled episode window
    #                                         (the agent's max_sequence_length); None: keep
    include_timed_out: bool = False         # train on transitions that timed out too
    chunk: int = 50                         # continuous mode: most updates per on_samples
    seed: Optional[int] = None              # replaces the agent config's seed; None: keep

    def __post_init__(self):
        """Fill the algorithm's default min_samples; ValueError naming any bad field."""
        if self.algorithm not in registry.names():
            raise ValueError(f'TrainerConfig.algorithm must be one of {registry.names()}, '
                             f'got {self.algorithm!r}')
        if self.mode not in MODES:
            raise ValueError(f'TrainerConfig.mode must be one of {MODES}, got {self.mode!r}')
        self.updates_per_episode = _integer('updates_per_episode', self.updates_per_episode, 0)
        ratio = self.max_update_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.number)) \
                or not math.isfinite(ratio) or ratio <= 0:
            raise ValueError('TrainerConfig.max_update_ratio must be a finite number > 0, '
                             f'got {ratio!r}')
        self.max_update_ratio = float(ratio)
        if self.min_samples is None:
            self.min_samples = registry.get(self.algorithm).default_min_samples
        self.min_samples = _integer('min_samples', self.min_samples, 1)
        self.publish_every = _integer('publish_every', self.publish_every, 1)
        self.checkpoint_every = _integer('checkpoint_every', self.checkpoint_every, 0)
        self.chunk = _integer('chunk', self.chunk, 1)
        if self.rdpg_max_length is not None:
            self.rdpg_max_length = _integer('rdpg_max_length', self.rdpg_max_length, 1)
        if self.seed is not None:
            self.seed = _integer('seed', self.seed, 0)
        for name in ('export_litert', 'include_timed_out'):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f'TrainerConfig.{name} must be True or False, '
                                 f'got {getattr(self, name)!r}')
            setattr(self, name, bool(getattr(self, name)))

    def to_dict(self) -> Dict[str, Any]:
        """Return the config as JSON-able values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> 'TrainerConfig':
        """Build a config from ``to_dict`` output (unknown keys are an error)."""
        return cls(**values)


class TrainerCore:
    """
    Train one agent from a sample source; publish its policy; checkpoint and resume.

    ``publish`` receives each new ``PolicyBlob`` (None: blobs are only kept,
    see ``current_blob``). ``log_dir`` None writes no TensorBoard events.
    ``agent_config`` (the algorithm's config type, e.g. ``DdpgConfig`` for
    ddpg and td3; None: the algorithm's defaults) is used for a new agent only:
    a resumed agent keeps its checkpoint's config (``rdpg_max_length`` and
    nothing else is applied to it).
    """

    def __init__(self, config: TrainerConfig, state_dim: int, action_dim: int,
                 agent_config: Any = None,
                 checkpoint_dir: Optional[PathLike] = None, log_dir: Optional[PathLike] = None,
                 publish: Optional[Callable[[PolicyBlob], None]] = None):
        if not isinstance(config, TrainerConfig):
            raise ValueError(f'config must be a TrainerConfig, got {type(config).__name__}')
        self.config = config
        for name, value in (('state_dim', state_dim), ('action_dim', action_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value!r}')
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.algorithm = registry.get(config.algorithm)
        config_type = self.algorithm.config_type
        if agent_config is not None and not isinstance(agent_config, config_type):
            raise ValueError(f'agent_config must be a {config_type.__name__} for algorithm '
                             f'{config.algorithm!r}, got {type(agent_config).__name__}')
        self.checkpoint_dir = pathlib.Path(checkpoint_dir) if checkpoint_dir is not None \
            else None
        self._publish = publish
        self.source = None

        self.update_count = 0           # trainer updates (see the module doc)
        self.policy_version = 0         # version of the latest published blob (0: none)
        self.samples_seen = 0           # samples reported (on_samples / on_episode)
        self.episodes_seen = 0          # valid episodes reported
        self.episodes_discarded = 0     # invalid episodes reported
        self.episode_history: List[Dict[str, Any]] = []  # figures per valid episode
        self.loss_history: List[Dict[str, float]] = []   # mean losses per training burst
        self._samples_since_episode = 0
        self._latest: Dict[str, float] = {}
        self._updates_per_second: Optional[float] = None
        self._save_index = 0
        self._last_checkpoint: Optional[pathlib.Path] = None
        self._last_checkpoint_update: Optional[int] = None
        self._blob: Optional[PolicyBlob] = None
        self._closed = False

        state = self._read_state()
        if state is not None:
            self.agent = self._resume(state)
        else:
            agent_config = agent_config if agent_config is not None else \
                self.algorithm.default_config()
            changes = {}
            if config.seed is not None:
                changes['seed'] = config.seed
            sequence = self.algorithm.sequence_field
            if sequence is not None and config.rdpg_max_length is not None:
                changes[sequence] = config.rdpg_max_length
            agent_config = dataclasses.replace(agent_config, **changes)
            self.agent = self.algorithm.agent_type()(self.state_dim, self.action_dim,
                                                     agent_config)
        self.log = TrainingLog(log_dir)

    # -- input --------------------------------------------------------------------------

    def set_source(self, source) -> None:
        """Set where batches come from: a TransitionSource (records) or an EpisodeSource."""
        if self.algorithm.samples == 'records':
            wrong = not isinstance(source, TransitionSource) or isinstance(source, EpisodeBuffer)
            expected = 'a TransitionSource'
        else:
            wrong = not isinstance(source, EpisodeSource) or isinstance(source, InMemoryReplay)
            expected = 'an EpisodeSource'
        if wrong:
            raise ValueError(f'source must be {expected} for {self.config.algorithm}, got '
                             f'{type(source).__name__}')
        for name in ('state_dim', 'action_dim'):
            have = getattr(source, name, None)
            if have is not None and int(have) != getattr(self, name):
                raise ValueError(f'source has {name} {have}, the trainer '
                                 f'{getattr(self, name)}')
        self.source = source

    def wants_transition(self, record: TransitionRecord) -> bool:
        """Return whether a stored transition should be trained on (timed-out: by config)."""
        return self.config.include_timed_out or not record.timed_out

    def on_samples(self, n_new: int) -> Optional[Dict[str, float]]:
        """
        Count ``n_new`` new samples; in continuous mode, train within the update ratio.

        Runs at most ``chunk`` updates, and only as many as keep ``update_count
        <= max_update_ratio x samples_seen``, once the source holds
        ``min_samples``. Returns the burst's metrics (``train``), or None when
        nothing was trained.
        """
        if isinstance(n_new, bool) or not isinstance(n_new, (int, np.integer)) or n_new < 0:
            raise ValueError(f'n_new must be an integer >= 0, got {n_new!r}')
        self.samples_seen += int(n_new)
        self._samples_since_episode += int(n_new)
        if self.config.mode != 'continuous' or not self.ready:
            return None
        allowed = self._update_allowance(self.samples_seen) - self.update_count
        n_updates = min(allowed, self.config.chunk)
        if n_updates <= 0:
            return None
        return self._run(n_updates, burst=False)

    def on_episode(self, summary: EpisodeSummaryRecord) -> Optional[Dict[str, float]]:
        """
        Record a finished episode; in episode mode, train on it, checkpoint and publish.

        An invalid episode is only counted (``episodes_discarded``). A valid one
        is logged (return, energy per km, distance, timed-out steps) and kept in
        ``episode_history``. Its new samples are those ``on_samples`` reported
        since the previous episode or, if there were none, the summary's own
        (ddpg: its steps, without the timed-out ones unless
        ``include_timed_out``; rdpg: 1 episode). In episode mode it then runs
        ``updates_per_episode`` updates (0: ``max_update_ratio`` x the new
        samples) once the source holds ``min_samples``, publishes, and
        checkpoints. Returns the metrics of the training, or None.
        """
        if not isinstance(summary, EpisodeSummaryRecord):
            raise ValueError(f'summary must be an EpisodeSummaryRecord, got '
                             f'{type(summary).__name__}')
        if not summary.valid:
            self.episodes_discarded += 1
            self._samples_since_episode = 0
            return None
        new = self._samples_since_episode
        if new == 0:
            if self.algorithm.samples == 'episodes':
                new = 1
            else:
                timed_out = 0 if self.config.include_timed_out else summary.timed_out_steps
                new = max(int(summary.step_count) - int(timed_out), 0)
            self.samples_seen += new
        self._samples_since_episode = 0
        self.episodes_seen += 1
        self.episode_history.append({
            'index': self.episodes_seen, 'kind': 'train',
            'total_reward': float(summary.total_reward),
            'energy_per_km_wh': float(summary.energy_per_km_wh),
            'distance_km': float(summary.distance_km),
            'timed_out_steps': int(summary.timed_out_steps),
            'step_count': int(summary.step_count), 'update_count': self.update_count})
        del self.episode_history[:-MAX_HISTORY]
        self.log.episode(summary, self.episodes_seen)
        if self.config.mode != 'episode':
            return None
        result = None
        if self.ready:
            n_updates = self.config.updates_per_episode or (
                self._update_allowance(self.samples_seen)
                - self._update_allowance(self.samples_seen - new))
            if n_updates > 0:
                result = self._run(n_updates, burst=True)
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        self.log.flush()
        return result

    def train(self, n_updates: int) -> Dict[str, float]:
        """
        Run ``n_updates`` updates now (offline training; ignores mode and min_samples).

        Publishes every ``publish_every`` updates and at the end; checkpoints
        every ``checkpoint_every``. Returns the burst's metrics: ``updates``,
        ``update_count``, the means over the burst of the agent's metrics
        (``critic_loss``, ``actor_loss``, ``q_mean``, gradient norms),
        ``updates_per_second`` and ``policy_version``.
        """
        if isinstance(n_updates, bool) or not isinstance(n_updates, (int, np.integer)) \
                or n_updates < 1:
            raise ValueError(f'n_updates must be an integer >= 1, got {n_updates!r}')
        return self._run(int(n_updates), burst=True)

    @property
    def ready(self) -> bool:
        """Return whether a source is set and holds at least ``min_samples`` samples."""
        return self.source is not None and len(self.source) >= self.config.min_samples

    def _update_allowance(self, samples: int) -> int:
        """Return the most updates allowed after ``samples`` samples (ratio x samples)."""
        return int(math.floor(self.config.max_update_ratio * samples + 1e-9))

    # -- training -----------------------------------------------------------------------

    def _run(self, n_updates: int, burst: bool) -> Dict[str, float]:
        """Run updates in segments that end at publication and checkpoint boundaries."""
        if self._closed:
            raise RuntimeError('the trainer is closed')
        if self.source is None:
            raise RuntimeError('no source: call set_source first')
        if len(self.source) == 0:
            raise ValueError('the source is empty')
        cfg = self.config
        parts: Dict[str, List[np.ndarray]] = {name: [] for name in METRICS}
        remaining, seconds = n_updates, 0.0
        while remaining > 0:
            step = min(remaining, cfg.publish_every - self.update_count % cfg.publish_every)
            if cfg.checkpoint_every:
                step = min(step, cfg.checkpoint_every - self.update_count % cfg.checkpoint_every)
            start = time.perf_counter()
            metrics = self.agent.update(self.source, step)
            seconds += time.perf_counter() - start
            for name in METRICS:
                parts[name].append(np.asarray(metrics[name], np.float64))
            self.update_count += step
            remaining -= step
            if self.update_count % cfg.publish_every == 0:
                self._publish_now()
            if cfg.checkpoint_every and self.update_count % cfg.checkpoint_every == 0 \
                    and self.checkpoint_dir is not None:
                self.save_checkpoint()
        values = {name: np.concatenate(parts[name]) for name in METRICS}
        self._latest = {name: float(values[name][-1]) for name in METRICS}
        self._updates_per_second = n_updates / seconds if seconds > 0 else None
        result = {'updates': n_updates, 'update_count': self.update_count}
        result.update({name: float(np.mean(values[name])) for name in METRICS})
        result['updates_per_second'] = self._updates_per_second
        self.loss_history.append({'update': self.update_count,
                                  'critic_loss': result['critic_loss'],
                                  'actor_loss': result['actor_loss'],
                                  'q_mean': result['q_mean']})
        del self.loss_history[:-MAX_HISTORY]
        self.log.training(result, self.update_count)
        if burst and self.policy_version != self.update_count:
            self._publish_now()
        result['policy_version'] = self.policy_version
        return result

    # -- policies -----------------------------------------------------------------------

    def current_blob(self) -> PolicyBlob:
        """Return the actor as a PolicyBlob of version ``update_count`` (built once per count)."""
        if self._blob is not None and self._blob.version == self.update_count:
            return self._blob
        agent, cfg = self.agent, self.config
        metadata: Dict[str, Any] = {'config': agent.config.to_dict(),
                                    'update_count': self.update_count}
        inference = None
        if self.algorithm.recurrent:
            inference = agent.step_actor if cfg.export_litert else None
        else:
            if agent.obs_normalizer is not None:
                mean, scale, clip = _normalization(agent)
                metadata.update({'observation_mean': mean, 'observation_scale': scale,
                                 'observation_clip': clip})
                inference = _normalized_actor(agent, mean, scale, clip)
            else:
                inference = agent.actor
            inference = inference if cfg.export_litert else None
        self._blob = weights_to_blob(agent.actor, cfg.algorithm, self.update_count,
                                     self.state_dim, self.action_dim, metadata,
                                     inference_model=inference)
        return self._blob

    def _publish_now(self) -> None:
        """Build the current blob, hand it to ``publish`` and log its version."""
        blob = self.current_blob()
        self.policy_version = blob.version
        if self._publish is not None:
            self._publish(blob)
        self.log.policy(blob.version, self.update_count)

    # -- status and checkpoints -----------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """Return the trainer's figures (for diagnostics and the main job)."""
        return {
            'algorithm': self.config.algorithm,
            'mode': self.config.mode,
            'update_count': self.update_count,
            'buffer_size': len(self.source) if self.source is not None else 0,
            'samples_seen': self.samples_seen,
            'critic_loss': self._latest.get('critic_loss'),
            'actor_loss': self._latest.get('actor_loss'),
            'q_mean': self._latest.get('q_mean'),
            'updates_per_second': self._updates_per_second,
            'policy_version': self.policy_version,
            'episodes_seen': self.episodes_seen,
            'episodes_discarded': self.episodes_discarded,
            'last_checkpoint': str(self._last_checkpoint) if self._last_checkpoint else None,
            'last_checkpoint_update': self._last_checkpoint_update,
        }

    def save_checkpoint(self) -> Optional[pathlib.Path]:
        """
        Write the agent and the trainer state; return the state file (None: no directory).

        The agent goes to a new ``agent-<n>`` directory, then ``trainer.json``
        is replaced atomically (the commit), then older agent directories go.
        """
        if self.checkpoint_dir is None:
            return None
        directory = self.checkpoint_dir
        directory.mkdir(parents=True, exist_ok=True)
        self._save_index += 1
        name = f'agent-{self._save_index:06d}'
        self.agent.save_checkpoint(directory / name)
        state = {
            'format': STATE_FORMAT, 'algorithm': self.config.algorithm,
            'state_dim': self.state_dim, 'action_dim': self.action_dim,
            'agent_checkpoint': name, 'save_index': self._save_index,
            'update_count': self.update_count, 'policy_version': self.policy_version,
            'samples_seen': self.samples_seen, 'episodes_seen': self.episodes_seen,
            'episodes_discarded': self.episodes_discarded,
            'trainer_config': self.config.to_dict(), 'latest_metrics': self._latest,
            'episode_history': self.episode_history, 'loss_history': self.loss_history,
        }
        path = directory / STATE_FILE
        fd, tmp = tempfile.mkstemp(prefix=f'.{STATE_FILE}.', dir=directory)
        try:
            with os.fdopen(fd, 'w') as handle:
                json.dump(_json_safe(state), handle, indent=1, allow_nan=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        for old in directory.iterdir():
            if old.name != name and old.is_dir() and _AGENT_DIR_RE.match(old.name):
                shutil.rmtree(old, ignore_errors=True)
        self._last_checkpoint = directory / name
        self._last_checkpoint_update = self.update_count
        return path

    def _read_state(self) -> Optional[Dict[str, Any]]:
        """Return the checkpoint directory's trainer state, or None when there is none."""
        if self.checkpoint_dir is None or not (self.checkpoint_dir / STATE_FILE).exists():
            return None
        path = self.checkpoint_dir / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f'{path}: unreadable trainer state: {error}') from None
        if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
            raise ValueError(f'{path}: not a trainer state of format {STATE_FORMAT}')
        for key, want in (('algorithm', self.config.algorithm), ('state_dim', self.state_dim),
                          ('action_dim', self.action_dim)):
            if state.get(key) != want:
                raise ValueError(f'{path}: the checkpoint has {key} {state.get(key)!r}, '
                                 f'the trainer {want!r}')
        return state

    def _resume(self, state: Dict[str, Any]):
        """Load the agent and restore the counters from a trainer state; return the agent."""
        directory = self.checkpoint_dir / state['agent_checkpoint']
        agent = self.algorithm.agent_type().load_checkpoint(directory)
        sequence = self.algorithm.sequence_field
        if sequence is not None and self.config.rdpg_max_length is not None:
            setattr(agent.config, sequence, self.config.rdpg_max_length)
        self.update_count = int(state['update_count'])
        self.policy_version = int(state['policy_version'])
        self.samples_seen = int(state['samples_seen'])
        self.episodes_seen = int(state['episodes_seen'])
        self.episodes_discarded = int(state.get('episodes_discarded', 0))
        self.episode_history = list(state.get('episode_history', []))
        self.loss_history = list(state.get('loss_history', []))
        self._latest = dict(state.get('latest_metrics', {}))
        self._save_index = int(state['save_index'])
        self._last_checkpoint = directory
        self._last_checkpoint_update = self.update_count
        return agent

    def close(self) -> None:
        """Write a final checkpoint (if there is a directory) and close the log."""
        if self._closed:
            return
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        self.log.close()
        self._closed = True

    def __enter__(self) -> 'TrainerCore':
        """Return the trainer."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Close the trainer."""
        self.close()


def _json_safe(value):
    """Return value with non-finite floats (a diverged loss) replaced by None, for JSON."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _normalization(agent):
    """
    Return (mean, scale, clip) of the agent's state normaliser as ``act`` applies it.

    Normalised state = clip((x - mean) * scale, -clip, clip); mean and scale
    float32 (state_dim,), clip a float or None (no clipping).
    """
    normalizer = agent.obs_normalizer
    stats = normalizer.stats
    if stats.count > 0:
        mean = np.asarray(stats.mean, np.float32)
        scale = 1.0 / np.sqrt(np.asarray(stats.var, np.float64) + normalizer.epsilon)
    else:  # before any statistics the normaliser only clips
        mean, scale = np.zeros(agent.state_dim), np.ones(agent.state_dim)
    clip = float(normalizer.clip) if normalizer.clip is not None else None
    return mean.astype(np.float32), scale.astype(np.float32), clip


def _normalized_actor(agent, mean, scale, clip: Optional[float]) -> keras.Model:
    """Return state -> action with the state normalisation built in (for LiteRT)."""
    state = keras.Input(shape=(agent.state_dim,), name='state')
    x = (state - mean) * scale
    if clip is not None:
        x = keras.ops.clip(x, -clip, clip)
    return keras.Model(state, agent.actor(x), name='normalized_actor')
