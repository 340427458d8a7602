"""Many seeds at once: `--config.num_seeds=N` trains N independent replicas in one program.

Replica i is the run of config.seed + i: its own initialisation, dropout and augmentation
randomness and, with `seeds_share_data_order=False`, its own shuffle order (with True, the
default, every replica sees the batches of `data_seed`, default `seed`, in the same order). The
train state gets a leading seed axis and the jitted device loop, evaluation and prediction run
under `jax.vmap` inside one compiled program each, so N seeds cost one dispatch per chunk of
steps, not N. With a shared order the replicas read one batch, gathered once. On CPU, where
vmap would make feature-grouped convolutions, the programs run the replicas as N unbatched
copies instead (no vmap; see `vmapped`, CIFAR_JAX_SEEDS): XLA:CPU runs those faster.

Each replica is still its own Keras run: its own EarlyStopping (a replica that stops keeps its
state, masked on the device, until all have stopped or the epochs end), ReduceLROnPlateau,
restore_best_weights, best checkpoint and history. The files:

  <workdir>/config.json          the config as given (num_seeds=N)
  <workdir>/results.json         per-seed test accuracies and losses, their mean and sample std
  <workdir>/checkpoints/latest/  the stacked state and every replica's host state (resume)
  <workdir>/seed_<i>/            replica i as an ordinary run: config.json (seed=seed+i,
                                 num_seeds=1, data_seed set to the order it trained on),
                                 history, results.json, predictions.npz, tensorboard/ and its
                                 best checkpoint (`cifar_jax.predict --workdir=.../seed_<i>`)

Run alone with its seed_<i>/config.json, a replica gives the same metrics up to float rounding
(tests/test_seeds.py), and `python -m cifar_jax.report --table WORKDIR/seed_*` pools the
replicas as seeds of one config (mean ± std).

Not supported (refused by check_config, naming the key): fine-tuning phases (model.phases)
and bottleneck training (model.backbone.bottleneck); and more than one device (a ConfigError
at setup): seeds are a single-device speed-up.
"""

import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.train import callbacks as callbacks_lib
from cifar_jax.train import checkpointing
from cifar_jax.train import dispatch
from cifar_jax.train import loop
from cifar_jax.train import optimizers
from cifar_jax.train import outputs
from cifar_jax.train import progress
from cifar_jax.train import sharding
from cifar_jax.train import steps
from cifar_jax.train import transfer
from cifar_jax.train.config_checks import ConfigError
from cifar_jax.train.state import create_train_state

log = logging.getLogger(__name__)


def seed_dir(workdir: str, i: int) -> str:
  return os.path.join(workdir, f'seed_{i}')


def seed_config(config, i: int):
  """Replica i's config: the single run (num_seeds=1) that it trains like."""
  c = config.copy_and_resolve_references()
  c.seed = config.seed + i
  c.num_seeds = 1
  if config.seeds_share_data_order:
    c.data_seed = config.seed if config.data_seed is None else config.data_seed
  else:
    c.data_seed = None if config.data_seed is None else config.data_seed + i
  return c


# --- Trees with a leading seed axis. --------------------------------------------------------

def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i: int):
  """Replica i's slice of a stacked tree."""
  return jax.tree.map(lambda x: x[i], tree)


def put(tree, i: int, part):
  """`tree` with replica i's slice replaced by `part` (unstacked)."""
  return jax.tree.map(lambda x, y: x.at[i].set(y), tree, part)


# --- The vmapped device programs. -----------------------------------------------------------

ENV_VAR = 'CIFAR_JAX_SEEDS'
MODES = ('auto', 'vmap', 'unrolled')


def vmapped(grouped_convolutions: bool = True) -> bool:
  """How the programs run the replicas, by CIFAR_JAX_SEEDS: 'vmap' batches them with jax.vmap
  (each layer one batched op); 'unrolled' puts N unbatched copies of the single-seed
  computation into the one program; 'auto' (the default): 'vmap', except on CPU when the vmap
  would have `grouped_convolutions` (see there), which XLA:CPU runs far slower than N plain
  ones. Measured on a 2-core CPU (benchmarks/seeds.py, 4 seeds against one): p2cnn/exp1 vmap
  4.9x, unrolled 3.7x; redes/m0, whose one convolution reads the shared batch, vmap 1.5x,
  unrolled 4.1x."""
  value = os.environ.get(ENV_VAR, 'auto').lower()
  if value not in MODES:
    raise ValueError(f'{ENV_VAR}={value!r}; known: {list(MODES)}')
  if value == 'auto':
    return jax.default_backend() != 'cpu' or not grouped_convolutions
  return value == 'vmap'


