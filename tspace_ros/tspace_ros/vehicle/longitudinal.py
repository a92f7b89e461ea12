"""
Longitudinal dynamics of the van: road load, inertia and the road's grade.

Forward motion only: friction (brakes, rolling resistance) stops the van but
never drives it backwards, and at standstill it holds (hill hold) unless the
traction force exceeds grade, rolling resistance and brakes together.
"""

import bisect
import math
from typing import Sequence

from tspace_ros.vehicle.parameters import BodyParameters, DrivelineParameters, GRAVITY_M_S2


class GradeProfile:
    """
    Road grade over distance: rise / run (0.02 = 2 % uphill), linear in between.

    ``distance_m`` (n,) strictly increasing from 0; ``grade`` (n,). The last
    value holds beyond the last distance.
    """

    def __init__(self, distance_m: Sequence[float], grade: Sequence[float]):
        """Check and keep the profile's breakpoints as float lists."""
        self.distance_m = [float(d) for d in distance_m]
        self.grade = [float(g) for g in grade]
        if len(self.distance_m) != len(self.grade) or not self.distance_m:
            raise ValueError(f'grade profile needs one grade per distance, got '
                             f'{len(self.distance_m)} distances and {len(self.grade)} grades')
        if self.distance_m[0] != 0.0 or any(
                b <= a for a, b in zip(self.distance_m, self.distance_m[1:])):
            raise ValueError(f'grade profile distances must increase strictly from 0 m, got '
                             f'{self.distance_m}')
        if any(not math.isfinite(g) or abs(g) > 1.0 for g in self.grade):
            raise ValueError(f'grades must be finite rise/run values within [-1, 1], got '
                             f'{self.grade}')

    def at(self, distance_m: float) -> float:
        """Return the grade (rise / run) at a distance along the road, m."""
        d, g = self.distance_m, self.grade
        if distance_m >= d[-1]:
            return g[-1]
        i = bisect.bisect_right(d, distance_m) - 1
        return g[i] + (g[i + 1] - g[i]) * (distance_m - d[i]) / (d[i + 1] - d[i])


class LongitudinalVehicle:
    """
    The van as a point mass with rotating inertia on a road with a grade.

    ``equivalent_mass_kg`` = test mass + (wheel inertia + motor inertia x
    ratio^2) / wheel radius^2. Resistances: rolling c_r m g cos(a), aero
    0.5 rho c_d A v^2, grade m g sin(a) with a = atan(grade).
    """

    def __init__(self, body: BodyParameters, driveline: DrivelineParameters,
                 speed_m_s: float = 0.0):
        """Set up the van at ``speed_m_s`` (>= 0) on a level road."""
        self.body = body
        self.mass_kg = body.test_mass_kg
        self.wheel_radius_m = body.wheel_radius_m
        self.equivalent_mass_kg = self.mass_kg + (
            body.wheel_inertia_kg_m2 +
            driveline.motor_inertia_kg_m2 * driveline.reduction_ratio ** 2) / \
            body.wheel_radius_m ** 2
        self.aero_n_per_m2_s2 = (0.5 * body.air_density_kg_m3 * body.drag_coefficient *
                                 body.frontal_area_m2)
        self.speed_m_s = float(speed_m_s)
        self.distance_m = 0.0
        self.grade = 0.0
        self._rolling_n = body.rolling_resistance_coefficient * self.mass_kg * GRAVITY_M_S2
        self._grade_n = 0.0

    def set_grade(self, grade: float) -> None:
        """Set the road grade (rise / run) for the following steps."""
        if grade != self.grade:
            angle = math.atan(grade)
            weight = self.mass_kg * GRAVITY_M_S2
            self.grade = grade
            self._rolling_n = self.body.rolling_resistance_coefficient * weight * math.cos(angle)
            self._grade_n = weight * math.sin(angle)

    def rolling_resistance_n(self) -> float:
        """Return the rolling resistance force, N, on the present grade."""
        return self._rolling_n

    def grade_force_n(self) -> float:
        """Return the downhill component of the weight, N (positive uphill)."""
        return self._grade_n

    def aero_drag_n(self, speed_m_s: float) -> float:
        """Return the aerodynamic drag, N, at a speed (m/s; still air)."""
        return self.aero_n_per_m2_s2 * speed_m_s * speed_m_s

    def road_load_n(self, speed_m_s: float) -> float:
        """Return rolling + aero + grade force, N, resisting motion at a speed (m/s)."""
        return self._rolling_n + self.aero_n_per_m2_s2 * speed_m_s * speed_m_s + self._grade_n

    def step(self, wheel_torque_nm: float, brake_force_n: float, dt_s: float) -> float:
        """
        Advance the speed by dt_s under an axle torque (Nm) and a brake force (N >= 0).

        Explicit Euler on the speed, trapezoidal distance. Returns the new
        speed, m/s (>= 0).
        """
        v = self.speed_m_s
        traction_n = wheel_torque_nm / self.wheel_radius_m
        if v > 0.0:
            force = (traction_n - self._grade_n - self.aero_n_per_m2_s2 * v * v -
                     self._rolling_n - brake_force_n)
            v_new = v + force * dt_s / self.equivalent_mass_kg
            if v_new < 0.0:
                v_new = 0.0
        else:
            excess = traction_n - self._grade_n - self._rolling_n - brake_force_n
            v_new = excess * dt_s / self.equivalent_mass_kg if excess > 0.0 else 0.0
        self.distance_m += 0.5 * (v + v_new) * dt_s
        self.speed_m_s = v_new
        return v_new
