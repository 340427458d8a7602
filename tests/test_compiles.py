"""Compile counts: a run compiles its programs during the first epoch and never again, however
the host sizes its dispatches (one program per step or an on-device loop of any length), and
whatever its callbacks do between epochs."""

import jax
import pytest

from cifar_jax.train import outputs
from cifar_jax.train import train_and_evaluate
from tests.conftest import compile_counter, tiny_config


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


def test_a_second_run_of_the_same_config_compiles_nothing(synthetic_dir, tmp_path):
  """The model, optimizer and augmentation a config builds are built once per process, so a
  second run of it (a sweep's, a test's) reuses every compiled program, and trains the same."""
  config = tiny_config(synthetic_dir, epochs=1)
  config.augment.horizontal_flip = True
  first = train_and_evaluate(config, str(tmp_path / 'first'))
  with compile_counter() as compiled:
    second = train_and_evaluate(config, str(tmp_path / 'second'))
  assert compiled == []
  assert second['test_loss'] == first['test_loss'] and second['test_accuracy'] == first[
      'test_accuracy']


def test_only_an_identical_config_reuses_what_an_earlier_one_built(synthetic_dir):
  """What a run builds is reused for the same model, optim and augment configs (and epochs),
  whatever else differs, and never for a different one."""
  from cifar_jax.data import augment  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import setup  # pylint: disable=g-import-not-at-top

  def built(key=None, value=None):
    config = tiny_config(synthetic_dir)
    config.augment.horizontal_flip = True
    if key:
      section, name = key.split('.')
      config[section][name] = value
    run = setup.RunSetup.create(config)
    return (*run.model_and_tx(), run.input_pipeline.augment)

  def same(a, b):
    return [x is y for x, y in zip(a, b, strict=True)]

  first = built()
  assert same(built(), first) == [True, True, True]
  assert same(built('train.steps_per_dispatch', 3), first) == [True, True, True]
  assert same(built('optim.learning_rate', 0.5), first)[1:] == [False, True]
  assert same(built('augment.vertical_flip', True), first) == [True, True, False]
  assert same(built('train.epochs', 3), first)[1:] == [False, True]  # The schedule's length.
  layers = tiny_config().model.layers
  assert same(built('model.layers', layers[:-2] + layers[-1:]), first) == [False, False, True]
  # An int range is a choice of whole shifts, a float one a fraction of the image.
  assert augment.make_augment_fn(dict(width_shift_range=2)) is not augment.make_augment_fn(
      dict(width_shift_range=2.0))
