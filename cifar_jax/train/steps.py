"""Pure train and eval steps, plus their on-device-data wrappers used by the training loop.

`train_step(state, batch)` and `eval_step(state, batch)` take a batch dict with 'image' (uint8 or
float [B, H, W, C], raw pixel values) and 'label' (int [B]); `eval_step` also reads an optional
0/1 'mask' [B]. Metrics come back as sums ('loss', 'correct', 'count') so that means over an epoch
weight every example equally, as Keras's running means do.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from cifar_jax.data import research_augment
from cifar_jax.train.state import DATA_STREAM, TRAIN_STREAM, TrainState


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy on integer labels (Keras sparse_categorical_crossentropy
  of a softmax output); label smoothing as Keras CategoricalCrossentropy applies it."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def regularization_loss(mutated_variables) -> jax.Array:
  """Sum of the penalties the model sowed into 'losses' (Keras's `sum(model.losses)`)."""
  return sum(jax.tree.leaves(mutated_variables.get('losses', {})), jnp.zeros((), jnp.float32))


def _sums(per_example_loss, logits, labels, mask):
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return {'loss': jnp.sum(per_example_loss * mask), 'correct': jnp.sum(correct * mask),
          'count': jnp.sum(mask)}


def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
  """One optimisation step; returns the new state and the batch's metric sums."""
  step_key = jax.random.fold_in(jax.random.fold_in(state.rng, TRAIN_STREAM), state.step)
  augment_key, dropout_key = jax.random.split(step_key)
  images = state.input_pipeline(augment_key, batch['image'], train=True)
  labels = batch['label']

  def loss_fn(params):
    logits, mutated = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        rngs={'dropout': dropout_key}, mutable=['batch_stats', 'losses'])
    data_loss = cross_entropy(logits, labels, state.label_smoothing)
    # Keras's training loss includes the regularisation penalty.
    loss = jnp.mean(data_loss) + regularization_loss(mutated)
    return loss, (logits, mutated.get('batch_stats', state.batch_stats))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  ones = jnp.ones(labels.shape, jnp.float32)
  return state, _sums(jnp.broadcast_to(loss, labels.shape), logits, labels, ones)


def _inference_logits(state: TrainState, images, mutable=False):
  """Logits in inference mode, averaged over the test-time augmentation views if configured."""
  x = state.input_pipeline(None, images, train=False)
  apply = lambda v: state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, v,
                                   train=False, mutable=mutable)
  return research_augment.tta_logits(apply, x, state.tta, has_aux=bool(mutable))


def eval_step(state: TrainState, batch) -> dict:
  """Metric sums on one batch in inference mode; padded examples (mask 0) count for nothing."""
  labels = batch['label']
  logits, mutated = _inference_logits(state, batch['image'], mutable=['losses'])
  # Keras's val_loss includes the regularisation penalty too.
  loss = cross_entropy(logits, labels, state.label_smoothing) + regularization_loss(mutated)
  mask = batch.get('mask', jnp.ones(labels.shape, jnp.float32))
  return _sums(loss, logits, labels, mask)


def predict_step(state: TrainState, images) -> jax.Array:
  """Class probabilities for a batch of raw images."""
  return jax.nn.softmax(_inference_logits(state, images))


# --- On-device data: the loop's jitted entry points. ---------------------------------------

def order_of_epoch(rng, step, num_examples: int, steps_per_epoch: int) -> jax.Array:
  """The shuffled example order of the epoch that `step` is in, from the data seed's key."""
  key = jax.random.fold_in(jax.random.fold_in(rng, DATA_STREAM), step // steps_per_epoch)
  return jax.random.permutation(key, num_examples)


@functools.partial(jax.jit, static_argnames=('num_examples', 'steps_per_epoch'))
def epoch_order(state: TrainState, num_examples: int, steps_per_epoch, data_rng=None
                ) -> jax.Array:
  """The shuffled example order of the epoch that `state.step` is in (a pure function of the
  seed and the epoch, so a resumed run sees the same order). `data_rng`: the key of
  config.data_seed, when the data order has a seed of its own (default: the run's `state.rng`)."""
  return order_of_epoch(state.rng if data_rng is None else data_rng, state.step, num_examples,
                        steps_per_epoch)


def _split_batch(tree, data_sharding):
  """Constrains a batch to be split over the devices (a no-op on one device)."""
  if data_sharding is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, data_sharding)


def epoch_batch(step, images, labels, order, *, batch_size, full_batch_size, steps_per_epoch,
                data_sharding=None) -> dict:
  """The batch of global step `step` (a state's step: the position in its epoch), gathered
  from the device-resident split in the epoch's `order`, so nothing is sent from the host."""
  start = (step % steps_per_epoch) * full_batch_size
  index = jax.lax.dynamic_slice_in_dim(order, start, batch_size)
  return _split_batch({'image': images[index], 'label': labels[index]}, data_sharding)


