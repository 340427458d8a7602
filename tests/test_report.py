"""Reports from a tiny finished run: every file, images that decode at their size, the tables."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cifar_jax.report import __main__ as cli
from cifar_jax.report import confusion
from cifar_jax.report import curves
from cifar_jax.report import figures
from cifar_jax.report import results
from cifar_jax.report import samples
from cifar_jax.report import write_run_report
from cifar_jax.report.run_files import RunFilesError, load_run
from cifar_jax.train import train_and_evaluate
from tests import synthetic_cifar
from tests.conftest import tiny_config

RUN_REPORT_FILES = {'curves.png', 'confusion.png', 'per_class.md', 'per_class.csv',
                    'samples.png', 'index.html'}
NUM_SAMPLES = 16  # A smaller grid than the default keeps the tests quick.


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, synthetic_dir):
  workdir = tmp_path_factory.mktemp('report') / 'tiny'
  train_and_evaluate(tiny_config(synthetic_dir), str(workdir))
  return workdir


def copy_run(source, destination, config=None, results_json=None):
  """A copy of a finished run with some config.json / results.json fields replaced."""
  shutil.copytree(source, destination, ignore=shutil.ignore_patterns('checkpoints',
                                                                     'tensorboard'))
  for filename, changes in (('config.json', config), ('results.json', results_json)):
    path = destination / filename
    data = json.loads(path.read_text())
    for dotted_key, value in (changes or {}).items():
      *parents, key = dotted_key.split('.')
      node = data
      for parent in parents:
        node = node[parent]
      node[key] = value
    path.write_text(json.dumps(data))
  return destination


def png_size(path):
  with Image.open(path) as image:
    image.load()  # Decodes the whole file, not just the header.
    return image.size


def test_run_report_writes_every_file_with_images_of_the_expected_size(finished_run, tmp_path):
  written = write_run_report(load_run(str(finished_run)), str(tmp_path), num_samples=NUM_SAMPLES)

  assert written.notes == []
  assert {p.name for p in tmp_path.iterdir()} == RUN_REPORT_FILES
  assert png_size(tmp_path / 'curves.png') == figures.pixel_size(*curves.RUN_SIZE)
  assert png_size(tmp_path / 'confusion.png') == figures.pixel_size(*confusion.SIZE)
  assert png_size(tmp_path / 'samples.png') == figures.pixel_size(
      *samples.figure_size(NUM_SAMPLES))
  per_class = (tmp_path / 'per_class.csv').read_text().splitlines()
  assert per_class[0].startswith('class,test images,correct,')
  assert [row.split(',')[0] for row in per_class[1:]] == list(synthetic_cifar.CLASS_NAMES) + [
      'all (test accuracy)', 'macro average']
  assert (tmp_path / 'index.html').read_text().count('data:image/png;base64,') == 3


def test_sample_grid_is_left_out_with_a_note_when_the_data_is_gone(finished_run, tmp_path):
  run = load_run(str(copy_run(finished_run, tmp_path / 'run',
                              config={'data.dir': str(tmp_path / 'moved')})))

  written = write_run_report(run, str(tmp_path / 'report'), num_samples=NUM_SAMPLES)

  assert {p.name for p in (tmp_path / 'report').iterdir()} == RUN_REPORT_FILES - {'samples.png'}
  [note] = written.notes
  assert 'samples.png left out' in note and 'moved' in note and '--data-dir' in note


def test_sample_grid_refuses_other_data_than_the_run_was_tested_on(finished_run, tmp_path):
  synthetic_cifar.write_binary_dataset(tmp_path, num_train=20, num_test=70, seed=1)

  written = write_run_report(load_run(str(finished_run)), str(tmp_path / 'report'),
                             data_dir=str(tmp_path), num_samples=NUM_SAMPLES)

  assert not (tmp_path / 'report' / 'samples.png').exists()
  assert 'not the data the run was tested on' in written.notes[0]


def test_results_table_pools_seeds_of_a_config_into_mean_and_std(finished_run, tmp_path):
  runs = [load_run(str(copy_run(finished_run, tmp_path / name, config=config,
                                results_json=results_json)))
          for name, config, results_json in [
              ('seed0', {'seed': 0}, {'test_accuracy': 0.5}),
              ('seed1', {'seed': 1}, {'test_accuracy': 0.7}),
              ('exp2', {'name': 'exp2', 'report': 'entregable4 (Entregable 4), exp2 plateau'},
               {'test_accuracy': 0.25, 'reported_test_accuracy': 76.88}),
          ]]

  table = results.results_table(runs)

  assert [row[0] for row in table.rows] == ['tiny', 'exp2']  # By report ('' first), then name.
  tiny, exp2 = (dict(zip(table.header, row)) for row in table.rows)
  assert tiny['cifar_jax test acc. (%)'] == '60.00 ± 14.14'
  assert tiny['runs'] == '2 (seeds 0, 1)'
  assert exp2['cifar_jax test acc. (%)'] == '25.00'
  assert (exp2['report'], exp2['what changed']) == ('entregable4', 'exp2 plateau')
  assert exp2['reported test acc. (%)'] == '76.88'
  assert table.to_markdown().count('\n') == 4  # Header, rule, two rows.
  # Only p2cnn printed per-epoch logs (tests/test_report_logs.py): none for these configs.
  assert tiny["val. acc. at the report's last logged epoch: ours vs report"] == '—'


def test_runs_of_one_name_with_other_settings_stay_apart_and_say_what_differs(
    finished_run, tmp_path):
  runs = [load_run(str(finished_run)),
          load_run(str(copy_run(finished_run, tmp_path / 'lr', {'optim.learning_rate': 0.01})))]

  rows = results.results_table(runs).rows

  assert [row[0] for row in rows] == ['tiny', 'tiny']
  assert sorted(row[2] for row in rows) == ['optim.learning_rate=0.001',
                                            'optim.learning_rate=0.01']


def test_command_line_writes_per_run_reports_and_the_comparison(finished_run, tmp_path, capsys):
  workdirs = [copy_run(finished_run, tmp_path / f'seed{seed}', {'seed': seed})
              for seed in (0, 1)]
  out = tmp_path / 'out'

  assert cli.main([*map(str, workdirs), '--out', str(out), '--samples', str(NUM_SAMPLES)]) == 0

  for workdir in workdirs:
    assert {p.name for p in (out / workdir.name).iterdir()} == RUN_REPORT_FILES
  comparison = {p.name for p in out.iterdir() if p.is_file()}
  assert comparison == {'runs.md', 'runs.csv', 'results.md', 'results.csv', 'results.html',
                        'curves.png', 'curves_seed0.png', 'curves_seed1.png'}
  assert png_size(out / 'curves.png') == figures.pixel_size(*curves.OVERLAY_SIZE)
  assert (out / 'results.md').read_text().count('2 (seeds 0, 1)') == 1
  assert (out / 'results.html').read_text().count('data:image/png;base64,') == 3
  assert str(out / 'results.html') in capsys.readouterr().out


@pytest.mark.parametrize('filename', ['config.json', 'history.json', 'results.json'])
def test_a_missing_run_file_is_an_error_naming_it(finished_run, tmp_path, capsys, filename):
  broken = copy_run(finished_run, tmp_path / 'broken')
  (broken / filename).unlink()

  with pytest.raises(RunFilesError, match=f'broken/{filename} is missing'):
    load_run(str(broken))
  assert cli.main([str(broken), '--table', '--out', str(tmp_path / 'out')]) == 2
  assert filename in capsys.readouterr().err


def test_missing_predictions_fail_the_run_report_but_not_the_table(finished_run, tmp_path):
  old_run = copy_run(finished_run, tmp_path / 'old')
  (old_run / 'predictions.npz').unlink()

  with pytest.raises(RunFilesError, match='predictions.npz is missing'):
    write_run_report(load_run(str(old_run)), str(tmp_path / 'report'))
  assert cli.main([str(old_run), '--table', '--out', str(tmp_path / 'table')]) == 0


def test_best_and_early_stopping_epochs_come_from_the_run_files(finished_run, tmp_path):
  run = load_run(str(copy_run(finished_run, tmp_path / 'stopped',
                              results_json={'stopped_by': 'val_loss'})))
  val_accuracy = run.column('val_accuracy')

  assert run.best_epoch() == (int(np.argmax(val_accuracy)) + 1, 'val_accuracy',
                              val_accuracy.max())
  assert run.stopped_epoch == len(run.history)
  assert load_run(str(finished_run)).stopped_epoch is None


def test_per_class_metrics_of_a_hand_made_confusion_matrix():
  matrix = confusion.confusion_matrix(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 0]),
                                      num_classes=3)

  np.testing.assert_array_equal(matrix, [[2, 1, 0], [1, 1, 0], [1, 0, 0]])
  metrics = confusion.per_class_metrics(matrix)
  np.testing.assert_allclose(metrics['recall'], [2 / 3, 1 / 2, 0])
  np.testing.assert_allclose(metrics['precision'][:2], [2 / 4, 1 / 2])
  assert np.isnan(metrics['precision'][2])  # Class 2 is never predicted.
