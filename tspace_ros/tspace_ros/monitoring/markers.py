"""
The torque map as rviz markers: a coloured surface over speed x pedal, and what changed.

``torque_map_markers`` turns a TorqueMap (or anything with its attributes) into
one visualization_msgs/MarkerArray. Coordinates: x = speed (km/h) x
``scale[0]``, y = pedal (0..1) x ``scale[1]``, z = torque (Nm) x ``scale[2]``,
all in ``frame_id``. Colours come from a diverging colormap, implemented here:
blue for regeneration (negative torque), white near 0, red for traction; the
two sides are normalised separately (by the most negative and the largest
torque) so that both use the full colour range.

Namespaces (``ns`` = 'torque_map' by default):

- ``ns``: id 0 the surface (TRIANGLE_LIST; style 'surface' only), id 1 the grid
  lines along rows and columns (LINE_LIST; coloured like the surface in style
  'grid', dark and lifted by GRID_LIFT_M in style 'surface');
- ``ns/changed_rows``: one LINE_STRIP per row the last action changed (id =
  row index), HIGHLIGHT_LIFT_M above the surface;
- ``ns/difference``: the learned map minus the default map (id 0 surface, id 1
  grid), semi-transparent, placed beside the map (the marker pose shifts it
  along y; its points hold the difference itself);
- ``ns/axes``, ``ns/labels`` (axis titles, policy version, min/max torque) and
  ``ns/ticks`` (breakpoint values).

The array starts with a DELETEALL marker (namespace '') so that markers of an
earlier map vanish.
"""

from typing import Optional, Sequence, Tuple

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
import numpy as np
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

# Metres per km/h, per pedal unit (0..1) and per Nm: 120 km/h x 1 x 4400 Nm -> 6 x 5 x 4.4 m.
DEFAULT_SCALE = (0.05, 5.0, 0.001)
STYLES = ('surface', 'grid')
HIGHLIGHT_LIFT_M = 0.03
GRID_LIFT_M = 0.005
DIFFERENCE_GAP_M = 1.5
DIFFERENCE_ALPHA = 0.6
SURFACE_ALPHA = 0.95
TEXT_HEIGHT_M = 0.3
TICK_HEIGHT_M = 0.15
TICK_SPACING_M = 3 * TICK_HEIGHT_M
LINE_WIDTH_M = 0.01
HIGHLIGHT_WIDTH_M = 0.05
HIGHLIGHT_RGBA = (1.0, 0.85, 0.0, 1.0)
GRID_RGBA = (0.15, 0.15, 0.15, 1.0)
TEXT_RGBA = (1.0, 1.0, 1.0, 1.0)
ORIGIN_NAMES = {0: 'default', 1: 'agent', 2: 'manual'}

# Diverging colormap anchors over t in [-1, 1]: dark blue .. white .. dark red.
_ANCHOR_T = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
_ANCHOR_RGB = np.array([
    (0.02, 0.19, 0.58),
    (0.40, 0.65, 0.90),
    (0.97, 0.97, 0.97),
    (0.96, 0.55, 0.45),
    (0.70, 0.02, 0.10),
])


def diverging_rgb(values, low: float, high: float) -> np.ndarray:
    """
    Return RGB (shape values.shape + (3,)) of values on the blue-white-red colormap.

    low < 0 < high: low maps to full blue, 0 to white, high to full red; values
    beyond them are clipped.
    """
    if not low < 0.0 < high:
        raise ValueError(f'colormap limits need low < 0 < high, got {low}, {high}')
    values = np.asarray(values, dtype=np.float64)
    t = np.where(values >= 0.0, values / high, values / -low)
    t = np.clip(t, -1.0, 1.0)
    return np.stack([np.interp(t, _ANCHOR_T, _ANCHOR_RGB[:, k]) for k in range(3)], axis=-1)


def diverging_color(value: float, low: float, high: float) -> Tuple[float, float, float]:
    """Return the (r, g, b) of one value on the blue-white-red colormap (see diverging_rgb)."""
    r, g, b = diverging_rgb(value, low, high)
    return float(r), float(g), float(b)


