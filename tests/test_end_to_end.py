"""Whole runs: launch.py as a user runs it, and the loop's callbacks, on real files."""

import csv
import json
import os
import subprocess
import sys

import pytest

from cifar_jax.train import outputs
from cifar_jax.train import train_and_evaluate
from configs import base
from tests.conftest import REPO, SHARED_CIFAR10, tiny_config

HISTORY_HEADER = ['epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate',
                  'time', 'progbar_accuracy', 'progbar_loss']


def launch(*args, env=None):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, capture_output=True,
                        text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_launch_trains_exp0_on_binary_files_and_writes_the_run_files(synthetic_dir, tmp_path):
  workdir = tmp_path / 'run'
  result = launch('--config=configs/exp0.py', f'--workdir={workdir}',
                  f'--config.data.dir={synthetic_dir}', '--config.data.num_validation=60',
                  '--config.data.num_train_examples=300', '--config.data.num_test_examples=70',
                  '--config.train.epochs=2', '--config.train.batch_size=64',
                  '--config.log.verbosity=2')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Epoch 1/2' in result.stdout and 'Epoch 2/2' in result.stdout
  assert '(test accuracy, 70 images)' in result.stdout

  with open(workdir / 'history.csv') as f:
    rows = list(csv.reader(f))
  assert rows[0] == HISTORY_HEADER
  assert [r[0] for r in rows[1:]] == ['1', '2']
  history = json.loads((workdir / 'history.json').read_text())
  assert [r['learning_rate'] for r in history] == [pytest.approx(1e-3)] * 2
  assert all(0.0 <= r['val_accuracy'] <= 1.0 and r['loss'] > 0 for r in history)

  results = json.loads((workdir / 'results.json').read_text())
  assert results['config'] == 'exp0'
  assert results['epochs_run'] == 2 and results['num_test'] == 70
  assert results['num_train'] == 240 and results['num_validation'] == 60
  assert results['params'] == 263_402 and results['reported_test_accuracy'] == 60.58
  assert 0.0 <= results['test_accuracy'] <= 1.0
  assert json.loads((workdir / 'config.json').read_text())['name'] == 'exp0'
  probabilities, labels, class_names = outputs.read_predictions(str(workdir))
  assert probabilities.shape == (70, 10) and labels.shape == (70,) and len(class_names) == 10
  assert abs(float((probabilities.argmax(1) == labels).mean()) - results['test_accuracy']) < 1e-6
  assert any(name.startswith('events.out.tfevents') for name in
             os.listdir(workdir / 'tensorboard'))


@pytest.mark.skipif(not SHARED_CIFAR10.is_dir(), reason=f'no shared data at {SHARED_CIFAR10}')
def test_exp0_learns_from_a_slice_of_the_shared_cifar10(tmp_path):
  result = launch('--config=configs/exp0.py', f'--workdir={tmp_path}',
                  f'--config.data.dir={SHARED_CIFAR10}', '--config.data.num_train_examples=4000',
                  '--config.data.num_validation=1000', '--config.data.num_test_examples=2000',
                  '--config.train.epochs=3', '--config.train.batch_size=64',
                  '--config.log.verbosity=0')
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['num_test'] == 2000
  assert results['test_accuracy'] > 0.25  # chance is 0.10


def test_missing_data_is_one_clear_error(tmp_path):
  missing = tmp_path / 'nowhere'
  result = launch('--config=configs/exp0.py', f'--workdir={tmp_path / "run"}',
                  f'--config.data.dir={missing}')
  assert result.returncode == 2
  assert str(missing) in result.stderr and 'cifar-10-batches-bin' in result.stderr
  assert 'Traceback' not in result.stderr


def test_early_stopping_ends_the_run_and_is_recorded(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir, epochs=6)
  # min_delta larger than any change: no epoch after the first improves, so patience 1 stops
  # the run at the second epoch (Keras semantics).
  base.add_early_stopping(config, 'val_loss', 'val_loss', patience=1, min_delta=100.0)
  results = train_and_evaluate(config, str(tmp_path))
  assert results['epochs_run'] == 2 and results['stopped_by'] == 'val_loss'


def test_reduce_lr_on_plateau_changes_the_learning_rate_between_epochs(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir, epochs=3)
  config.callbacks.reduce_lr_on_plateau.update(dict(enabled=True, monitor='val_loss',
                                                    patience=1, min_delta=100.0, factor=0.5))
  train_and_evaluate(config, str(tmp_path))
  history = json.loads((tmp_path / 'history.json').read_text())
  assert [r['learning_rate'] for r in history] == pytest.approx([1e-3, 1e-3, 5e-4])


def test_restore_best_weights_evaluates_the_best_epoch(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir, epochs=3)
  base.add_early_stopping(config, 'val_loss', 'val_loss', patience=5, min_delta=100.0,
                          restore_best_weights=True)
  restored = train_and_evaluate(config, str(tmp_path / 'restored'))
  config.train.epochs = 1
  first_epoch_only = train_and_evaluate(config, str(tmp_path / 'one'))
  # Only epoch 1 ever "improved", so the test metrics are those of the weights after epoch 1.
  assert restored['epochs_run'] == 3
  assert restored['test_loss'] == pytest.approx(first_epoch_only['test_loss'], rel=1e-6)


def test_diverging_training_stops_with_a_clear_error(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir, epochs=2)
  config.optim.name = 'sgd'
  config.optim.learning_rate = 1e12
  with pytest.raises(FloatingPointError, match='epoch 1'):
    train_and_evaluate(config, str(tmp_path))


def test_same_seed_same_run(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir, epochs=2)
  a = train_and_evaluate(config, str(tmp_path / 'a'))
  b = train_and_evaluate(config, str(tmp_path / 'b'))
  history = [json.loads((tmp_path / d / 'history.json').read_text()) for d in 'ab']
  for row_a, row_b in zip(*history):
    row_a.pop('time'), row_b.pop('time')
    assert row_a == row_b
  assert a['test_loss'] == b['test_loss']


def test_verbosity_flag_is_keras_verbose(synthetic_dir, tmp_path):
  def run(verbosity):
    return launch('--config=tests/tiny_config.py', f'--workdir={tmp_path / str(verbosity)}',
                  f'--config.data.dir={synthetic_dir}', '--config.train.epochs=1',
                  f'--verbosity={verbosity}')

  silent = run(0)
  assert silent.returncode == 0, silent.stderr[-3000:]
  assert (silent.stdout, silent.stderr) == ('', '')
  lines = run(2)
  assert lines.returncode == 0, lines.stderr[-3000:]
  assert 'Epoch 1/1' in lines.stdout and 'test accuracy' in lines.stdout
  assert 'data: ' in lines.stderr  # cifar_jax's own INFO log stays,
  assert 'checkpoint_manager' not in lines.stderr  # orbax's per-save chatter does not.
