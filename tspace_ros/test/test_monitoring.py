"""
Monitoring: the torque map as rviz markers, the map_viz node, /diagnostics aggregation.

The marker tests locate every vertex by its coordinates (not by its position
in the list), so they check the geometry rviz will draw. The node tests run
map_viz and diagnostics_aggregator in processes of their own.
"""

import math
import types

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from lifecycle_msgs.msg import Transition
import numpy as np
import pytest
from ros_test_support import NodeProcess, PACKAGE_DIR, RosContext, spin_until
from test_window_source_lifecycle import LifecycleDriver
from tspace_interfaces.msg import TorqueMap as TorqueMapMsg
from tspace_ros.monitoring import (aggregated_array, DiagnosticsAggregator, diverging_color,
                                   group_of, HIGHLIGHT_LIFT_M, torque_map_markers)
from tspace_ros.nodes.map_viz import MARKER_QOS
from tspace_ros.nodes.messages import torque_map_to_msg
from tspace_ros.nodes.qos import ACTIVE_MAP_QOS
from tspace_ros.vehicle import load_vehicle_parameters
from visualization_msgs.msg import Marker, MarkerArray
import yaml

SCALE = (0.1, 4.0, 0.002)  # not the default, so that a forgotten factor shows
TIMEOUT_S = 20.0
OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


@pytest.fixture(scope='module')
def default_map():
    return load_vehicle_parameters().load_default_map()


@pytest.fixture(scope='module')
def changed_map(default_map):
    torque = default_map.torque_nm.copy()
    torque[3:7] -= 200.0
    return default_map.with_torque(torque, policy_version=7)


def by_key(array: MarkerArray):
    return {(m.ns, m.id): m for m in array.markers}


def xyz(marker: Marker) -> np.ndarray:
    return np.array([(p.x, p.y, p.z) for p in marker.points])


def grid_index(values: np.ndarray, breakpoints: np.ndarray) -> np.ndarray:
    """Index of the breakpoint each value sits on; fails if one sits on none."""
    hits = np.isclose(values[:, None], breakpoints[None, :], rtol=0, atol=1e-9)
    assert np.all(hits.sum(axis=1) == 1), 'a vertex is not on a breakpoint'
    return hits.argmax(axis=1)


# ---- markers ---------------------------------------------------------------------------------

@pytest.mark.parametrize('which', ['default', 'changed'])
def test_surface_has_two_triangles_per_cell_at_scaled_torque(which, default_map, changed_map):
    torque_map = default_map if which == 'default' else changed_map
    speeds, pedals = torque_map.speed_breakpoints_kph, torque_map.pedal_breakpoints
    rows, columns = torque_map.shape
    assert (rows, columns) == (14, 17)
    surface = by_key(torque_map_markers(torque_map, scale=SCALE))[('torque_map', 0)]
    assert surface.type == Marker.TRIANGLE_LIST
    assert len(surface.points) == 13 * 16 * 2 * 3 == len(surface.colors)
    points = xyz(surface)
    row = grid_index(points[:, 0], speeds * SCALE[0])
    column = grid_index(points[:, 1], pedals * SCALE[1])
    np.testing.assert_allclose(points[:, 2], torque_map.torque_nm[row, column] * SCALE[2],
                               atol=1e-9)
    # Every cell is covered by exactly one pair of triangles spanning its four corners.
    cells = {}
    for k in range(0, len(points), 6):
        r, c = row[k:k + 6], column[k:k + 6]
        corners = set(zip(r.tolist(), c.tolist()))
        i, j = min(r), min(c)
        assert corners == {(i, j), (i + 1, j), (i, j + 1), (i + 1, j + 1)}
        cells[(i, j)] = cells.get((i, j), 0) + 1
    assert len(cells) == 13 * 16 and set(cells.values()) == {1}
    # A few cells by hand: (speed, pedal) -> torque.
    for speed, pedal in ((0.0, 0.0), (30.0, 0.12), (120.0, 1.0), (60.0, 0.5)):
        r, c = list(speeds).index(speed), list(pedals).index(pedal)
        at = (np.isclose(points[:, 0], speed * SCALE[0]) &
              np.isclose(points[:, 1], pedal * SCALE[1]))
        assert at.any()
        np.testing.assert_allclose(points[at, 2], torque_map.torque_nm[r, c] * SCALE[2])
    if which == 'changed':
        at = np.isclose(points[:, 0], 20.0 * SCALE[0]) & np.isclose(points[:, 1], 1.0 * SCALE[1])
        np.testing.assert_allclose(points[at, 2], (4402.0 - 200.0) * SCALE[2], atol=1e-3)


