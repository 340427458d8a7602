"""`train_and_evaluate(config, workdir)`: the epoch loop, like Keras's `model.fit` + `evaluate`.

The steps run on the device; everything that decides *when* (callbacks, logging, stopping) runs
here on the host between epochs.
"""

import dataclasses
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.data import pipeline
from cifar_jax.models import create_model
from cifar_jax.models.summary import summarize
from cifar_jax.train import callbacks as callbacks_lib
from cifar_jax.train import optimizers
from cifar_jax.train import outputs
from cifar_jax.train import progress
from cifar_jax.train import steps
from cifar_jax.train.config_checks import check_config
from cifar_jax.train.state import create_train_state

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EpochPlan:
  """How an epoch walks the training split."""
  num_examples: int
  batch_size: int
  steps_per_epoch: int
  last_batch_size: int  # Smaller than batch_size when the epoch ends on a partial batch.

  @classmethod
  def create(cls, num_examples: int, batch_size: int, steps_per_epoch: int) -> 'EpochPlan':
    if batch_size <= 0:
      raise ValueError(f'train.batch_size={batch_size} must be positive')
    if steps_per_epoch:  # Keras fit(generator, steps_per_epoch=N): N full batches.
      if steps_per_epoch * batch_size > num_examples:
        raise ValueError(
            f'train.steps_per_epoch={steps_per_epoch} x batch_size={batch_size} needs '
            f'{steps_per_epoch * batch_size} examples but the training split has {num_examples}; '
            f'lower steps_per_epoch (0 means one pass over the split)')
      return cls(num_examples, batch_size, steps_per_epoch, batch_size)
    steps_needed = -(-num_examples // batch_size)  # Keras fit(x, y): ceil(n / batch).
    return cls(num_examples, batch_size, steps_needed,
               num_examples - (steps_needed - 1) * batch_size)


def _means(sums) -> dict[str, float]:
  sums = jax.device_get(sums)
  count = float(sums['count'])
  return {'loss': float(sums['loss']) / count, 'accuracy': float(sums['correct']) / count}


def _add(a, b):
  return jax.tree.map(jnp.add, a, b)


def run_epoch(state, train_data, plan: EpochPlan, bar: progress.ProgressBar, max_steps: int = 0):
  """One epoch of train steps on device-resident data; returns (state, metric sums).

  Nothing here waits for the device: steps are dispatched asynchronously and the metric sums
  stay on the device until the caller reads them.
  """
  images, labels = train_data
  order = steps.epoch_order(state, plan.num_examples, plan.steps_per_epoch)
  totals = None
  step = int(state.step)  # Read once: reading it per step would wait for the device each time.
  first = step % plan.steps_per_epoch  # Non-zero only when resuming mid-epoch.
  for i in range(first, plan.steps_per_epoch):
    if max_steps and step >= max_steps:
      break
    step += 1
    size = plan.last_batch_size if i == plan.steps_per_epoch - 1 else plan.batch_size
    state, sums = steps.train_step_on_device(
        state, images, labels, order, batch_size=size, full_batch_size=plan.batch_size,
        steps_per_epoch=plan.steps_per_epoch)
    totals = sums if totals is None else _add(totals, sums)
    bar.update(i + 1)
  bar.close()
  return state, totals


def evaluate_split(state, batches: pipeline.EvalBatches) -> dict[str, float]:
  return _means(steps.evaluate(state, batches.images, batches.labels, batches.mask))


def _check_finite(logs, epoch):
  bad = {k: v for k, v in logs.items() if isinstance(v, float) and not np.isfinite(v)}
  if bad:
    raise FloatingPointError(
        f'non-finite metrics at epoch {epoch}: {bad}. Training diverged; lower '
        f'optim.learning_rate, or check the data normalisation (data.normalization).')


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` and evaluates on the test split; writes the run files into `workdir`."""
  check_config(config)
  is_writer = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_writer:
    outputs.atomic_write(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))

  splits = pipeline.make_splits(config.data)
  log.info('data: %s; train %d, validation %d, test %d', splits.source, len(splits.train),
           len(splits.validation) if splits.validation else 0, len(splits.test))
  input_pipeline = pipeline.make_input_pipeline(config, splits.train.images)
  model = create_model(config.model)
  summary = summarize(model, config.model.input_shape)
  plan = EpochPlan.create(len(splits.train), config.train.batch_size, config.train.steps_per_epoch)
  total_steps = plan.steps_per_epoch * config.train.epochs
  tx = optimizers.make_optimizer(config.optim, plan.steps_per_epoch, total_steps)
  state = create_train_state(config, model, tx, input_pipeline)
  early_stoppers, plateau = callbacks_lib.make_callbacks(config.callbacks)

  train_data = pipeline.to_device(splits.train)
  val_batches = (pipeline.make_eval_batches(splits.validation, config.train.eval_batch_size)
                 if splits.validation else None)
  test_batches = pipeline.make_eval_batches(splits.test, config.train.eval_batch_size)

  writer = outputs.ScalarWriter(os.path.join(workdir, 'tensorboard'), enabled=is_writer)
  verbosity = config.log.verbosity
  history, snapshots, stopped_by = [], {}, None
  train_seconds = 0.0
  for epoch in range(config.train.epochs):
    start = time.perf_counter()
    bar = progress.ProgressBar(plan.steps_per_epoch, enabled=verbosity == 1)
    state, train_sums = run_epoch(state, train_data, plan, bar, config.train.max_steps)
    if train_sums is None:  # max_steps reached at an epoch boundary.
      break
    logs = _means(train_sums)
    # What Keras logs as learning_rate: optimizer.learning_rate at the end of the epoch.
    epoch_lr = optimizers.learning_rate(state.opt_state)
    if val_batches is not None:
      logs.update({f'val_{k}': v for k, v in evaluate_split(state, val_batches).items()})
    logs['learning_rate'] = epoch_lr
    seconds = time.perf_counter() - start
    train_seconds += seconds
    _check_finite(logs, epoch + 1)
    history.append({'epoch': epoch + 1, **logs, 'time': round(seconds, 3)})
    if is_writer:
      outputs.write_history(workdir, history)
      writer.write_scalars(epoch + 1, logs)
    if verbosity:
      print(progress.format_epoch_line(epoch + 1, config.train.epochs, logs, seconds), flush=True)

    # Callbacks, in Keras's order of the reports' lists: plateau LR, then the early stoppers.
    if plateau is not None:
      new_lr = plateau.on_epoch_end(epoch, logs, epoch_lr)
      if new_lr != epoch_lr:
        state = state.replace(opt_state=optimizers.set_learning_rate(
            state.opt_state, new_lr, config.optim, int(state.step)))
        log.info('epoch %d: ReduceLROnPlateau reducing learning rate to %g', epoch + 1, new_lr)
    for name, stopper in zip(config.callbacks.early_stopping.keys(), early_stoppers):
      stopper.on_epoch_end(epoch, logs)
      if stopper.snapshot_weights:  # Keras's best_weights = model.get_weights().
        snapshots[name] = jax.tree.map(jnp.copy, (state.params, state.batch_stats))
      if stopper.stop_training and stopped_by is None:
        stopped_by = name
    if stopped_by is not None:
      if verbosity:
        print(f'Epoch {epoch + 1}: early stopping ({stopped_by})', flush=True)
      break
    if config.train.max_steps and int(state.step) >= config.train.max_steps:
      break

  # Keras restores best weights in on_train_end, whether or not that callback stopped the run;
  # with several, the last one restoring wins.
  restore = callbacks_lib.best_weights_index(early_stoppers)
  if restore is not None:
    name = list(config.callbacks.early_stopping.keys())[restore]
    params, batch_stats = snapshots[name]
    state = state.replace(params=params, batch_stats=batch_stats)
    log.info('restoring the weights of the best epoch (%d) of early_stopping.%s',
             early_stoppers[restore].best_epoch + 1, name)

  test = evaluate_split(state, test_batches)
  results = _results(config, history, test, summary, stopped_by, train_seconds, splits, state)
  if is_writer:
    outputs.write_json(os.path.join(workdir, 'results.json'), results)
    writer.write_scalars(len(history), {f'test_{k}': v for k, v in test.items()})
    writer.close()
  if verbosity:
    print(f"> {100 * test['accuracy']:.3f}  (test accuracy, {len(splits.test)} images)", flush=True)
  return results


def _results(config, history, test, summary, stopped_by, train_seconds, splits, state) -> dict:
  monitor = 'val_accuracy' if history and 'val_accuracy' in history[0] else 'accuracy'
  best = max(history, key=lambda r: r[monitor]) if history else None
  return {
      'config': config.name,
      'test_accuracy': test['accuracy'],
      'test_loss': test['loss'],
      'epochs_run': len(history),
      'steps_run': int(state.step),
      'best_epoch': best['epoch'] if best else None,
      f'best_{monitor}': best[monitor] if best else None,
      'stopped_by': stopped_by,
      'train_seconds': round(train_seconds, 3),
      'params': summary.total,
      'trainable_params': summary.trainable,
      'non_trainable_params': summary.non_trainable,
      'reported_test_accuracy': config.reported_test_accuracy,
      'data_source': splits.source,
      'num_train': len(splits.train),
      'num_validation': len(splits.validation) if splits.validation else 0,
      'num_test': len(splits.test),
      'device': f'{jax.devices()[0].platform} x{jax.device_count()}',
      'jax_version': jax.__version__,
  }
