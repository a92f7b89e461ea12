"""TorqueMap: validated breakpoints and table, bilinear interpolation like the VCU's."""

import numpy as np
import pytest

from tspace_ros.torque_map import (DEFAULT_PEDAL_BREAKPOINTS, DEFAULT_SPEED_BREAKPOINTS_KPH,
                                   TorqueMap, TorqueMapError)

SPEEDS = (0.0, 10.0, 20.0)
PEDALS = (0.0, 0.5, 1.0)
TABLE = [[-100.0, 0.0, 300.0],
         [-200.0, 50.0, 400.0],
         [-300.0, 100.0, 500.0]]


def test_default_breakpoints_are_tspace_shape():
    assert len(DEFAULT_SPEED_BREAKPOINTS_KPH) == 14 and DEFAULT_SPEED_BREAKPOINTS_KPH[-1] == 120
    assert len(DEFAULT_PEDAL_BREAKPOINTS) == 17 and DEFAULT_PEDAL_BREAKPOINTS[-1] == 1.0


def test_interpolation_hits_breakpoints_and_is_bilinear_between():
    m = TorqueMap(SPEEDS, PEDALS, TABLE)
    for i, s in enumerate(SPEEDS):
        for j, p in enumerate(PEDALS):
            assert m.torque(s, p) == TABLE[i][j]
    assert m.torque(5.0, 0.25) == pytest.approx((-100 + 0 - 200 + 50) / 4)
    assert m.torque(15.0, 0.75) == pytest.approx((50 + 400 + 100 + 500) / 4)


def test_outside_the_table_the_edge_values_hold():
    m = TorqueMap(SPEEDS, PEDALS, TABLE)
    assert m.torque(-5.0, -1.0) == -100.0
    assert m.torque(500.0, 2.0) == 500.0


@pytest.mark.parametrize('speeds, pedals, table, message', [
    ((0.0, 10.0), PEDALS, TABLE, 'shape'),
    ((0.0, 20.0, 10.0), PEDALS, TABLE, 'strictly increasing'),
    ((-1.0, 10.0, 20.0), PEDALS, TABLE, 'within'),
    (SPEEDS, (0.0, 0.5, 1.5), TABLE, 'within'),
    (SPEEDS, PEDALS, [[0.0, float('nan'), 0.0]] * 3, 'finite'),
    ((0.0,), PEDALS, [TABLE[0]], 'at least 2'),
])
def test_inconsistent_maps_are_rejected(speeds, pedals, table, message):
    with pytest.raises(TorqueMapError, match=message):
        TorqueMap(speeds, pedals, table)


def test_dict_round_trip_and_missing_keys():
    m = TorqueMap(SPEEDS, PEDALS, TABLE, vehicle_id='VIN', policy_version=3, origin=1)
    back = TorqueMap.from_dict(m.to_dict())
    assert back.same_breakpoints(m) and np.array_equal(back.torque_nm, m.torque_nm)
    assert (back.vehicle_id, back.policy_version, back.origin) == ('VIN', 3, 1)
    with pytest.raises(TorqueMapError, match='torque_nm'):
        TorqueMap.from_dict({'speed_breakpoints_kph': SPEEDS, 'pedal_breakpoints': PEDALS})
    with pytest.raises(ValueError):
        m.torque_nm[0, 0] = 1.0
