"""
The main job's PNG report and torque-map files; numpy, matplotlib and YAML only.

``write_report`` draws one PNG with four panels:

1. energy per km per episode (train and eval episodes as lines, episodes driven
   with the default map as markers) with the default map's baseline as a
   labelled horizontal line; the speed error RMS, where the episodes have it,
   on a second axis;
2. return per episode, with the baseline's return;
3. critic and actor loss over the training updates;
4. the default and the learned torque maps as heat maps with one shared colour
   scale (Nm), and the difference learned - default (Nm, diverging scale).

``render_map_png`` draws one map (or its difference to another) as PNG bytes;
the TensorBoard log uses it. ``write_map_yaml`` writes a map as
``TorqueMap.to_dict()`` YAML (the format ``vehicle.parameters.load_torque_map``
and ``vehicle.default_map`` use).

Nothing here imports TensorFlow or pyplot: figures are ``matplotlib.figure.
Figure`` objects rendered by the Agg backend (no display, no global state), so
the module works in any process, headless or not, and from any thread.
"""

import io
import math
import os
import pathlib
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from tspace_ros.torque_map.map import TorqueMap
import yaml

EPISODE_KINDS = ('train', 'eval', 'baseline')
MAP_COLORMAP = 'viridis'
DIFFERENCE_COLORMAP = 'RdBu_r'
_KIND_STYLE = {'train': {'color': 'tab:blue', 'marker': '.', 'linestyle': '-'},
               'eval': {'color': 'tab:green', 'marker': 'o', 'linestyle': '-'},
               'baseline': {'color': 'tab:gray', 'marker': 'x', 'linestyle': 'none'}}

PathLike = Union[str, os.PathLike]