def grouped_convolutions(model_config, shared_input: bool) -> bool:
  """Whether vmapped replicas would convolve a per-replica input with their per-replica kernels
  (jax.vmap makes that one feature-grouped convolution). A convolution that is the model's first
  layer does not when every replica reads the same batch (`shared_input`: a shared order and
  no random augmentation): that is one convolution with N times the filters."""
  if model_config.name != 'layer_stack':
    return True  # A backbone: convolutions all the way down.
  convs = [i for i, layer in enumerate(model_config.layers) if layer['type'] == 'conv2d']
  return bool(convs) and (convs != [0] or not shared_input)


def _over_seeds(fn, in_axes, vmap: bool, *args):
  """jax.vmap(fn, in_axes)(*args), or the same as a Python loop over the replicas (unrolled)."""
  if vmap:
    return jax.vmap(fn, in_axes=in_axes)(*args)
  n = next(jax.tree.leaves(a)[0].shape[0] for a, axis in zip(args, in_axes) if axis == 0)
  return stack([fn(*[a if axis is None else unstack(a, i) for a, axis in zip(args, in_axes)])
                for i in range(n)])


@functools.partial(jax.jit, static_argnames=('num_examples', 'steps_per_epoch', 'shared'))
def epoch_orders(states, data_rngs, num_examples: int, steps_per_epoch: int, shared: bool):
  """The epoch's order: one [num_examples] for all replicas (`shared`, data_rngs one key),
  else [N, num_examples] from each replica's key. The epoch is that of the training replicas
  (the largest step: stopped ones keep theirs)."""
  step = jnp.max(states.step)
  if shared:
    return steps.order_of_epoch(data_rngs, step, num_examples, steps_per_epoch)
  return jax.vmap(lambda key: steps.order_of_epoch(key, step, num_examples, steps_per_epoch))(
      data_rngs)


@functools.partial(jax.jit, donate_argnums=(0, 4),
                   static_argnames=steps._EPOCH_STATICS + ('shared_order', 'vmap'))  # pylint: disable=protected-access
def _accumulate_seeds_step(states, images, labels, orders, sums, first_nonfinite, active, *,
                           shared_order, batch_size, full_batch_size, steps_per_epoch,
                           data_sharding=None, vmap=True):
  """`steps.accumulate_step` for every replica, in one program. Replicas that have stopped
  (`active` False) keep their state, sums and first_nonfinite. With a shared order the batch is
  gathered once, at the training replicas' step (stopped ones lag, and their step is thrown
  away), so every replica's first layer reads the same unbatched input."""
  gather = functools.partial(steps.epoch_batch, images=images, labels=labels,
                             batch_size=batch_size, full_batch_size=full_batch_size,
                             steps_per_epoch=steps_per_epoch, data_sharding=data_sharding)
  if shared_order:
    batches, batch_axis = gather(jnp.max(states.step), order=orders), None
  else:
    batches, batch_axis = jax.vmap(lambda step, order: gather(step, order=order))(
        states.step, orders), 0

  def one(state, batch, sums, first_nonfinite, active):
    new = steps.accumulate_on_batch(state, batch, sums, first_nonfinite)
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new,
                        (state, sums, first_nonfinite))

  return _over_seeds(one, (0, batch_axis, 0, 0, 0), vmap,
                     states, batches, sums, first_nonfinite, active)


@jax.jit
def _first_of_any(first_nonfinite):
  never = jnp.iinfo(jnp.int32).max
  first = jnp.min(jnp.where(first_nonfinite >= 0, first_nonfinite, never))
  return jnp.where(first == never, -1, first)