_EPOCH_STATICS = ('batch_size', 'full_batch_size', 'steps_per_epoch', 'data_sharding')


@jax.jit  # Made on the device: nothing crosses from the host.
def zero_sums(step) -> dict:
  """Zero metric sums shaped and placed like `step` (a state's step: [] or [seeds]). They are
  computed from it to carry its sharding, as the train step's outputs do: sums placed otherwise
  would compile the step a second time for its first call."""
  zero = (step * 0).astype(jnp.float32)
  return {'loss': zero, 'correct': zero, 'count': zero}


def accumulate_on_batch(state, batch, sums, first_nonfinite):
  """`train_step` on `batch`, adding its metric sums to `sums` and noting in `first_nonfinite`
  (-1 until then) the first step whose loss was not finite (1-based global count, as
  `state.step` after it)."""
  state, batch_sums = train_step(state, batch)
  bad = (first_nonfinite < 0) & ~jnp.isfinite(batch_sums['loss'])
  first_nonfinite = jnp.where(bad, state.step.astype(jnp.int32), first_nonfinite)
  return state, jax.tree.map(jnp.add, sums, batch_sums), first_nonfinite


def accumulate_step(state, images, labels, order, sums, first_nonfinite, *, batch_size,
                    full_batch_size, steps_per_epoch, data_sharding=None):
  """One train step on device-resident data (see `train_steps_on_device`): `epoch_batch` of
  the state's step, then `accumulate_on_batch`."""
  batch = epoch_batch(state.step, images, labels, order, batch_size=batch_size,
                      full_batch_size=full_batch_size, steps_per_epoch=steps_per_epoch,
                      data_sharding=data_sharding)
  return accumulate_on_batch(state, batch, sums, first_nonfinite)


accumulate_train_step = jax.jit(accumulate_step, donate_argnums=(0, 4),
                                static_argnames=_EPOCH_STATICS)


@jax.jit  # Made on the device, placed like `step` (see zero_sums).
def no_nonfinite_step(step) -> jax.Array:
  return (step * 0 - 1).astype(jnp.int32)


def train_steps_on_device(state, images, labels, order, sums, num_steps: int, *, batch_size,
                          full_batch_size, steps_per_epoch, data_sharding=None):
  """`num_steps` train steps on device-resident data, dispatched back to back: nothing waits
  for the device and nothing is sent from the host (the step's position in the epoch comes
  from `state.step`).

  images/labels: the whole training split on the device; order: `epoch_order`'s permutation.
  `batch_size` differs from `full_batch_size` only for the epoch's smaller last batch. With a
  `data_sharding`, each device gathers and trains on its slice of the global batch. Returns the
  new state, `sums` plus these steps' metric sums, and the first non-finite step or -1.

  Each step is its own dispatch. The same steps as one device-side `lax.fori_loop` (once 8-20x
  slower: XLA:CPU left gradient convolutions in a slow layout inside loops, fixed by
  cifar_jax.models.conv) measured 36 against 44 ms per step for p2cnn/exp1 (batch 64), the same
  for exp0 and 20% slower for redes/m1 (344 against 283 ms): no gain to build on yet.
  """
  first_nonfinite = no_nonfinite_step(state.step)
  for _ in range(num_steps):
    state, sums, first_nonfinite = accumulate_train_step(
        state, images, labels, order, sums, first_nonfinite, batch_size=batch_size,
        full_batch_size=full_batch_size, steps_per_epoch=steps_per_epoch,
        data_sharding=data_sharding)
  return state, sums, first_nonfinite


@functools.partial(jax.jit, static_argnames=('data_sharding',))
def evaluate(state: TrainState, images, labels, mask, data_sharding=None) -> dict:
  """Metric sums over a whole split given as [num_batches, batch, ...] arrays (one dispatch)."""

  def body(totals, batch):
    batch = _split_batch(dict(zip(('image', 'label', 'mask'), batch)), data_sharding)
    return jax.tree.map(jnp.add, totals, eval_step(state, batch)), None

  totals, _ = jax.lax.scan(body, zero_sums(state.step), (images, labels, mask))
  return totals


@functools.partial(jax.jit, static_argnames=('data_sharding',))
def predict_batches(state: TrainState, images, data_sharding=None) -> jax.Array:
  """Class probabilities for [num_batches, batch, ...] images, one batch at a time."""
  return jax.lax.map(lambda batch: predict_step(state, _split_batch(batch, data_sharding)),
                     images)
