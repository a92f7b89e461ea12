"""
The vehicle control unit (VCU): pedal and speed to motor torque through the torque map.

What the map's torque means: the total torque at the driven axle (both wheels),
Nm, that the driver's pedal asks for at a vehicle speed; negative values
regenerate. The VCU turns it into a motor torque through the reduction
(traction: map / (ratio x gear efficiency); regeneration: map x gear
efficiency / ratio) and clips that to the motor's torque/power envelope. With
the sim van's 430 Nm motor, 10.5:1 reduction and 97.5 % gear efficiency the
envelope allows 4402 Nm at the axle below base speed, the top of tspace's map
(about 4400 Nm); its regeneration limit covers tspace's -2300 Nm.
"""

import bisect
from typing import List

from tspace_ros.torque_map import TorqueMap, TorqueMapError
from tspace_ros.vehicle.powertrain import Driveline, Motor


class Vcu:
    """
    Applies a torque map: holds the active map and the default map.

    The interpolation is the same bilinear one as ``TorqueMap.torque`` (edge
    values hold outside the table), done on plain float lists because it runs
    every physics step.
    """

    def __init__(self, default_map: TorqueMap, motor: Motor, driveline: Driveline):
        """Start with ``default_map`` active; later maps must share its breakpoints."""
        self.motor = motor
        self.driveline = driveline
        self._default = default_map
        self._ratio = driveline.ratio
        self._efficiency = driveline.efficiency
        self._speeds = [float(s) for s in default_map.speed_breakpoints_kph]
        self._pedals = [float(p) for p in default_map.pedal_breakpoints]
        self.map_changes = 0
        self._load(default_map)

    def _load(self, torque_map: TorqueMap) -> None:
        rows = torque_map.torque_nm.tolist()
        self._map = torque_map
        self._rows = rows
        self._row_steps = [[b - a for a, b in zip(low, high)] for low, high in zip(rows, rows[1:])]

    @property
    def active_map(self) -> TorqueMap:
        """Return the torque map in use."""
        return self._map

    @property
    def default_map(self) -> TorqueMap:
        """Return the map the VCU started with and returns to on reset."""
        return self._default

    @property
    def map_version(self) -> int:
        """Return the policy version of the active map (0 for the default map)."""
        return self._map.policy_version

    @property
    def pedal_breakpoints(self) -> List[float]:
        """Return the map's pedal breakpoints (0..1), one per column."""
        return list(self._pedals)

    def set_map(self, torque_map: TorqueMap) -> None:
        """Make ``torque_map`` active; TorqueMapError if its breakpoints are not the default's."""
        if not isinstance(torque_map, TorqueMap):
            raise TorqueMapError(f'expected a TorqueMap, got {type(torque_map).__name__}')
        if not torque_map.same_breakpoints(self._default):
            raise TorqueMapError(
                f'the VCU map has {self._default.shape[0]} speed x {self._default.shape[1]} '
                f'pedal breakpoints {self._speeds} x {self._pedals}; got a map with '
                f'{torque_map.speed_breakpoints_kph.tolist()} x '
                f'{torque_map.pedal_breakpoints.tolist()}')
        self._load(torque_map)
        self.map_changes += 1

    def reset_to_default(self) -> None:
        """Make the default map active again."""
        self._load(self._default)
        self.map_changes += 1

    def _row_position(self, speed_kph: float):
        speeds = self._speeds
        if speed_kph <= speeds[0]:
            return 0, 0.0
        if speed_kph >= speeds[-1]:
            return len(speeds) - 2, 1.0
        i = bisect.bisect_right(speeds, speed_kph) - 1
        return i, (speed_kph - speeds[i]) / (speeds[i + 1] - speeds[i])

    def map_torque_nm(self, speed_kph: float, pedal: float) -> float:
        """Return the active map's axle torque, Nm, at a speed (km/h) and pedal (0..1)."""
        i, fs = self._row_position(speed_kph)
        pedals = self._pedals
        if pedal <= pedals[0]:
            j, fp = 0, 0.0
        elif pedal >= pedals[-1]:
            j, fp = len(pedals) - 2, 1.0
        else:
            j = bisect.bisect_right(pedals, pedal) - 1
            fp = (pedal - pedals[j]) / (pedals[j + 1] - pedals[j])
        low, step = self._rows[i], self._row_steps[i]
        at_j = low[j] + fs * step[j]
        at_j1 = low[j + 1] + fs * step[j + 1]
        return at_j + fp * (at_j1 - at_j)

    def map_row_nm(self, speed_kph: float) -> List[float]:
        """Return the active map's axle torques, Nm, at a speed (km/h): one per pedal column."""
        i, fs = self._row_position(speed_kph)
        return [a + fs * d for a, d in zip(self._rows[i], self._row_steps[i])]

    def pedal_for_torque(self, speed_kph: float, wheel_torque_nm: float):
        """
        Invert the active map along the pedal axis at a speed (km/h).

        Returns (pedal, lift_off_torque_nm): the smallest pedal (0..1) at which
        the map reaches ``wheel_torque_nm`` (axle, Nm), linear between columns,
        and the map's torque at pedal 0. The pedal is 0 when the torque is at
        or below the lift-off torque (more deceleration needs the brake) and 1
        when the map never reaches it.
        """
        i, fs = self._row_position(speed_kph)
        low, step = self._rows[i], self._row_steps[i]
        previous = low[0] + fs * step[0]
        if wheel_torque_nm <= previous:
            return 0.0, previous
        lift_off = previous
        pedals = self._pedals
        for j in range(1, len(pedals)):
            current = low[j] + fs * step[j]
            if current >= wheel_torque_nm:
                fraction = (wheel_torque_nm - previous) / (current - previous)
                return pedals[j - 1] + fraction * (pedals[j] - pedals[j - 1]), lift_off
            previous = current
        return 1.0, lift_off

    def motor_torque_nm(self, pedal: float, speed_kph: float, motor_speed_rad_s: float) -> float:
        """
        Return the motor torque request, Nm, for a pedal (0..1) at a vehicle speed.

        The map's axle torque through the reduction, clipped to the motor
        envelope at ``motor_speed_rad_s``.
        """
        wheel = self.map_torque_nm(speed_kph, pedal)
        if wheel >= 0.0:
            return self.motor.limit_torque_nm(wheel / (self._ratio * self._efficiency),
                                              motor_speed_rad_s)
        return self.motor.limit_torque_nm(wheel * self._efficiency / self._ratio,
                                          motor_speed_rad_s)