def _limits(values: np.ndarray) -> Tuple[float, float]:
    """Return colormap limits low < 0 < high covering values (mirrored when one side is empty)."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if low == 0.0 and high == 0.0:
        return -1.0, 1.0
    if low == 0.0:
        low = -high
    if high == 0.0:
        high = -low
    return low, high


def _axis(values, what: str, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size < 2:
        raise ValueError(f'{what}: {name} needs at least 2 breakpoints, got shape {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{what}: {name} are not all finite: {array.tolist()}')
    if np.any(np.diff(array) <= 0):
        raise ValueError(f'{what}: {name} are not strictly increasing: {array.tolist()}')
    return array


def _checked(torque_map, what: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (speeds, pedals, torque) of a map as float64; ValueError says what is wrong."""
    speeds = _axis(torque_map.speed_breakpoints_kph, what, 'speed breakpoints')
    pedals = _axis(torque_map.pedal_breakpoints, what, 'pedal breakpoints')
    torque = np.asarray(torque_map.torque_nm, dtype=np.float64)
    if torque.shape != (speeds.size, pedals.size):
        raise ValueError(f'{what}: torque table has shape {torque.shape}, but the breakpoints '
                         f'give {speeds.size} speed rows x {pedals.size} pedal columns')
    bad = ~np.isfinite(torque)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f'{what}: {int(bad.sum())} non-finite torque values, the first at '
                         f'row {row} ({speeds[row]:g} km/h), column {column} '
                         f'(pedal {pedals[column]:g}): {torque[row, column]}')
    return speeds, pedals, torque


def _rgba(r: float, g: float, b: float, a: float) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


class _Builder:
    """Collects markers with a shared header; checks (ns, id) uniqueness."""

    def __init__(self, frame_id: str, stamp: Time):
        self.frame_id, self.stamp = frame_id, stamp
        self.markers = []
        self._keys = set()

    def marker(self, ns: str, marker_id: int, marker_type: int, action: int = Marker.ADD,
               rgba=(1.0, 1.0, 1.0, 1.0)) -> Marker:
        key = (ns, marker_id)
        if key in self._keys:  # a programming error, not bad input
            raise AssertionError(f'marker {key} twice')
        self._keys.add(key)
        marker = Marker(ns=ns, id=marker_id, type=marker_type, action=action,
                        color=_rgba(*rgba))
        marker.header.frame_id = self.frame_id
        marker.header.stamp = self.stamp
        marker.scale.x = marker.scale.y = marker.scale.z = 1.0
        self.markers.append(marker)
        return marker

    def text(self, ns: str, marker_id: int, text: str, position, height: float) -> Marker:
        marker = self.marker(ns, marker_id, Marker.TEXT_VIEW_FACING, rgba=TEXT_RGBA)
        marker.pose.position = Point(x=float(position[0]), y=float(position[1]),
                                     z=float(position[2]))
        marker.scale.z = float(height)
        marker.text = text
        return marker


def _points(x: np.ndarray, y: np.ndarray, z: np.ndarray):
    return [Point(x=px, y=py, z=pz) for px, py, pz in zip(x.tolist(), y.tolist(), z.tolist())]


def _colors(rgb: np.ndarray, alpha: float):
    return [ColorRGBA(r=r, g=g, b=b, a=alpha) for r, g, b in rgb.tolist()]


def _cell_vertices(rows: int, columns: int) -> Tuple[np.ndarray, np.ndarray]:
    """
    Return (row, column) indices of the TRIANGLE_LIST vertices, 6 per cell.

    Cell (i, j) (i < rows - 1, j < columns - 1), in row-major cell order, gives
    the triangles (i, j), (i + 1, j), (i + 1, j + 1) and (i, j), (i + 1, j + 1),
    (i, j + 1).
    """
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(columns - 1), indexing='ij')
    i, j = i.ravel()[:, None], j.ravel()[:, None]
    di = np.array([0, 1, 1, 0, 1, 0])
    dj = np.array([0, 0, 1, 0, 1, 1])
    return (i + di).ravel(), (j + dj).ravel()


