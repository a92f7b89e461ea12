"""Energy and distance over a window follow tspace's definitions, with units checked."""

import numpy as np
import pytest

from tspace_ros.signals.energy import distance_km, electrical_energy_wh
from tspace_ros.signals.window import NS_PER_S, SignalWindow


def window(current, voltage, speed, rate=20.0, units=('A', 'V', 'km/h')):
    samples = np.array([current, voltage, speed], dtype=np.float32)
    n = samples.shape[1]
    return SignalWindow('V', 'D', 'E', 0, rate, ('current', 'voltage', 'speed'), units,
                        samples, 0, round((n - 1) * NS_PER_S / rate))


def test_energy_is_sum_of_power_over_rate_in_watt_hours():
    # 100 A at 400 V for 30 samples at 20 Hz = 40 kW for 1.5 s = 16.67 Wh
    w = window([100.0] * 30, [400.0] * 30, [36.0] * 30)
    assert electrical_energy_wh(w) == pytest.approx(40_000 * 1.5 / 3600)
    regen = window([-50.0] * 30, [400.0] * 30, [36.0] * 30)
    assert electrical_energy_wh(regen) == pytest.approx(-20_000 * 1.5 / 3600)


def test_distance_integrates_speed_in_km_per_hour():
    w = window([0.0] * 30, [400.0] * 30, [36.0] * 30)  # 10 m/s for 1.5 s = 15 m
    assert distance_km(w) == pytest.approx(0.015)


def test_wrong_units_are_refused_not_silently_converted():
    w = window([1.0] * 3, [1.0] * 3, [1.0] * 3, units=('mA', 'V', 'm/s'))
    with pytest.raises(ValueError, match="'mA'"):
        electrical_energy_wh(w)
    with pytest.raises(ValueError, match="'m/s'"):
        distance_km(w)
