"""`train_and_evaluate(config, workdir)`: the epoch loop, like Keras's `model.fit` + `evaluate`.

The steps run on the device; everything that decides *when* (callbacks, logging, checkpoints,
stopping) runs here on the host between steps or epochs, in one straight loop. A run checkpoints
itself and, started again with the same workdir, resumes exactly where its last checkpoint left
it.

One `Run` trains one replica or config.num_seeds of them: the host side is a list of
per-replica objects (replicas.py: history, callbacks, best checkpoint, writer) and the device
side a program picked by run type (programs.py: single, or stacked replicas vmapped or unrolled).
A single run is the one-replica case and writes exactly what it always has.

The module is past the usual ~400 lines on purpose: `Run` is the straight loop of a run, setup
to final evaluation, read top to bottom like flax's train_and_evaluate; its pieces with a life
of their own already live elsewhere (setup.py, replicas.py, programs.py, checkpointing.py).
"""

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax import paths
from cifar_jax.data import pipeline
from cifar_jax.train import checkpointing
from cifar_jax.train import dispatch
from cifar_jax.train import fast_optim
from cifar_jax.train import freezing
from cifar_jax.train import host_agreement
from cifar_jax.train import interrupts
from cifar_jax.train import optimizers
from cifar_jax.train import outputs
from cifar_jax.train import programs
from cifar_jax.train import progress
from cifar_jax.train import replicas as replicas_lib
from cifar_jax.train import seeds
from cifar_jax.train import sharding
from cifar_jax.train import steps
from cifar_jax.train.config_checks import ConfigError
from cifar_jax.train.setup import EpochPlan  # pylint: disable=unused-import  (predict.py's name)
from cifar_jax.train.setup import RunSetup

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EpochResult:
  state: Any
  sums: Any  # Metric sums over the epoch's steps so far (device arrays).
  first_nonfinite_step: int | None  # The first step whose loss was NaN/inf, if any.
  step: int  # The (training replicas') step reached.
  complete: bool  # The epoch's last step ran.
  stop_requested: bool = False
  stop_reason: str = ''  # host_agreement.Decision.stop_reason(): the same on every process.


def run_epoch(program, state, data: programs.EpochData, *, sums=None, until: int = 0,
              stop_request=None, sizer: dispatch.DispatchSizer | None = None,
              bar: progress.ProgressBar | None = None) -> EpochResult:
  """Train steps on device-resident data from the state's step until the epoch ends, step
  `until` (if set: max_steps, the next mid-epoch checkpoint) or a stop request.

  The steps are dispatched in chunks without waiting for the device (`sizer` picks how many
  steps a chunk has; none of the results depend on it); before each chunk the host checks for
  a stop request, after it it updates the progress bar. `sums` continues the epoch's sums.
  On several processes both choices are agreed before each chunk (host_agreement): all stop
  after the same step if any was asked to, and all run process 0's chunk length.
  """
  plan = data.plan
  sizer = sizer or dispatch.DispatchSizer()
  sums = steps.zero_sums(state.step) if sums is None else sums
  # Then tracked here: reading state.step would wait for the device.
  step = max(program.steps(state))
  epoch_start = step - step % plan.steps_per_epoch
  epoch_end = epoch_start + plan.steps_per_epoch
  until = min(until, epoch_end) if until else epoch_end
  # The smaller last batch is its own dispatch (another batch shape, so another program).
  full_batches_end = epoch_end - (plan.last_batch_size != plan.batch_size)
  first_nonfinite = None
  while step < until:
    boundary = full_batches_end if step < full_batches_end else epoch_end
    batch_size = plan.batch_size if step < full_batches_end else plan.last_batch_size
    decision = host_agreement.agree(num_steps=sizer.next_steps(min(boundary, until) - step),
                                    stop_signal=interrupts.requested_signal(stop_request))
    if decision.stop:
      return EpochResult(state, sums, first_nonfinite, step, False, stop_requested=True,
                         stop_reason=decision.stop_reason())

    def run_steps(num_steps, state=state, sums=sums, batch_size=batch_size):
      return program.train(state, data, sums, num_steps, batch_size)

    num_steps = decision.num_steps
    state, sums, bad_step = sizer.run(run_steps, num_steps)
    if first_nonfinite is None and int(bad_step) >= 0:
      first_nonfinite = int(bad_step)
    step += num_steps
    if bar is not None:
      bar.update(step - epoch_start)
  return EpochResult(state, sums, first_nonfinite, step, complete=step == epoch_end)


