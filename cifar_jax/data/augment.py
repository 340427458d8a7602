"""Training-time augmentation from `config.augment`: Keras's ImageDataGenerator, then layers.

Two stages, both pure and jittable, each example with its own draw (no host callbacks, no loops
over examples):

1. `make_augment_fn`: Keras's `ImageDataGenerator` random transform, on raw 0..255 pixels before
   normalisation (Keras applies it before `rescale`). The rest of this docstring is about it.
2. `make_layers_fn`: `config.augment.layers`, an ordered tuple of Keras preprocessing layers
   (keras_layers.py) and research augmentations (research_augment.py), on the normalised batch,
   as the first layers of a Keras model see it after Rescaling(1/255).

`validate_augment_config` checks the whole section, `layers` and `tta` included.

Stage 1 reproduces what Keras 3's legacy `ImageDataGenerator` does between
`get_random_transform` and `apply_transform` (keras/src/legacy/preprocessing/image.py): an affine
warp sampled bilinearly (scipy.ndimage.affine_transform, order=1) with scipy's fill modes, the
channel shift, the flips, then the brightness shift.

Keras conventions kept on purpose, quirks included:

* `height_shift_range` draws `tx` (scaled by the image height when < 1) and `width_shift_range`
  draws `ty` (scaled by the width). Keras then builds its matrix in an (x, y) frame and swaps it
  to numpy's (row, col) order, so x is the *column*: `tx` moves the image horizontally and `ty`
  vertically (the long-standing keras-team/keras#17398). `zx` scales columns and `zy` rows.
  The centring offset is not swapped: x is centred on height/2 - 0.5, y on width/2 - 0.5, which
  is off-centre for non-square images. Neither matters for CIFAR (32x32, equal ranges).
* A shift range that is an int n draws from {0, ..., n-1} times a random sign, a list or tuple
  draws one of its values times a random sign, a float r draws uniformly from [-r, r]. Either
  way, values are fractions of the size when the largest is < 1 and pixels otherwise. The base
  config declares these two fields as `object`, so an int or a list keeps its type.
* Matrix: offset @ rotation @ shift @ shear @ zoom @ reset, mapping output to input coordinates;
  rotation and shear in degrees, shear matrix [[1, -sin], [0, cos]].
* The flips follow the affine warp, each with probability 1/2.
* Fill modes are scipy's (resample.py): 'nearest' clamps, 'constant' gives `cval` whenever the
  source point is outside [0, size-1] on either axis (no blending with cval), 'reflect' is
  half-sample symmetric (d c b a | a b c d | d c b a), and 'wrap' is scipy's legacy wrap with
  period size-1, where the first and last pixel coincide (not 'grid-wrap').
* `channel_shift_range` r: one intensity U(-r, r) per image added to *every* channel (despite
  the name), clipped to the image's own min and max.
* `brightness_range` (lo, hi): one factor U(lo, hi) per image, applied as Keras does it, through
  a uint8 PIL image: pixels truncated to integers, then PIL's Brightness, which computes
  trunc(float32(factor) * pixel) clipped to 0..255, so the output is whole grey levels: on
  average one level darker than exact scaling after a warp (half a level without one), and
  saturated at 255 for factors > 1. An image
  with values outside 0..255 (a `cval` outside it) is first stretched to 0..255 and back after,
  as Keras's `apply_brightness_shift(x, factor, scale=False)` does.

The module is a little past the usual ~400 lines: ImageDataGenerator's transform is one matrix
composed from every option and applied once, so its parts stay together and the quirks above
stay beside the code that reproduces them.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from cifar_jax import memo
from cifar_jax.data import keras_layers
from cifar_jax.data import layer_spec
from cifar_jax.data import research_augment
from cifar_jax.data.layer_spec import is_int, is_number
from cifar_jax.data.resample import sample_bilinear

FILL_MODES = ('nearest', 'constant', 'reflect', 'wrap')  # ImageDataGenerator's (scipy's).

# Every key of `config.augment`, with the value that turns it off.
DEFAULTS = dict(
    rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, shear_range=0.0,
    zoom_range=(0.0, 0.0), channel_shift_range=0.0, brightness_range=None,
    horizontal_flip=False, vertical_flip=False, fill_mode='nearest', cval=0.0,
    layers=(), tta='none', alternating_flip=False)
# The stage-1 keys; the others configure the layers stage, the train step's alternating flip
# and evaluation.
IMAGE_DATA_GENERATOR_KEYS = tuple(k for k in DEFAULTS
                                  if k not in ('layers', 'tta', 'alternating_flip'))
# Every type an entry of `config.augment.layers` may have.
LAYER_TYPES = {**keras_layers.LAYERS, **research_augment.LAYERS}

# The identity transform; apply_transform fills missing keys from it, like Keras's `.get`.
IDENTITY_PARAMS = dict(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip_h=False,
                       flip_v=False)


@dataclasses.dataclass(frozen=True)
class _Shift:
  """A parsed shift range: discrete `values` (times a random sign) or uniform in [-bound, bound]."""
  values: tuple[float, ...] | None
  bound: float
  fraction: bool  # Multiply the draw by the image size (Keras: the largest value is < 1).


@dataclasses.dataclass(frozen=True)
class _Spec:
  rotation: float
  height_shift: _Shift | None
  width_shift: _Shift | None
  shear: float
  zoom: tuple[float, float] | None
  channel_shift: float
  brightness: tuple[float, float] | None
  horizontal_flip: bool
  vertical_flip: bool
  fill_mode: str
  cval: float
  layers: tuple[layer_spec.AugmentLayer, ...]

  @property
  def moves_pixels(self):
    return bool(self.rotation or self.height_shift or self.width_shift or self.shear or self.zoom
                or self.horizontal_flip or self.vertical_flip)

  @property
  def enabled(self):
    return self.moves_pixels or bool(self.channel_shift or self.brightness)


def _non_negative(key, value):
  if not is_number(value) or value < 0:
    raise ValueError(f'augment.{key}={value!r}: must be a finite number >= 0.')
  return float(value)


def _parse_shift(key, value):
  if isinstance(value, (list, tuple)):
    if not value or not all(is_number(v) and v >= 0 for v in value):
      raise ValueError(f'augment.{key}={value!r}: a list must hold one or more numbers >= 0.')
    values = tuple(float(v) for v in value)
  elif is_int(value):
    if value < 0:
      raise ValueError(f'augment.{key}={value!r}: must be >= 0.')
    if value == 0:
      return None
    values = tuple(float(v) for v in range(value))  # Keras: np.random.choice(n).
  else:
    bound = _non_negative(key, value)
    return _Shift(None, bound, bound < 1) if bound else None
  return _Shift(values, 0.0, max(values) < 1)


def _parse_zoom(value):
  if is_number(value):
    lo, hi = 1.0 - value, 1.0 + value
    if value < 0:
      raise ValueError(f'augment.zoom_range={value!r}: a float must be >= 0.')
  elif isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value)):
    lo, hi = map(float, value)
    if lo == hi == 0:
      return None  # The config's "off" default, like Keras's zoom_range=0.0.
  else:
    raise ValueError(f'augment.zoom_range={value!r}: must be a float or a pair (lo, hi).')
  if lo > hi:
    raise ValueError(f'augment.zoom_range={value!r}: lo > hi.')
  if lo <= 0:
    raise ValueError(f'augment.zoom_range={value!r}: scales must be > 0.')
  return None if lo == hi == 1 else (lo, hi)


def _parse_brightness(value):
  if value is None:
    return None
  lo, hi = layer_spec.check_pair('augment.brightness_range', value)
  layer_spec.check(lo <= hi, 'augment.brightness_range', value, 'must be (lo, hi) with lo <= hi')
  return lo, hi


def _parse_layers(value):
  layer_spec.check(isinstance(value, (list, tuple)), 'augment.layers', value,
                   'must be a tuple of layer dicts, e.g. (dict(type="random_flip"),)')
  return tuple(layer_spec.build_layer(LAYER_TYPES, i, entry) for i, entry in enumerate(value))


def _parse(augment_config) -> _Spec:
  given = augment_config.to_dict() if hasattr(augment_config, 'to_dict') else dict(augment_config)
  unknown = sorted(set(given) - set(DEFAULTS))
  if unknown:
    raise ValueError(f'augment: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}.')
  c = {**DEFAULTS, **given}
  layer_spec.check_choice('augment.tta', c['tta'], research_augment.TTA_MODES)
  for key in ('horizontal_flip', 'vertical_flip'):
    if not isinstance(c[key], bool):
      raise ValueError(f'augment.{key}={c[key]!r}: must be a bool.')
  if c['fill_mode'] not in FILL_MODES:
    raise ValueError(f'augment.fill_mode={c["fill_mode"]!r}: must be one of {FILL_MODES}.')
  if not is_number(c['cval']):
    raise ValueError(f'augment.cval={c["cval"]!r}: must be a finite number.')
  return _Spec(
      rotation=_non_negative('rotation_range', c['rotation_range']),
      height_shift=_parse_shift('height_shift_range', c['height_shift_range']),
      width_shift=_parse_shift('width_shift_range', c['width_shift_range']),
      shear=_non_negative('shear_range', c['shear_range']),
      zoom=_parse_zoom(c['zoom_range']),
      channel_shift=_non_negative('channel_shift_range', c['channel_shift_range']),
      brightness=_parse_brightness(c['brightness_range']),
      horizontal_flip=c['horizontal_flip'], vertical_flip=c['vertical_flip'],
      fill_mode=c['fill_mode'], cval=float(c['cval']), layers=_parse_layers(c['layers']))


def validate_augment_config(augment_config) -> None:
  """Raises ValueError naming the key when `augment_config` holds an unknown key or a bad value."""
  _parse(augment_config)


def _uniform(u, lo, hi):
  return lo + (hi - lo) * u


def _shift(u_value, u_sign, shift: _Shift | None, size):
  if shift is None:
    return jnp.zeros_like(u_value)
  if shift.values is None:
    draw = _uniform(u_value, -shift.bound, shift.bound)
  else:  # np.random.choice(values) * np.random.choice([-1, 1])
    index = jnp.minimum((u_value * len(shift.values)).astype(jnp.int32), len(shift.values) - 1)
    draw = jnp.asarray(shift.values, jnp.float32)[index] * jnp.where(u_sign < 0.5, -1.0, 1.0)
  return draw * size if shift.fraction else draw


def _sample(rng, batch, height, width, spec: _Spec):
  # One call for every draw: each jax.random call is its own threefry, slow to compile on CPU.
  u = dict(zip(('theta', 'tx', 'tx_sign', 'ty', 'ty_sign', 'shear', 'zx', 'zy', 'flip_h', 'flip_v'),
               jax.random.uniform(rng, (10, batch))))
  zoom = spec.zoom or (1.0, 1.0)  # Keras draws zx and zy independently: uniform(lo, hi, 2).
  return dict(
      theta=_uniform(u['theta'], -spec.rotation, spec.rotation),
      tx=_shift(u['tx'], u['tx_sign'], spec.height_shift, height),
      ty=_shift(u['ty'], u['ty_sign'], spec.width_shift, width),
      shear=_uniform(u['shear'], -spec.shear, spec.shear),
      zx=_uniform(u['zx'], *zoom), zy=_uniform(u['zy'], *zoom),
      flip_h=(u['flip_h'] < 0.5) & spec.horizontal_flip,
      flip_v=(u['flip_v'] < 0.5) & spec.vertical_flip,
      **_sample_intensities(jax.random.fold_in(rng, 1), batch, spec))


def _sample_intensities(rng, batch, spec: _Spec):
  # Drawn apart, and only when used, so the geometric draws stay what they were without them.
  if not (spec.channel_shift or spec.brightness):
    return {}
  u_shift, u_brightness = jax.random.uniform(rng, (2, batch))
  params = {}
  if spec.channel_shift:
    params['channel_shift_intensity'] = _uniform(u_shift, -spec.channel_shift, spec.channel_shift)
  if spec.brightness:
    params['brightness'] = _uniform(u_brightness, *spec.brightness)
  return params


def sample_transform_params(rng, batch, height, width, augment_config) -> dict[str, jax.Array]:
  """Per-example Keras transform parameters, each an array [batch].

  theta and shear are in degrees, tx and ty in pixels (tx from height_shift_range, ty from
  width_shift_range, as in Keras), zx and zy are scales, flip_h and flip_v are bools. Options
  that are off give the identity value. `channel_shift_intensity` and `brightness` (Keras's
  names) are there only when their option is on: Keras skips them otherwise, and a brightness
  factor of 1 is not the identity (it truncates to whole grey levels).
  """
  return _sample(rng, batch, height, width, _parse(augment_config))


def source_coords(params, batch, height, width):
  """The input (row, col) that each output pixel of [batch, height, width] samples, each [B, H, W].

  The affine part of Keras's `apply_affine_transform` with its flips folded in: flipping the
  output is reading it at the mirrored output position, which is exact. Missing params mean
  identity, scalars apply to the whole batch.
  """
  p = {k: jnp.broadcast_to(jnp.asarray(params.get(k, v), jnp.bool_ if k.startswith('flip') else
                                       jnp.float32), (batch,))
       for k, v in IDENTITY_PARAMS.items()}
  theta, shear = jnp.deg2rad(p['theta']), jnp.deg2rad(p['shear'])
  zero, one = jnp.zeros_like(theta), jnp.ones_like(theta)

  def matrices(*rows):  # 2x2 matrices, batched: [B, 2, 2]
    return jnp.stack([jnp.stack(row, -1) for row in rows], -2)

  def matmul(a, b):  # Elementwise, so no backend runs it at reduced (TF32/bf16) matmul precision.
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)

  rotation = matrices((jnp.cos(theta), -jnp.sin(theta)), (jnp.sin(theta), jnp.cos(theta)))
  shear_m = matrices((one, -jnp.sin(shear)), (zero, jnp.cos(shear)))
  zoom = matrices((p['zx'], zero), (zero, p['zy']))
  linear = matmul(matmul(rotation, shear_m), zoom)
  # rotation @ shift @ (...): the shift is rotated too.
  offset = (rotation * jnp.stack([p['tx'], p['ty']], -1)[:, None, :]).sum(-1)

  # Keras's frame is (x, y) = (col, row) but centred on (height/2 - 0.5, width/2 - 0.5).
  center = jnp.array([height / 2 - 0.5, width / 2 - 0.5], jnp.float32)
  rows = jnp.arange(height, dtype=jnp.float32)[None, :, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, None, :]
  rows = jnp.where(p['flip_v'][:, None, None], height - 1 - rows, rows)
  cols = jnp.where(p['flip_h'][:, None, None], width - 1 - cols, cols)
  # Centred coordinates are small half-integers, exact in float32, which keeps integer shifts exact.
  x, y = cols - center[0], rows - center[1]

  def component(i):
    return (linear[:, i, 0, None, None] * x + linear[:, i, 1, None, None] * y
            + (offset[:, i] + center[i])[:, None, None])

  return component(1), component(0)


def channel_shift(images, intensity):
  """Keras's `apply_channel_shift` per image: images [B, H, W, C] + intensity [B], clipped to
  each image's min and max over all its pixels and channels."""
  low = images.min(axis=(1, 2, 3), keepdims=True)
  high = images.max(axis=(1, 2, 3), keepdims=True)
  return jnp.clip(images + intensity[:, None, None, None], low, high)


