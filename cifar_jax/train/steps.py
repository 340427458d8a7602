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

@functools.partial(jax.jit, static_argnames=('num_examples', 'steps_per_epoch'))
def epoch_order(state: TrainState, num_examples: int, steps_per_epoch) -> jax.Array:
  """The shuffled example order of the epoch that `state.step` is in (a pure function of the
  seed and the epoch, so a resumed run sees the same order)."""
  epoch = state.step // steps_per_epoch
  key = jax.random.fold_in(jax.random.fold_in(state.rng, DATA_STREAM), epoch)
  return jax.random.permutation(key, num_examples)


def _split_batch(tree, data_sharding):
  """Constrains a batch to be split over the devices (a no-op on one device)."""
  if data_sharding is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, data_sharding)


@functools.partial(jax.jit, donate_argnums=(0,),
                   static_argnames=('batch_size', 'full_batch_size', 'steps_per_epoch',
                                    'data_sharding'))
def train_step_on_device(state, images, labels, order, *, batch_size, full_batch_size,
                         steps_per_epoch, data_sharding=None):
  """Gathers this step's batch from the device-resident split, then runs `train_step`.

  The position in the epoch comes from `state.step`, so nothing is sent from the host per step.
  `batch_size` differs from `full_batch_size` only for the epoch's smaller last batch. With a
  `data_sharding`, each device gathers and trains on its slice of the global batch.
  """
  start = (state.step % steps_per_epoch) * full_batch_size
  index = jax.lax.dynamic_slice_in_dim(order, start, batch_size)
  batch = _split_batch({'image': images[index], 'label': labels[index]}, data_sharding)
  return train_step(state, batch)


@functools.partial(jax.jit, static_argnames=('data_sharding',))
def evaluate(state: TrainState, images, labels, mask, data_sharding=None) -> dict:
  """Metric sums over a whole split given as [num_batches, batch, ...] arrays (one dispatch)."""

  def body(totals, batch):
    batch = _split_batch(dict(zip(('image', 'label', 'mask'), batch)), data_sharding)
    return jax.tree.map(jnp.add, totals, eval_step(state, batch)), None

  zeros = {'loss': jnp.zeros(()), 'correct': jnp.zeros(()), 'count': jnp.zeros(())}
  totals, _ = jax.lax.scan(body, zeros, (images, labels, mask))
  return totals


@functools.partial(jax.jit, static_argnames=('data_sharding',))
def predict_batches(state: TrainState, images, data_sharding=None) -> jax.Array:
  """Class probabilities for [num_batches, batch, ...] images, one batch at a time."""
  return jax.lax.map(lambda batch: predict_step(state, _split_batch(batch, data_sharding)),
                     images)
