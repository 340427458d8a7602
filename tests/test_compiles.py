"""Compile counts: a run compiles its programs during the first epoch and never again, however
the host sizes its dispatches (one program per step or an on-device loop of any length), and
whatever its callbacks do between epochs."""

import contextlib

import jax
import pytest

from cifar_jax.train import outputs
from cifar_jax.train import train_and_evaluate
from tests.conftest import tiny_config

BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'


@contextlib.contextmanager
def compile_counter():
  """Yields a list that grows by one name per XLA compilation while the block runs."""
  compiled = []

  def listener(event, duration_secs, **kwargs):
    del duration_secs
    if event == BACKEND_COMPILE:
      compiled.append(kwargs.get('fun_name', '?'))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiled
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize('steps_per_dispatch, device_loop', [(0, False), (3, False), (3, True)])
def test_no_compilation_after_the_first_epoch(synthetic_dir, tmp_path, monkeypatch,
                                             steps_per_dispatch, device_loop):
  config = tiny_config(synthetic_dir, epochs=4, steps_per_dispatch=steps_per_dispatch,
                       device_loop=device_loop)
  config.checkpoint.every_steps = 4  # Mid-epoch saves: dispatches end on their boundaries.
  plateau = config.callbacks.reduce_lr_on_plateau  # Changes the LR between epochs.
  plateau.update(enabled=True, monitor='loss', patience=1, min_delta=10.0, factor=0.5)
  compiles_at_epoch_end = []
  write_history = outputs.write_history

  def record(workdir, rows):
    compiles_at_epoch_end.append(list(compiled))
    write_history(workdir, rows)

  monkeypatch.setattr(outputs, 'write_history', record)
  jax.clear_caches()  # Count the compiles of this run, not reuse of earlier tests' programs.
  with compile_counter() as compiled:
    results = train_and_evaluate(config, str(tmp_path))
  assert results['epochs_run'] == 4
  first_epoch = compiles_at_epoch_end[0]
  assert first_epoch, 'the counter saw no compilation at all'
  # One train-step program per batch shape (7 batches of 32, then one of 16): the metric sums
  # and the non-finite marker enter the first step placed as the step's outputs leave it. A
  # device loop takes its trip count as an argument: one program for chunks of 3, of 1 (cut by
  # the every_steps saves) and the last batch's.
  program = 'jit(loop_steps)' if device_loop else 'jit(accumulate_step)'
  assert first_epoch.count(program) == 2, first_epoch
  for epoch, names in enumerate(compiles_at_epoch_end[1:], start=2):
    assert names == first_epoch, f'epoch {epoch} compiled {names[len(first_epoch):]}'
