"""Pure train and eval steps, plus their on-device-data wrappers used by the training loop.

`train_step(state, batch)` and `eval_step(state, batch)` take a batch dict with 'image' (uint8 or
float [B, H, W, C], raw pixel values) and 'label' (int [B]); `eval_step` also reads an optional
0/1 'mask' [B]. With config.augment.alternating_flip, `train_step` also reads 'index' (the
examples' places in the training split) and 'epoch' (int [B]), as `epoch_batch` gathers them.
Metrics come back as sums ('loss', 'correct', 'count') so that means over an epoch
weight every example equally, as Keras's running means do.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cifar_jax.data import research_augment
from cifar_jax.train import fast_optim
from cifar_jax.train.state import DATA_STREAM, FLIP_STREAM, TRAIN_STREAM, TrainState


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


def _in_state_arithmetic(step_fn):
  """Traces `step_fn(state, ...)` under the state's arithmetic (matmul precision, conv_grad),
  so every matmul and convolution of the step (their gradients included: the transposes keep
  the precision, the convolutions' VJP the conv_grad) has it."""

  @functools.wraps(step_fn)
  def step_in_arithmetic(state: TrainState, *args):
    with state.arithmetic():
      return step_fn(state, *args)

  return step_in_arithmetic


@_in_state_arithmetic
def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
  """One optimisation step; returns the new state and the batch's metric sums."""
  step_key = jax.random.fold_in(jax.random.fold_in(state.rng, TRAIN_STREAM), state.step)
  augment_key, dropout_key = jax.random.split(step_key)
  images = batch['image']
  if state.input_pipeline.alternating_flip:  # A per-run draw, so a key of the run's own.
    images = research_augment.alternating_flip(
        images, jax.random.fold_in(state.rng, FLIP_STREAM), batch['index'], batch['epoch'])
  images = state.input_pipeline(augment_key, images, train=True)
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
  # airbench's lookahead averages BatchNorm's statistics too (nothing to do without one).
  opt_state, batch_stats = fast_optim.average_stats(state.opt_state, state.batch_stats)
  state = state.replace(opt_state=opt_state, batch_stats=batch_stats)
  ones = jnp.ones(labels.shape, jnp.float32)
  return state, _sums(jnp.broadcast_to(loss, labels.shape), logits, labels, ones)


def _inference_logits(state: TrainState, images, mutable=False):
  """Logits in inference mode, averaged over the test-time augmentation views if configured."""
  x = state.input_pipeline(None, images, train=False)
  apply = lambda v: state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, v,
                                   train=False, mutable=mutable)
  return research_augment.tta_logits(apply, x, state.tta, has_aux=bool(mutable))


@_in_state_arithmetic
def eval_step(state: TrainState, batch) -> dict:
  """Metric sums on one batch in inference mode; padded examples (mask 0) count for nothing."""
  labels = batch['label']
  logits, mutated = _inference_logits(state, batch['image'], mutable=['losses'])
  # Keras's val_loss includes the regularisation penalty too.
  loss = cross_entropy(logits, labels, state.label_smoothing) + regularization_loss(mutated)
  mask = batch.get('mask', jnp.ones(labels.shape, jnp.float32))
  return _sums(loss, logits, labels, mask)


