"""Checkpoints, exact resume and failure handling: a killed run loses nothing."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cifar_jax.testing import runs
from cifar_jax.train import checkpointing
from cifar_jax.train import evaluate_checkpoint, train_and_evaluate
from cifar_jax.train import outputs
from cifar_jax.train import replicas
from cifar_jax.train import steps
from tests.conftest import REPO, forget_train_step_programs, tiny_config

# 240 training examples in batches of 32: 8 steps per epoch; a checkpoint every 3 steps too.
RUN_ARGS = ('--config=tests/tiny_config.py', '--config.train.epochs=3',
            '--config.checkpoint.every_steps=3')


def launch(workdir, data_dir, *extra):
  return subprocess.Popen(
      [sys.executable, 'launch.py', *RUN_ARGS, f'--config.data.dir={data_dir}',
       f'--workdir={workdir}', *extra], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def finish(process):
  out, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return out


checkpoint_steps = runs.checkpoint_steps
assert_same_run = runs.assert_same_outcome


@pytest.fixture(scope='module')
def reference_run(synthetic_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  finish(launch(workdir, synthetic_dir))
  return workdir


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(
    synthetic_dir, reference_run, tmp_path):
  workdir = str(tmp_path / 'killed')
  rng = random.Random(0)
  kills = 0
  for _ in range(3):
    process = launch(workdir, synthetic_dir)
    # Wait for the run to make progress beyond what is already saved, then kill it hard.
    seen = len(checkpoint_steps(workdir))
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
      if len(checkpoint_steps(workdir)) > seen or (seen and checkpoint_steps(workdir)[-1] > 0):
        break
      time.sleep(0.2)
    time.sleep(rng.uniform(0.0, 1.5))
    if process.poll() is None:
      process.send_signal(signal.SIGKILL)
      kills += 1
    process.communicate()
  assert kills >= 1
  finish(launch(workdir, synthetic_dir))
  assert_same_run(reference_run, workdir)


def test_sigterm_saves_mid_epoch_and_the_resumed_run_is_identical(synthetic_dir, reference_run,
                                                                   tmp_path):
  workdir = str(tmp_path / 'terminated')
  process = launch(workdir, synthetic_dir)
  deadline = time.time() + 300
  while not checkpoint_steps(workdir) and time.time() < deadline:
    time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=300)
  if process.returncode == 0:
    pytest.skip('the run finished before the signal arrived')  # machine far too fast
  assert process.returncode == 130, err[-2000:]
  assert 'SIGTERM' in err and 'Run the same command again to resume' in err
  finish(launch(workdir, synthetic_dir))
  assert_same_run(reference_run, workdir)


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(synthetic_dir, tmp_path,
                                                                    monkeypatch):
  config = tiny_config(synthetic_dir, epochs=3)
  original = steps.train_step

  def poisoned(state, batch):  # The loss turns NaN from step 11 on (epoch 2).
    state, sums = original(state, batch)
    return state, dict(sums, loss=jnp.where(state.step >= 11, jnp.nan, sums['loss']))

  monkeypatch.setattr(steps, 'train_step', poisoned)
  forget_train_step_programs()  # Programs traced before call the original.
  with pytest.raises(FloatingPointError, match=r'epoch 2 .*step 11.*last good checkpoint \(step 8\)'):
    train_and_evaluate(config, str(tmp_path))
  assert checkpoint_steps(str(tmp_path)) == [8]
  monkeypatch.setattr(steps, 'train_step', original)
  forget_train_step_programs()
  results = train_and_evaluate(config, str(tmp_path))  # Resumes from epoch 1's checkpoint.
  assert results['epochs_run'] == 3


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(synthetic_dir, tmp_path,
                                                                  monkeypatch):
  config = tiny_config(synthetic_dir, epochs=2)
  save = ocp.CheckpointManager.save
  calls = []

  def full_disk(self, step, *args, **kwargs):
    calls.append(step)
    if step == 16:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk)
  with pytest.raises(checkpointing.CheckpointError,
                     match='No space left on device.*step 8 is intact'):
    train_and_evaluate(config, str(tmp_path))
  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  assert checkpoint_steps(str(tmp_path)) == [8]
  assert train_and_evaluate(config, str(tmp_path))['epochs_run'] == 2


def test_an_unwritable_run_file_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'not_a_dir'
  blocker.write_text('')
  with pytest.raises(outputs.WorkdirError, match='previous version is intact'):
    outputs.atomic_write(str(blocker / 'history.csv'), 'x')


def test_a_truncated_checkpoint_falls_back_to_the_one_before(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir, epochs=2)
  workdir = str(tmp_path / 'run')
  reference = train_and_evaluate(config, workdir)
  assert checkpoint_steps(workdir) == [8, 16]
  newest = os.path.join(workdir, 'checkpoints', 'latest', '16', 'state')
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
  again = train_and_evaluate(config, workdir)  # Restores step 8, retrains epoch 2.
  assert again['test_loss'] == reference['test_loss']
  # Nothing readable at all: a clear error naming the checkpoints.
  for step in checkpoint_steps(workdir):
    for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', 'latest', str(step))):
      for name in files:
        open(os.path.join(root, name), 'wb').close()
  with pytest.raises(checkpointing.CheckpointError, match='(?s)no readable checkpoint.*--fresh'):
    train_and_evaluate(config, workdir)


def test_a_workdir_of_another_config_is_refused_with_the_difference(synthetic_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  finish(launch(workdir, synthetic_dir, '--config.train.epochs=1'))
  process = launch(workdir, synthetic_dir, '--config.optim.learning_rate=0.01')
  _, err = process.communicate(timeout=600)
  assert process.returncode == 2
  assert 'optim.learning_rate: 0.001 -> 0.01' in err and '--fresh' in err
  finish(launch(workdir, synthetic_dir, '--config.optim.learning_rate=0.01', '--fresh'))
  assert any('.replaced-' in name for name in os.listdir(tmp_path))


def test_evaluate_best_reloads_the_best_epoch(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir, epochs=3)
  train_and_evaluate(config, str(tmp_path))
  history = outputs.read_history(str(tmp_path))
  metrics = evaluate_checkpoint(config, str(tmp_path), 'best')
  best_row = max(history, key=lambda r: r['val_accuracy'])
  # ModelCheckpoint(save_best_only): the first epoch reaching the best val_accuracy.
  assert metrics['step'] == best_row['epoch'] * 8
  assert metrics['val_accuracy'] == best_row['val_accuracy']
  assert json.loads((tmp_path / 'evaluation_best.json').read_text())['step'] == metrics['step']


def test_evaluate_may_change_evaluation_settings_and_nothing_else(synthetic_dir, tmp_path):
  """--evaluate=latest --config.augment.tta=none on a run trained with flip TTA: the same
  checkpoint evaluated without TTA, written beside the run's own evaluation; a change to what
  was trained is still refused, and resuming may not change the TTA (early stopping would see
  other validation metrics)."""
  config = tiny_config(synthetic_dir, epochs=2)
  config.augment.tta = 'flip'
  workdir = str(tmp_path)
  trained = train_and_evaluate(config, workdir)
  with_tta = evaluate_checkpoint(config, workdir, 'latest')
  assert 'changed' not in with_tta and with_tta['test_loss'] == trained['test_loss']
  config.augment.tta = 'none'
  without_tta = evaluate_checkpoint(config, workdir, 'latest')
  assert without_tta['changed'] == {'augment.tta': 'none'}
  assert without_tta['step'] == with_tta['step']
  assert without_tta['test_loss'] != with_tta['test_loss']
  written = json.loads((tmp_path / 'evaluation_latest_tta-none.json').read_text())
  assert written['test_loss'] == without_tta['test_loss']
  assert json.loads((tmp_path / 'evaluation_latest.json').read_text()) == with_tta
  with pytest.raises(checkpointing.ConfigMismatchError, match='--evaluate may change augment.tta'):
    train_and_evaluate(config, workdir)
  config.augment.tta = 'flip'
  config.optim.learning_rate = 0.01
  with pytest.raises(checkpointing.ConfigMismatchError,
                     match='(?s)cannot be evaluated.*optim.learning_rate: 0.001 -> 0.01'):
    evaluate_checkpoint(config, workdir, 'best')


def test_the_checkpoint_host_state_keeps_the_format_of_earlier_versions():
  """Workdirs written before one Run served one replica and N resume: a single run's host state
  is its record (keys in this order), a run of seeds' adds 'seeds', a list of such records."""
  keys = ['epoch', 'history', 'stopped_by', 'train_seconds', 'callbacks', 'snapshot_names',
          'partial_sums']
  run = replicas.RunState(epoch=2, train_seconds=3.5, snapshot_names=['val_loss'],
                          partial_sums={'loss': 1.0, 'correct': 2.0, 'count': 3.0})
  record = replicas.RunState(epoch=2, history=[{'epoch': 1}, {'epoch': 2}], stopped_by='val_loss',
                             train_seconds=3.5, callbacks={'model_checkpoint': {'best': 0.5}})
  single = replicas.host_state(run, [record])
  assert list(single) == keys
  assert (single['history'], single['stopped_by'], single['callbacks']) == (
      record.history, 'val_loss', record.callbacks)
  assert (single['snapshot_names'], single['partial_sums']) == (['val_loss'], run.partial_sums)
  several = replicas.host_state(run, [record, replicas.RunState(epoch=1)])
  assert list(several) == keys + ['seeds']
  assert [list(r) for r in several['seeds']] == [keys, keys]
  assert (several['history'], several['callbacks']) == ([], {})
  for host, n in ((single, 1), (several, 2)):
    restored_run, records = replicas.from_host_state(json.loads(json.dumps(host)), n)
    assert (restored_run.epoch, restored_run.partial_sums) == (2, run.partial_sums)
    assert records[0].history == record.history and records[0].stopped_by == 'val_loss'
