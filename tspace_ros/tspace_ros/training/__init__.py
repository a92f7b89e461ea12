"""
Training: the ROS-free trainer core, its TensorBoard log and the run's PNG report.

- ``trainer``: ``TrainerConfig`` and ``TrainerCore`` (when to train, publish
  policies and checkpoint; imports TensorFlow);
- ``tensorboard``: ``TrainingLog`` (scalars and torque-map images; imports
  TensorFlow);
- ``report``: ``write_report`` and ``write_map_yaml`` (numpy, matplotlib and
  YAML only).

Importing this package imports none of them: the names below are loaded on
first access, so ``tspace_ros.training.report`` stays free of TensorFlow.
"""

import importlib

_EXPORTS = {
    'TrainerConfig': 'trainer',
    'TrainerCore': 'trainer',
    'TrainingLog': 'tensorboard',
    'render_map_png': 'report',
    'write_map_yaml': 'report',
    'write_report': 'report',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    """Import the module that defines ``name`` on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
    globals()[name] = value
    return value


def __dir__():
    """List the module's names, the lazily loaded ones included."""
    return sorted(set(globals()) | set(_EXPORTS))
