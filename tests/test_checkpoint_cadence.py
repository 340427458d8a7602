"""Checkpoints off the critical path (issue #17): the latest checkpoint is saved at epoch ends by
checkpoint.every_epochs / every_minutes and always at the run's end (last epoch or max_steps); a
run resumed from a checkpoint several epochs old recomputes the epochs after it bit for bit."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from cifar_jax.testing import runs
from cifar_jax.train import steps
from cifar_jax.train import train_and_evaluate
from tests.conftest import REPO, tiny_config

# tiny_config: 240 training examples in batches of 32, 8 steps an epoch.


def cadence_config(data_dir, epochs, every_epochs, every_minutes=0.0):
  config = tiny_config(data_dir, epochs=epochs)
  config.checkpoint.every_epochs = every_epochs
  config.checkpoint.every_minutes = every_minutes
  return config


@pytest.mark.parametrize('every_epochs, every_minutes, saved', [
    (0, 0.0, [24]),  # Only the run's end.
    (2, 0.0, [16, 24]),  # Epoch 2, and the end.
    (0, 1e-9, [16, 24]),  # Minutes that have always passed: every epoch (two are kept).
])
def test_the_latest_is_saved_by_the_cadence_and_at_the_end(synthetic_dir, tmp_path, every_epochs,
                                                           every_minutes, saved):
  config = cadence_config(synthetic_dir, 3, every_epochs, every_minutes)
  train_and_evaluate(config, str(tmp_path))
  assert runs.checkpoint_steps(str(tmp_path)) == saved


def test_a_run_that_max_steps_ends_mid_epoch_saves_its_last_state(synthetic_dir, tmp_path):
  config = cadence_config(synthetic_dir, 3, every_epochs=0)
  config.train.max_steps = 13
  train_and_evaluate(config, str(tmp_path))
  assert runs.checkpoint_steps(str(tmp_path)) == [13]  # What was evaluated, for --evaluate.


def test_a_resume_from_a_checkpoint_three_epochs_old_equals_an_uninterrupted_run(
    synthetic_dir, tmp_path, monkeypatch):
  config = cadence_config(synthetic_dir, 5, every_epochs=3)
  reference = str(tmp_path / 'uninterrupted')
  train_and_evaluate(config, reference)
  assert runs.checkpoint_steps(reference) == [24, 40]

  # A crash in epoch 5 (its loss turns NaN from step 35 on: the run stops at the epoch's end,
  # saving nothing), so the newest checkpoint is epoch 3's and epochs 4-5 are lost.
  workdir = str(tmp_path / 'crashed')
  original = steps.train_step

  def crashing(state, batch):
    state, sums = original(state, batch)
    return state, dict(sums, loss=jnp.where(state.step >= 35, jnp.nan, sums['loss']))

  monkeypatch.setattr(steps, 'train_step', crashing)
  jax.clear_caches()  # Programs traced with the original step must not be reused.
  with pytest.raises(FloatingPointError, match=r'epoch 5 .*last good checkpoint \(step 24\)'):
    train_and_evaluate(config, workdir)
  monkeypatch.setattr(steps, 'train_step', original)
  jax.clear_caches()
  assert runs.checkpoint_steps(workdir) == [24]

  train_and_evaluate(config, workdir)  # Resumes at epoch 4, from step 24.
  runs.assert_same_outcome(reference, workdir)


def test_a_negative_cadence_is_one_error_line_before_any_work():
  process = subprocess.run(
      [sys.executable, 'launch.py', '--config=tests/tiny_config.py',
       '--config.checkpoint.every_minutes=-1', '--config.data.dir=/nonexistent/cifar'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert process.returncode == 2
  assert process.stderr.strip().splitlines() == [
      'error: checkpoint.every_minutes=-1.0 must be a finite number >= 0 (0: off)']
