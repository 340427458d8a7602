"""The training core: pure steps, on-device epochs, exact evaluation, Keras loss semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.data import pipeline
from cifar_jax.models import create_model
from cifar_jax.train import create_train_state_from_config, eval_step, train_step
from cifar_jax.train import loop
from cifar_jax.train import programs
from cifar_jax.train import setup
from cifar_jax.train import sharding
from cifar_jax.train import state as state_lib
from cifar_jax.train import steps
from tests import synthetic_cifar
from tests.conftest import tiny_config


def make_state(config, train_images):
  splits = setup.array_splits(train_images, np.zeros(len(train_images), np.int32))
  return create_train_state_from_config(config, splits)[0]


@pytest.fixture(scope='module')
def arrays():
  train_images, train_labels, test_images, test_labels = synthetic_cifar.make_arrays(200, 70)
  return pipeline.Split(train_images, train_labels), pipeline.Split(test_images, test_labels)


def test_train_step_is_pure_and_deterministic(arrays):
  train, _ = arrays
  config = tiny_config()
  batch = {'image': jnp.asarray(train.images[:32]), 'label': jnp.asarray(train.labels[:32])}
  step = jax.jit(train_step)
  state_a, metrics_a = step(make_state(config, train.images), batch)
  state_b, metrics_b = step(make_state(config, train.images), batch)
  assert int(state_a.step) == 1
  np.testing.assert_array_equal(metrics_a['loss'], metrics_b['loss'])
  for a, b in zip(jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params)):
    np.testing.assert_array_equal(a, b)
  # Dropout randomness comes from the step number: the next step draws a different mask.
  state_c, metrics_c = step(state_a, batch)
  assert int(state_c.step) == 2 and metrics_c['loss'] != metrics_a['loss']


def test_train_steps_reduce_the_loss(arrays):
  train, _ = arrays
  config = tiny_config()
  config.model.layers = config.model.layers[:3] + config.model.layers[4:]  # no dropout
  state = make_state(config, train.images)
  batch = {'image': jnp.asarray(train.images[:64]), 'label': jnp.asarray(train.labels[:64])}
  step = jax.jit(train_step)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']) / float(metrics['count']))
  assert losses[-1] < 0.5 * losses[0]


def test_train_loss_includes_the_l2_penalty_like_keras(arrays):
  train, _ = arrays
  config = tiny_config()
  state = make_state(config, train.images)
  batch = {'image': jnp.asarray(train.images[:8]), 'label': jnp.asarray(train.labels[:8]),
           'mask': jnp.ones(8)}
  with_l2 = eval_step(state, batch)
  kernel = state.params['conv2d']['kernel']
  penalty = 1e-3 * float(jnp.sum(kernel ** 2))
  config.model.layers = ({**config.model.layers[0], 'l2': 0.0},) + config.model.layers[1:]
  state_no_l2 = make_state(config, train.images)
  without_l2 = eval_step(state_no_l2, batch)
  assert penalty > 0
  # Two float32 loss sums of ~8 x 2.3: each may round differently by a few 1e-6.
  np.testing.assert_allclose(float(with_l2['loss']) - float(without_l2['loss']), 8 * penalty,
                             rtol=1e-4, atol=1e-5)


def test_evaluation_counts_every_example_once(arrays):
  train, test = arrays  # 70 test examples, batches of 32: the last batch is padded.
  state = make_state(tiny_config(), train.images)
  batches = pipeline.make_eval_batches(test, batch_size=32)
  assert batches.images.shape[:2] == (3, 32) and batches.num_examples == 70
  got = loop.evaluate_split(state, batches)
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          jnp.asarray(test.images, jnp.float32) / 255.0, train=False)
  expected_accuracy = float(np.mean(np.argmax(logits, -1) == test.labels))
  expected_loss = float(jnp.mean(steps.cross_entropy(logits, jnp.asarray(test.labels))))
  l2 = 1e-3 * float(jnp.sum(state.params['conv2d']['kernel'] ** 2))
  assert got['accuracy'] == pytest.approx(expected_accuracy)
  assert got['loss'] == pytest.approx(expected_loss + l2, rel=1e-5)


@pytest.mark.parametrize('n, batch, steps_per_epoch, expected', [
    (40000, 512, 0, (79, 64)),     # Keras fit on arrays: ceil(n / batch), smaller last batch.
    (40000, 512, 78, (78, 512)),   # fit(generator, steps_per_epoch=40000 // 512).
    (100, 512, 0, (1, 100)),       # a batch larger than the split.
    (96, 32, 0, (3, 32)),
])
def test_epoch_plan_matches_keras_batching(n, batch, steps_per_epoch, expected):
  plan = loop.EpochPlan.create(n, batch, steps_per_epoch)
  assert (plan.steps_per_epoch, plan.last_batch_size) == expected


def test_epoch_plan_refuses_more_steps_than_data():
  with pytest.raises(ValueError, match='steps_per_epoch'):
    loop.EpochPlan.create(1000, 512, 3)


def test_an_epoch_sends_nothing_from_host_to_device(arrays):
  """The split is on the device and the step position comes from state.step, so a whole epoch
  (its order and its smaller last batch included) runs with host-to-device transfers
  disallowed."""
  train, _ = arrays
  config = tiny_config()
  plan = loop.EpochPlan.create(len(train), 32, 0)  # 200 = 6 x 32 + 8
  state = make_state(config, train.images)
  images, labels = sharding.replicate((train.images, train.labels), sharding.make_mesh())
  program = programs.Single()

  def epoch(state):
    return loop.run_epoch(program, state, program.epoch_data(state, images, labels, plan, [0]))

  state = epoch(state).state  # compiles both batch shapes
  with jax.transfer_guard_host_to_device('disallow'):
    result = epoch(state)
  assert result.complete and int(result.state.step) == 2 * plan.steps_per_epoch
  assert float(result.sums['count']) == len(train)


def test_an_epoch_stops_at_until_and_continues_to_the_same_result(arrays):
  """Mid-epoch stops (checkpoints, max_steps) split an epoch without changing it."""
  train, _ = arrays
  plan = loop.EpochPlan.create(len(train), 32, 0)
  state = make_state(tiny_config(), train.images)
  program = programs.Single()
  data = program.epoch_data(state, jnp.asarray(train.images), jnp.asarray(train.labels), plan,
                            [0])
  whole = loop.run_epoch(program, state, data)
  first = loop.run_epoch(program, make_state(tiny_config(), train.images), data, until=3)
  assert (first.step, first.complete) == (3, False) and int(first.state.step) == 3
  rest = loop.run_epoch(program, first.state, data, sums=first.sums)
  assert rest.complete and rest.step == plan.steps_per_epoch
  for a, b in zip(jax.tree.leaves((whole.state.params, whole.sums)),
                  jax.tree.leaves((rest.state.params, rest.sums))):
    np.testing.assert_array_equal(a, b)


def test_each_epoch_visits_every_example_once_in_a_new_order(arrays):
  train, _ = arrays
  state = make_state(tiny_config(), train.images)
  first = np.asarray(steps.epoch_order(state, len(train), 7))
  second = np.asarray(steps.epoch_order(state.replace(step=state.step + 7), len(train), 7))
  assert sorted(first) == list(range(len(train))) == sorted(second)
  assert not np.array_equal(first, second)


@pytest.mark.parametrize('n, num_validation, validation_split', [
    (50000, 10000, 0.0), (50000, 0, 0.2), (1001, 0, 0.1), (300, 60, 0.0)])
def test_validation_is_the_end_of_the_training_arrays_like_keras(n, num_validation,
                                                                validation_split):
  from keras.src.trainers.data_adapters import array_slicing  # pylint: disable=g-import-not-at-top
  size = pipeline.validation_size(n, num_validation, validation_split)
  if validation_split:
    x = np.arange(n)
    (_, ), (val, ) = array_slicing.train_validation_split((x,), validation_split)
    np.testing.assert_array_equal(np.asarray(val), x[n - size:])
  assert size == (num_validation or size)


def test_validation_settings_conflict_is_an_error():
  with pytest.raises(ValueError, match='only one'):
    pipeline.validation_size(100, 10, 0.1)


def test_validation_source_test_validates_on_the_test_set_and_trains_on_every_image(
    synthetic_dir):
  from cifar_jax.train import config_checks  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top
  config = tiny_config(synthetic_dir)
  config.data.num_validation = 0
  config.data.validation_source = 'test'
  splits = pipeline.make_splits(config.data)
  assert len(splits.train) == 300  # every training image of synthetic_dir
  np.testing.assert_array_equal(splits.validation.images, splits.test.images)
  np.testing.assert_array_equal(splits.validation.labels, splits.test.labels)
  assert config_checks.split_sizes(config.data) == (300, 70, 70)
  base.add_early_stopping(config, 'val_loss', 'val_loss', patience=2)  # the test set validates
  config_checks.check_config(config)
  config.data.num_validation = 30
  with pytest.raises(config_checks.ConfigError, match='set data.num_validation=0'):
    config_checks.check_config(config)
  config.data.num_validation, config.data.validation_source = 0, 'tests'
  with pytest.raises(config_checks.ConfigError, match='validation_source'):
    config_checks.check_config(config)


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror(arrays):
  train, test = arrays
  config = tiny_config()
  config.augment.tta = 'flip'
  state = make_state(config, train.images)
  images = jnp.asarray(test.images[:8])
  got = steps.predict_step(state, images)
  plain = state.replace(tta='none')
  logits = lambda x: jnp.log(steps.predict_step(plain, x))  # log-softmax: logits up to a constant
  expected = jax.nn.softmax(0.5 * (logits(images) + logits(images[:, :, ::-1])))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_init_compiled_without_llvm_optimisations_gives_the_optimised_values(monkeypatch):
  """init's fast compile (state.CPU_INIT_COMPILER_OPTIONS) changes its speed, not its values."""
  model = create_model(tiny_config().model)
  fast = state_lib.init_variables(model, (32, 32, 3), 7)
  monkeypatch.setattr(state_lib, 'CPU_INIT_COMPILER_OPTIONS',
                      {'xla_backend_optimization_level': 3,
                       'xla_llvm_disable_expensive_passes': False})
  optimised = state_lib.init_variables(model, (32, 32, 3), 7)
  leaves = jax.tree.leaves(fast)
  assert len(leaves) == len(jax.tree.leaves(optimised)) > 4
  for a, b in zip(leaves, jax.tree.leaves(optimised)):
    np.testing.assert_array_equal(a, b)