_SLACK = 1e-3


def _divide_like_numpy(numerator, denominator):
  """numerator / denominator, correctly rounded per element as numpy does it. XLA rewrites a
  division by a broadcast value into a multiplication by its reciprocal, which is an ulp off
  often enough to move truncated pixels (e.g. (x + 100) / 355 * 255 is an integer for every
  x = 71k - 100); the barrier hides the broadcast from that rewrite."""
  return numerator / jax.lax.optimization_barrier(jnp.broadcast_to(denominator, numerator.shape))


def brightness_shift(images, factor):
  """Keras's `apply_brightness_shift(x, factor, scale=False)` per image, through PIL (see the
  module docstring): images [B, H, W, C] with C in (1, 3), factor [B]."""
  if images.shape[-1] not in (1, 3):  # PIL modes 'L' and 'RGB'.
    raise ValueError(f'brightness_range needs 1 or 3 channels, got {images.shape[-1]}.')
  low = images.min(axis=(1, 2, 3), keepdims=True)
  high = images.max(axis=(1, 2, 3), keepdims=True)
  # array_to_img(scale=True) for images outside 0..255: (x - min) / (max - min) * 255. The slack
  # absorbs float32 rounding past 0 or 255, which Keras's float64 interpolation does not make.
  stretch = (low < -_SLACK) | (high > 255 + _SLACK)
  span = high - low
  pixels = jnp.where(stretch, _divide_like_numpy(images - low, jnp.where(span != 0, span, 1)) * 255,
                     images)
  pixels = jnp.floor(pixels)  # astype('uint8'): truncation, for values in 0..255.
  # PIL's ImagingBlend with a black image, in float32: (UINT8)(alpha * pixel), clipped.
  factor = factor.astype(jnp.float32)[:, None, None, None]
  out = jnp.clip(jnp.floor(factor * pixels), 0, 255)
  return jnp.where(stretch, _divide_like_numpy(out, 255.0) * span + low, out)