def test_surface_colours_blue_for_regeneration_red_for_traction(changed_map):
    surface = by_key(torque_map_markers(changed_map, scale=SCALE))[('torque_map', 0)]
    points = xyz(surface)
    row = grid_index(points[:, 0], changed_map.speed_breakpoints_kph * SCALE[0])
    column = grid_index(points[:, 1], changed_map.pedal_breakpoints * SCALE[1])
    torque = changed_map.torque_nm[row, column]
    rgba = np.array([(c.r, c.g, c.b, c.a) for c in surface.colors])
    assert np.all(rgba[:, 3] > 0)
    regen, traction, zero = torque < 0, torque > 0, torque == 0
    assert regen.sum() > 50 and traction.sum() > 50 and zero.sum() > 10
    assert np.all(rgba[regen, 2] > rgba[regen, 0]), 'a regeneration vertex is not bluish'
    assert np.all(rgba[traction, 0] > rgba[traction, 2]), 'a traction vertex is not reddish'
    assert np.all(rgba[zero, :3] > 0.9), 'zero torque is not near white'
    strongest_regen, strongest_traction = rgba[torque.argmin()], rgba[torque.argmax()]
    assert strongest_regen[2] - strongest_regen[0] > 0.4
    assert strongest_traction[0] - strongest_traction[2] > 0.4
    # The colormap itself: monotonic in saturation towards both ends.
    r0, g0, b0 = diverging_color(0.0, -800.0, 4400.0)
    assert min(r0, g0, b0) > 0.9
    blues = [diverging_color(v, -800.0, 4400.0) for v in (-100.0, -400.0, -800.0)]
    assert [b - r for r, _, b in blues] == sorted(b - r for r, _, b in blues)


def test_changed_rows_are_highlighted_exactly_on_the_rows(changed_map):
    markers = torque_map_markers(changed_map, changed_rows=(3, 4), scale=SCALE)
    strips = [m for m in markers.markers if m.ns == 'torque_map/changed_rows']
    assert sorted(m.id for m in strips) == [3, 4, 5, 6]
    for strip in strips:
        row = strip.id
        assert strip.type == Marker.LINE_STRIP and strip.scale.x > 0
        points = xyz(strip)
        np.testing.assert_allclose(points[:, 0], changed_map.speed_breakpoints_kph[row] *
                                   SCALE[0])
        np.testing.assert_allclose(points[:, 1], changed_map.pedal_breakpoints * SCALE[1])
        np.testing.assert_allclose(points[:, 2], changed_map.torque_nm[row] * SCALE[2] +
                                   HIGHLIGHT_LIFT_M)
        assert HIGHLIGHT_LIFT_M > 0
    for changed in (None, (5, 0)):
        assert not [m for m in torque_map_markers(changed_map, changed_rows=changed).markers
                    if m.ns == 'torque_map/changed_rows']


def test_difference_surface_is_learned_minus_default(default_map, changed_map):
    markers = by_key(torque_map_markers(changed_map, default_map=default_map, scale=SCALE))
    surface = markers[('torque_map/difference', 0)]
    assert surface.type == Marker.TRIANGLE_LIST
    points = xyz(surface)
    row = grid_index(points[:, 0], default_map.speed_breakpoints_kph * SCALE[0])
    column = grid_index(points[:, 1], default_map.pedal_breakpoints * SCALE[1])
    expected = (changed_map.torque_nm - default_map.torque_nm)[row, column] * SCALE[2]
    np.testing.assert_allclose(points[:, 2], expected, atol=1e-9)
    assert set(np.round(expected / SCALE[2]).tolist()) == {0.0, -200.0}
    alphas = [c.a for c in surface.colors]
    assert 0 < min(alphas) and max(alphas) < 1, 'the difference is not semi-transparent'
    # Beside the map, not inside it.
    assert surface.pose.position.y > default_map.pedal_breakpoints[-1] * SCALE[1]
    assert ('torque_map/difference', 0) not in by_key(torque_map_markers(changed_map))


