"""Keras `ImageDataGenerator` random transforms as pure, jittable JAX.

Reproduces what Keras 3's legacy `ImageDataGenerator` does between `get_random_transform` and
`apply_transform` (keras/src/legacy/preprocessing/image.py): an affine warp sampled bilinearly
(scipy.ndimage.affine_transform, order=1) with scipy's fill modes, then the flips. Every example
of a batch gets its own transform; there are no host callbacks and no loops over examples.

Keras conventions kept on purpose, quirks included:

* `height_shift_range` draws `tx` (scaled by the image height when < 1) and `width_shift_range`
  draws `ty` (scaled by the width). Keras then builds its matrix in an (x, y) frame and swaps it
  to numpy's (row, col) order, so x is the *column*: `tx` moves the image horizontally and `ty`
  vertically (the long-standing keras-team/keras#17398). `zx` scales columns and `zy` rows.
  The centring offset is not swapped: x is centred on height/2 - 0.5, y on width/2 - 0.5, which
  is off-centre for non-square images. Neither matters for CIFAR (32x32, equal ranges).
* A shift range that is an int n draws from {0, ..., n-1} times a random sign, a list or tuple
  draws one of its values times a random sign, a float r draws uniformly from [-r, r]. Either
  way, values are fractions of the size when the largest is < 1 and pixels otherwise. (The
  locked base config stores floats, so an int there becomes a float and means uniform pixels.)
* Matrix: offset @ rotation @ shift @ shear @ zoom @ reset, mapping output to input coordinates;
  rotation and shear in degrees, shear matrix [[1, -sin], [0, cos]].
* The flips follow the affine warp, each with probability 1/2.
* Fill modes are scipy's: 'nearest' clamps, 'constant' gives `cval` whenever the source point is
  outside [0, size-1] on either axis (no blending with cval), 'reflect' is half-sample symmetric
  (d c b a | a b c d | d c b a), and 'wrap' is scipy's legacy wrap with period size-1, where the
  first and last pixel coincide (not 'grid-wrap').

`brightness_range` and `channel_shift_range` are not implemented (the config has no such keys).
"""

import dataclasses
import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp

FILL_MODES = ('nearest', 'constant', 'reflect', 'wrap')

# Every key of `config.augment`, with the value that turns it off.
DEFAULTS = dict(
    rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, shear_range=0.0,
    zoom_range=(0.0, 0.0), horizontal_flip=False, vertical_flip=False, fill_mode='nearest',
    cval=0.0)

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
  horizontal_flip: bool
  vertical_flip: bool
  fill_mode: str
  cval: float

  @property
  def enabled(self):
    return bool(self.rotation or self.height_shift or self.width_shift or self.shear or self.zoom
                or self.horizontal_flip or self.vertical_flip)


def _is_number(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _non_negative(key, value):
  if not _is_number(value) or value < 0:
    raise ValueError(f'augment.{key}={value!r}: must be a finite number >= 0.')
  return float(value)


def _parse_shift(key, value):
  if isinstance(value, (list, tuple)):
    if not value or not all(_is_number(v) and v >= 0 for v in value):
      raise ValueError(f'augment.{key}={value!r}: a list must hold one or more numbers >= 0.')
    values = tuple(float(v) for v in value)
  elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
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
  if _is_number(value):
    lo, hi = 1.0 - value, 1.0 + value
    if value < 0:
      raise ValueError(f'augment.zoom_range={value!r}: a float must be >= 0.')
  elif isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value)):
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


def _parse(augment_config) -> _Spec:
  given = augment_config.to_dict() if hasattr(augment_config, 'to_dict') else dict(augment_config)
  unknown = sorted(set(given) - set(DEFAULTS))
  if unknown:
    raise ValueError(f'augment: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}.')
  c = {**DEFAULTS, **given}
  for key in ('horizontal_flip', 'vertical_flip'):
    if not isinstance(c[key], bool):
      raise ValueError(f'augment.{key}={c[key]!r}: must be a bool.')
  if c['fill_mode'] not in FILL_MODES:
    raise ValueError(f'augment.fill_mode={c["fill_mode"]!r}: must be one of {FILL_MODES}.')
  if not _is_number(c['cval']):
    raise ValueError(f'augment.cval={c["cval"]!r}: must be a finite number.')
  return _Spec(
      rotation=_non_negative('rotation_range', c['rotation_range']),
      height_shift=_parse_shift('height_shift_range', c['height_shift_range']),
      width_shift=_parse_shift('width_shift_range', c['width_shift_range']),
      shear=_non_negative('shear_range', c['shear_range']),
      zoom=_parse_zoom(c['zoom_range']),
      horizontal_flip=c['horizontal_flip'], vertical_flip=c['vertical_flip'],
      fill_mode=c['fill_mode'], cval=float(c['cval']))


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
      flip_v=(u['flip_v'] < 0.5) & spec.vertical_flip)