def apply_transform(images, params, fill_mode='nearest', cval=0.0):
  """Keras `ImageDataGenerator.apply_transform` for a batch: images [B, H, W, C] (floating), params
  as from `sample_transform_params` (missing keys mean identity). Deterministic; jit with
  fill_mode static."""
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f'images must be floating point, got {images.dtype}.')
  if any(k in params for k in IDENTITY_PARAMS):
    rows, cols = source_coords(params, *images.shape[:3])
    images = sample_bilinear(images, rows, cols, fill_mode, cval)
  # Keras: channel shift before the flips and brightness after them; all three are per-pixel
  # given per-image statistics, so they commute with the flips folded into the warp.
  if 'channel_shift_intensity' in params:
    images = channel_shift(images, params['channel_shift_intensity'])
  if 'brightness' in params:
    images = brightness_shift(images, params['brightness'])
  return images


# The functions make_augment_fn and make_layers_fn built, by parsed config (cifar_jax.memo says
# why). The key holds the spec's repr too: equal specs whose values differ in type (1 and 1.0)
# are not shared.
_BUILT = memo.Memo()


def make_augment_fn(augment_config) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
  """fn(rng, images) -> images for float [B, H, W, C] in raw 0..255 pixels (Keras transforms
  before `rescale`), or None when every option is off. Pure, jittable and vmappable."""
  spec = _parse(augment_config)
  if not spec.enabled:
    return None
  return _BUILT.get(('augment', spec, repr(spec)), lambda: _augment_fn(spec))