def train_steps_on_device(states, images, labels, orders, sums, num_steps: int, active, *,
                          shared_order, batch_size, full_batch_size, steps_per_epoch,
                          data_sharding=None, vmap=True):
  """`steps.train_steps_on_device` for every replica (`vmap`: batched with jax.vmap, else
  unrolled; see `vmapped`), each step one program for all replicas. `active` [N] bool:
  replicas that have stopped (False) keep their state and sums. Returns the first non-finite
  step of any training replica, or -1."""
  first_nonfinite = steps.no_nonfinite_step(states.step)
  for _ in range(num_steps):
    states, sums, first_nonfinite = _accumulate_seeds_step(
        states, images, labels, orders, sums, first_nonfinite, active,
        shared_order=shared_order, batch_size=batch_size, full_batch_size=full_batch_size,
        steps_per_epoch=steps_per_epoch, data_sharding=data_sharding, vmap=vmap)
  return states, sums, _first_of_any(first_nonfinite)


@functools.partial(jax.jit, static_argnames=('data_sharding', 'vmap'))
def evaluate(states, images, labels, mask, data_sharding=None, vmap=True) -> dict:
  """`steps.evaluate` of every replica: sums with a leading seed axis."""
  return _over_seeds(
      lambda s: steps.evaluate(s, images, labels, mask, data_sharding=data_sharding), (0,), vmap,
      states)


@functools.partial(jax.jit, static_argnames=('data_sharding', 'vmap'))
def predict_batches(states, images, data_sharding=None, vmap=True):
  """`steps.predict_batches` of every replica: [N, num_batches, batch, classes]."""
  return _over_seeds(lambda s: steps.predict_batches(s, images, data_sharding=data_sharding),
                     (0,), vmap, states)


def seed_means(sums) -> list[dict[str, float]]:
  """Per-replica means of stacked metric sums (the arithmetic of loop._means); NaN for a
  replica that has stopped (its sums stay 0)."""
  sums = jax.device_get(sums)
  means = []
  for i in range(len(sums['count'])):
    count = float(sums['count'][i]) or float('nan')
    means.append({'loss': float(sums['loss'][i]) / count,
                  'accuracy': float(sums['correct'][i]) / count})
  return means


def mean_and_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for one value), as the report pools seeds."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# --- The run. --------------------------------------------------------------------------------