def sample_transform_params(rng, batch, height, width, augment_config) -> dict[str, jax.Array]:
  """Per-example Keras transform parameters, each an array [batch].

  theta and shear are in degrees, tx and ty in pixels (tx from height_shift_range, ty from
  width_shift_range, as in Keras), zx and zy are scales, flip_h and flip_v are bools. Options
  that are off give the identity value.
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


def _wrap(coord, size):
  """scipy's legacy 'wrap' (ni_interpolation.c map_coordinate): period size-1, so the first and
  last pixels coincide; points below 0 land in (0, size-1], points above size-1 in [0, size-1)."""
  if size == 1:
    return jnp.zeros_like(coord)
  period = size - 1
  # fmod(|coord|, period), which serves both sides. XLA:CPU's float remainder is a scalar libm
  # call (25x slower); floor is exact here but for the quotient's rounding, which the fix-up undoes.
  magnitude = jnp.abs(coord)
  rem = magnitude - period * jnp.floor(magnitude / period)
  rem = jnp.where(rem < 0, rem + period, jnp.where(rem >= period, rem - period, rem))
  return jnp.where(coord < 0, period - rem, jnp.where(coord > period, rem, coord))


def _reflect(index, size):
  """Half-sample symmetric extension of integer indices (scipy 'reflect'): period 2 * size."""
  index = jnp.mod(index, 2 * size)
  return jnp.where(index < size, index, 2 * size - 1 - index)


def _axis_taps(coord, size, fill_mode):
  """Linear interpolation along one axis: indices i0, i1, weight of i1, and (for 'constant') an
  in-bounds mask."""
  if fill_mode == 'reflect':
    floor = jnp.floor(coord)
    i0 = floor.astype(jnp.int32)
    return _reflect(i0, size), _reflect(i0 + 1, size), coord - floor, None
  if fill_mode == 'wrap':
    coord = _wrap(coord, size)
  inside = (coord >= 0) & (coord <= size - 1) if fill_mode == 'constant' else None
  # 'nearest' is this clamp; after 'wrap' it changes nothing, and for 'constant' it only keeps
  # the gather in range (points outside take cval).
  coord = jnp.clip(coord, 0, size - 1)
  floor = jnp.floor(coord)
  i0 = floor.astype(jnp.int32)
  return i0, jnp.minimum(i0 + 1, size - 1), coord - floor, inside


def sample_bilinear(images, rows, cols, fill_mode='nearest', cval=0.0):
  """scipy.ndimage order=1 sampling of images [B, H, W, C] at (rows, cols) [B, h, w].

  Returns [B, h, w, C]; fill modes as scipy's (see the module docstring).
  """
  if fill_mode not in FILL_MODES:
    raise ValueError(f'fill_mode={fill_mode!r}: must be one of {FILL_MODES}.')
  b, height, width, channels = images.shape
  r0, r1, fr, inside_r = _axis_taps(rows, height, fill_mode)
  c0, c1, fc, inside_c = _axis_taps(cols, width, fill_mode)
  flat = images.reshape(b, height * width, channels).astype(jnp.float32)
  gather = jax.vmap(lambda image, index: image[index])  # [HW, C], [h, w] -> [h, w, C]

  def at(r, c):
    return gather(flat, r * width + c)

  fr, fc = fr[..., None], fc[..., None]
  top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
  bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
  out = top * (1 - fr) + bottom * fr
  if fill_mode == 'constant':
    # A 0/1 blend rather than jnp.where: XLA:CPU fuses it with the gathers, twice as fast. Exact
    # for finite pixels (x * 1 + cval * 0 == x).
    inside = (inside_r & inside_c)[..., None].astype(jnp.float32)
    out = out * inside + jnp.asarray(cval, jnp.float32) * (1 - inside)
  return out.astype(images.dtype)


def apply_transform(images, params, fill_mode='nearest', cval=0.0):
  """Keras `ImageDataGenerator.apply_transform` for a batch: images [B, H, W, C] (floating), params
  as from `sample_transform_params` (missing keys mean identity). Deterministic; jit with
  fill_mode static."""
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f'images must be floating point, got {images.dtype}.')
  rows, cols = source_coords(params, *images.shape[:3])
  return sample_bilinear(images, rows, cols, fill_mode, cval)


def make_augment_fn(augment_config) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
  """fn(rng, images) -> images for float [B, H, W, C] in raw 0..255 pixels (Keras transforms
  before `rescale`), or None when every option is off. Pure, jittable and vmappable."""
  spec = _parse(augment_config)
  if not spec.enabled:
    return None

  def augment(rng: Any, images: jax.Array) -> jax.Array:
    b, height, width, _ = images.shape
    params = _sample(rng, b, height, width, spec)
    return apply_transform(images, params, spec.fill_mode, spec.cval)

  return augment