@pytest.mark.parametrize('style', ['surface', 'grid'])
def test_every_marker_is_well_formed(style, default_map, changed_map):
    stamp = torque_map_to_msg(changed_map, stamp_ns=1_790_000_000_123_000_000).header.stamp
    array = torque_map_markers(changed_map, default_map=default_map, changed_rows=(3, 4),
                               frame_id='vehicle_map', stamp=stamp, style=style)
    first, rest = array.markers[0], array.markers[1:]
    assert first.action == Marker.DELETEALL
    assert all(m.action == Marker.ADD for m in rest)
    keys = [(m.ns, m.id) for m in array.markers]
    assert len(keys) == len(set(keys)), 'a (ns, id) is used twice'
    for marker in array.markers:
        assert marker.header.frame_id == 'vehicle_map'
        assert (marker.header.stamp.sec, marker.header.stamp.nanosec) == (1_790_000_000,
                                                                          123_000_000)
        assert marker.color.a > 0
        assert all(c.a > 0 for c in marker.colors)
        values = [marker.pose.position.x, marker.pose.position.y, marker.pose.position.z]
        values += [v for p in marker.points for v in (p.x, p.y, p.z)]
        assert all(math.isfinite(v) for v in values)
        if marker.colors:
            assert len(marker.colors) == len(marker.points)
    types_in_main = {m.type for m in rest if m.ns == 'torque_map'}
    if style == 'surface':
        assert types_in_main == {Marker.TRIANGLE_LIST, Marker.LINE_LIST}
    else:
        assert types_in_main == {Marker.LINE_LIST}
        grid = by_key(array)[('torque_map', 1)]
        assert len(grid.colors) == len(grid.points) > 0
    texts = ' | '.join(m.text for m in rest if m.type == Marker.TEXT_VIEW_FACING)
    for expected in ('speed km/h', 'pedal', 'torque Nm', 'v7', '-1000 Nm', '4402 Nm'):
        assert expected in texts, f'{expected!r} missing from the labels: {texts}'
    grid_lines = by_key(array)[('torque_map', 1)]
    assert len(grid_lines.points) == 2 * (14 * 16 + 13 * 17)


def test_unusable_maps_raise_value_error_naming_the_problem(default_map):
    speeds, pedals = default_map.speed_breakpoints_kph, default_map.pedal_breakpoints
    torque = default_map.torque_nm.copy()
    torque[2, 5] = np.nan
    nan_map = types.SimpleNamespace(speed_breakpoints_kph=speeds, pedal_breakpoints=pedals,
                                    torque_nm=torque)
    with pytest.raises(ValueError, match='non-finite'):
        torque_map_markers(nan_map)
    short = types.SimpleNamespace(speed_breakpoints_kph=speeds, pedal_breakpoints=pedals[:-1],
                                  torque_nm=default_map.torque_nm)
    with pytest.raises(ValueError, match='16 pedal columns'):
        torque_map_markers(short)
    nan_speed = types.SimpleNamespace(speed_breakpoints_kph=np.r_[speeds[:-1], np.inf],
                                      pedal_breakpoints=pedals, torque_nm=default_map.torque_nm)
    with pytest.raises(ValueError, match='speed breakpoints'):
        torque_map_markers(nan_speed)
    other = types.SimpleNamespace(speed_breakpoints_kph=speeds * 1.1, pedal_breakpoints=pedals,
                                  torque_nm=default_map.torque_nm)
    with pytest.raises(ValueError, match='default map: speed breakpoints'):
        torque_map_markers(other, default_map=default_map)
    with pytest.raises(ValueError, match='outside'):
        torque_map_markers(default_map, changed_rows=(12, 4))
    with pytest.raises(ValueError, match='style'):
        torque_map_markers(default_map, style='mesh')


def test_rviz_config_shows_the_sim_vans_markers_in_frame_map():
    config = yaml.safe_load((PACKAGE_DIR / 'config' / 'tspace.rviz').read_text())
    assert isinstance(config['Panels'], list)
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'map'
    displays = {d['Class']: d for d in manager['Displays']}
    assert 'rviz_default_plugins/Grid' in displays
    topic = displays['rviz_default_plugins/MarkerArray']['Topic']
    vehicle_id = load_vehicle_parameters().vehicle_id
    assert topic['Value'] == f'/{vehicle_id}/torque_map/markers'
    assert topic['Durability Policy'] == 'Transient Local'
    assert manager['Views']['Current']['Class'] == 'rviz_default_plugins/Orbit'
    setup = (PACKAGE_DIR / 'setup.py').read_text()
    assert "glob('config/*.rviz')" in setup
    assert "'map_viz'" in setup and "'diagnostics_aggregator'" in setup


# ---- diagnostics aggregation -----------------------------------------------------------------

def status(name, level, message=''):
    return DiagnosticStatus(name=name, level=level, message=message,
                            values=[KeyValue(key='k', value='v')])


