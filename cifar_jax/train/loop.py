"""`train_and_evaluate(config, workdir)`: the epoch loop, like Keras's `model.fit` + `evaluate`.

The steps run on the device; everything that decides *when* (callbacks, logging, checkpoints,
stopping) runs here on the host between steps or epochs. A run checkpoints itself and, started
again with the same workdir, resumes exactly where its last checkpoint left it.
"""

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.data import pipeline
from cifar_jax.models import create_model
from cifar_jax.models.summary import summarize
from cifar_jax.train import callbacks as callbacks_lib
from cifar_jax.train import checkpointing
from cifar_jax.train import dispatch
from cifar_jax.train import interrupts
from cifar_jax.train import optimizers
from cifar_jax.train import outputs
from cifar_jax.train import progress
from cifar_jax.train import sharding
from cifar_jax.train import transfer
from cifar_jax.train import freezing
from cifar_jax.train import steps
from cifar_jax.train.config_checks import ConfigError, check_config
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
      raise ConfigError(f'train.batch_size={batch_size} must be positive')
    if steps_per_epoch:  # Keras fit(generator, steps_per_epoch=N): N full batches.
      if steps_per_epoch * batch_size > num_examples:
        raise ConfigError(
            f'train.steps_per_epoch={steps_per_epoch} x batch_size={batch_size} needs '
            f'{steps_per_epoch * batch_size} examples but the training split has {num_examples}; '
            f'lower steps_per_epoch (0 means one pass over the split)')
      return cls(num_examples, batch_size, steps_per_epoch, batch_size)
    steps_needed = -(-num_examples // batch_size)  # Keras fit(x, y): ceil(n / batch).
    return cls(num_examples, batch_size, steps_needed,
               num_examples - (steps_needed - 1) * batch_size)


@dataclasses.dataclass
class RunState:
  """The host side of a run, saved as JSON in every checkpoint."""
  epoch: int = 0  # Epochs completed.
  history: list = dataclasses.field(default_factory=list)
  stopped_by: str | None = None
  train_seconds: float = 0.0
  callbacks: dict = dataclasses.field(default_factory=dict)
  snapshot_names: list = dataclasses.field(default_factory=list)
  # Metric sums of an unfinished epoch, for a checkpoint taken mid-epoch.
  partial_sums: dict | None = None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class EpochResult:
  state: Any
  sums: Any  # Metric sums over the steps run (device arrays), None if no step ran.
  first_nonfinite_step: int | None  # The first step whose loss was NaN/inf, if any.
  complete: bool


def run_epoch(state, train_data, plan: EpochPlan, bar: progress.ProgressBar, *, max_steps=0,
              sums=None, stop_request=None, every_steps=0, on_every_steps=None,
              sizer: dispatch.DispatchSizer | None = None, data_sharding=None, data_rng=None,
              order=None, train_fn=None) -> EpochResult:
  """Train steps on device-resident data until the epoch ends (or max_steps / a stop request).

  The steps are dispatched in chunks without waiting for the device (`sizer` picks how many
  steps a chunk has; none of the results depend on it). Between chunks the host updates the progress bar,
  checks for a stop request and calls `on_every_steps(state, sums, step)` at each multiple of
  `every_steps` inside the epoch. `sums` continues an interrupted epoch. `data_rng`: the key of
  config.data_seed, if set. A run of several seeds (seeds.py) passes the epoch's `order` and its
  `train_fn` (`steps.train_steps_on_device`'s signature, on a state with a leading seed axis).
  """
  images, labels = train_data
  sizer = sizer or dispatch.DispatchSizer()
  train_fn = train_fn or steps.train_steps_on_device
  if order is None:
    order = steps.epoch_order(state, plan.num_examples, plan.steps_per_epoch, data_rng)
  # Then tracked here: reading state.step would wait for the device. (Stacked seeds: replicas
  # that stopped early keep their step; the training ones are at the largest.)
  step = int(np.max(jax.device_get(state.step)))
  epoch_start = step - step % plan.steps_per_epoch
  epoch_end = epoch_start + plan.steps_per_epoch
  # The smaller last batch is its own dispatch (another batch shape, so another program).
  full_batches_end = epoch_end - (plan.last_batch_size != plan.batch_size)
  # Carried-over sums (an interrupted epoch's) are placed like the step's outputs too.
  zero = steps.zero_sums(state.step)
  sums = zero if sums is None else jax.tree.map(jnp.add, zero, sums)
  first_nonfinite = None
  while step < epoch_end:
    if (max_steps and step >= max_steps) or (stop_request and stop_request.requested):
      bar.close()
      return EpochResult(state, sums, first_nonfinite, complete=False)
    boundaries = [full_batches_end if step < full_batches_end else epoch_end]
    boundaries += [max_steps] if max_steps else []
    boundaries += [(step // every_steps + 1) * every_steps] if every_steps else []
    batch_size = plan.batch_size if step < full_batches_end else plan.last_batch_size

    def run_steps(num_steps, state=state, sums=sums, batch_size=batch_size):
      return train_fn(
          state, images, labels, order, sums, num_steps, batch_size=batch_size,
          full_batch_size=plan.batch_size, steps_per_epoch=plan.steps_per_epoch,
          data_sharding=data_sharding)

    num_steps = sizer.next_steps(min(boundaries) - step)
    state, sums, bad_step = sizer.run(run_steps, num_steps)
    if first_nonfinite is None and int(bad_step) >= 0:
      first_nonfinite = int(bad_step)
    step += num_steps
    bar.update(step - epoch_start)
    if on_every_steps is not None and every_steps and step % every_steps == 0 and \
        step < epoch_end:
      on_every_steps(state, sums, step)
  bar.close()
  return EpochResult(state, sums, first_nonfinite, complete=True)


def _means(sums) -> dict[str, float]:
  sums = jax.device_get(sums)
  count = float(sums['count'])
  return {'loss': float(sums['loss']) / count, 'accuracy': float(sums['correct']) / count}


def evaluate_split(state, batches: pipeline.EvalBatches, data_sharding=None) -> dict[str, float]:
  return _means(steps.evaluate(state, batches.images, batches.labels, batches.mask,
                               data_sharding=data_sharding))


class Run:
  """One training run: setup, resume, the epoch loop, and the final evaluation."""

  def __init__(self, config, workdir: str):
    check_config(config)
    self.config = config
    self.workdir = workdir
    self.is_writer = jax.process_index() == 0
    self.splits = pipeline.make_splits(config.data)
    log.info('data: %s; train %d, validation %d, test %d', self.splits.source,
             len(self.splits.train), len(self.splits.validation or ()), len(self.splits.test))
    model = create_model(config.model)
    self.summary = summarize(model, config.model.input_shape)
    self.plan = EpochPlan.create(len(self.splits.train), config.train.batch_size,
                                 config.train.steps_per_epoch)
    self.mesh = sharding.make_mesh()
    self.data_sharding = sharding.batch_split(self.mesh) if self.mesh.size > 1 else None
    sharding.check_divisible(self.plan.batch_size, 'train.batch_size', self.mesh)
    sharding.check_divisible(self.plan.last_batch_size, "the epoch's last batch (set "
                             'train.steps_per_epoch to drop it)', self.mesh)
    self.input_pipeline = pipeline.make_input_pipeline(config, self.splits.train.images)
    # The data order's own seed (None: the run's seed, through state.rng).
    self.data_rng = (None if config.data_seed is None else
                     sharding.replicate(jax.random.PRNGKey(config.data_seed), self.mesh))
    self.input_shape = tuple(config.model.input_shape)
    self.bottleneck = transfer.uses_bottleneck(model, config)
    if self.bottleneck:  # Train the head on backbone features computed once.
      self.splits, self.input_shape = transfer.bottleneck_splits(
          model, config, self.splits, self.input_pipeline, workdir)
      self.input_pipeline = pipeline.InputPipeline(mean=(0.0,), std=(1.0,))
    self.phases = freezing.fine_tuning_phases(config)
    self.phase = freezing.phase_at(self.phases, 0)
    self.state = self._new_state(self.phase)
    self.best_monitor = callbacks_lib.ModelCheckpointMonitor(config.checkpoint.monitor,
                                                             config.checkpoint.mode)
    self.checkpointer = (checkpointing.Checkpointer(workdir) if config.checkpoint.enabled
                         else None)
    self.run = RunState()
    self.snapshots = {}  # EarlyStopping name -> (params, batch_stats) of its best epoch.

  def _phase_model_and_tx(self, phase):
    """The model and (freezing-aware) optimizer of a fine-tuning phase."""
    model, tx = freezing.phase_model_and_tx(phase, self.plan.steps_per_epoch)
    if self.bottleneck:  # Only the head trains; its params are the transfer model's 'head'.
      model = transfer.head_model(model)
      tx = optimizers.make_optimizer(
          phase.config.optim, self.plan.steps_per_epoch,
          self.plan.steps_per_epoch * (phase.end_epoch - phase.first_epoch))
    return model, tx

  def _new_state(self, phase):
    """A fresh, replicated state for `phase`, with the pretrained backbone loaded, and the
    phase's callbacks (Keras builds new ones for each fit call)."""
    model, tx = self._phase_model_and_tx(phase)
    state = create_train_state(phase.config, model, tx, self.input_pipeline, self.input_shape)
    state = transfer.load_pretrained(model, self.config, state)
    self._make_callbacks(phase.config)
    return sharding.replicate(state, self.mesh)

  def _enter_phase(self, phase) -> None:
    """Next fine-tuning phase: new freezing and LR, same weights (Keras: recompile, fit again)."""
    model, tx = self._phase_model_and_tx(phase)
    opt_state = jax.jit(tx.init)(self.state.params)
    self.state = self.state.replace(apply_fn=model.apply, tx=tx, opt_state=opt_state)
    self._make_callbacks(phase.config)
    self.phase = phase
    log.info('epoch %d: fine-tuning phase %d of %d', phase.first_epoch + 1,
             self.phases.index(phase) + 1, len(self.phases))

  def _make_callbacks(self, config) -> None:
    self.early_stoppers, self.plateau = callbacks_lib.make_callbacks(config.callbacks)
    self.stopper_names = list(config.callbacks.early_stopping.keys())

  # --- Resume ---------------------------------------------------------------------------------

  def _has_resumable_checkpoint(self) -> bool:
    """Whether the workdir holds a checkpoint; raises if it is a run of another config."""
    if self.checkpointer is None or not self.checkpointer.has_checkpoint():
      return False
    config_path = os.path.join(self.workdir, 'config.json')
    if os.path.exists(config_path):
      with open(config_path) as f:
        checkpointing.check_same_config(json.load(f), self.config.to_dict(), self.workdir)
    return True

  def resume(self) -> bool:
    """Restores the newest readable checkpoint of this workdir, if any; True if it did."""
    if not self._has_resumable_checkpoint():
      return False
    def template(host):  # The optimizer state's structure depends on the phase.
      self.phase = freezing.phase_of_epoch(self.phases, self.config, freezing.saved_epoch(host))
      self.state = self._new_state(self.phase)
      return self.state

    restored = self.checkpointer.restore_latest(
        template, (self.state.params, self.state.batch_stats))
    if restored is None:
      return False
    self.state, host, snapshots = restored
    self.run = RunState(**host)
    self.snapshots = {name: tuple(value) for name, value in snapshots.items()}
    self._load_callback_states(self.run.callbacks)
    log.info('resumed %s from step %d (epoch %d)', self.workdir, int(self.state.step),
             self.run.epoch)
    return True

  def _callback_states(self) -> dict:
    return {'early_stopping': {n: cb.state_dict() for n, cb in
                               zip(self.stopper_names, self.early_stoppers)},
            'reduce_lr_on_plateau': self.plateau.state_dict() if self.plateau else None,
            'model_checkpoint': self.best_monitor.state_dict()}

  def _load_callback_states(self, states: dict) -> None:
    for name, callback in zip(self.stopper_names, self.early_stoppers):
      callback.load_state_dict(states['early_stopping'][name])
    if self.plateau:
      self.plateau.load_state_dict(states['reduce_lr_on_plateau'])
    self.best_monitor.load_state_dict(states['model_checkpoint'])

  def _save_latest(self, partial_sums=None) -> None:
    if self.checkpointer is None:
      return
    self.run.callbacks = self._callback_states()
    self.run.snapshot_names = sorted(self.snapshots)
    self.run.partial_sums = (None if partial_sums is None else
                             {k: float(v) for k, v in jax.device_get(partial_sums).items()})
    self.checkpointer.save_latest(int(self.state.step), self.state, self.run.to_json(),
                                  self.snapshots)

  # --- Training -------------------------------------------------------------------------------

  @property
  def done(self) -> bool:
    return self.run.stopped_by is not None or self.run.epoch >= self.config.train.epochs

  def _steps_done(self) -> int:
    return int(self.state.step)

  def _train_epoch(self, epoch: int, start: float, train_data, sums, stop_request,
                   sizer: dispatch.DispatchSizer, **run_epoch_args) -> EpochResult | None:
    """The epoch's train steps (from where a checkpoint left it); None when max_steps ended the
    run; on a stop request, saves a checkpoint and raises Interrupted."""
    config = self.config
    bar = progress.ProgressBar(self.plan.steps_per_epoch, enabled=config.log.verbosity == 1)

    def periodic_save(state, sums, step):
      del step  # run_epoch calls this at each multiple of checkpoint.every_steps.
      self.state = state
      self._save_latest(partial_sums=sums)

    result = run_epoch(self.state, train_data, self.plan, bar, max_steps=config.train.max_steps,
                       sums=sums, stop_request=stop_request,
                       every_steps=config.checkpoint.every_steps,
                       on_every_steps=periodic_save if self.checkpointer else None,
                       sizer=sizer, **run_epoch_args)
    self.state = result.state
    if result.complete:
      self.run.partial_sums = None
      return result
    self.run.train_seconds += time.perf_counter() - start
    if stop_request is not None and stop_request.requested:
      self._save_latest(partial_sums=result.sums)
      raise interrupts.Interrupted(
          f'{stop_request.signal_name}: stopped at step {self._steps_done()} (epoch '
          f'{epoch + 1}/{config.train.epochs}); checkpoint saved in {self.workdir}. '
          'Run the same command again to resume.')
    return None

  def fit(self, stop_request=None) -> None:
    config = self.config
    train_data = sharding.replicate((self.splits.train.images, self.splits.train.labels),
                                    self.mesh)
    val_batches = self.eval_batches(self.splits.validation) if self.splits.validation else None
    writer = outputs.make_writer(config.log.writer, os.path.join(self.workdir, 'tensorboard'),
                                 self.is_writer)
    sizer = dispatch.DispatchSizer(config.train.steps_per_dispatch)
    try:
      while not self.done:
        epoch = self.run.epoch
        phase = freezing.phase_at(self.phases, epoch)
        if phase is not self.phase:
          self._enter_phase(phase)
        start = time.perf_counter()
        partial = self.run.partial_sums
        sums = None if partial is None else {k: jnp.float32(v) for k, v in partial.items()}
        result = self._train_epoch(epoch, start, train_data, sums, stop_request, sizer,
                                   data_sharding=self.data_sharding, data_rng=self.data_rng)
        if result is None:
          break  # max_steps reached.
        logs = _means(result.sums)
        # What Keras logs as learning_rate: optimizer.learning_rate at the end of the epoch.
        epoch_lr = optimizers.learning_rate(self.state.opt_state)
        if val_batches is not None:
          val = evaluate_split(self.state, val_batches, self.data_sharding)
          logs.update({f'val_{k}': v for k, v in val.items()})
        logs['learning_rate'] = epoch_lr
        if not all(np.isfinite(v) for v in logs.values()):
          self._diverged(logs, epoch, result.first_nonfinite_step)
        seconds = time.perf_counter() - start
        self.run.train_seconds += seconds
        self.run.history.append({'epoch': epoch + 1, **logs, 'time': round(seconds, 3)})
        self.run.epoch = epoch + 1
        self._end_of_epoch_callbacks(epoch, logs, epoch_lr)
        if self.is_writer:
          outputs.write_history(self.workdir, self.run.history)
          writer.write_scalars(epoch + 1, logs)
        if config.log.verbosity:
          print(progress.format_epoch_line(epoch + 1, config.train.epochs, logs, seconds),
                flush=True)
          if self.run.stopped_by:
            print(f'Epoch {epoch + 1}: early stopping ({self.run.stopped_by})', flush=True)
        self._save_latest()
    finally:
      writer.close()

  def _end_of_epoch_callbacks(self, epoch: int, logs: dict, epoch_lr: float) -> None:
    """Keras's on_epoch_end, in the reports' callback order: checkpoint, plateau, stoppers."""
    if self.checkpointer and self.best_monitor.monitor in logs:
      if self.best_monitor.on_epoch_end(epoch, logs):
        self.checkpointer.save_best(int(self.state.step), self.state)
    if self.plateau is not None:
      new_lr = self.plateau.on_epoch_end(epoch, logs, epoch_lr)
      if new_lr != epoch_lr:
        self.state = self.state.replace(opt_state=optimizers.set_learning_rate(
            self.state.opt_state, new_lr, self.config.optim, int(self.state.step)))
        log.info('epoch %d: ReduceLROnPlateau reducing learning rate to %g', epoch + 1, new_lr)
    for name, stopper in zip(self.stopper_names, self.early_stoppers):
      stopper.on_epoch_end(epoch, logs)
      if stopper.snapshot_weights:  # Keras's best_weights = model.get_weights().
        self.snapshots[name] = jax.tree.map(jnp.copy, (self.state.params,
                                                       self.state.batch_stats))
      if stopper.stop_training and self.run.stopped_by is None:
        self.run.stopped_by = name

  def _diverged(self, logs, epoch, bad_step):
    kept = (f'the last good checkpoint (step {self.checkpointer.latest.latest_step()}) is kept '
            f'in {self.checkpointer.directory}' if self.checkpointer and
            self.checkpointer.has_checkpoint() else 'no checkpoint was written yet')
    raise FloatingPointError(
        f'training diverged: non-finite metrics at epoch {epoch + 1} '
        f'({ {k: v for k, v in logs.items() if not np.isfinite(v)} }), '
        + (f'first non-finite loss at step {bad_step}' if bad_step is not None else
           'every training loss finite') + f'; {kept}. Lower optim.learning_rate or check data.normalization.')

  # --- Final evaluation -----------------------------------------------------------------------

  def restore_best_weights(self) -> None:
    """Keras restores best weights in on_train_end, whether or not that callback stopped the
    run; with several, the last one restoring wins."""
    index = callbacks_lib.best_weights_index(self.early_stoppers)
    if index is None:
      return
    name = self.stopper_names[index]
    params, batch_stats = self.snapshots[name]
    self.state = self.state.replace(params=params, batch_stats=batch_stats)
    log.info('restoring the weights of the best epoch (%d) of early_stopping.%s',
             self.early_stoppers[index].best_epoch + 1, name)

  def eval_batches(self, split) -> pipeline.EvalBatches:
    return pipeline.make_eval_batches(split, self.config.train.eval_batch_size,
                                      put=lambda a: sharding.replicate(a, self.mesh),
                                      multiple_of=self.mesh.size)

  def evaluate_test(self) -> dict:
    test_batches = self.eval_batches(self.splits.test)
    test = evaluate_split(self.state, test_batches, self.data_sharding)
    results = self._results(test)
    # Predictions are what reports need for confusion matrices and grids (all processes take
    # part in gathering them; process 0 writes).
    probabilities = sharding.to_host(
        steps.predict_batches(self.state, test_batches.images, self.data_sharding))
    if self.is_writer:
      outputs.write_predictions(self.workdir, probabilities.reshape(-1, probabilities.shape[-1]),
                                self.splits.test.labels, self.splits.class_names)
      outputs.write_json(os.path.join(self.workdir, 'results.json'), results)
    if self.config.log.verbosity:
      print(f"> {100 * test['accuracy']:.3f}  (test accuracy, {len(self.splits.test)} images)",
            flush=True)
    return results

  def _results(self, test, run: RunState | None = None, config=None, steps_run=None) -> dict:
    """results.json; `run`, `config` and `steps_run` are one seed's in a run of several."""
    run, config = run or self.run, config or self.config
    history = run.history
    monitor = 'val_accuracy' if history and 'val_accuracy' in history[0] else 'accuracy'
    best = max(history, key=lambda r: r[monitor]) if history else None
    return {
        'config': config.name,
        'test_accuracy': test['accuracy'],
        'test_loss': test['loss'],
        'epochs_run': len(history),
        'steps_run': int(self.state.step) if steps_run is None else steps_run,
        'best_epoch': best['epoch'] if best else None,
        f'best_{monitor}': best[monitor] if best else None,
        'stopped_by': run.stopped_by,
        'train_seconds': round(run.train_seconds, 3),
        'params': self.summary.total,
        'trainable_params': self.summary.trainable,
        'non_trainable_params': self.summary.non_trainable,
        'reported_test_accuracy': config.reported_test_accuracy,
        # What inference needs to feed raw images like training did: (x - mean) / std.
        'normalization': {'mean': list(self.state.input_pipeline.mean),
                          'std': list(self.state.input_pipeline.std)},
        'data_source': self.splits.source,
        'num_train': len(self.splits.train),
        'num_validation': len(self.splits.validation or ()),
        'num_test': len(self.splits.test),
        'device': f'{jax.devices()[0].platform} x{jax.device_count()}',
        'jax_version': jax.__version__,
    }

  def write_config(self) -> None:
    if self.is_writer:
      outputs.atomic_write(os.path.join(self.workdir, 'config.json'),
                           self.config.to_json_best_effort(indent=2))

  def close(self) -> None:
    if self.checkpointer is not None:
      self.checkpointer.close()


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` (resuming from `workdir` if it holds a checkpoint of the same config) and
  evaluates on the test split; writes the run files into `workdir` and returns results.json.
  With config.num_seeds > 1, trains the seeds together (see seeds.py)."""
  run_class = Run
  if config.num_seeds > 1:
    from cifar_jax.train import seeds  # pylint: disable=g-import-not-at-top  (seeds imports loop)
    run_class = seeds.SeedsRun
  os.makedirs(workdir, exist_ok=True)
  run = run_class(config, workdir)
  try:
    run.resume()
    run.write_config()
    with interrupts.stop_on_signals() as stop_request:
      run.fit(stop_request)
    run.restore_best_weights()
    return run.evaluate_test()
  finally:
    run.close()


def evaluate_checkpoint(config, workdir: str, which: str = 'best') -> dict:
  """Loads the 'best' or 'latest' checkpoint of `workdir` and evaluates validation and test."""
  if which not in ('best', 'latest'):
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
  if config.num_seeds > 1:
    raise ConfigError(f'num_seeds={config.num_seeds}: evaluate one seed at a time, with the '
                      f'config.json of {os.path.join(workdir, "seed_<i>")} and that folder')
  run = Run(config, workdir)
  try:
    if run.checkpointer is None or not run.checkpointer.has_checkpoint():
      raise checkpointing.CheckpointError(f'no checkpoint in {workdir}: train it first.')
    if which == 'best':
      run.state = run.checkpointer.restore_best(run.state)
    else:
      run.resume()
    metrics = {'checkpoint': which, 'step': int(run.state.step)}
    if run.splits.validation:
      val = evaluate_split(run.state, run.eval_batches(run.splits.validation), run.data_sharding)
      metrics.update({f'val_{k}': v for k, v in val.items()})
    test = evaluate_split(run.state, run.eval_batches(run.splits.test), run.data_sharding)
    metrics.update({f'test_{k}': v for k, v in test.items()})
    if run.is_writer:
      outputs.write_json(os.path.join(workdir, f'evaluation_{which}.json'), metrics)
    print(json.dumps(metrics, indent=2))
    return metrics
  finally:
    run.close()