def _finite(value, what: str) -> float:
    """Return value as a finite float, else raise ValueError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{what} must be a number, got {value!r}') from None
    if not math.isfinite(number):
        raise ValueError(f'{what} must be finite, got {number}')
    return number


def _check_episodes(episodes: Sequence[Mapping]) -> List[Dict]:
    """Return the episodes with checked values; ValueError for empty or wrong input."""
    if not episodes:
        raise ValueError('episodes is empty: nothing to report')
    checked = []
    for position, episode in enumerate(episodes):
        where = f'episodes[{position}]'
        if not isinstance(episode, Mapping):
            raise ValueError(f'{where} must be a dict, got {type(episode).__name__}')
        missing = {'index', 'energy_per_km_wh', 'total_reward'} - set(episode)
        if missing:
            raise ValueError(f'{where} lacks {sorted(missing)}')
        kind = episode.get('kind', 'train')
        if kind not in EPISODE_KINDS:
            raise ValueError(f'{where}: kind must be one of {EPISODE_KINDS}, got {kind!r}')
        row = {'index': _finite(episode['index'], f'{where}.index'),
               'energy_per_km_wh': _finite(episode['energy_per_km_wh'],
                                           f'{where}.energy_per_km_wh'),
               'total_reward': _finite(episode['total_reward'], f'{where}.total_reward'),
               'kind': kind, 'speed_error_rms_kph': None}
        if episode.get('speed_error_rms_kph') is not None:
            row['speed_error_rms_kph'] = _finite(episode['speed_error_rms_kph'],
                                                 f'{where}.speed_error_rms_kph')
        checked.append(row)
    return checked


def _check_losses(losses: Sequence[Mapping]) -> List[Dict]:
    """
    Return the loss points (update, critic_loss, actor_loss); ValueError if malformed.

    Points whose losses are None or not finite (a diverged run; the trainer
    stores them as None) are left out of the plot.
    """
    checked = []
    for position, point in enumerate(losses or ()):
        where = f'losses[{position}]'
        if not isinstance(point, Mapping):
            raise ValueError(f'{where} must be a dict, got {type(point).__name__}')
        missing = {'update', 'critic_loss', 'actor_loss'} - set(point)
        if missing:
            raise ValueError(f'{where} lacks {sorted(missing)}')
        if any(point[key] is None or isinstance(point[key], (int, float, np.number))
               and not math.isfinite(point[key]) for key in ('critic_loss', 'actor_loss')):
            continue
        checked.append({key: _finite(point[key], f'{where}.{key}')
                        for key in ('update', 'critic_loss', 'actor_loss')})
    return checked


def _baseline_values(baseline: Optional[Mapping], episodes: List[Dict]) -> Dict[str, float]:
    """
    Return the baseline's energy per km and return (keys as in the episode dicts).

    An explicit ``baseline`` dict wins; otherwise the mean of the episodes of
    kind 'baseline' (if any). Missing figures are left out.
    """
    if baseline is not None:
        if not isinstance(baseline, Mapping):
            raise ValueError(f'baseline must be a dict or None, got {type(baseline).__name__}')
        return {key: _finite(baseline[key], f'baseline.{key}')
                for key in ('energy_per_km_wh', 'total_reward') if key in baseline}
    rows = [e for e in episodes if e['kind'] == 'baseline']
    if not rows:
        return {}
    return {key: float(np.mean([e[key] for e in rows]))
            for key in ('energy_per_km_wh', 'total_reward')}


def check_same_grid(default_map: TorqueMap, learned_map: TorqueMap) -> None:
    """Raise ValueError unless both maps are TorqueMaps with the same shape and breakpoints."""
    for name, value in (('default_map', default_map), ('learned_map', learned_map)):
        if not isinstance(value, TorqueMap):
            raise ValueError(f'{name} must be a TorqueMap, got {type(value).__name__}')
    if default_map.shape != learned_map.shape:
        raise ValueError(f'the maps differ in shape: default {default_map.shape}, learned '
                         f'{learned_map.shape}')
    if not default_map.same_breakpoints(learned_map):
        raise ValueError('the maps have the same shape but different breakpoints')


def map_difference(default_map: TorqueMap, learned_map: TorqueMap) -> np.ndarray:
    """Return learned - default torque (Nm, rows x columns); ValueError if the grids differ."""
    check_same_grid(default_map, learned_map)
    return learned_map.torque_nm - default_map.torque_nm


# -- drawing ---------------------------------------------------------------------------


def _label_grid(ax, torque_map: TorqueMap) -> None:
    """Label a heat map's axes with the map's breakpoints (pedal columns, speed rows)."""
    pedals, speeds = torque_map.pedal_breakpoints, torque_map.speed_breakpoints_kph
    columns = range(0, len(pedals), max(1, len(pedals) // 8))
    ax.set_xticks(list(columns))
    ax.set_xticklabels([f'{pedals[j]:g}' for j in columns], fontsize=7)
    ax.set_yticks(range(len(speeds)))
    ax.set_yticklabels([f'{s:g}' for s in speeds], fontsize=7)
    ax.set_xlabel('pedal (fraction)')
    ax.set_ylabel('speed (km/h)')


def draw_map(figure: Figure, ax, values: np.ndarray, torque_map: TorqueMap, title: str,
             vmin: float, vmax: float, cmap: str, colorbar_label: str = 'Nm') -> None:
    """Draw a rows x columns table on a map's grid as a heat map with a colour bar."""
    image = ax.imshow(np.asarray(values, np.float64), origin='lower', aspect='auto',
                      cmap=cmap, vmin=vmin, vmax=vmax, interpolation='nearest')
    _label_grid(ax, torque_map)
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, label=colorbar_label)


def _difference_limit(difference: np.ndarray) -> float:
    """Return a symmetric colour limit for a difference table (1 Nm when all zero)."""
    limit = float(np.max(np.abs(difference))) if difference.size else 0.0
    return limit if limit > 0 else 1.0