def test_groups_are_the_first_namespace_segment():
    assert group_of('/SIMVAN00000000001/can_bridge') == 'SIMVAN00000000001'
    assert group_of('/SIMVAN00000000001/sub/agent') == 'SIMVAN00000000001'
    assert group_of('VAN2/agent') == 'VAN2'
    assert group_of('/storage') == group_of('storage') == group_of('') == 'other'


def test_aggregator_worst_level_per_group_stale_and_overall():
    core = DiagnosticsAggregator(stale_after_s=5.0)
    assert core.summary(0.0).level == 3 and not core.summary(0.0).groups  # nothing heard
    core.update([status('/VAN1/can_bridge', OK, 'bus up'),
                 status('/VAN1/agent', ERROR, 'policy rejected'),
                 status('/VAN2/cruncher', WARN, 'timed out steps')], now_s=100.0)
    core.update([status('/storage', OK)], now_s=101.0)
    summary = core.summary(102.0)
    assert sorted(summary.groups) == ['VAN1', 'VAN2', 'other']
    van1 = summary.groups['VAN1']
    assert van1.level == 2 and van1.problems == ('/VAN1/agent',)
    assert van1.counts == {'OK': 1, 'WARN': 0, 'ERROR': 1, 'STALE': 0}
    assert (summary.groups['VAN2'].level, summary.groups['other'].level) == (1, 0)
    assert summary.level == 2

    # The agent recovers; the cruncher and storage fall silent.
    core.update([status('/VAN1/agent', OK), status('/VAN1/can_bridge', OK)], now_s=104.0)
    summary = core.summary(105.5)  # cruncher: 5.5 s old, storage: 4.5 s old
    assert summary.groups['VAN1'].level == 0 and not summary.groups['VAN1'].problems
    van2 = summary.groups['VAN2']
    assert van2.level == 3 and van2.problems == ('/VAN2/cruncher',)
    assert van2.members[0].stale and 'no update' in van2.members[0].message
    assert van2.counts['STALE'] == 1 and van2.counts['WARN'] == 0
    assert summary.groups['other'].level == 0
    assert summary.level == 3
    assert core.summary(106.5).groups['other'].level == 3


def test_aggregated_array_has_one_status_per_group_and_the_overall():
    core = DiagnosticsAggregator(stale_after_s=5.0)
    core.update([status('/VAN1/can_bridge', OK, 'bus up'),
                 status('/VAN1/agent', ERROR, 'policy rejected'),
                 status('/VAN2/cruncher', OK)], now_s=0.0)
    stamp = torque_map_to_msg(load_vehicle_parameters().load_default_map(),
                              stamp_ns=5_000_000_000).header.stamp
    array = aggregated_array(core.summary(1.0), stamp)
    assert array.header.stamp.sec == 5
    statuses = {s.name: s for s in array.status}
    assert sorted(statuses) == ['/tspace', '/tspace/VAN1', '/tspace/VAN2']
    assert statuses['/tspace'].level == ERROR and 'VAN1' in statuses['/tspace'].message
    van1 = statuses['/tspace/VAN1']
    assert van1.level == ERROR
    assert '/VAN1/agent' in van1.message and 'policy rejected' in van1.message
    assert '/VAN1/can_bridge' not in van1.message
    values = {kv.key: kv.value for kv in van1.values}
    assert values['/VAN1/agent'].startswith('ERROR') and values['/VAN1/can_bridge'] == \
        'OK: bus up'
    assert statuses['/tspace/VAN2'].level == OK


# ---- nodes in their own processes ------------------------------------------------------------

def diagnostic_values(arrays, name):
    for array in reversed(arrays):
        for entry in array.status:
            if entry.name == name:
                return {kv.key: kv.value for kv in entry.values}
    return {}


def title_of(array: MarkerArray) -> str:
    return next(m.text for m in array.markers if (m.ns, m.id) == ('torque_map/labels', 3))


