"""Many seeds at once (config.num_seeds, cifar_jax/train/seeds.py): the replicas, vmapped or
unrolled in one program, train like separate runs of their seeds, stop on their own, write run
files the report pools, and resume exactly."""

import contextlib
import importlib
import json
import os

import jax
import numpy as np
import pytest

from cifar_jax.report import __main__ as report_cli
from cifar_jax.train import interrupts
from cifar_jax.train import outputs
from cifar_jax.train import seeds
from cifar_jax.train import setup
from cifar_jax.train import steps
from cifar_jax.train import train_and_evaluate
from cifar_jax.train.config_checks import ConfigError, check_config
from configs import base
from tests.conftest import tiny_config

SEED = 3
# vmap batches the replicas' convolutions and matmuls, which may sum in another order than a
# single run does: float rounding only (measured: ~1e-6 on losses after a few epochs).
ATOL = 1e-4


def seeds_config(data_dir, shared=True, epochs=4, callbacks=True):
  """Two replicas, seeds 3 and 4 (240 training examples: 8 steps per epoch). With the callbacks,
  on this data, seed 3 stops after epoch 2 and seed 4 after epoch 3 (EarlyStopping on
  val_accuracy, patience 1, restoring its best weights), and only seed 4's learning rate is
  halved after epoch 2 (ReduceLROnPlateau on the training loss with min_delta 0.45)."""
  c = tiny_config(data_dir, epochs=epochs)
  c.seed, c.num_seeds, c.seeds_share_data_order = SEED, 2, shared
  c.checkpoint.every_steps = 3  # Mid-epoch saves too.
  if callbacks:
    base.add_early_stopping(c, 'val_acc', 'val_accuracy', 1, restore_best_weights=True)
    c.callbacks.reduce_lr_on_plateau.update(enabled=True, monitor='loss', patience=1,
                                            min_delta=0.45, factor=0.5)
  return c


def read(path):
  with open(path) as f:
    return json.load(f)


def assert_same_run(seed_dir, single_dir, atol=ATOL):
  """A replica's files say what the separate run's say, up to float rounding."""
  history, expected_history = outputs.read_history(seed_dir), outputs.read_history(single_dir)
  assert [r['epoch'] for r in history] == [r['epoch'] for r in expected_history]
  for row, expected in zip(history, expected_history):
    assert row.keys() == expected.keys()
    for key in row.keys() - {'time'}:
      assert row[key] == pytest.approx(expected[key], abs=atol), (row['epoch'], key)
  results, expected = (read(os.path.join(d, 'results.json')) for d in (seed_dir, single_dir))
  assert results.keys() == expected.keys()
  for key in results.keys() - {'train_seconds'}:
    if isinstance(expected[key], float):
      assert results[key] == pytest.approx(expected[key], abs=atol), key
    else:
      assert results[key] == expected[key], key
  np.testing.assert_allclose(outputs.read_predictions(seed_dir)[0],
                             outputs.read_predictions(single_dir)[0], atol=atol)


def separate_run(config, i, workdir):
  """Replica i run alone, from the config.json the seeds run wrote for it."""
  single = seeds.seed_config(config, i)
  train_and_evaluate(single, str(workdir))
  assert read(os.path.join(workdir, 'config.json')) == read(
      os.path.join(workdir, '..', 'multi', f'seed_{i}', 'config.json'))
  return str(workdir)


@pytest.fixture(scope='module')
def shared_order_runs(synthetic_dir, tmp_path_factory):
  """The seeds run (shared data order, callbacks) and each replica run alone."""
  root = tmp_path_factory.mktemp('seeds_shared')
  config = seeds_config(synthetic_dir)
  results = train_and_evaluate(config, str(root / 'multi'))
  singles = [separate_run(config, i, root / f'single_{i}') for i in range(2)]
  return config, str(root / 'multi'), results, singles


def test_seeds_with_a_shared_data_order_equal_separate_runs(shared_order_runs):
  _, workdir, results, singles = shared_order_runs
  assert results['epochs_run'] == [2, 3]  # The replicas stopped at different epochs.
  assert results['stopped_by'] == ['val_acc', 'val_acc']
  learning_rates = [[r['learning_rate'] for r in outputs.read_history(seeds.seed_dir(workdir, i))]
                    for i in range(2)]
  assert learning_rates == [[pytest.approx(1e-3)] * 2, [pytest.approx(1e-3)] * 2
                            + [pytest.approx(5e-4)]]
  for i, single in enumerate(singles):
    assert_same_run(seeds.seed_dir(workdir, i), single)


