"""benchmarks/suite.py end to end, cifar_jax (XLA's, oneDNN's and tuned convolutions) only, on
the tiny config and synthetic data."""

import json
import math
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))

import json_out  # pylint: disable=g-import-not-at-top
import suite  # pylint: disable=g-import-not-at-top

from cifar_jax.models import conv_tuning  # pylint: disable=g-import-not-at-top


def positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def run_quick_suite(frameworks: str, data_dir: str, out: pathlib.Path) -> dict:
  suite.main(['--quick', f'--frameworks={frameworks}', '--configs=tests/tiny_config.py',
              f'--data_dir={data_dir}', f'--out={out}', '--matmul_size=256'])
  return json.loads(out.read_text())


def assert_measured(row: dict, framework: str) -> None:
  """A cifar_jax child's row: the train step and a quick (subset) epoch, all measured."""
  assert row['status'] == 'ok', row.get('error')
  assert (row['framework'], row['config']) == (framework, 'tests/tiny_config.py')
  assert row['conv_backend'] == suite.CONV_BACKENDS[framework]
  assert row['train_step']['batch_size'] == 32
  assert positive(row['train_step']['images_per_second'])
  assert row['train_step']['best_images_per_second'] >= row['train_step']['images_per_second']
  assert positive(row['train_step']['compile_seconds'])
  assert positive(row['peak_rss_mib'])
  epoch = row['epoch']
  # --quick: a subset epoch of 2 steps, extrapolated to the full one (300 - 60 images / 32).
  assert epoch['mode'] == 'subset' and epoch['extrapolated']
  assert epoch['measured'] == {'steps': 2, 'train_images': 64, 'validation_images': 60}
  assert epoch['full'] == {'steps': 8, 'train_images': 240, 'validation_images': 60}
  assert positive(epoch['full_epoch_seconds'])
  assert epoch['full_epoch_seconds'] >= epoch['median_epoch_seconds']


def test_quick_suite_writes_the_expected_json(synthetic_dir, tmp_path, monkeypatch):
  monkeypatch.setenv(conv_tuning.CACHE_ENV_VAR, str(tmp_path / 'choices.json'))
  results = run_quick_suite('cifar_jax,cifar_jax_onednn,cifar_jax_tuned', synthetic_dir,
                            tmp_path / 'suite.json')

  assert results['schema'] == suite.SCHEMA
  assert len(results['machine']['load_average_start']) == 3
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=suite.REPO, capture_output=True,
                        text=True, check=True).stdout.strip()
  assert results['machine']['commit'] == head  # Which code the numbers measured.
  assert isinstance(results['machine']['dirty'], bool)
  assert positive(results['matmul_peak']['peak_flops_per_second'])
  xla, onednn, tuned = results['results']
  assert_measured(xla, 'cifar_jax')
  assert_measured(onednn, 'cifar_jax_onednn')
  assert_measured(tuned, 'cifar_jax_tuned')
  # tiny_config's one convolution: a kernel chosen for each of its three parts (per batch shape
  # the child traced: train step, epoch, evaluation).
  assert {key.split(':')[0] for key in tuned['conv_choices']
          if key.startswith(('forward', 'input', 'weight'))} == {
              'forward', 'input gradient', 'weight gradient'}
  # The cifar_jax children run glibc's malloc as launch.py gives it them (--huge_pages default).
  tunables = json_out.glibc_tunables_with_huge_pages(os.environ)
  assert xla['glibc_tunables'] == (tunables or os.environ.get('GLIBC_TUNABLES', ''))
  assert positive(xla['flops_per_image'])
  assert 'onednn_version' not in xla
  assert onednn['onednn_version']  # oneDNN's version and commit.
  (summary,) = results['summary']
  for framework in ('cifar_jax', 'cifar_jax_onednn', 'cifar_jax_tuned'):
    ours = summary['frameworks'][framework]
    assert positive(ours['achieved_flops_per_second'])
    assert 0 < ours['fraction_of_peak'] < 10  # Roughly a fraction (tiny matmuls make a low peak).
  # No Keras ran: oneDNN's only ratio is over XLA's convolutions.
  assert summary['speedup'] == {}
  (ratios,) = summary['onednn_speedup'].values()
  assert summary['onednn_speedup'].keys() == {'cifar_jax'}
  assert positive(ratios['train_step']) and positive(ratios['epoch'])
  assert summary['tuned_speedup'].keys() == {'cifar_jax', 'cifar_jax_onednn'}