def _grid_segments(rows: int, columns: int) -> Tuple[np.ndarray, np.ndarray]:
    """Return (row, column) indices of LINE_LIST end points: along every row, then column."""
    i, j = np.meshgrid(np.arange(rows), np.arange(columns - 1), indexing='ij')
    along_rows = (np.stack([i, i], -1).ravel(), np.stack([j, j + 1], -1).ravel())
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(columns), indexing='ij')
    along_columns = (np.stack([i, i + 1], -1).ravel(), np.stack([j, j], -1).ravel())
    return (np.concatenate([along_rows[0], along_columns[0]]),
            np.concatenate([along_rows[1], along_columns[1]]))


def _spaced(positions: np.ndarray):
    """Yield the indices of positions at least TICK_SPACING_M after the last one yielded."""
    last = None
    for index, position in enumerate(positions.tolist()):
        if last is None or position - last >= TICK_SPACING_M:
            last = position
            yield index


def _add_surface(builder: _Builder, ns: str, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 values: np.ndarray, style: str, alpha: float) -> None:
    """Add the surface (style 'surface') and the grid lines of one table."""
    rows, columns = z.shape
    low, high = _limits(values)
    rgb = diverging_rgb(values, low, high)
    if style == 'surface':
        r, c = _cell_vertices(rows, columns)
        surface = builder.marker(ns, 0, Marker.TRIANGLE_LIST, rgba=(1.0, 1.0, 1.0, alpha))
        surface.points = _points(x[r], y[c], z[r, c])
        surface.colors = _colors(rgb[r, c], alpha)
    r, c = _grid_segments(rows, columns)
    grid = builder.marker(ns, 1, Marker.LINE_LIST,
                          rgba=GRID_RGBA if style == 'surface' else (1.0, 1.0, 1.0, alpha))
    grid.scale.x = LINE_WIDTH_M if style == 'surface' else 2 * LINE_WIDTH_M
    lift = GRID_LIFT_M if style == 'surface' else 0.0
    grid.points = _points(x[r], y[c], z[r, c] + lift)
    if style != 'surface':
        grid.colors = _colors(rgb[r, c], alpha)