def _augment_fn(spec: _Spec):

  def augment(rng: Any, images: jax.Array) -> jax.Array:
    b, height, width, _ = images.shape
    params = _sample(rng, b, height, width, spec)
    if not spec.moves_pixels:  # Skip an identity warp.
      params = {k: v for k, v in params.items() if k not in IDENTITY_PARAMS}
    return apply_transform(images, params, spec.fill_mode, spec.cval)

  return augment


def make_layers_fn(augment_config) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
  """fn(rng, images) -> images applying `augment_config.layers` in order to a normalised float
  batch [B, H, W, C] (training only), or None when there are none. Pure and jittable."""
  layers = _parse(augment_config).layers
  if not layers:
    return None
  return _BUILT.get(('layers', layers, repr(layers)), lambda: _layers_fn(layers))


def _layers_fn(layers):

  def apply_layers(rng: Any, images: jax.Array) -> jax.Array:
    for i, layer in enumerate(layers):
      key = jax.random.fold_in(rng, i)
      images = layer(key, _materialize(images, key))
    return images

  return apply_layers


def _materialize(images, key):
  """images, computed into a buffer of their own before a layer reads them (on CPU).

  XLA:CPU fuses the producers of a gather's operand into the gather and recomputes them for
  every element it gathers: a resampling layer after another one (or after the warp of stage 1)
  ran 30x slower, after a flip 4x. A conditional is a fusion boundary there, where
  jax.lax.optimization_barrier is not (it is removed before fusion). The predicate comes from
  the key, not the images, so that computing it does not need the images too, and XLA cannot
  fold it; either branch returns the images (x + 0.0 only turns -0.0 into 0.0, and keeps XLA
  from merging the branches).
  """
  if jax.default_backend() != 'cpu':
    return images
  predicate = jax.random.bits(key, dtype=jnp.uint32) == 0
  return jax.lax.cond(predicate, lambda x: x + 0.0, lambda x: x, images)
