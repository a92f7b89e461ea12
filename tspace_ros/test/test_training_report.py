"""The training report PNG and the torque-map YAML writer (no TensorFlow)."""

import os
import pathlib
import subprocess
import sys

from matplotlib import image as mpimg
import numpy as np
import pytest

from tspace_ros.torque_map.map import TorqueMap
from tspace_ros.training.report import (map_difference, render_map_png, write_map_yaml,
                                        write_report)
from tspace_ros.vehicle import load_vehicle_parameters
from tspace_ros.vehicle.parameters import load_torque_map

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
DEFAULT = load_vehicle_parameters().load_default_map()


def learned_map(shift=-40.0):
    """Return the default map with more regeneration at low pedal (a plausible learned map)."""
    torque = DEFAULT.torque_nm.copy()
    torque[:, :4] += shift
    return DEFAULT.with_torque(torque, policy_version=120)


def episodes(count=12):
    """Return train and eval episodes plus two baseline episodes."""
    rows = [{'index': i, 'energy_per_km_wh': 310.0 - 2.0 * i, 'total_reward': -60.0 + i,
             'speed_error_rms_kph': 1.0 + 0.05 * i, 'kind': 'train'} for i in range(count)]
    rows += [{'index': i, 'energy_per_km_wh': 300.0 - i, 'total_reward': -55.0 + i,
              'kind': 'eval'} for i in range(0, count, 4)]
    rows += [{'index': 0, 'energy_per_km_wh': 312.0, 'total_reward': -62.0, 'kind': 'baseline'},
             {'index': 1, 'energy_per_km_wh': 314.0, 'total_reward': -63.0, 'kind': 'baseline'}]
    return rows


LOSSES = [{'update': 6 * i, 'critic_loss': 2.0 / (1 + i), 'actor_loss': -0.5 * i}
          for i in range(1, 30)]


def test_report_is_a_png_of_plausible_size(tmp_path):
    """write_report writes one PNG (atomically, to the returned path) with the panels."""
    path = write_report(tmp_path / 'out' / 'report.png', episodes(),
                        {'energy_per_km_wh': 313.0, 'total_reward': -62.5}, LOSSES, DEFAULT,
                        learned_map(), 'sim_van, DDPG')
    assert path == tmp_path / 'out' / 'report.png'
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ['report.png']   # no temporary left
    pixels = mpimg.imread(path)
    height, width, channels = pixels.shape
    assert 600 <= height <= 4000 and 1000 <= width <= 6000 and channels in (3, 4)
    assert pixels[..., :3].std() > 0.05        # not a blank canvas


def test_report_shows_the_maps(tmp_path):
    """A different learned map gives a different picture; baseline and losses are optional."""
    diverged = [{'update': 1, 'critic_loss': None, 'actor_loss': float('nan')}]
    first = mpimg.imread(write_report(tmp_path / 'a.png', episodes(), None, diverged, DEFAULT,
                                      learned_map(-40.0), 'a'))
    second = mpimg.imread(write_report(tmp_path / 'b.png', episodes(), None, [], DEFAULT,
                                       learned_map(-400.0), 'a'))
    assert first.shape == second.shape and not np.array_equal(first, second)
    np.testing.assert_allclose(map_difference(DEFAULT, learned_map(-40.0))[:, :4], -40.0)
    np.testing.assert_array_equal(map_difference(DEFAULT, learned_map(-40.0))[:, 4:], 0.0)


def test_mismatched_maps_and_bad_input_are_refused(tmp_path):
    """Maps of other shapes or breakpoints, no episodes or bad figures: ValueError."""
    smaller = TorqueMap(DEFAULT.speed_breakpoints_kph[:-1], DEFAULT.pedal_breakpoints,
                        DEFAULT.torque_nm[:-1])
    moved = TorqueMap(DEFAULT.speed_breakpoints_kph + 1.0, DEFAULT.pedal_breakpoints,
                      DEFAULT.torque_nm)
    target = tmp_path / 'report.png'
    with pytest.raises(ValueError, match='shape'):
        write_report(target, episodes(), None, LOSSES, DEFAULT, smaller, 'x')
    with pytest.raises(ValueError, match='breakpoints'):
        write_report(target, episodes(), None, LOSSES, DEFAULT, moved, 'x')
    with pytest.raises(ValueError, match='empty'):
        write_report(target, [], None, LOSSES, DEFAULT, learned_map(), 'x')
    with pytest.raises(ValueError, match='kind'):
        write_report(target, [{'index': 0, 'energy_per_km_wh': 1.0, 'total_reward': 0.0,
                               'kind': 'test'}], None, LOSSES, DEFAULT, learned_map(), 'x')
    with pytest.raises(ValueError, match='energy_per_km_wh'):
        write_report(target, [{'index': 0, 'energy_per_km_wh': float('nan'),
                               'total_reward': 0.0}], None, LOSSES, DEFAULT, learned_map(), 'x')
    with pytest.raises(ValueError, match='actor_loss'):
        write_report(target, episodes(), None, [{'update': 1, 'critic_loss': 1.0}], DEFAULT,
                     learned_map(), 'x')
    assert not target.exists()


def test_single_map_images_and_yaml_round_trip(tmp_path):
    """render_map_png gives PNG bytes; write_map_yaml loads back with load_torque_map."""
    png = render_map_png(learned_map(), 'learned')
    assert png[:8] == PNG_MAGIC
    assert render_map_png(learned_map(), difference_to=DEFAULT) != png
    with pytest.raises(ValueError, match='shape'):
        render_map_png(TorqueMap([0.0, 1.0], [0.0, 1.0], [[0.0, 1.0], [2.0, 3.0]]),
                       difference_to=DEFAULT)
    path = write_map_yaml(tmp_path / 'maps' / 'learned.yaml', learned_map(),
                          header='learned by DDPG\npolicy 120')
    assert path.read_text().startswith('# learned by DDPG\n# policy 120\n')
    loaded = load_torque_map(path)
    assert loaded.same_breakpoints(DEFAULT) and loaded.policy_version == 120
    np.testing.assert_array_equal(loaded.torque_nm, learned_map().torque_nm)


def test_report_module_does_not_import_tensorflow():
    """Importing the package and the report module loads neither TensorFlow nor Keras."""
    code = ('import sys; import tspace_ros.training; import tspace_ros.training.report; '
            'from tspace_ros.training import write_report; '
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            'assert not bad, bad')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PACKAGE_ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    result = subprocess.run([sys.executable, '-c', code], cwd=PACKAGE_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
