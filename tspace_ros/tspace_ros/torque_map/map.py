"""
TorqueMap: torque (Nm) over speed rows (km/h) x pedal columns (0..1).

The ROS-free twin of ``tspace_interfaces/msg/TorqueMap``. tspace's vehicle uses
14 speed rows (0, 7, 10, 20, ..., 120 km/h) and 17 pedal columns (0 .. 1); the
VCU interpolates bilinearly between breakpoints and holds the edge values
outside them.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

DEFAULT_SPEED_BREAKPOINTS_KPH = (0.0, 7.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0,
                                 90.0, 100.0, 110.0, 120.0)
DEFAULT_PEDAL_BREAKPOINTS = (0.0, 0.02, 0.04, 0.08, 0.12, 0.16, 0.20, 0.24, 0.28, 0.32, 0.38,
                             0.44, 0.50, 0.62, 0.74, 0.86, 1.0)

ORIGIN_DEFAULT, ORIGIN_AGENT, ORIGIN_MANUAL = 0, 1, 2
ORIGINS = (ORIGIN_DEFAULT, ORIGIN_AGENT, ORIGIN_MANUAL)


class TorqueMapError(ValueError):
    """A torque map whose breakpoints or values are inconsistent."""


def _breakpoints(values, name: str, low: Optional[float] = None,
                 high: Optional[float] = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size < 2:
        raise TorqueMapError(f'{name} needs at least 2 breakpoints, got shape {array.shape}')
    if not np.all(np.isfinite(array)):
        raise TorqueMapError(f'{name} must be finite')
    if np.any(np.diff(array) <= 0):
        raise TorqueMapError(f'{name} must be strictly increasing: {array.tolist()}')
    if low is not None and array[0] < low or high is not None and array[-1] > high:
        raise TorqueMapError(f'{name} must lie within [{low}, {high}]: {array.tolist()}')
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class TorqueMap:
    """
    A torque map.

    Attributes
    ----------
    speed_breakpoints_kph:
        Row breakpoints, km/h, strictly increasing, >= 0.
    pedal_breakpoints:
        Column breakpoints, pedal fraction 0..1, strictly increasing.
    torque_nm:
        float64 array (rows, columns), Nm; negative values regenerate.
    vehicle_id, policy_version, origin:
        Provenance, as in the message (origin: 0 default, 1 agent, 2 manual).

    """

    speed_breakpoints_kph: np.ndarray
    pedal_breakpoints: np.ndarray
    torque_nm: np.ndarray
    vehicle_id: str = ''
    policy_version: int = 0
    origin: int = ORIGIN_DEFAULT

    def __post_init__(self):
        """Check shapes and values; store read-only float64 arrays."""
        speeds = _breakpoints(self.speed_breakpoints_kph, 'speed breakpoints', low=0.0)
        pedals = _breakpoints(self.pedal_breakpoints, 'pedal breakpoints', 0.0, 1.0)
        torque = np.array(self.torque_nm, dtype=np.float64)
        if torque.shape != (speeds.size, pedals.size):
            raise TorqueMapError(f'torque table has shape {torque.shape}, breakpoints need '
                                 f'({speeds.size}, {pedals.size})')
        if not np.all(np.isfinite(torque)):
            raise TorqueMapError('torque values must be finite')
        if self.origin not in ORIGINS:
            raise TorqueMapError(f'origin must be one of {ORIGINS} (default, agent, manual), '
                                 f'got {self.origin!r}')
        if isinstance(self.policy_version, bool) or \
                not isinstance(self.policy_version, (int, np.integer)) or self.policy_version < 0:
            raise TorqueMapError(f'policy_version must be an integer >= 0, '
                                 f'got {self.policy_version!r}')
        torque.setflags(write=False)
        object.__setattr__(self, 'speed_breakpoints_kph', speeds)
        object.__setattr__(self, 'pedal_breakpoints', pedals)
        object.__setattr__(self, 'torque_nm', torque)

    @property
    def shape(self):
        """Return (rows, columns)."""
        return self.torque_nm.shape

    def torque(self, speed_kph: float, pedal: float) -> float:
        """Return the bilinearly interpolated torque, Nm, holding edge values outside."""
        speeds, pedals = self.speed_breakpoints_kph, self.pedal_breakpoints
        s = float(np.clip(speed_kph, speeds[0], speeds[-1]))
        p = float(np.clip(pedal, pedals[0], pedals[-1]))
        i = min(int(np.searchsorted(speeds, s, side='right')) - 1, speeds.size - 2)
        j = min(int(np.searchsorted(pedals, p, side='right')) - 1, pedals.size - 2)
        fs = (s - speeds[i]) / (speeds[i + 1] - speeds[i])
        fp = (p - pedals[j]) / (pedals[j + 1] - pedals[j])
        t = self.torque_nm
        low = t[i, j] * (1 - fp) + t[i, j + 1] * fp
        high = t[i + 1, j] * (1 - fp) + t[i + 1, j + 1] * fp
        return float(low * (1 - fs) + high * fs)

    def with_torque(self, torque_nm, policy_version: int = 0,
                    origin: int = ORIGIN_AGENT) -> 'TorqueMap':
        """Return a map with the same breakpoints and vehicle and a new table."""
        return TorqueMap(self.speed_breakpoints_kph, self.pedal_breakpoints, torque_nm,
                         self.vehicle_id, policy_version, origin)

    def same_breakpoints(self, other: 'TorqueMap') -> bool:
        """Whether both maps have identical breakpoints."""
        return (np.array_equal(self.speed_breakpoints_kph, other.speed_breakpoints_kph) and
                np.array_equal(self.pedal_breakpoints, other.pedal_breakpoints))

    def to_dict(self) -> dict:
        """Return plain lists (for YAML/JSON); the inverse of ``from_dict``."""
        return {'vehicle_id': self.vehicle_id,
                'speed_breakpoints_kph': self.speed_breakpoints_kph.tolist(),
                'pedal_breakpoints': self.pedal_breakpoints.tolist(),
                'torque_nm': self.torque_nm.tolist(),
                'policy_version': self.policy_version, 'origin': self.origin}

    @classmethod
    def from_dict(cls, data: dict) -> 'TorqueMap':
        """Build a map from ``to_dict`` output or a config mapping; TorqueMapError if wrong."""
        if not isinstance(data, dict):
            raise TorqueMapError(f'a torque map is a mapping, got {type(data).__name__}')
        missing = {'speed_breakpoints_kph', 'pedal_breakpoints', 'torque_nm'} - set(data)
        if missing:
            raise TorqueMapError(f'torque map lacks {sorted(missing)}')
        try:
            version = data.get('policy_version', 0)
            origin = data.get('origin', ORIGIN_DEFAULT)
            if isinstance(version, bool) or isinstance(origin, bool) or \
                    not float(version).is_integer() or not float(origin).is_integer():
                raise ValueError('policy_version and origin must be integers')
            return cls(data['speed_breakpoints_kph'], data['pedal_breakpoints'],
                       data['torque_nm'], str(data.get('vehicle_id', '')), int(version),
                       int(origin))
        except TorqueMapError:
            raise
        except (TypeError, ValueError, OverflowError) as error:
            raise TorqueMapError(f'torque map: {error}') from None