def test_vmapped_seeds_with_their_own_data_orders_equal_separate_runs(
    synthetic_dir, shared_order_runs, tmp_path, monkeypatch):
  # jax.vmap even on CPU (where 'auto' unrolls the replicas, as the other tests run them).
  monkeypatch.setenv(seeds.ENV_VAR, 'vmap')
  config = seeds_config(synthetic_dir, shared=False, epochs=2, callbacks=False)
  train_and_evaluate(config, str(tmp_path / 'multi'))
  single = separate_run(config, 1, tmp_path / 'single_1')
  assert seeds.seed_config(config, 1).data_seed is None  # Seed 4's own order.
  assert_same_run(seeds.seed_dir(str(tmp_path / 'multi'), 1), single)
  # Seed 4 saw other batches than with the shared order (seed 3's).
  shared_history = outputs.read_history(seeds.seed_dir(shared_order_runs[1], 1))
  own_history = outputs.read_history(seeds.seed_dir(str(tmp_path / 'multi'), 1))
  assert own_history[0]['loss'] != pytest.approx(shared_history[0]['loss'], abs=1e-3)


def test_run_files_per_seed_and_the_mean_and_std(shared_order_runs, tmp_path, capsys):
  _, workdir, results, _ = shared_order_runs
  seed_dirs = [seeds.seed_dir(workdir, i) for i in range(2)]
  for i, seed_dir in enumerate(seed_dirs):
    for name in ('config.json', 'history.json', 'history.csv', 'results.json',
                 'predictions.npz'):
      assert os.path.isfile(os.path.join(seed_dir, name)), (seed_dir, name)
    config = read(os.path.join(seed_dir, 'config.json'))
    assert (config['seed'], config['num_seeds'], config['data_seed']) == (SEED + i, 1, SEED)
  assert read(os.path.join(workdir, 'config.json'))['num_seeds'] == 2
  top = read(os.path.join(workdir, 'results.json'))
  accuracies = [read(os.path.join(d, 'results.json'))['test_accuracy'] for d in seed_dirs]
  assert top == results
  assert top['seeds'] == [SEED, SEED + 1]
  assert top['test_accuracies'] == accuracies
  assert top['test_accuracy'] == pytest.approx(np.mean(accuracies))
  assert top['test_accuracy_std'] == pytest.approx(np.std(accuracies, ddof=1))

  out = tmp_path / 'report'
  assert report_cli.expand_seed_runs([workdir]) == seed_dirs  # The workdir means its seeds.
  assert report_cli.main(['--table', workdir, '--out', str(out)]) == 0
  table = (out / 'results.md').read_text()
  assert table.count('2 (seeds 3, 4)') == 1  # One config, its two seeds pooled.
  mean = f"{100 * top['test_accuracy']:.2f} ± {100 * top['test_accuracy_std']:.2f}"
  assert mean in table
  capsys.readouterr()


class StopAfter:
  """A stop request (like interrupts.StopRequest) that turns true at its `calls`-th check."""

  def __init__(self, calls: int):
    self.calls = calls
    self.signal_name = None

  @property
  def requested(self) -> bool:
    self.calls -= 1
    if self.calls <= 0:
      self.signal_name = 'SIGTERM'
    return self.signal_name is not None