def evaluate_split(state, batches: pipeline.EvalBatches, data_sharding=None) -> dict[str, float]:
  """Mean loss and accuracy of one (unstacked) state over a split."""
  return programs.Single(data_sharding=data_sharding).evaluate(state, batches)[0]


class Run:
  """One training run of one replica or several: setup, resume, the epoch loop, and the final
  evaluation."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    self.is_writer = jax.process_index() == 0
    self.setup = RunSetup.create(config, workdir=workdir)
    self.splits, self.plan, self.phases = self.setup.splits, self.setup.plan, self.setup.phases
    log.info('data: %s; train %d, validation %d, test %d', self.splits.source,
             len(self.splits.train), len(self.splits.validation or ()), len(self.splits.test))
    self.mesh = sharding.make_mesh()
    self.data_sharding = sharding.batch_split(self.mesh) if self.mesh.size > 1 else None
    # The epoch's smaller last batch may not divide: programs.Single computes it whole.
    sharding.check_divisible(self.plan.batch_size, 'train.batch_size', self.mesh)
    self.program = programs.for_run(config, self.setup.input_pipeline, self.mesh)
    self.checkpointer = (checkpointing.Checkpointer(workdir) if config.checkpoint.enabled
                         else None)
    self.replicas = replicas_lib.make_replicas(config, workdir, self.checkpointer)
    self.record = replicas_lib.RunState()  # The run's epoch, time and partial sums.
    self.phase = self.phases[0]
    self.state = self._initial_state(self.phase)
    self.snapshots = {}  # EarlyStopping name -> (params, batch_stats) of its best epoch.

  def _initial_state(self, phase):
    """A fresh state of every replica for `phase`, stacked if several, replicated."""
    states = self.setup.train_states(phase, [r.config for r in self.replicas]
                                     if len(self.replicas) > 1 else None)
    return sharding.replicate(self.program.stack(states), self.mesh)

  def _phase_state(self, state, phase):
    """`state` for the next fine-tuning phase: new freezing and LR, same weights (Keras:
    recompile, fit again)."""
    model, tx = self.setup.model_and_tx(phase)
    opt_state = jax.jit(functools.partial(fast_optim.init_state, tx))(state.params,
                                                                    state.batch_stats)
    return state.replace(apply_fn=model.apply, tx=tx, opt_state=opt_state)

  def _phase_of(self, host) -> freezing.Phase:
    """The phase whose optimizer state a checkpoint's state has."""
    return freezing.phase_of_epoch(self.phases, self.config, freezing.saved_epoch(host))

  # --- Resume ---------------------------------------------------------------------------------

  def saved_config(self) -> dict | None:
    """The config.json the run in this workdir was started with, if any."""
    config_path = paths.join(self.workdir, 'config.json')
    return json.loads(paths.read_text(config_path)) if paths.exists(config_path) else None

  def has_checkpoint(self, evaluating: bool = False) -> bool:
    """Whether the workdir holds a checkpoint; raises if it is a run of another config (one
    that differs in more than evaluation settings, if `evaluating`)."""
    if self.checkpointer is None or not self.checkpointer.has_checkpoint():
      return False
    saved = self.saved_config()
    if saved is not None:
      checkpointing.check_same_config(saved, self.config.to_dict(), self.workdir,
                                      evaluating=evaluating)
    return True

  def resume(self, evaluating: bool = False) -> bool:
    """Restores the newest readable checkpoint of this workdir, if any; True if it did.
    `evaluating`: only to evaluate it, so evaluation settings may differ from the run's."""
    if not self.has_checkpoint(evaluating):
      return False

    def template(host):  # The optimizer state's structure depends on the phase.
      phase = self._phase_of(host)
      return self.state if phase is self.phase else self._initial_state(phase)

    restored = self.checkpointer.restore_latest(template,
                                                (self.state.params, self.state.batch_stats))
    if restored is None:
      return False
    self.state, host, snapshots = restored
    self.phase = self._phase_of(host)
    self.record, records = replicas_lib.from_host_state(host, len(self.replicas))
    for replica, record in zip(self.replicas, records):
      replica.record = record
      replica.callbacks = replica.callbacks.for_phase(self.phase.config)
      replica.callbacks.load_state_dict(record.callbacks)
    self.snapshots = {name: tuple(value) for name, value in snapshots.items()}
    log.info('resumed %s from step %d (epoch %d)', self.workdir,
             max(self.program.steps(self.state)), self.record.epoch)
    return True

  def _save_latest(self, partial_sums=None) -> None:
    if self.checkpointer is None:
      return
    self._last_save = (self.record.epoch, time.perf_counter())
    for replica in self.replicas:
      replica.record.callbacks = replica.callbacks.state_dict()
    self.record.snapshot_names = sorted(self.snapshots)
    self.record.partial_sums = (None if partial_sums is None else
                                {k: np.asarray(v).tolist()
                                 for k, v in jax.device_get(partial_sums).items()})
    host = replicas_lib.host_state(self.record, [r.record for r in self.replicas])
    self.checkpointer.save_latest(max(self.program.steps(self.state)), self.state, host,
                                  self.snapshots)

  def _epoch_end_save_due(self) -> bool:
    """Whether the epoch that just ended saves the latest checkpoint: always at the run's end
    (its last epoch, every replica stopped early, or train.max_steps); else once
    checkpoint.every_epochs epochs or checkpoint.every_minutes minutes have passed since the
    last save (0: that trigger off). Minutes are process 0's, agreed by every process, so that
    all save the same epochs."""
    every, max_steps = self.config.checkpoint, self.config.train.max_steps
    if self.checkpointer is None:
      return False
    if self.done or (max_steps and max(self.program.steps(self.state)) >= max_steps):
      return True
    epoch, when = self._last_save
    due = bool(every.every_epochs and self.record.epoch - epoch >= every.every_epochs)
    if every.every_minutes:  # A clock: the processes' ones differ.
      due = host_agreement.agree(
          save=due or time.perf_counter() - when >= 60 * every.every_minutes).save
    return due

  # --- Training -------------------------------------------------------------------------------

  @property
  def done(self) -> bool:
    return (self.record.epoch >= self.config.train.epochs or
            all(r.record.stopped_by is not None for r in self.replicas))

  def _train_epoch(self, epoch: int, start: float, train_data, trained: list[int], stop_request,
                   sizer: dispatch.DispatchSizer) -> EpochResult | None:
    """The epoch's train steps (from where a checkpoint left it), with the mid-epoch
    checkpoints; None when max_steps ended the run (after saving the latest checkpoint); on a
    stop request, saves a checkpoint and raises Interrupted."""
    config = self.config
    sums = steps.zero_sums(self.state.step)
    if self.record.partial_sums is not None:  # Placed like the step's outputs, as zero_sums.
      # A checkpoint from before steps.PROGBAR_SUMS lacks them (0 here, not NaN: the epoch's
      # next checkpoint must stay finite), so that epoch's progbar_* covers only its later steps.
      partial = {k: self.record.partial_sums.get(k, 0.0) for k in sums}
      sums = jax.tree.map(jnp.add, sums, {k: jnp.asarray(v, jnp.float32)
                                          for k, v in partial.items()})
    data = self.program.epoch_data(self.state, *train_data, self.plan, trained)
    bar = progress.ProgressBar(self.plan.steps_per_epoch, enabled=config.log.verbosity == 1)
    every = config.checkpoint.every_steps
    max_steps = config.train.max_steps
    first_nonfinite = None
    step = max(self.program.steps(self.state))
    result = EpochResult(self.state, sums, None, step, complete=False)
    while not (max_steps and step >= max_steps):
      until = min([s for s in (max_steps, (step // every + 1) * every if every else 0) if s],
                  default=0)
      result = run_epoch(self.program, self.state, data, sums=sums, until=until,
                         stop_request=stop_request, sizer=sizer, bar=bar)
      self.state, sums, step = result.state, result.sums, result.step
      if first_nonfinite is None:
        first_nonfinite = result.first_nonfinite_step
      if result.complete or result.stop_requested:
        break
      if every and step % every == 0:
        self._save_latest(partial_sums=sums)
    bar.close()
    if result.complete:
      self.record.partial_sums = None
      return dataclasses.replace(result, first_nonfinite_step=first_nonfinite)
    seconds = time.perf_counter() - start
    for record in [self.record] + [self.replicas[i].record for i in trained]:
      record.train_seconds += seconds
    self._save_latest(partial_sums=sums)  # The run's end (max_steps), or a stop request.
    if result.stop_requested:
      raise interrupts.Interrupted(
          f'{result.stop_reason}: stopped at step {step} (epoch '
          f'{epoch + 1}/{config.train.epochs}); checkpoint saved in {self.workdir}. '
          'Run the same command again to resume.')
    return None

  def fit(self, stop_request=None) -> None:
    config = self.config
    train_data = sharding.replicate((self.splits.train.images, self.splits.train.labels),
                                    self.mesh)
    val_batches = self.eval_batches(self.splits.validation) if self.splits.validation else None
    for replica in self.replicas:
      replica.writer = outputs.make_writer(
          config.log.writer, os.path.join(replica.directory, 'tensorboard'), self.is_writer)
    sizer = dispatch.DispatchSizer(config.train.steps_per_dispatch)
    self._last_save = (self.record.epoch, time.perf_counter())  # What resume restored.
    if config.log.verbosity:  # The arithmetic of the numbers that follow (also in results.json).
      device = jax.devices()[0]
      print(f'{config.name}: {device.platform} x{jax.device_count()} ({device.device_kind}), '
            f'matmul precision {config.model.matmul_precision}, dtype {config.model.dtype}',
            flush=True)
    try:
      while not self.done:
        epoch = self.record.epoch
        phase = freezing.phase_at(self.phases, epoch)
        if phase is not self.phase:
          self.state, self.phase = self._phase_state(self.state, phase), phase
          for replica in self.replicas:
            replica.callbacks = replica.callbacks.for_phase(phase.config)
          log.info('epoch %d: fine-tuning phase %d of %d', phase.first_epoch + 1,
                   self.phases.index(phase) + 1, len(self.phases))
        start = time.perf_counter()
        trained = [i for i, r in enumerate(self.replicas) if r.record.stopped_by is None]
        result = self._train_epoch(epoch, start, train_data, trained, stop_request, sizer)
        if result is None:
          break  # max_steps reached.
        logs = self.program.means(result.sums)
        if val_batches is not None:
          for replica_logs, val in zip(logs, self.program.evaluate(self.state, val_batches)):
            replica_logs.update({f'val_{k}': v for k, v in val.items()})
        seconds = time.perf_counter() - start
        self.record.train_seconds += seconds
        self.record.epoch = epoch + 1
        for i in trained:
          self._end_of_epoch(i, epoch, logs[i], seconds, result.first_nonfinite_step)
        if config.log.verbosity:
          self._print_epoch(epoch, trained, seconds)
        if self._epoch_end_save_due():
          self._save_latest()
    finally:
      for replica in self.replicas:
        if replica.writer is not None:
          replica.writer.close()

  def _end_of_epoch(self, i: int, epoch: int, logs: dict, seconds: float, bad_step) -> None:
    """Replica i's end of epoch: history, Keras's on_epoch_end (replicas.Callbacks decides,
    this applies it to the state), run files."""
    replica, program = self.replicas[i], self.program
    # What Keras logs as learning_rate: optimizer.learning_rate at the end of the epoch.
    epoch_lr = optimizers.learning_rate(program.replica(self.state.opt_state, i))
    logs['learning_rate'] = epoch_lr
    if not all(np.isfinite(v) for v in logs.values()):
      self._diverged(replica, logs, epoch, bad_step)
    record = replica.record
    record.train_seconds += seconds
    record.history.append({'epoch': epoch + 1, **logs, 'time': round(seconds, 3)})
    record.epoch = epoch + 1
    end = replica.callbacks.on_epoch_end(epoch, logs, epoch_lr, self.checkpointer is not None)
    if end.save_best:
      replica.checkpointer.save_best(program.steps(self.state)[i], program.replica(self.state, i))
    if end.learning_rate != epoch_lr:
      opt_state = optimizers.set_learning_rate(program.replica(self.state.opt_state, i),
                                               end.learning_rate, self.config.optim,
                                               program.steps(self.state)[i])
      self.state = self.state.replace(
          opt_state=program.with_replica(self.state.opt_state, i, opt_state))
      log.info('epoch %d: %sReduceLROnPlateau reducing learning rate to %g', epoch + 1,
               f'{replica.name}: ' if replica.name else '', end.learning_rate)
    for name in end.snapshot:  # Keras's best_weights = model.get_weights().
      self.snapshots[name] = program.snapshot(self.snapshots.get(name),
                                              (self.state.params, self.state.batch_stats), i)
    if end.stopped_by is not None and record.stopped_by is None:
      record.stopped_by = end.stopped_by
    if self.is_writer:
      outputs.write_history(replica.directory, record.history)
      replica.writer.write_scalars(epoch + 1, logs)

  def _print_epoch(self, epoch: int, trained: list[int], seconds: float) -> None:
    """Keras's epoch line; for several replicas, the mean over those that trained, and the
    spread. Then who stopped."""
    rows = [{k: v for k, v in self.replicas[i].record.history[-1].items()
             if k not in ('epoch', 'time') and not k.startswith('progbar_')} for i in trained]
    line = progress.format_epoch_line(
        epoch + 1, self.config.train.epochs,
        {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}, seconds)
    if len(self.replicas) > 1:
      key = 'val_accuracy' if 'val_accuracy' in rows[0] else 'accuracy'
      values = [row[key] for row in rows]
      line += (f' - mean of {len(rows)} seeds ({key} min {min(values):.4f}, max '
               f'{max(values):.4f})')
    print(line, flush=True)
    for i in trained:
      replica = self.replicas[i]
      if replica.record.stopped_by:
        who = f'{replica.name} ' if replica.name else ''
        print(f'Epoch {epoch + 1}: {who}early stopping ({replica.record.stopped_by})',
              flush=True)

  def _diverged(self, replica, logs, epoch, bad_step):
    kept = (f'the last good checkpoint (step {self.checkpointer.latest.latest_step()}) is kept '
            f'in {self.checkpointer.directory}' if self.checkpointer and
            self.checkpointer.has_checkpoint() else 'no checkpoint was written yet')
    raise FloatingPointError(
        (f'{replica.name} ({os.path.basename(replica.directory)}): ' if replica.name else '')
        + f'training diverged: non-finite metrics at epoch {epoch + 1} '
        f'({ {k: v for k, v in logs.items() if not np.isfinite(v)} }), '
        + (f'first non-finite loss at step {bad_step}' if bad_step is not None else
           'every training loss finite') + f'; {kept}. Lower optim.learning_rate or check '
        'data.normalization.')

  # --- Final evaluation -----------------------------------------------------------------------

  def restore_best_weights(self) -> None:
    """Keras restores best weights in on_train_end, whether or not that callback stopped the
    run; with several, the last one restoring wins. Per replica."""
    for i, replica in enumerate(self.replicas):
      restore = replica.callbacks.restore_at_train_end()
      if restore is None:
        continue
      name, best_epoch = restore
      params, batch_stats = self.program.replica(self.snapshots[name], i)
      self.state = self.state.replace(
          params=self.program.with_replica(self.state.params, i, params),
          batch_stats=self.program.with_replica(self.state.batch_stats, i, batch_stats))
      log.info('%srestoring the weights of the best epoch (%d) of early_stopping.%s',
               f'{replica.name}: ' if replica.name else '', best_epoch + 1, name)

  def eval_batches(self, split) -> pipeline.EvalBatches:
    return pipeline.make_eval_batches(split, self.config.train.eval_batch_size,
                                      put=lambda a: sharding.replicate(a, self.mesh),
                                      multiple_of=self.mesh.size)

  def evaluate_test(self) -> dict:
    test_batches = self.eval_batches(self.splits.test)
    tests = self.program.evaluate(self.state, test_batches)
    # Predictions are what reports need for confusion matrices and grids (all processes take
    # part in gathering them; process 0 writes).
    probabilities = self.program.predict(self.state, test_batches.images)
    steps_run = self.program.steps(self.state)
    results = [replicas_lib.results(replica, test, n, self.setup)
               for replica, test, n in zip(self.replicas, tests, steps_run)]
    several = len(self.replicas) > 1
    summary = (seeds.summary_results(self.config, [r.config for r in self.replicas], results,
                                     self.record.train_seconds) if several else results[0])
    if self.is_writer:
      for replica, result, p in zip(self.replicas, results, probabilities):
        outputs.write_predictions(replica.directory, p.reshape(-1, p.shape[-1]),
                                  self.splits.test.labels, self.splits.class_names)
        outputs.write_json(os.path.join(replica.directory, 'results.json'), result)
      if several:
        outputs.write_json(os.path.join(self.workdir, 'results.json'), summary)
    if self.config.log.verbosity:
      if several:
        for replica, result in zip(self.replicas, results):
          print(f"  seed {replica.config.seed}: {100 * result['test_accuracy']:.3f}", flush=True)
        print(f"> {100 * summary['test_accuracy']:.3f} ± "
              f"{100 * summary['test_accuracy_std']:.3f}  (test accuracy, mean ± std of "
              f'{len(self.replicas)} seeds, {len(self.splits.test)} images)', flush=True)
      else:
        print(f"> {100 * summary['test_accuracy']:.3f}  (test accuracy, "
              f'{len(self.splits.test)} images)', flush=True)
    return summary

  def write_config(self) -> None:
    if not self.is_writer:
      return
    outputs.atomic_write(os.path.join(self.workdir, 'config.json'),
                         self.config.to_json_best_effort(indent=2))
    if len(self.replicas) > 1:  # Each seed's folder is an ordinary run's.
      for replica in self.replicas:
        paths.makedirs(replica.directory)
        outputs.atomic_write(os.path.join(replica.directory, 'config.json'),
                             replica.config.to_json_best_effort(indent=2))

  def close(self) -> None:
    """Closes every checkpointer (waiting for its saves), each even if another fails."""
    unique = {id(c): c for c in [self.checkpointer] + [r.checkpointer for r in self.replicas]
              if c is not None}
    _close_all(list(unique.values()))


def _close_all(checkpointers) -> None:
  if checkpointers:
    try:
      checkpointers[0].close()
    finally:
      _close_all(checkpointers[1:])


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` (resuming from `workdir` if it holds a checkpoint of the same config) and
  evaluates on the test split; writes the run files into `workdir` and returns results.json.
  With config.num_seeds > 1, trains the seeds together (see seeds.py)."""
  paths.makedirs(workdir)
  run = Run(config, workdir)
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
  """Loads the 'best' or 'latest' checkpoint of `workdir` and evaluates validation and test.

  The config must be the run's, except for evaluation settings (checkpointing.
  EVALUATION_SETTINGS, e.g. `augment.tta`): those it changes are in the metrics under 'changed'
  and in the file name (evaluation_latest_tta-none.json), so the run's own evaluation stays.
  """
  if which not in ('best', 'latest'):
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
  if config.num_seeds > 1:
    raise ConfigError(f'num_seeds={config.num_seeds}: evaluate one seed at a time, with the '
                      f'config.json of {os.path.join(workdir, "seed_<i>")} and that folder')
  run = Run(config, workdir)
  try:
    if not run.has_checkpoint(evaluating=True):
      raise checkpointing.CheckpointError(f'no checkpoint in {workdir}: train it first.')
    saved = run.saved_config()
    changes = checkpointing.evaluation_changes(saved, config.to_dict()) if saved else {}
    if which == 'best':
      state = run.checkpointer.restore_best(run.state)
    else:
      run.resume(evaluating=True)
      state = run.state
    metrics = {'checkpoint': which, 'step': int(state.step)}
    if changes:
      metrics['changed'] = changes
    if run.splits.validation:
      val = evaluate_split(state, run.eval_batches(run.splits.validation), run.data_sharding)
      metrics.update({f'val_{k}': v for k, v in val.items()})
    test = evaluate_split(state, run.eval_batches(run.splits.test), run.data_sharding)
    metrics.update({f'test_{k}': v for k, v in test.items()})
    if run.is_writer:
      suffix = ''.join(f'_{key.rsplit(".", 1)[-1]}-{value}' for key, value in changes.items())
      outputs.write_json(os.path.join(workdir, f'evaluation_{which}{suffix}.json'), metrics)
    print(json.dumps(metrics, indent=2))
    return metrics
  finally:
    run.close()