def test_map_viz_node_draws_maps_for_late_joiners_and_survives_bad_ones(
        tmp_path, default_map, changed_map):
    ns = 'VIZVAN'
    with NodeProcess('tspace_ros.nodes.map_viz', tmp_path / 'map_viz.log', [
            '-r', f'__ns:=/{ns}', '-p', 'diagnostics_period_s:=0.1']) as process, \
            RosContext() as ros:
        probe = ros.node('map_viz_probe', ns)
        maps = probe.create_publisher(TorqueMapMsg, 'torque_map/active', ACTIVE_MAP_QOS)
        received, diagnostics = [], []
        probe.create_subscription(MarkerArray, 'torque_map/markers', received.append,
                                  MARKER_QOS)
        probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
        # Published before the node is configured: transient local delivers it later.
        maps.publish(torque_map_to_msg(changed_map, changed_row_start=3, changed_row_count=4))
        node = LifecycleDriver(ros, f'{ns}/map_viz')
        assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(Transition.TRANSITION_ACTIVATE), process.output()
        assert spin_until(ros.executor, lambda: received, TIMEOUT_S), process.output()
        markers = by_key(received[-1])
        assert received[-1].markers[0].action == Marker.DELETEALL
        assert sorted(i for n, i in markers if n == 'torque_map/changed_rows') == [3, 4, 5, 6]
        assert 'v7' in title_of(received[-1])
        difference = xyz(markers[('torque_map/difference', 0)])[:, 2]
        assert np.isclose(difference.min(), -200.0 * 0.001, atol=1e-4)  # default torque scale
        assert all(m.header.frame_id == 'map' for m in received[-1].markers)

        late = []
        ros.node('late_rviz', ns).create_subscription(MarkerArray, 'torque_map/markers',
                                                      late.append, MARKER_QOS)
        assert spin_until(ros.executor, lambda: late, TIMEOUT_S), 'no markers for a late joiner'
        assert 'v7' in title_of(late[0])

        bad = torque_map_to_msg(changed_map.with_torque(changed_map.torque_nm,
                                                        policy_version=8))
        bad.torque_nm = bad.torque_nm[:-1]
        maps.publish(bad)
        name = f'/{ns}/map_viz'
        assert spin_until(ros.executor, lambda: diagnostic_values(
            diagnostics, name).get('maps_unusable') == '1', TIMEOUT_S), process.output()
        assert process.wait(0.0) is None, 'a malformed map killed the node'
        assert all('v8' not in title_of(array) for array in received)

        maps.publish(torque_map_to_msg(default_map.with_torque(default_map.torque_nm,
                                                               policy_version=9)))
        assert spin_until(ros.executor, lambda: 'v9' in title_of(received[-1]), TIMEOUT_S), \
            process.output()
        assert not [key for key in by_key(received[-1]) if key[0] == 'torque_map/changed_rows']
        assert spin_until(ros.executor, lambda: diagnostic_values(
            diagnostics, name).get('maps_drawn') == '2', TIMEOUT_S)
        assert node.transition(Transition.TRANSITION_DEACTIVATE)
    assert 'unusable map (policy v8)' in process.output()


def test_aggregator_node_names_the_failing_status_and_sees_silence(tmp_path):
    with NodeProcess('tspace_ros.nodes.diagnostics_aggregator', tmp_path / 'agg.log', [
            '-r', '__node:=aggregator_under_test', '-p', 'period_s:=0.1',
            '-p', 'stale_after_s:=1.0']) as process, RosContext() as ros:
        probe = ros.node('aggregator_probe')
        publisher = probe.create_publisher(DiagnosticArray, '/diagnostics', 10)
        aggregated = []
        probe.create_subscription(DiagnosticArray, '/diagnostics_agg', aggregated.append, 10)
        node = LifecycleDriver(ros, 'aggregator_under_test')
        assert node.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert spin_until(ros.executor, lambda: publisher.get_subscription_count() > 0,
                          TIMEOUT_S)
        publisher.publish(DiagnosticArray(status=[
            status('/AGGVAN/can_bridge', OK, 'bus up'),
            status('/AGGVAN/agent', ERROR, 'policy rejected')]))

        def group_status(level):
            def seen():
                for array in aggregated[-3:]:
                    for entry in array.status:
                        if entry.name == '/tspace/AGGVAN' and entry.level == level:
                            return entry
                return None
            return seen

        assert spin_until(ros.executor, group_status(ERROR), TIMEOUT_S), process.output()
        entry = group_status(ERROR)()
        assert '/AGGVAN/agent' in entry.message and 'policy rejected' in entry.message
        values = {kv.key: kv.value for kv in entry.values}
        assert values['/AGGVAN/agent'].startswith('ERROR')
        assert values['/AGGVAN/can_bridge'].startswith('OK')
        overall = [s for s in aggregated[-1].status if s.name == '/tspace']
        assert overall and overall[0].level in (ERROR, STALE)
        # Nothing more is heard: after stale_after_s the group turns STALE.
        assert spin_until(ros.executor, group_status(STALE), TIMEOUT_S), process.output()
        assert node.transition(Transition.TRANSITION_DEACTIVATE)