def torque_map_markers(torque_map, default_map=None,
                       changed_rows: Optional[Tuple[int, int]] = None,
                       frame_id: str = 'map', stamp: Optional[Time] = None,
                       ns: str = 'torque_map',
                       scale: Sequence[float] = DEFAULT_SCALE,
                       style: str = 'surface') -> MarkerArray:
    """
    Return the markers that draw a torque map in rviz.

    torque_map: a TorqueMap (speed_breakpoints_kph, pedal_breakpoints,
    torque_nm; vehicle_id, policy_version and origin when present).
    default_map: if given, also draw learned - default (same breakpoints, up to
    float32 rounding). changed_rows: (start, count) of the rows the last
    action changed, highlighted; None or count 0 (the whole map) highlights
    nothing. scale: (m per km/h, m per pedal unit, m per Nm). style: 'surface'
    (coloured triangles with dark grid lines) or 'grid' (coloured grid lines
    only). ValueError names what is wrong: non-finite or mismatched
    breakpoints or torque, a default map on other breakpoints, changed rows
    outside the map, a bad scale or style.
    """
    if style not in STYLES:
        raise ValueError(f'style must be one of {STYLES}, got {style!r}')
    sx, sy, sz = (float(v) for v in scale)
    if not all(np.isfinite(v) and v > 0 for v in (sx, sy, sz)):
        raise ValueError(f'scale must be 3 positive finite factors, got {tuple(scale)}')
    speeds, pedals, torque = _checked(torque_map, 'torque map')
    rows, columns = torque.shape
    difference = None
    if default_map is not None:
        d_speeds, d_pedals, d_torque = _checked(default_map, 'default map')
        for name, mine, theirs in (('speed', speeds, d_speeds), ('pedal', pedals, d_pedals)):
            same = mine.shape == theirs.shape and np.allclose(mine, theirs, rtol=1e-6,
                                                              atol=1e-6)
            if not same:
                raise ValueError(f'default map: {name} breakpoints {theirs.tolist()} differ '
                                 f'from those of the map, {mine.tolist()}')
        difference = torque - d_torque
    highlighted = range(0)
    if changed_rows is not None:
        start, count = (int(v) for v in changed_rows)
        if start < 0 or count < 0 or start + count > rows:
            raise ValueError(f'changed rows {start}..{start + count - 1} (start {start}, count '
                             f'{count}) lie outside the {rows} rows of the map')
        highlighted = range(start, start + count)

    builder = _Builder(frame_id, stamp if stamp is not None else Time())
    builder.marker('', 0, Marker.CUBE, action=Marker.DELETEALL)
    x, y, z = speeds * sx, pedals * sy, torque * sz
    _add_surface(builder, ns, x, y, z, torque, style, SURFACE_ALPHA)

    for row in highlighted:
        strip = builder.marker(f'{ns}/changed_rows', row, Marker.LINE_STRIP, rgba=HIGHLIGHT_RGBA)
        strip.scale.x = HIGHLIGHT_WIDTH_M
        strip.points = _points(np.full(columns, x[row]), y, z[row] + HIGHLIGHT_LIFT_M)

    z_low, z_high = min(float(z.min()), 0.0), max(float(z.max()), 0.0)
    margin = 2 * TEXT_HEIGHT_M
    axes = builder.marker(f'{ns}/axes', 0, Marker.LINE_LIST, rgba=TEXT_RGBA)
    axes.scale.x = LINE_WIDTH_M
    corner = (x[0], y[0], z_low)
    axes.points = _points(np.array([corner[0], x[-1], corner[0], corner[0], corner[0],
                                    corner[0]]),
                          np.array([corner[1], corner[1], corner[1], y[-1], corner[1],
                                    corner[1]]),
                          np.array([z_low, z_low, z_low, z_low, z_low, z_high]))

    labels = f'{ns}/labels'
    x_mid, y_mid = (x[0] + x[-1]) / 2, (y[0] + y[-1]) / 2
    builder.text(labels, 0, 'speed km/h', (x_mid, y[0] - margin, z_low), TEXT_HEIGHT_M)
    builder.text(labels, 1, 'pedal', (x[0] - margin, y_mid, z_low), TEXT_HEIGHT_M)
    builder.text(labels, 2, 'torque Nm', (x[0] - margin, y[0] - margin, (z_low + z_high) / 2),
                 TEXT_HEIGHT_M)
    origin = getattr(torque_map, 'origin', 0)
    title = (f'{getattr(torque_map, "vehicle_id", "") or "torque map"} policy '
             f'v{getattr(torque_map, "policy_version", 0)} '
             f'({ORIGIN_NAMES.get(origin, f"origin {origin}")})')
    if highlighted:
        title += f', rows {highlighted[0]}-{highlighted[-1]} changed'
    builder.text(labels, 3, title, (x_mid, y_mid, z_high + 3 * TEXT_HEIGHT_M), TEXT_HEIGHT_M)
    builder.text(labels, 4, f'torque min {torque.min():.0f} Nm, max {torque.max():.0f} Nm',
                 (x_mid, y_mid, z_high + 1.5 * TEXT_HEIGHT_M), TEXT_HEIGHT_M)

    ticks = f'{ns}/ticks'
    for row in _spaced(x):
        builder.text(ticks, row, f'{speeds[row]:g}', (x[row], y[0] - TEXT_HEIGHT_M, z_low),
                     TICK_HEIGHT_M)
    for column in _spaced(y):
        builder.text(ticks, rows + column, f'{pedals[column]:g}',
                     (x[0] - TEXT_HEIGHT_M, y[column], z_low), TICK_HEIGHT_M)

    if difference is not None:
        offset = float(y[-1] - y[0]) + DIFFERENCE_GAP_M
        first = len(builder.markers)
        _add_surface(builder, f'{ns}/difference', x, y, difference * sz, difference, style,
                     DIFFERENCE_ALPHA)
        for marker in builder.markers[first:]:
            marker.pose.position.y = offset
        builder.text(labels, 5, f'learned - default: {difference.min():+.0f} .. '
                     f'{difference.max():+.0f} Nm',
                     (x_mid, y_mid + offset, float(np.abs(difference).max() * sz) +
                      1.5 * TEXT_HEIGHT_M), TEXT_HEIGHT_M)
    return MarkerArray(markers=builder.markers)