class SeedsRun(loop.Run):
  """A `loop.Run` of config.num_seeds replicas: the state is stacked on a leading seed axis and
  every host-side decision (callbacks, history, checkpoints of the best epoch) is per replica."""

  def __init__(self, config, workdir: str):
    self.num_seeds = config.num_seeds
    self.seed_configs = [seed_config(config, i) for i in range(self.num_seeds)]
    self.seed_dirs = [seed_dir(workdir, i) for i in range(self.num_seeds)]
    super().__init__(config, workdir)
    if self.mesh.size > 1:
      raise ConfigError(
          f'num_seeds={self.num_seeds} trains its replicas on one device, but this run sees '
          f'{self.mesh.size} devices; run with one device (e.g. CUDA_VISIBLE_DEVICES=0) or '
          'num_seeds=1')
    self.shared_order = bool(config.seeds_share_data_order)
    pipe = self.input_pipeline
    shared_input = self.shared_order and pipe.augment is None and pipe.layers is None
    self.vmap = vmapped(grouped_convolutions(config.model, shared_input))
    keys = [jax.random.PRNGKey(c.seed if c.data_seed is None else c.data_seed)
            for c in self.seed_configs]
    self.data_rngs = jax.device_put(keys[0] if self.shared_order else jnp.stack(keys))
    self.runs = [loop.RunState() for _ in range(self.num_seeds)]
    self.best_monitors = [callbacks_lib.ModelCheckpointMonitor(config.checkpoint.monitor,
                                                               config.checkpoint.mode)
                          for _ in range(self.num_seeds)]
    self.seed_checkpointers = []
    if config.checkpoint.enabled:  # Each replica's best epoch, as a single run saves it.
      self.seed_checkpointers = [checkpointing.Checkpointer(d) for d in self.seed_dirs]

  def _new_state(self, phase):
    model, tx = self._phase_model_and_tx(phase)
    states = []
    for c in self.seed_configs:
      state = create_train_state(c, model, tx, self.input_pipeline, self.input_shape)
      states.append(transfer.load_pretrained(model, c, state))
    self._make_callbacks(phase.config)
    return sharding.replicate(stack(states), self.mesh)

  def _make_callbacks(self, config) -> None:
    super()._make_callbacks(config)
    self.seed_callbacks = [callbacks_lib.make_callbacks(config.callbacks)
                           for _ in range(self.num_seeds)]

  @property
  def done(self) -> bool:
    return (self.run.epoch >= self.config.train.epochs or
            all(run.stopped_by is not None for run in self.runs))

  def _steps(self) -> np.ndarray:
    return np.asarray(jax.device_get(self.state.step))

  # --- Resume ---------------------------------------------------------------------------------

  def _seed_callback_states(self, i: int) -> dict:
    stoppers, plateau = self.seed_callbacks[i]
    return {'early_stopping': {n: cb.state_dict() for n, cb in zip(self.stopper_names, stoppers)},
            'reduce_lr_on_plateau': plateau.state_dict() if plateau else None,
            'model_checkpoint': self.best_monitors[i].state_dict()}

  def _load_seed_callback_states(self, i: int, states: dict) -> None:
    stoppers, plateau = self.seed_callbacks[i]
    for name, callback in zip(self.stopper_names, stoppers):
      callback.load_state_dict(states['early_stopping'][name])
    if plateau:
      plateau.load_state_dict(states['reduce_lr_on_plateau'])
    self.best_monitors[i].load_state_dict(states['model_checkpoint'])

  def resume(self) -> bool:
    if not self._has_resumable_checkpoint():
      return False
    restored = self.checkpointer.restore_latest(
        lambda host: self.state, (self.state.params, self.state.batch_stats))
    if restored is None:
      return False
    self.state, host, snapshots = restored
    host = dict(host)
    seed_runs = host.pop('seeds')
    self.run = loop.RunState(**host)
    self.runs = [loop.RunState(**r) for r in seed_runs]
    for i, run in enumerate(self.runs):
      self._load_seed_callback_states(i, run.callbacks)
    self.snapshots = {name: tuple(value) for name, value in snapshots.items()}
    log.info('resumed %s (%d seeds) from step %d (epoch %d)', self.workdir, self.num_seeds,
             int(self._steps().max()), self.run.epoch)
    return True

  def _save_latest(self, partial_sums=None) -> None:
    if self.checkpointer is None:
      return
    for i, run in enumerate(self.runs):
      run.callbacks = self._seed_callback_states(i)
    self.run.snapshot_names = sorted(self.snapshots)
    self.run.partial_sums = (None if partial_sums is None else
                             {k: [float(x) for x in v]
                              for k, v in jax.device_get(partial_sums).items()})
    host = {**self.run.to_json(), 'seeds': [run.to_json() for run in self.runs]}
    self.checkpointer.save_latest(int(self._steps().max()), self.state, host, self.snapshots)

  # --- Training -------------------------------------------------------------------------------

  def _steps_done(self) -> int:
    return int(self._steps().max())

  def fit(self, stop_request=None) -> None:
    config = self.config
    train_data = sharding.replicate((self.splits.train.images, self.splits.train.labels),
                                    self.mesh)
    val_batches = self.eval_batches(self.splits.validation) if self.splits.validation else None
    writers = [outputs.make_writer(config.log.writer, os.path.join(d, 'tensorboard'),
                                   self.is_writer) for d in self.seed_dirs]
    sizer = dispatch.DispatchSizer(config.train.steps_per_dispatch)
    try:
      while not self.done:
        epoch = self.run.epoch
        start = time.perf_counter()
        active = [run.stopped_by is None for run in self.runs]
        partial = self.run.partial_sums
        sums = None if partial is None else {k: jnp.asarray(v, jnp.float32)
                                             for k, v in partial.items()}
        order = epoch_orders(self.state, self.data_rngs, self.plan.num_examples,
                             self.plan.steps_per_epoch, self.shared_order)
        train_fn = functools.partial(train_steps_on_device,
                                     active=jax.device_put(np.asarray(active)),
                                     shared_order=self.shared_order, vmap=self.vmap)
        result = self._train_epoch(epoch, start, train_data, sums, stop_request, sizer,
                                   order=order, train_fn=train_fn)
        if result is None:
          break  # max_steps reached.
        seed_logs = seed_means(result.sums)
        if val_batches is not None:
          val = seed_means(evaluate(self.state, val_batches.images, val_batches.labels,
                                    val_batches.mask, vmap=self.vmap))
          for logs, v in zip(seed_logs, val):
            logs.update({f'val_{k}': value for k, value in v.items()})
        seconds = time.perf_counter() - start
        self.run.train_seconds += seconds
        self.run.epoch = epoch + 1
        trained = [i for i in range(self.num_seeds) if active[i]]
        for i in trained:
          self._end_of_seed_epoch(i, epoch, seed_logs[i], seconds, result.first_nonfinite_step,
                                  writers[i])
        if config.log.verbosity:
          self._print_epoch(epoch, [self.runs[i].history[-1] for i in trained], seconds)
        self._save_latest()
    finally:
      for writer in writers:
        writer.close()

  def _end_of_seed_epoch(self, i, epoch, logs, seconds, bad_step, writer) -> None:
    run = self.runs[i]
    # What Keras logs as learning_rate: optimizer.learning_rate at the end of the epoch.
    epoch_lr = optimizers.learning_rate(unstack(self.state.opt_state, i))
    logs['learning_rate'] = epoch_lr
    if not all(np.isfinite(v) for v in logs.values()):
      try:
        self._diverged(logs, epoch, bad_step)
      except FloatingPointError as e:
        raise FloatingPointError(f'seed {self.seed_configs[i].seed} (seed_{i}): {e}') from None
    run.train_seconds += seconds
    run.history.append({'epoch': epoch + 1, **logs, 'time': round(seconds, 3)})
    run.epoch = epoch + 1
    self._seed_callbacks(i, epoch, logs, epoch_lr)
    if self.is_writer:
      outputs.write_history(self.seed_dirs[i], run.history)
      writer.write_scalars(epoch + 1, logs)
    if self.config.log.verbosity and run.stopped_by:
      print(f'Epoch {epoch + 1}: seed {self.seed_configs[i].seed} early stopping '
            f'({run.stopped_by})', flush=True)

  def _seed_callbacks(self, i: int, epoch: int, logs: dict, epoch_lr: float) -> None:
    """loop.Run._end_of_epoch_callbacks for replica i: checkpoint, plateau, stoppers."""
    stoppers, plateau = self.seed_callbacks[i]
    monitor = self.best_monitors[i]
    if self.seed_checkpointers and monitor.monitor in logs and monitor.on_epoch_end(epoch, logs):
      self.seed_checkpointers[i].save_best(int(self._steps()[i]), unstack(self.state, i))
    if plateau is not None:
      new_lr = plateau.on_epoch_end(epoch, logs, epoch_lr)
      if new_lr != epoch_lr:
        opt_state = optimizers.set_learning_rate(unstack(self.state.opt_state, i), new_lr,
                                                 self.config.optim, int(self._steps()[i]))
        self.state = self.state.replace(opt_state=put(self.state.opt_state, i, opt_state))
        log.info('epoch %d: seed %d: ReduceLROnPlateau reducing learning rate to %g', epoch + 1,
                 self.seed_configs[i].seed, new_lr)
    for name, stopper in zip(self.stopper_names, stoppers):
      stopper.on_epoch_end(epoch, logs)
      if stopper.snapshot_weights:  # Keras's best_weights = model.get_weights(), replica i's.
        weights = (self.state.params, self.state.batch_stats)
        if name not in self.snapshots:
          self.snapshots[name] = jax.tree.map(jnp.copy, weights)
        else:
          self.snapshots[name] = put(self.snapshots[name], i, unstack(weights, i))
      if stopper.stop_training and self.runs[i].stopped_by is None:
        self.runs[i].stopped_by = name

  def _print_epoch(self, epoch: int, rows: list[dict], seconds: float) -> None:
    """The Keras line with the mean over the replicas that trained, and the spread."""
    keys = [k for k in rows[0] if k not in ('epoch', 'time')]
    means = {k: float(np.mean([row[k] for row in rows])) for k in keys}
    line = progress.format_epoch_line(epoch + 1, self.config.train.epochs, means, seconds)
    key = 'val_accuracy' if 'val_accuracy' in means else 'accuracy'
    values = [row[key] for row in rows]
    print(f'{line} - mean of {len(rows)} seeds ({key} min {min(values):.4f}, max '
          f'{max(values):.4f})', flush=True)

  # --- Final evaluation -----------------------------------------------------------------------

  def restore_best_weights(self) -> None:
    """Per replica, as loop.Run.restore_best_weights does for one."""
    for i, (stoppers, _) in enumerate(self.seed_callbacks):
      index = callbacks_lib.best_weights_index(stoppers)
      if index is None:
        continue
      name = self.stopper_names[index]
      params, batch_stats = unstack(self.snapshots[name], i)
      self.state = self.state.replace(params=put(self.state.params, i, params),
                                      batch_stats=put(self.state.batch_stats, i, batch_stats))
      log.info('seed %d: restoring the weights of the best epoch (%d) of early_stopping.%s',
               self.seed_configs[i].seed, stoppers[index].best_epoch + 1, name)

  def evaluate_test(self) -> dict:
    test_batches = self.eval_batches(self.splits.test)
    tests = seed_means(evaluate(self.state, test_batches.images, test_batches.labels,
                                test_batches.mask, vmap=self.vmap))
    probabilities = np.asarray(jax.device_get(predict_batches(self.state, test_batches.images,
                                                              vmap=self.vmap)))
    steps_run = self._steps()
    seed_results = [self._results(test, run, c, int(n)) for test, run, c, n in
                    zip(tests, self.runs, self.seed_configs, steps_run)]
    results = self._summary(seed_results)
    if self.is_writer:
      for i, result in enumerate(seed_results):
        outputs.write_predictions(self.seed_dirs[i],
                                  probabilities[i].reshape(-1, probabilities.shape[-1]),
                                  self.splits.test.labels, self.splits.class_names)
        outputs.write_json(os.path.join(self.seed_dirs[i], 'results.json'), result)
      outputs.write_json(os.path.join(self.workdir, 'results.json'), results)
    if self.config.log.verbosity:
      for c, result in zip(self.seed_configs, seed_results):
        print(f"  seed {c.seed}: {100 * result['test_accuracy']:.3f}", flush=True)
      print(f"> {100 * results['test_accuracy']:.3f} ± {100 * results['test_accuracy_std']:.3f}"
            f'  (test accuracy, mean ± std of {self.num_seeds} seeds, {len(self.splits.test)} '
            'images)', flush=True)
    return results

  def _summary(self, seed_results: list[dict]) -> dict:
    """The top-level results.json: per-seed values, then mean and sample std."""
    accuracy, accuracy_std = mean_and_std([r['test_accuracy'] for r in seed_results])
    loss, loss_std = mean_and_std([r['test_loss'] for r in seed_results])
    first = seed_results[0]
    return {
        'config': self.config.name,
        'num_seeds': self.num_seeds,
        'seeds': [c.seed for c in self.seed_configs],
        'seeds_share_data_order': self.shared_order,
        'seed_dirs': [os.path.basename(d) for d in self.seed_dirs],
        'test_accuracy': accuracy,  # Mean over the seeds.
        'test_accuracy_std': accuracy_std,  # Sample std (ddof=1), as the report pools seeds.
        'test_accuracies': [r['test_accuracy'] for r in seed_results],
        'test_loss': loss,
        'test_loss_std': loss_std,
        'test_losses': [r['test_loss'] for r in seed_results],
        'epochs_run': [r['epochs_run'] for r in seed_results],
        'best_epoch': [r['best_epoch'] for r in seed_results],
        'stopped_by': [r['stopped_by'] for r in seed_results],
        'train_seconds': round(self.run.train_seconds, 3),  # All seeds together.
        **{k: first[k] for k in ('params', 'trainable_params', 'non_trainable_params',
                                 'reported_test_accuracy', 'normalization', 'data_source',
                                 'num_train', 'num_validation', 'num_test', 'device',
                                 'jax_version')},
    }

  def write_config(self) -> None:
    super().write_config()
    if self.is_writer:
      for d, c in zip(self.seed_dirs, self.seed_configs):
        os.makedirs(d, exist_ok=True)
        outputs.atomic_write(os.path.join(d, 'config.json'), c.to_json_best_effort(indent=2))

  def close(self) -> None:
    try:
      super().close()
    finally:
      for checkpointer in self.seed_checkpointers:
        checkpointer.close()
