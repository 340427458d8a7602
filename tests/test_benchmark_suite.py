"""benchmarks/suite.py end to end, cifar_jax only, on the tiny config and synthetic data."""

import json
import math
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))

import suite  # pylint: disable=g-import-not-at-top


def positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_suite_writes_the_expected_json(synthetic_dir, tmp_path):
  out = tmp_path / 'suite.json'
  suite.main(['--quick', '--frameworks=cifar_jax', '--configs=tests/tiny_config.py',
              f'--data_dir={synthetic_dir}', f'--out={out}', '--matmul_size=256'])
  results = json.loads(out.read_text())

  assert results['schema'] == suite.SCHEMA
  assert len(results['machine']['load_average_start']) == 3
  assert positive(results['matmul_peak']['peak_flops_per_second'])
  (row,) = results['results']
  assert row['status'] == 'ok', row.get('error')
  assert (row['framework'], row['config']) == ('cifar_jax', 'tests/tiny_config.py')
  assert row['train_step']['batch_size'] == 32
  assert positive(row['train_step']['images_per_second'])
  assert row['train_step']['best_images_per_second'] >= row['train_step']['images_per_second']
  assert positive(row['train_step']['compile_seconds'])
  assert positive(row['flops_per_image'])
  assert positive(row['peak_rss_mib'])
  epoch = row['epoch']
  # --quick: a subset epoch of 2 steps, extrapolated to the full one (300 - 60 images / 32).
  assert epoch['mode'] == 'subset' and epoch['extrapolated']
  assert epoch['measured'] == {'steps': 2, 'train_images': 64, 'validation_images': 60}
  assert epoch['full'] == {'steps': 8, 'train_images': 240, 'validation_images': 60}
  assert positive(epoch['full_epoch_seconds'])
  assert epoch['full_epoch_seconds'] >= epoch['median_epoch_seconds']
  (summary,) = results['summary']
  ours = summary['frameworks']['cifar_jax']
  assert positive(ours['achieved_flops_per_second'])
  assert 0 < ours['fraction_of_peak'] < 10  # Roughly a fraction (tiny matmuls make a low peak).


def test_subset_epoch_extrapolates_training_and_validation_apart():
  measured = suite.EpochShape(steps=2, train_images=1024, validation_images=1000)
  full = suite.EpochShape(steps=78, train_images=39936, validation_images=10000)
  assert suite.extrapolate(4.0, 1.0, measured, full) == 4.0 * 39 + 1.0 * 10