def test_onednn_that_cannot_load_is_a_skip_not_an_error(synthetic_dir, tmp_path, monkeypatch,
                                                        capsys):
  # A oneDNN prefix without oneDNN: onednn_conv.load() raises Unavailable in the child.
  monkeypatch.setenv('CIFAR_JAX_ONEDNN_ROOT', str(tmp_path))
  results = run_quick_suite('cifar_jax_onednn', synthetic_dir, tmp_path / 'suite.json')

  (row,) = results['results']
  assert row['status'] == 'skipped'
  assert 'oneDNN' in row['reason'] and 'requirements-onednn.txt' in row['reason']
  (summary,) = results['summary']
  assert summary['frameworks']['cifar_jax_onednn'] == {'status': 'skipped',
                                                       'reason': row['reason']}
  assert summary['onednn_speedup'] == {}
  table = capsys.readouterr().out
  assert f'cifar_jax_onednn skipped: {row["reason"]}' in ' '.join(table.split())


def fake_row(framework: str, images_per_second: float, epoch_seconds: float) -> dict:
  """A finished child's row, only the fields the summary reads."""
  return {'framework': framework, 'config': 'configs/exp0.py', 'status': 'ok',
          'train_step': {'images_per_second': images_per_second,
                         'best_images_per_second': images_per_second, 'compile_seconds': 1.0},
          'epoch': {'full_epoch_seconds': epoch_seconds, 'mode': 'full'}, 'peak_rss_mib': 100.0}


def test_summary_ratios_of_both_cifar_jax_backends():
  rows = [fake_row('cifar_jax', 300.0, 20.0), fake_row('cifar_jax_onednn', 600.0, 12.0),
          fake_row('cifar_jax_tuned', 900.0, 10.0), fake_row('keras_jax', 200.0, 30.0),
          fake_row('keras_tf', 1200.0, 6.0)]
  (entry,) = suite.summarize(rows, peak=None)

  # Throughput over the other's: step images/s, and epoch seconds the other way round.
  assert entry['speedup'] == {'keras_jax': {'train_step': 1.5, 'epoch': 1.5},
                              'keras_tf': {'train_step': 0.25, 'epoch': 0.3}}
  assert entry['onednn_speedup'] == {'cifar_jax': {'train_step': 2.0, 'epoch': 20.0 / 12.0},
                                     'keras_jax': {'train_step': 3.0, 'epoch': 2.5},
                                     'keras_tf': {'train_step': 0.5, 'epoch': 0.5}}
  assert entry['tuned_speedup']['cifar_jax_onednn'] == {'train_step': 1.5, 'epoch': 1.2}
  table = suite.format_table([entry], loaded=False)
  (cifar_jax_line,) = [line for line in table.splitlines() if line.split()[1:2] == ['cifar_jax']]
  # oneDNN over XLA, then tuned over XLA, step and epoch.
  assert cifar_jax_line.split()[-4:] == ['2.00', '1.67', '3.00', '2.00']


def test_subset_epoch_extrapolates_training_and_validation_apart():
  measured = suite.EpochShape(steps=2, train_images=1024, validation_images=1000)
  full = suite.EpochShape(steps=78, train_images=39936, validation_images=10000)
  assert suite.extrapolate(4.0, 1.0, measured, full) == 4.0 * 39 + 1.0 * 10
