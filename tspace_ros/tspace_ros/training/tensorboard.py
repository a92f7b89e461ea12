"""
TensorBoard logging of a training run (imports TensorFlow).

``TrainingLog`` writes with ``tf.summary.create_file_writer(log_dir)``:

- training, at the trainer's update count: ``loss/critic``, ``loss/actor``,
  ``q/mean``, ``train/updates_per_second``;
- episodes, at the episode number: ``episode/return``,
  ``episode/energy_per_km_wh``, ``episode/distance_km``,
  ``episode/timed_out_steps``;
- ``policy/version`` at each publication;
- torque maps as images (``torque_map/<name>``: speed rows x pedal columns,
  colour = Nm, drawn by ``report.render_map_png``) and, when a default map is
  known, ``torque_map/<name>_minus_default`` (learned - default, Nm).

With ``log_dir`` None every method is a no-op, so callers never need to check.
"""

import math
import os
import pathlib
from typing import Mapping, Optional, Union

import tensorflow as tf

from tspace_ros.episodes.records import EpisodeSummaryRecord
from tspace_ros.torque_map.map import TorqueMap
from tspace_ros.training.report import render_map_png

# Trainer metric name -> scalar tag.
TRAINING_TAGS = {'critic_loss': 'loss/critic', 'actor_loss': 'loss/actor', 'q_mean': 'q/mean',
                 'updates_per_second': 'train/updates_per_second'}
EPISODE_TAGS = ('episode/return', 'episode/energy_per_km_wh', 'episode/distance_km',
                'episode/timed_out_steps')
POLICY_VERSION_TAG = 'policy/version'


class TrainingLog:
    """
    Scalars and torque-map images of one training run, in TensorBoard event files.

    ``default_map`` (optional) is what ``torque_map`` draws differences
    against when its call names none. Use ``close`` (or ``with``) at the end.
    """

    def __init__(self, log_dir: Union[str, os.PathLike, None] = None,
                 default_map: Optional[TorqueMap] = None):
        self.log_dir = pathlib.Path(log_dir) if log_dir is not None else None
        self.default_map = default_map
        self._writer = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    @property
    def enabled(self) -> bool:
        """Return whether anything is written (a log directory was given and not closed)."""
        return self._writer is not None

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Write one scalar at ``step``; non-finite values are skipped (not plotted)."""
        if self._writer is None or value is None or not math.isfinite(float(value)):
            return
        with self._writer.as_default():
            tf.summary.scalar(tag, float(value), step=int(step))

    def training(self, metrics: Mapping[str, float], step: int) -> None:
        """Write the training metrics (keys of TRAINING_TAGS; others ignored) at ``step``."""
        for name, tag in TRAINING_TAGS.items():
            if name in metrics:
                self.scalar(tag, metrics[name], step)

    def episode(self, summary: EpisodeSummaryRecord, step: int) -> None:
        """Write an episode's return, energy per km, distance and timed-out steps."""
        values = (summary.total_reward, summary.energy_per_km_wh, summary.distance_km,
                  summary.timed_out_steps)
        for tag, value in zip(EPISODE_TAGS, values):
            self.scalar(tag, value, step)

    def policy(self, version: int, step: int) -> None:
        """Write the version of a published policy at ``step``."""
        self.scalar(POLICY_VERSION_TAG, version, step)

    def torque_map(self, name: str, torque_map: TorqueMap, step: int,
                   default_map: Optional[TorqueMap] = None) -> None:
        """
        Write a torque map as a heat-map image ``torque_map/<name>``.

        With a default map (this call's, else the log's), also write
        ``torque_map/<name>_minus_default``: torque_map - default, Nm.
        ValueError if the two maps have different grids.
        """
        if self._writer is None:
            return
        reference = default_map if default_map is not None else self.default_map
        images = {f'torque_map/{name}': render_map_png(torque_map, f'{name} (Nm)')}
        if reference is not None:
            images[f'torque_map/{name}_minus_default'] = render_map_png(
                torque_map, f'{name} - default (Nm)', difference_to=reference)
        with self._writer.as_default():
            for tag, png in images.items():
                image = tf.image.decode_png(png, channels=3)[tf.newaxis]
                tf.summary.image(tag, image, step=int(step))

    def flush(self) -> None:
        """Write buffered events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the writer; later calls write nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> 'TrainingLog':
        """Return the log."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Close the log."""
        self.close()
