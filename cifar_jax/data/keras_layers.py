"""Keras 3 image preprocessing layers as pure, jittable JAX, each example its own draw.

RandomFlip, RandomRotation, RandomTranslation, RandomZoom, RandomContrast and RandomBrightness,
with Keras's argument names, defaults, checks and conventions (the sources under
keras/src/layers/preprocessing/image_preprocessing/, and the jax backend's affine_transform,
which resamples with jax.scipy.ndimage.map_coordinates). In a Keras model they run in training
only, on whatever the model's input is; cifar_jax runs them on the normalised batch.

Keras conventions kept on purpose, quirks included:

* RandomFlip('horizontal_and_vertical') draws *one* flip per image and applies both flips with
  it: the image is rotated by 180 degrees or left alone, never flipped along one axis only.
  An image flips when uniform() <= 0.5.
* RandomRotation's factor is a fraction of a full turn: 0.1 draws angles in [-36, 36] degrees.
  Rotation, translation and zoom default to fill_mode='reflect'; their 'constant' and 'wrap'
  are jax's (scipy's 'grid-constant' and 'grid-wrap', see resample.py), not ImageDataGenerator's.
  Rotation and zoom centre on ((W-1)/2, (H-1)/2).
* RandomTranslation's factors are fractions of the height/width; a positive draw moves the
  content down/right. RandomZoom's factor f draws scale 1 + U(lo, hi) applied to the *source*
  coordinates: a positive factor zooms out. Without width_factor both axes share the draw.
* RandomContrast(f) with a single number draws its factor from [1, 1 + f], not [1 - f, 1 + f]:
  Keras 3 clamps the lower bound of a single factor at 0 (its factor bounds are (0, 1)). A pair
  (lo, hi) draws from [1 - lo, 1 + hi]. Output (x - per-channel mean) * factor + mean, clipped.
* RandomBrightness adds U(lo, hi) * (value_range width) to every pixel, then clips.
* value_range defaults to Keras's (0, 255): after Rescaling(1/255) pass value_range=(0, 1).
"""

import dataclasses

import jax
import jax.numpy as jnp

from cifar_jax.data import layer_spec
from cifar_jax.data import resample
from cifar_jax.data.layer_spec import check, check_choice, check_pair, is_number

FLIP_MODES = ('horizontal', 'vertical', 'horizontal_and_vertical')
KERAS_FILL_MODES = ('reflect', 'wrap', 'constant', 'nearest')
INTERPOLATIONS = ('nearest', 'bilinear')
# The Keras layers' fill modes are jax.scipy.ndimage.map_coordinates's; these are their scipy names.
_RESAMPLE_MODE = {'reflect': 'reflect', 'nearest': 'nearest', 'constant': 'grid-constant',
                  'wrap': 'grid-wrap'}


def base_factor(name, factor, bounds=(-1.0, 1.0)) -> tuple[float, float]:
  """BaseImagePreprocessingLayer._set_factor: a number f gives (max(-|f|, bounds[0]), |f|), a
  pair is sorted; Keras's (loose) range checks."""
  if isinstance(factor, (list, tuple)):
    lo, hi = check_pair(name, factor)
    check(lo <= bounds[1] and hi >= bounds[0], name, factor, f'must lie in {list(bounds)}')
    return tuple(sorted((lo, hi)))
  check(is_number(factor) and bounds[0] <= factor <= bounds[1], name, factor,
        f'must be a number in {list(bounds)} or a pair')
  return max(-abs(factor), bounds[0]), abs(float(factor))


def symmetric_factor(name, factor, lower_open=False) -> tuple[float, float]:
  """RandomTranslation/RandomZoom._set_factor: every number in [-1, 1] ((-1, 1] for zoom); a
  number f gives (-|f|, |f|), a pair is sorted."""
  values = check_pair(name, factor) if isinstance(factor, (list, tuple)) else (factor,)
  in_range = all(is_number(v) and (-1 < v if lower_open else -1 <= v) and v <= 1
                 for v in values)
  check(in_range, name, factor, f'must be a number in {"(" if lower_open else "["}-1, 1] or a pair')
  if len(values) == 2:
    return tuple(sorted(values))
  return -abs(float(factor)), abs(float(factor))


def _uniform(rng, batch, bounds):
  return jax.random.uniform(rng, (batch,), jnp.float32, *bounds)


