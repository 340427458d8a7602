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

This module holds what only seeds have: the replicas' configs and folders, the stacked device
programs (programs.Stacked runs them) and the pooled results.json. The loop itself is the one
of every run (loop.Run over replicas.Replica objects; one run is one replica).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.train import steps


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


def mean_and_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for one value), as the report pools seeds."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summary_results(config, seed_configs, seed_results: list[dict], train_seconds: float) -> dict:
  """The top-level results.json of a run of several seeds: per-seed values, then mean and
  sample std."""
  accuracy, accuracy_std = mean_and_std([r['test_accuracy'] for r in seed_results])
  loss, loss_std = mean_and_std([r['test_loss'] for r in seed_results])
  first = seed_results[0]
  return {
      'config': config.name,
      'num_seeds': len(seed_configs),
      'seeds': [c.seed for c in seed_configs],
      'seeds_share_data_order': bool(config.seeds_share_data_order),
      'seed_dirs': [os.path.basename(seed_dir('', i)) for i in range(len(seed_configs))],
      'test_accuracy': accuracy,  # Mean over the seeds.
      'test_accuracy_std': accuracy_std,  # Sample std (ddof=1), as the report pools seeds.
      'test_accuracies': [r['test_accuracy'] for r in seed_results],
      'test_loss': loss,
      'test_loss_std': loss_std,
      'test_losses': [r['test_loss'] for r in seed_results],
      'epochs_run': [r['epochs_run'] for r in seed_results],
      'best_epoch': [r['best_epoch'] for r in seed_results],
      'stopped_by': [r['stopped_by'] for r in seed_results],
      'train_seconds': round(train_seconds, 3),  # All seeds together.
      **{k: first[k] for k in ('params', 'trainable_params', 'non_trainable_params',
                               'reported_test_accuracy', 'normalization', 'data_source',
                               'num_train', 'num_validation', 'num_test', 'device',
                               'device_kind', 'matmul_precision', 'dtype', 'jax_version')},
  }