def _png_bytes(figure: Figure, dpi: int) -> bytes:
    """Render a figure with Agg and return the PNG bytes."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=dpi)
    return buffer.getvalue()


def render_map_png(torque_map: TorqueMap, title: str = '',
                   difference_to: Optional[TorqueMap] = None, dpi: int = 80) -> bytes:
    """
    Return PNG bytes of one torque map drawn as a heat map (speed rows x pedal columns).

    With ``difference_to`` the heat map shows ``torque_map - difference_to``
    (Nm, diverging colours centred on 0) instead; ValueError if the grids differ.
    """
    figure = Figure(figsize=(6.0, 4.0), layout='constrained')
    ax = figure.add_subplot()
    if difference_to is None:
        values = torque_map.torque_nm
        draw_map(figure, ax, values, torque_map, title or 'torque map', float(values.min()),
                 float(values.max()), MAP_COLORMAP)
    else:
        values = map_difference(difference_to, torque_map)
        limit = _difference_limit(values)
        draw_map(figure, ax, values, torque_map, title or 'torque map - default', -limit,
                 limit, DIFFERENCE_COLORMAP, 'difference (Nm)')
    return _png_bytes(figure, dpi)


def _plot_per_episode(ax, episodes: List[Dict], key: str, baseline: Optional[float],
                      label: str, unit: str) -> None:
    """Plot one figure per episode by kind, and the baseline as a labelled line."""
    for kind in EPISODE_KINDS:
        rows = [e for e in episodes if e['kind'] == kind]
        if rows:
            ax.plot([e['index'] for e in rows], [e[key] for e in rows], label=kind,
                    markersize=4, **_KIND_STYLE[kind])
    if baseline is not None:
        ax.axhline(baseline, color='tab:red', linestyle='--',
                   label=f'default map: {baseline:.4g} {unit}'.rstrip())
    ax.set_xlabel('episode')
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)


def _draw_losses(ax, losses: List[Dict]) -> None:
    """Plot the critic loss (log scale when positive) and the actor loss on a twin axis."""
    ax.set_title('training losses', fontsize=10)
    ax.set_xlabel('update')
    if not losses:
        ax.text(0.5, 0.5, 'no training updates', ha='center', va='center',
                transform=ax.transAxes)
        return
    updates = [p['update'] for p in losses]
    critic = [p['critic_loss'] for p in losses]
    ax.plot(updates, critic, color='tab:purple', label='critic loss')
    if min(critic) > 0:
        ax.set_yscale('log')
    ax.set_ylabel('critic loss', color='tab:purple')
    ax.grid(True, alpha=0.3)
    twin = ax.twinx()
    twin.plot(updates, [p['actor_loss'] for p in losses], color='tab:orange',
              label='actor loss (-Q)')
    twin.set_ylabel('actor loss (-Q)', color='tab:orange')
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc='upper right')


def write_report(path: PathLike, episodes: List[dict], baseline: Optional[dict],
                 losses: List[dict], default_map: TorqueMap, learned_map: TorqueMap,
                 title: str = 'tspace_ros training report', dpi: int = 100,
                 oracle_wh_per_km: Optional[float] = None) -> pathlib.Path:
    """
    Write the training report PNG to ``path`` (atomically); return its path.

    ``episodes``: dicts with ``index``, ``energy_per_km_wh``, ``total_reward``,
    optional ``speed_error_rms_kph`` and ``kind`` ('train', 'eval' or
    'baseline'; default 'train'). ``baseline``: the default map's figures
    (``energy_per_km_wh``, ``total_reward``), or None to use the mean of the
    'baseline' episodes (no line if there are none). ``losses``: dicts with
    ``update``, ``critic_loss`` and ``actor_loss`` (may be empty: no training;
    points with None or non-finite losses are skipped). ``oracle_wh_per_km``:
    the best fixed map's energy per km on the same lap (the oracle), drawn as a
    line on the energy plot (None: no line).
    ValueError for no episodes, missing or non-finite figures, or maps of
    different grids.
    """
    rows = _check_episodes(episodes)
    points = _check_losses(losses)
    check_same_grid(default_map, learned_map)
    reference = _baseline_values(baseline, rows)

    figure = Figure(figsize=(18.0, 10.0), layout='constrained')
    figure.suptitle(title)
    grid = figure.add_gridspec(2, 3)

    energy_ax = figure.add_subplot(grid[0, 0])
    _plot_per_episode(energy_ax, rows, 'energy_per_km_wh', reference.get('energy_per_km_wh'),
                      'energy per km (Wh/km)', 'Wh/km')
    energy_ax.set_title('energy per km', fontsize=10)
    if oracle_wh_per_km is not None:
        if not math.isfinite(oracle_wh_per_km):
            raise ValueError(f'oracle_wh_per_km must be finite, got {oracle_wh_per_km!r}')
        energy_ax.axhline(oracle_wh_per_km, color='tab:green', linestyle='-.', linewidth=1,
                          label='oracle: best fixed map in the gate')
    handles = energy_ax.get_lines()
    speed_rows = [e for e in rows if e['speed_error_rms_kph'] is not None]
    if speed_rows:
        twin = energy_ax.twinx()
        twin.plot([e['index'] for e in speed_rows],
                  [e['speed_error_rms_kph'] for e in speed_rows], color='tab:olive',
                  linestyle=':', marker='.', markersize=3, label='speed error RMS (km/h)')
        twin.set_ylabel('speed error RMS (km/h)', color='tab:olive')
        handles = handles + twin.get_lines()
    energy_ax.legend(handles, [h.get_label() for h in handles], fontsize=8)

    return_ax = figure.add_subplot(grid[0, 1])
    _plot_per_episode(return_ax, rows, 'total_reward', reference.get('total_reward'),
                      'return', '')
    return_ax.set_title('return per episode', fontsize=10)
    return_ax.legend(fontsize=8)

    _draw_losses(figure.add_subplot(grid[0, 2]), points)

    low = float(min(default_map.torque_nm.min(), learned_map.torque_nm.min()))
    high = float(max(default_map.torque_nm.max(), learned_map.torque_nm.max()))
    if high <= low:
        low, high = low - 1.0, high + 1.0
    draw_map(figure, figure.add_subplot(grid[1, 0]), default_map.torque_nm, default_map,
             'default map (Nm)', low, high, MAP_COLORMAP)
    draw_map(figure, figure.add_subplot(grid[1, 1]), learned_map.torque_nm, learned_map,
             f'learned map (Nm, policy {learned_map.policy_version})', low, high,
             MAP_COLORMAP)
    difference = map_difference(default_map, learned_map)
    limit = _difference_limit(difference)
    draw_map(figure, figure.add_subplot(grid[1, 2]), difference, default_map,
             'learned - default (Nm)', -limit, limit, DIFFERENCE_COLORMAP, 'difference (Nm)')

    return _write_atomically(path, _png_bytes(figure, dpi))


def write_map_yaml(path: PathLike, torque_map: TorqueMap, header: str = '') -> pathlib.Path:
    """
    Write a torque map as ``TorqueMap.to_dict()`` YAML (atomically); return the path.

    The file loads back with ``tspace_ros.vehicle.parameters.load_torque_map``
    (the format and layout of ``vehicle.default_map``). ``header`` lines are
    written as ``#`` comments first.
    """
    if not isinstance(torque_map, TorqueMap):
        raise ValueError(f'torque_map must be a TorqueMap, got {type(torque_map).__name__}')
    comments = ''.join(f'# {line}'.rstrip() + '\n' for line in header.splitlines())
    text = comments + yaml.safe_dump(torque_map.to_dict(), default_flow_style=None,
                                     sort_keys=False, width=200)
    return _write_atomically(path, text.encode('utf-8'))


def _write_atomically(path: PathLike, data: bytes) -> pathlib.Path:
    """Write data to a temporary sibling of path, then rename it over path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
