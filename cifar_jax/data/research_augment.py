"""The augmentations of fast CIFAR-10 trainers: pad-and-crop, cutout, test-time augmentation.

As `config.augment.layers` entries they run, like the Keras layers, on the normalised training
batch:

    dict(type='pad_and_crop', pad=4, mode='reflect')    # airbench's random translation
    dict(type='cutout', size=16, count=1, fill_value=0.0)  # DeVries & Taylor (2017)

Test-time augmentation wraps the model instead (`tta_logits`), for evaluation.

`alternating_flip` is airbench's flip: each example mirrored on alternate epochs, starting from a
random orientation of its own. It needs the example's identity and the epoch, which a layer's
`(rng, images)` does not see, so it is a function for the train step to call, not a layer yet.
"""

import dataclasses

import jax
import jax.numpy as jnp

from cifar_jax.data import layer_spec
from cifar_jax.data.layer_spec import check, check_choice, is_int, is_number

# jnp.pad modes. 'reflect' mirrors about the edge pixel without repeating it (d c b | a b c d),
# as torch's F.pad(..., 'reflect') that airbench uses; 'symmetric' repeats it; 'constant' pads
# with zeros (in the normalised space: the mean colour under 'standardize').
PAD_MODES = ('reflect', 'symmetric', 'edge', 'constant')
TTA_MODES = ('none', 'flip', 'flip_translate')


def translate(images, dy, dx, pad: int, mode: str = 'reflect'):
  """Moves each image [B, H, W, C] down by dy[b] and right by dx[b] pixels (ints, |d| <= pad),
  filling the uncovered border as jnp.pad's `mode` pads it."""
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)

  def crop(image, top, left):
    return jax.lax.dynamic_slice(image, (top, left, 0), (height, width, channels))

  return jax.vmap(crop)(padded, pad - jnp.asarray(dy), pad - jnp.asarray(dx))


def flip_horizontal(images):
  return images[:, :, ::-1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PadAndCrop(layer_spec.AugmentLayer):
  """A random crop of the image padded by `pad` on every side: a translation by integers drawn
  uniformly from [-pad, pad], independently per axis (airbench's batch_crop)."""
  pad: int = 4
  mode: str = 'reflect'

  def validate(self):
    check(is_int(self.pad) and self.pad >= 0, 'pad', self.pad, 'must be an int >= 0')
    check_choice('mode', self.mode, PAD_MODES)

  def sample(self, rng, batch, height, width):
    dy, dx = jax.random.randint(rng, (2, batch), -self.pad, self.pad + 1)
    return {'dy': dy, 'dx': dx}

  def apply(self, images, params):
    return translate(images, params['dy'], params['dx'], self.pad, self.mode)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cutout(layer_spec.AugmentLayer):
  """`count` squares of side `size` set to `fill_value`, each centred on a pixel drawn uniformly
  from the image and clipped at its border (DeVries & Taylor's code, which keeps
  [c - size//2, c + size//2): the same squares for even sizes; here odd sizes keep their size)."""
  size: int = 16
  count: int = 1
  fill_value: float = 0.0

  def validate(self):
    check(is_int(self.size) and self.size >= 1, 'size', self.size, 'must be an int >= 1')
    check(is_int(self.count) and self.count >= 1, 'count', self.count, 'must be an int >= 1')
    check(is_number(self.fill_value), 'fill_value', self.fill_value, 'must be a finite number')

  def sample(self, rng, batch, height, width):
    row_rng, col_rng = jax.random.split(rng)
    return {'center_row': jax.random.randint(row_rng, (batch, self.count), 0, height),
            'center_col': jax.random.randint(col_rng, (batch, self.count), 0, width)}

  def apply(self, images, params):
    _, height, width, _ = images.shape

    def covered(center, size):  # [B, count, size]: which rows (columns) each square covers.
      start = center[..., None] - self.size // 2
      index = jnp.arange(size)
      return (index >= start) & (index < start + self.size)

    rows = covered(params['center_row'], height)[:, :, :, None]
    cols = covered(params['center_col'], width)[:, :, None, :]
    hole = (rows & cols).any(axis=1)[..., None]  # [B, H, W, 1]
    return jnp.where(hole, jnp.asarray(self.fill_value, images.dtype), images)


LAYERS = {'pad_and_crop': PadAndCrop, 'cutout': Cutout}


def alternating_flip_mask(key, example_index, epoch):
  """airbench's alternating flip: which examples [B] are mirrored in 0-based `epoch`.

  Each example draws one fair bit from `key` and its index in the training split (airbench's
  random pre-flip, done once per run); on odd epochs every example is mirrored relative to that.
  So each example alternates orientation from epoch to epoch, and in every epoch half the data,
  in expectation, is mirrored. `example_index`: int [B]; `epoch`: an int (may be traced).
  """
  index = jnp.asarray(example_index)
  first = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(index)
  return first ^ (jnp.asarray(epoch) % 2 == 1)


def alternating_flip(images, key, example_index, epoch):
  """`images` [B, H, W, C] mirrored where `alternating_flip_mask` says so."""
  flips = alternating_flip_mask(key, example_index, epoch)
  return jnp.where(flips[:, None, None, None], flip_horizontal(images), images)


def tta_views(images, mode: str):
  """The views of a normalised batch [B, H, W, C] that `mode` averages over, stacked [V, B, ...],
  and their weights [V] (summing to 1).

  'none': the batch. 'flip': it and its mirror, 1/2 each. 'flip_translate' (airbench's
  tta_level=2): those two at 1/4 each, plus the batch moved one pixel up-left and one pixel
  down-right (reflect padding), each of those and its mirror at 1/8.
  """
  check_choice('augment.tta', mode, TTA_MODES)
  views = [images]
  if mode == 'flip_translate':
    for shift in (1, -1):  # airbench: padded[0:32, 0:32] and padded[2:34, 2:34].
      shifted = jnp.full((images.shape[0],), shift)
      views.append(translate(images, shifted, shifted, pad=1, mode='reflect'))
  if mode != 'none':
    views = [view for image in views for view in (image, flip_horizontal(image))]
  weights = [1.0] if mode == 'none' else [0.5, 0.5]
  if mode == 'flip_translate':
    weights = [0.25, 0.25] + [0.125] * 4
  return jnp.stack(views), jnp.asarray(weights, jnp.float32)


def tta_logits(apply_fn, images, mode: str = 'none', *, has_aux: bool = False):
  """Test-time augmented logits: the `mode`-weighted mean of apply_fn over `tta_views`.

  apply_fn(images [B, H, W, C]) -> logits [B, K], or (logits, aux) with has_aux=True, in which
  case (mean logits, aux of the plain batch) comes back. The views run one after another
  (jax.lax.map), so memory stays that of one batch and the model is compiled once.
  """
  if mode == 'none':
    check_choice('augment.tta', mode, TTA_MODES)
    return apply_fn(images)
  views, weights = tta_views(images, mode)
  outputs = jax.lax.map(apply_fn, views)
  logits, aux = outputs if has_aux else (outputs, None)
  mean = jnp.tensordot(weights, logits.astype(jnp.float32), axes=1).astype(logits.dtype)
  if not has_aux:
    return mean
  return mean, jax.tree.map(lambda x: x[0], aux)