def _per_image(values):
  return values[:, None, None, None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomFlip(layer_spec.AugmentLayer):
  mode: str = 'horizontal_and_vertical'

  def validate(self):
    check_choice('mode', self.mode, FLIP_MODES)

  def sample(self, rng, batch, height, width):
    return {'flips': jax.random.uniform(rng, (batch,)) <= 0.5}

  def apply(self, images, params):
    flips = _per_image(params['flips'])
    if self.mode in ('horizontal', 'horizontal_and_vertical'):
      images = jnp.where(flips, images[:, :, ::-1], images)
    if self.mode in ('vertical', 'horizontal_and_vertical'):
      images = jnp.where(flips, images[:, ::-1], images)
    return images


@dataclasses.dataclass(frozen=True, kw_only=True)
class _AffineLayer(layer_spec.AugmentLayer):
  """A layer that resamples through Keras's affine_transform: output pixel (x=col, y=row) reads
  the input at (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
  fill_mode: str = 'reflect'
  interpolation: str = 'bilinear'
  fill_value: float = 0.0

  def validate(self):
    check_choice('fill_mode', self.fill_mode, KERAS_FILL_MODES)
    check_choice('interpolation', self.interpolation, INTERPOLATIONS)
    check(is_number(self.fill_value), 'fill_value', self.fill_value, 'must be a finite number')

  def coefficients(self, params, height, width):
    """(a0, a1, a2, b0, b1, b2), each [B]."""
    raise NotImplementedError

  def apply(self, images, params):
    _, height, width, _ = images.shape
    a0, a1, a2, b0, b1, b2 = (c[:, None, None] for c in self.coefficients(params, height, width))
    y = jnp.arange(height, dtype=jnp.float32)[None, :, None]
    x = jnp.arange(width, dtype=jnp.float32)[None, None, :]
    cols, rows = a0 * x + a1 * y + a2, b0 * x + b1 * y + b2
    sample = (resample.sample_bilinear if self.interpolation == 'bilinear'
              else resample.sample_nearest)
    return sample(images, rows, cols, _RESAMPLE_MODE[self.fill_mode], self.fill_value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomRotation(_AffineLayer):
  factor: float | tuple[float, float]

  def validate(self):
    super().validate()
    base_factor('factor', self.factor)

  def sample(self, rng, batch, height, width):
    lo, hi = base_factor('factor', self.factor)
    return {'angle': _uniform(rng, batch, (lo * 360.0, hi * 360.0))}  # Degrees.

  def coefficients(self, params, height, width):
    # BaseImagePreprocessingLayer._compute_affine_matrix with only the angle set.
    theta = jnp.deg2rad(params['angle'].astype(jnp.float32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
    return cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomTranslation(_AffineLayer):
  height_factor: float | tuple[float, float]
  width_factor: float | tuple[float, float]

  def validate(self):
    super().validate()
    symmetric_factor('height_factor', self.height_factor)
    symmetric_factor('width_factor', self.width_factor)

  def sample(self, rng, batch, height, width):
    height_rng, width_rng = jax.random.split(rng)
    height_bounds = symmetric_factor('height_factor', self.height_factor)
    width_bounds = symmetric_factor('width_factor', self.width_factor)
    return {'dy': _uniform(height_rng, batch, height_bounds) * height,
            'dx': _uniform(width_rng, batch, width_bounds) * width}

  def coefficients(self, params, height, width):
    one, zero = jnp.ones_like(params['dx']), jnp.zeros_like(params['dx'])
    return one, zero, -params['dx'], zero, one, -params['dy']


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomZoom(_AffineLayer):
  height_factor: float | tuple[float, float]
  width_factor: float | tuple[float, float] | None = None

  def validate(self):
    super().validate()
    symmetric_factor('height_factor', self.height_factor, lower_open=True)
    if self.width_factor is not None:
      symmetric_factor('width_factor', self.width_factor, lower_open=True)

  def sample(self, rng, batch, height, width):
    height_rng, width_rng = jax.random.split(rng)
    def zoom(key, name, factor):
      return 1.0 + _uniform(key, batch, symmetric_factor(name, factor, lower_open=True))

    height_zoom = zoom(height_rng, 'height_factor', self.height_factor)
    width_zoom = (height_zoom if self.width_factor is None
                  else zoom(width_rng, 'width_factor', self.width_factor))
    return {'height_zoom': height_zoom, 'width_zoom': width_zoom}

  def coefficients(self, params, height, width):
    zx, zy = params['width_zoom'], params['height_zoom']
    zero = jnp.zeros_like(zx)
    return zx, zero, (width - 1.0) / 2.0 * (1.0 - zx), zero, zy, (height - 1.0) / 2.0 * (1.0 - zy)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomContrast(layer_spec.AugmentLayer):
  factor: float | tuple[float, float]
  value_range: tuple[float, float] = (0.0, 255.0)

  def validate(self):
    base_factor('factor', self.factor, bounds=(0.0, 1.0))
    lo, hi = check_pair('value_range', self.value_range)
    check(lo <= hi, 'value_range', self.value_range, 'must be (lo, hi) with lo <= hi')

  def sample(self, rng, batch, height, width):
    lo, hi = base_factor('factor', self.factor, bounds=(0.0, 1.0))
    return {'contrast_factor': _uniform(rng, batch, (1.0 - lo, 1.0 + hi))}

  def apply(self, images, params):
    mean = images.mean(axis=(1, 2), keepdims=True)
    out = (images - mean) * _per_image(params['contrast_factor']).astype(images.dtype) + mean
    return jnp.clip(out, *self.value_range)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomBrightness(layer_spec.AugmentLayer):
  factor: float | tuple[float, float]
  value_range: tuple[float, float] = (0.0, 255.0)

  def validate(self):
    base_factor('factor', self.factor)
    check_pair('value_range', self.value_range)

  def sample(self, rng, batch, height, width):
    lo, hi = sorted(check_pair('value_range', self.value_range))
    return {'rgb_delta': _uniform(rng, batch, base_factor('factor', self.factor)) * (hi - lo)}

  def apply(self, images, params):
    out = images + _per_image(params['rgb_delta']).astype(images.dtype)
    return jnp.clip(out, *sorted(self.value_range))


LAYERS = {
    'random_flip': RandomFlip,
    'random_rotation': RandomRotation,
    'random_translation': RandomTranslation,
    'random_zoom': RandomZoom,
    'random_contrast': RandomContrast,
    'random_brightness': RandomBrightness,
}
