"""
The electric powertrain: reduction gear, traction motor with inverter, battery.

All quantities are plain floats in SI units (torque Nm, speed rad/s, power W,
current A, voltage V) so that a simulation step costs microseconds. Signs:
positive motor torque drives the van forwards, negative torque regenerates;
positive battery current and power discharge the battery.
"""

import bisect
import math
from typing import Optional

from tspace_ros.vehicle.parameters import (BatteryParameters, DrivelineParameters,
                                           MotorParameters)

RPM_PER_RAD_S = 60.0 / (2.0 * math.pi)
"""Revolutions per minute in one rad/s."""


class Driveline:
    """
    A single fixed reduction between the motor and the driven axle.

    Wheel torque is the total torque at the driven axle (both wheels), Nm.
    Traction passes the gear's loss to the wheels (wheel = motor x ratio x
    efficiency); regeneration passes it to the motor (wheel = motor x ratio /
    efficiency), so the gear always costs energy.
    """

    def __init__(self, params: DrivelineParameters):
        """Keep the ratio and efficiency of ``params`` as plain floats."""
        self.ratio = params.reduction_ratio
        self.efficiency = params.gear_efficiency

    def wheel_torque_nm(self, motor_torque_nm: float) -> float:
        """Return the axle torque, Nm, that a motor torque (Nm) gives."""
        if motor_torque_nm >= 0.0:
            return motor_torque_nm * self.ratio * self.efficiency
        return motor_torque_nm * self.ratio / self.efficiency

    def motor_torque_nm(self, wheel_torque_nm: float) -> float:
        """Return the motor torque, Nm, that gives an axle torque (Nm); inverse of the above."""
        if wheel_torque_nm >= 0.0:
            return wheel_torque_nm / (self.ratio * self.efficiency)
        return wheel_torque_nm * self.efficiency / self.ratio


class Motor:
    """
    Traction motor with its inverter: torque envelope and electrical power.

    Envelope at motor speed w (rad/s): traction |T| <= min(T_peak, P_peak / |w|)
    and none above the maximum speed; regeneration |T| <= min(T_regen,
    P_regen / |w|). Losses, W (motor + inverter):
    ``k_c T^2 + k_i |w| + k_w |w|^3 + P_0``, P_0 only while the motor turns or
    makes torque. Electrical power drawn = T w + losses, so efficiency depends
    on both torque and speed.
    """

    def __init__(self, params: MotorParameters):
        """Keep the envelope and loss coefficients of ``params`` as plain floats."""
        self.params = params
        self.peak_torque_nm = params.peak_torque_nm
        self.peak_power_w = params.peak_power_w
        self.max_speed_rad_s = params.max_speed_rpm / RPM_PER_RAD_S
        self.regen_peak_torque_nm = params.regen_peak_torque_nm
        self.regen_peak_power_w = params.regen_peak_power_w
        self._k_copper = params.copper_loss_w_per_nm2
        self._k_iron = params.iron_loss_w_s_per_rad
        self._k_windage = params.windage_loss_w_s3_per_rad3
        self._constant = params.constant_loss_w

    @property
    def base_speed_rad_s(self) -> float:
        """Return the speed, rad/s, above which traction is power-limited."""
        return self.peak_power_w / self.peak_torque_nm

    def max_torque_nm(self, speed_rad_s: float) -> float:
        """Return the largest traction torque, Nm (>= 0), at a motor speed (rad/s)."""
        w = abs(speed_rad_s)
        if w >= self.max_speed_rad_s:
            return 0.0
        if w * self.peak_torque_nm > self.peak_power_w:
            return self.peak_power_w / w
        return self.peak_torque_nm

    def min_torque_nm(self, speed_rad_s: float) -> float:
        """Return the strongest regenerative torque, Nm (<= 0), at a motor speed (rad/s)."""
        w = abs(speed_rad_s)
        if w * self.regen_peak_torque_nm > self.regen_peak_power_w:
            return -self.regen_peak_power_w / w
        return -self.regen_peak_torque_nm

    def limit_torque_nm(self, torque_nm: float, speed_rad_s: float) -> float:
        """Return a torque request (Nm) clipped to the envelope at a motor speed (rad/s)."""
        if torque_nm > 0.0:
            high = self.max_torque_nm(speed_rad_s)
            return high if torque_nm > high else torque_nm
        low = self.min_torque_nm(speed_rad_s)
        return low if torque_nm < low else torque_nm

    def loss_w(self, torque_nm: float, speed_rad_s: float) -> float:
        """Return the motor and inverter losses, W, at an operating point (Nm, rad/s)."""
        w = abs(speed_rad_s)
        if torque_nm == 0.0 and w == 0.0:
            return 0.0
        return (self._k_copper * torque_nm * torque_nm + self._k_iron * w +
                self._k_windage * w * w * w + self._constant)

    def electrical_power_w(self, torque_nm: float, speed_rad_s: float) -> float:
        """Return the DC power the inverter draws, W (negative: it charges the battery)."""
        return torque_nm * speed_rad_s + self.loss_w(torque_nm, speed_rad_s)

    def efficiency(self, torque_nm: float, speed_rad_s: float) -> float:
        """
        Return the efficiency of motor and inverter (0..1) at an operating point.

        Motoring: mechanical / electrical power; generating: electrical /
        mechanical power. 0 where no useful power flows (standstill, or the
        losses eat all of the regenerated power).
        """
        mechanical_w = torque_nm * speed_rad_s
        electrical_w = self.electrical_power_w(torque_nm, speed_rad_s)
        if mechanical_w > 0.0:
            return mechanical_w / electrical_w
        if mechanical_w < 0.0 and electrical_w < 0.0:
            return electrical_w / mechanical_w
        return 0.0