def test_an_interrupted_seeds_run_resumes_to_the_uninterrupted_result(
    shared_order_runs, tmp_path, monkeypatch):
  config, reference, _, _ = shared_order_runs
  config = config.copy_and_resolve_references()
  # One step a dispatch, so the stop request is checked before every step (the sizer's chunks
  # follow the machine's speed) and the 12th check stops at step 11, mid epoch 2 (8 steps an
  # epoch): the checkpoint holds both replicas' partial sums. Dispatching changes no result.
  config.train.steps_per_dispatch = 1
  workdir = str(tmp_path / 'interrupted')
  request = StopAfter(12)
  monkeypatch.setattr(interrupts, 'stop_on_signals', lambda: contextlib.nullcontext(request))
  with pytest.raises(interrupts.Interrupted, match='Run the same command again'):
    train_and_evaluate(config, workdir)
  monkeypatch.undo()
  saved = [int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints', 'latest'))
           if n.isdigit()]
  assert max(saved) == 11  # Stopped mid-epoch 2.

  results = train_and_evaluate(config, workdir)

  expected = read(os.path.join(reference, 'results.json'))
  assert {k: v for k, v in results.items() if k != 'train_seconds'} == {
      k: v for k, v in expected.items() if k != 'train_seconds'}
  for i in range(2):
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'time'} for r in rows]
    assert strip(outputs.read_history(seeds.seed_dir(workdir, i))) == strip(
        outputs.read_history(seeds.seed_dir(reference, i)))
    np.testing.assert_array_equal(outputs.read_predictions(seeds.seed_dir(workdir, i))[0],
                                  outputs.read_predictions(seeds.seed_dir(reference, i))[0])


@pytest.mark.parametrize('key, value', [('model.phases', ({'epochs': 1},)),
                                        ('model.backbone.bottleneck', True)])
def test_what_seeds_cannot_combine_with_is_a_config_error_naming_the_key(key, value):
  config = tiny_config()
  config.num_seeds = 2
  *parents, name = key.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  with pytest.raises(ConfigError, match=f'num_seeds=2 cannot be combined with {key}'):
    check_config(config)


@pytest.mark.parametrize('name, shared_input, grouped', [
    ('redes/m0', True, False),       # Its one convolution is the first layer: N x the filters.
    ('redes/m0', False, True),       # Own orders or random augmentation: per-replica input.
    ('exp0', True, False),
    ('p2cnn/exp1', True, True),      # A second convolution reads per-replica activations.
    ('arquitecturas/tl_vgg16', True, True)])
def test_vmap_is_chosen_on_cpu_only_without_grouped_convolutions(name, shared_input, grouped,
                                                                 monkeypatch):
  model = importlib.import_module('configs.' + name.replace('/', '.')).get_config().model
  assert seeds.grouped_convolutions(model, shared_input) is grouped
  monkeypatch.delenv(seeds.ENV_VAR, raising=False)
  assert seeds.vmapped(grouped) is (jax.default_backend() != 'cpu' or not grouped)
  for mode, vmap in (('vmap', True), ('unrolled', False)):
    monkeypatch.setenv(seeds.ENV_VAR, mode)
    assert seeds.vmapped(grouped) is vmap


def test_num_seeds_must_be_positive():
  config = tiny_config()
  config.num_seeds = 0
  with pytest.raises(ConfigError, match='num_seeds=0 must be >= 1'):
    check_config(config)


def test_unrolled_replicas_equal_vmapped_ones_and_a_stopped_replica_keeps_its_state():
  """CIFAR_JAX_SEEDS=unrolled (N plain copies in one program) against the vmapped program."""
  config = tiny_config()
  # SGD: the two programs' float rounding stays at rounding level. Adam's m / sqrt(v) would
  # blow a rounding-level gradient difference up to ~lr where a gradient is near zero.
  config.optim.name, config.optim.learning_rate = 'sgd', 0.05
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (64,), dtype=np.int32)
  run_setup = setup.RunSetup.create(config, setup.array_splits(images, labels))
  states = seeds.stack(run_setup.train_states(configs=[seeds.seed_config(config, i)
                                                       for i in range(2)]))
  order = np.arange(64)
  results = {}
  for vmap in (True, False):
    start = jax.tree.map(jax.numpy.asarray, jax.tree.map(np.array, states))
    results[vmap] = jax.device_get(seeds.train_steps_on_device(
        start, images, labels, order, steps.zero_sums(start.step), np.int32(3), np.array([True, False]), shared_order=True, batch_size=32,
        full_batch_size=32, steps_per_epoch=2, vmap=vmap))
  for a, b in zip(jax.tree.leaves(results[True]), jax.tree.leaves(results[False])):
    np.testing.assert_allclose(a, b, atol=1e-5)
  new_states, sums, _ = results[True]
  for before, after in zip(jax.tree.leaves(states), jax.tree.leaves(new_states)):
    np.testing.assert_array_equal(np.asarray(before)[1], after[1])  # Stopped: unchanged.
  assert sums['count'].tolist() == [96.0, 0.0]