@_in_state_arithmetic
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
  from the device-resident split in the epoch's `order`, so nothing is sent from the host.
  'index' (each example's place in the split) and 'epoch' (0-based, per example so that it
  splits over devices like the rest) are what an epoch-aware augmentation needs."""
  start = (step % steps_per_epoch) * full_batch_size
  index = jax.lax.dynamic_slice_in_dim(order, start, batch_size)
  epoch = jnp.full(index.shape, step // steps_per_epoch, index.dtype)
  return _split_batch({'image': images[index], 'label': labels[index], 'index': index,
                       'epoch': epoch}, data_sharding)


_EPOCH_STATICS = ('batch_size', 'full_batch_size', 'steps_per_epoch', 'data_sharding')


# A training epoch's sums beyond the batches' (loss, correct, count): its steps, and the sums
# over its steps of the running means of loss and accuracy after each step. The Keras 3 of the
# reports' time (3.3 to 3.8 read alike) printed fit's train metrics as the mean of those running
# means, plus the epoch's mean once more at the epoch's end: its progress bar averaged the
# already averaged metrics again (keras-team/keras#20212; fixed in later releases). p2cnn's logs
# are those lines, not History's epoch means; programs.means turns these sums into them
# (progbar_loss, progbar_accuracy).
PROGBAR_SUMS = ('steps', 'running_loss', 'running_accuracy')


def _zero_batch_sums(step) -> dict:
  zero = (step * 0).astype(jnp.float32)
  return {'loss': zero, 'correct': zero, 'count': zero}


@jax.jit  # Made on the device: nothing crosses from the host.
def zero_sums(step) -> dict:
  """A training epoch's zero metric sums (the batches' and PROGBAR_SUMS), shaped and placed like
  `step` (a state's step: [] or [seeds]). They are computed from it to carry its sharding, as
  the train step's outputs do: sums placed otherwise would compile the step a second time for
  its first call."""
  zero = _zero_batch_sums(step)
  return {**zero, **{key: zero['count'] for key in PROGBAR_SUMS}}


def accumulate_on_batch(state, batch, sums, first_nonfinite):
  """`train_step` on `batch`, adding its metric sums to `sums` (zero_sums' keys) and
  noting in `first_nonfinite` (-1 until then) the first step whose loss was not finite (1-based
  global count, as `state.step` after it)."""
  state, batch_sums = train_step(state, batch)
  bad = (first_nonfinite < 0) & ~jnp.isfinite(batch_sums['loss'])
  first_nonfinite = jnp.where(bad, state.step.astype(jnp.int32), first_nonfinite)
  new = {key: sums[key] + value for key, value in batch_sums.items()}
  new['steps'] = sums['steps'] + 1
  new['running_loss'] = sums['running_loss'] + new['loss'] / new['count']
  new['running_accuracy'] = sums['running_accuracy'] + new['correct'] / new['count']
  return state, new, first_nonfinite


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


def _step_carry(carry, operands, **statics):
  """`accumulate_step` as a loop body: carry (state, sums, first_nonfinite), operands
  (images, labels, order)."""
  state, sums, first_nonfinite = carry
  images, labels, order = operands
  return accumulate_step(state, images, labels, order, sums, first_nonfinite, **statics)


@functools.partial(jax.jit, donate_argnums=(0,), static_argnames=('step_fn', 'statics'))
def loop_steps(carry, operands, num_steps, *, step_fn, statics: tuple):
  """`num_steps` (a device scalar) applications of `carry = step_fn(carry, operands,
  **dict(statics))` as one program: a `lax.fori_loop` on the device, the carry (state, sums)
  donated.

  The trip count is an argument, not a constant, so one compiled program serves every chunk
  length, and its results do not depend on how the steps are grouped into dispatches: a chunk
  of K steps is exactly K dispatches of one (tests/test_chunks.py). (The stand-alone step
  program, `accumulate_train_step`, agrees only to rounding: XLA compiles a loop body with
  other fusions.) The step's position, its RNG keys and its batch come from the carried
  `state.step`."""
  statics = dict(statics)
  return jax.lax.fori_loop(0, num_steps, lambda _, c: step_fn(c, operands, **statics), carry)


_TRIP_COUNTS = {}


def trip_count(num_steps: int, like: jax.Array) -> jax.Array:
  """`num_steps` as an int32 placed like `like` (a state's step), sent once per value: an
  explicit transfer, so runs under jax.transfer_guard('disallow') keep working."""
  placement = getattr(like, 'sharding', None)  # None: a fresh state's Python int.
  key = (num_steps, placement)
  if key not in _TRIP_COUNTS:
    value = np.int32(num_steps)
    if jax.process_count() == 1:
      _TRIP_COUNTS[key] = jax.device_put(value, placement)
    else:
      _TRIP_COUNTS[key] = jax.make_array_from_process_local_data(placement, value)
  return _TRIP_COUNTS[key]


def dispatch_steps(one_step, loop_step_fn, carry, operands, statics: dict, num_steps: int,
                   device_loop: bool):
  """`num_steps` steps back to back without waiting for the device: one `loop_steps` program
  of `loop_step_fn` (`device_loop`), else `num_steps` dispatches of `one_step(carry, operands,
  statics)` (see `train_steps_on_device`)."""
  if device_loop:
    return loop_steps(carry, operands, trip_count(num_steps, carry[0].step),
                      step_fn=loop_step_fn, statics=tuple(sorted(statics.items())))
  for _ in range(num_steps):
    carry = one_step(carry, operands, statics)
  return carry


def _one_single_step(carry, operands, statics):
  state, sums, first_nonfinite = carry
  images, labels, order = operands
  return accumulate_train_step(state, images, labels, order, sums, first_nonfinite, **statics)


def train_steps_on_device(state, images, labels, order, sums, num_steps: int, *, batch_size,
                          full_batch_size, steps_per_epoch, data_sharding=None,
                          device_loop: bool = False):
  """`num_steps` train steps on device-resident data, dispatched back to back: nothing waits
  for the device and nothing is sent from the host (the step's position in the epoch comes
  from `state.step`).

  images/labels: the whole training split on the device; order: `epoch_order`'s permutation.
  `batch_size` differs from `full_batch_size` only for the epoch's smaller last batch. With a
  `data_sharding`, each device gathers and trains on its slice of the global batch. Returns the
  new state, `sums` plus these steps' metric sums, and the first non-finite step or -1.

  `device_loop` (config train.device_loop, see programs.device_loop_of): the steps run as one
  on-device loop (`loop_steps`), one dispatch; else each step is its own dispatch. On a GPU or
  TPU one dispatch per step would leave the device waiting on the host for every small model;
  on XLA:CPU the host's share is small, and docs/scaling.md has the measurements that chose
  the CPU default. (A loop once ran 8-20x slower on XLA:CPU, with gradient convolutions in a
  slow layout inside loops: fixed by cifar_jax.models.conv.)
  """
  statics = dict(batch_size=batch_size, full_batch_size=full_batch_size,
                 steps_per_epoch=steps_per_epoch, data_sharding=data_sharding)
  carry = (state, sums, no_nonfinite_step(state.step))
  return dispatch_steps(_one_single_step, _step_carry, carry, (images, labels, order), statics,
                        num_steps, device_loop)


@functools.partial(jax.jit, static_argnames=('data_sharding',))
def evaluate(state: TrainState, images, labels, mask, data_sharding=None) -> dict:
  """Metric sums over a whole split given as [num_batches, batch, ...] arrays (one dispatch)."""

  def body(totals, batch):
    batch = _split_batch(dict(zip(('image', 'label', 'mask'), batch)), data_sharding)
    return jax.tree.map(jnp.add, totals, eval_step(state, batch)), None

  totals, _ = jax.lax.scan(body, _zero_batch_sums(state.step), (images, labels, mask))
  return totals


@functools.partial(jax.jit, static_argnames=('data_sharding',))
def predict_batches(state: TrainState, images, data_sharding=None) -> jax.Array:
  """Class probabilities for [num_batches, batch, ...] images, one batch at a time."""
  return jax.lax.map(lambda batch: predict_step(state, _split_batch(batch, data_sharding)),
                     images)