class BatteryEmptyError(RuntimeError):
    """The battery cannot deliver the power asked for (state of charge 0 or overload)."""


class Battery:
    """
    Traction battery: OCV(SOC) table and internal resistance.

    For a DC power demand P (W, + discharge), the current I solves
    ``P = U_ocv I - R I^2`` (the root that goes to P / U_ocv as R -> 0) and
    the terminal voltage is ``U = U_ocv - R I``: it sags under discharge and
    rises under charge. SOC falls by I dt / (3600 capacity_Ah).
    """

    def __init__(self, params: BatteryParameters, soc: Optional[float] = None):
        """Start at ``soc`` (0..1; default: the parameters' initial_soc)."""
        self.params = params
        self.resistance_ohm = params.internal_resistance_ohm
        self.capacity_ah = params.capacity_ah
        self._socs = list(params.soc_breakpoints)
        self._ocvs = [params.cells_in_series * v for v in params.cell_ocv_v]
        self.soc = params.initial_soc if soc is None else float(soc)
        if not 0.0 <= self.soc <= 1.0:
            raise ValueError(f'state of charge must be in [0, 1], got {self.soc}')

    def open_circuit_voltage_v(self, soc: Optional[float] = None) -> float:
        """Return the pack's open-circuit voltage, V, at a SOC (default: the present one)."""
        s = self.soc if soc is None else soc
        socs, ocvs = self._socs, self._ocvs
        if s <= 0.0:
            return ocvs[0]
        if s >= 1.0:
            return ocvs[-1]
        i = bisect.bisect_right(socs, s) - 1
        return ocvs[i] + (ocvs[i + 1] - ocvs[i]) * (s - socs[i]) / (socs[i + 1] - socs[i])

    def max_discharge_power_w(self, soc: Optional[float] = None) -> float:
        """Return the largest power, W, the terminals can deliver: U_ocv^2 / (4 R)."""
        u = self.open_circuit_voltage_v(soc)
        return u * u / (4.0 * self.resistance_ohm)

    def _current_a(self, ocv_v: float, power_w: float) -> float:
        r = self.resistance_ohm
        discriminant = ocv_v * ocv_v - 4.0 * r * power_w
        if discriminant < 0.0:
            raise BatteryEmptyError(f'battery cannot deliver {power_w:.0f} W (at most '
                                    f'{ocv_v * ocv_v / (4.0 * r):.0f} W at {ocv_v:.1f} V open '
                                    f'circuit)')
        # 2P / (U + sqrt(U^2 - 4RP)) is the small root without cancellation.
        return 2.0 * power_w / (ocv_v + math.sqrt(discriminant))

    def current_for_power_a(self, power_w: float, soc: Optional[float] = None) -> float:
        """Return the current, A (+ discharge), for a terminal power (W); error if overloaded."""
        return self._current_a(self.open_circuit_voltage_v(soc), power_w)

    def step(self, power_w: float, dt_s: float):
        """
        Draw a terminal power (W, + discharge) for dt_s seconds.

        Returns (current_a, terminal_voltage_v) during the step and updates
        the SOC. BatteryEmptyError if the battery is empty or overloaded.
        """
        u = self.open_circuit_voltage_v()
        current = self._current_a(u, power_w)
        soc = self.soc - current * dt_s / (3600.0 * self.capacity_ah)
        if soc < 0.0:
            raise BatteryEmptyError('battery is empty (state of charge 0)')
        self.soc = soc if soc < 1.0 else 1.0
        return current, u - self.resistance_ohm * current
