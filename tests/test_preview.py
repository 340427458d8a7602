"""The augmentation preview: `python -m cifar_jax.data.preview` and what it draws."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cifar_jax.data import pipeline
from cifar_jax.data import preview
from configs import exp7
from tests.conftest import REPO


def test_round_robin_by_class_takes_one_of_each_class_first():
  labels = np.array([3, 3, 1, 3, 0, 1, 0, 2])
  np.testing.assert_array_equal(preview.round_robin_by_class(labels, 6), [4, 2, 7, 0, 6, 5])
  assert len(preview.round_robin_by_class(labels, 100)) == len(labels)


def small_exp7(data_dir):
  config = exp7.get_config()
  config.data.dir = data_dir
  config.data.num_validation = 0  # The synthetic set has 300 training images.
  return config


def cell(grid: np.ndarray, layout: preview.GridLayout, row: int, column: int) -> np.ndarray:
  """The image drawn at (row, column) of a preview grid."""
  left, top = layout.cell(row, column)
  return grid[top:top + layout.cell_size[0], left:left + layout.cell_size[1]]


def test_preview_draws_originals_then_augmented_versions(synthetic_dir, tmp_path):
  config = small_exp7(synthetic_dir)
  out = tmp_path / 'aug.png'
  returned = preview.write_preview(config, str(out), num=3, views=4, seed=1)
  grid = np.asarray(Image.open(out).convert('RGB'))
  np.testing.assert_array_equal(grid, np.asarray(returned))
  header = [f'{config.name}: training-time augmentation (seed 1)']
  header += preview.describe_augment(config.augment)
  assert header[1].startswith('ImageDataGenerator: rotation_range=40.0')
  layout = preview.grid_layout(header, 5, 3, (32, 32), preview.load_font())
  assert grid.shape == (layout.size[1], layout.size[0], 3)
  assert layout.size[0] == preview.LABEL_WIDTH + 5 * (128 + preview.GAP) + preview.GAP
  splits = pipeline.make_splits(config.data)
  chosen = preview.round_robin_by_class(splits.train.labels, 3)
  for row, index in enumerate(chosen):
    original = splits.train.images[index].repeat(preview.SCALE, 0).repeat(preview.SCALE, 1)
    np.testing.assert_array_equal(cell(grid, layout, row, 0), original)
    for column in range(1, 5):  # rotation_range=40 and shifts: never the original.
      augmented = cell(grid, layout, row, column).astype(int)
      assert np.abs(augmented - original).mean() > 2
  # Fixed seeds: the same grid again.
  again = preview.write_preview(config, str(tmp_path / 'again.png'), num=3, views=4, seed=1)
  np.testing.assert_array_equal(np.asarray(again), grid)


def test_preview_shows_the_layers_stage_and_refuses_bad_configs(synthetic_dir, tmp_path):
  config = small_exp7(synthetic_dir)
  config.augment.layers = (dict(type='cutout', size=8, fill_value=0.5),)
  lines = preview.describe_augment(config.augment)
  assert lines[-1] == "layer cutout(size=8, fill_value=0.5)"
  views = preview.augmented_views(
      pipeline.make_input_pipeline(config, np.zeros((1, 32, 32, 3), np.uint8)),
      np.full((2, 32, 32, 3), 200, np.uint8), views=2, seed=0)
  # Cutout fills 0.5 in the normalised (x / 255) space: 128 on the screen.
  assert views.shape == (3, 2, 32, 32, 3) and (views[1:] == 128).all(-1).sum() >= 2 * 16
  config.augment.layers = (dict(type='cutout', size=0),)
  with pytest.raises(ValueError, match=r'augment\.layers\[0\]\.size'):
    preview.write_preview(config, str(tmp_path / 'x.png'))


def test_preview_command_line(synthetic_dir, tmp_path):
  out = tmp_path / 'cli.png'
  result = subprocess.run(
      [sys.executable, '-m', 'cifar_jax.data.preview', '--config=configs/exp7.py', f'--out={out}',
       f'--config.data.dir={synthetic_dir}', '--config.data.num_validation=0', '--num=2',
       '--views=3', '--config.augment.width_shift_range=4'],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert Image.open(out).size[0] == preview.LABEL_WIDTH + 4 * (128 + preview.GAP) + preview.GAP
  assert 'wrote' in result.stdout
