"""Bilinear sampling of image batches at arbitrary points, with scipy.ndimage's fill modes.

Both augmentation stages resample, and they extend the image past its border differently:
ImageDataGenerator goes through scipy.ndimage (order=1), the Keras preprocessing layers (jax
backend) through jax.scipy.ndimage.map_coordinates. scipy has a name for each behaviour:

* 'nearest' clamps; 'reflect' is half-sample symmetric (d c b a | a b c d | d c b a). Both
  libraries agree on these two.
* 'constant' (scipy; ImageDataGenerator): `cval` wherever the *point* lies outside
  [0, size-1] on either axis, with no blending.
* 'grid-constant' (jax's 'constant'; the Keras layers): each of the four neighbours that lies
  outside the image reads `cval`, and is blended like any other.
* 'wrap' (scipy's legacy wrap; ImageDataGenerator): period size-1, so the first and last pixel
  coincide.
* 'grid-wrap' (jax's 'wrap'; the Keras layers): period size.

Everything is gathers and elementwise arithmetic: no loops over examples, no host callbacks.
"""

import jax
import jax.numpy as jnp

FILL_MODES = ('nearest', 'constant', 'reflect', 'wrap', 'grid-constant', 'grid-wrap')


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
  """Linear interpolation along one axis: the two neighbours' indices (in range), the weight of
  the second, and what 'constant' modes need: for 'constant' one mask (the point is inside), for
  'grid-constant' a pair (each neighbour is inside); None otherwise."""
  if fill_mode in ('reflect', 'grid-wrap', 'grid-constant'):  # Extend by neighbour index.
    floor = jnp.floor(coord)
    i0 = floor.astype(jnp.int32)
    i1 = i0 + 1
    if fill_mode == 'reflect':
      return _reflect(i0, size), _reflect(i1, size), coord - floor, None
    if fill_mode == 'grid-wrap':
      return jnp.mod(i0, size), jnp.mod(i1, size), coord - floor, None
    valid = tuple((0 <= i) & (i < size) for i in (i0, i1))
    return jnp.clip(i0, 0, size - 1), jnp.clip(i1, 0, size - 1), coord - floor, valid
  if fill_mode == 'wrap':
    coord = _wrap(coord, size)
  inside = (coord >= 0) & (coord <= size - 1) if fill_mode == 'constant' else None
  # 'nearest' is this clamp; after 'wrap' it changes nothing, and for 'constant' it only keeps
  # the gather in range (points outside take cval).
  coord = jnp.clip(coord, 0, size - 1)
  floor = jnp.floor(coord)
  i0 = floor.astype(jnp.int32)
  return i0, jnp.minimum(i0 + 1, size - 1), coord - floor, inside


def _lerp(a, b, weight_b):
  # a + w (b - a) rather than a (1 - w) + b w: exact where a == b (flat regions, and cval
  # everywhere outside) and where w == 0 (integer shifts), which truncating consumers (Keras's
  # brightness shift) need. scipy gets there by computing in float64 and rounding to float32.
  return a + weight_b * (b - a)


def _blend(values, mask, cval):
  # A 0/1 blend rather than jnp.where: XLA:CPU fuses it with the gathers, twice as fast. Exact
  # for finite pixels (x * 1 + cval * 0 == x).
  mask = mask[..., None].astype(jnp.float32)
  return values * mask + jnp.asarray(cval, jnp.float32) * (1 - mask)


def sample_bilinear(images, rows, cols, fill_mode='nearest', cval=0.0):
  """scipy.ndimage order=1 sampling of images [B, H, W, C] at (rows, cols) [B, h, w].

  Returns [B, h, w, C] float32 (cast back to a floating input dtype); fill modes as in the
  module docstring. Integer points read pixels exactly.
  """
  if fill_mode not in FILL_MODES:
    raise ValueError(f'fill_mode={fill_mode!r}: must be one of {FILL_MODES}.')
  b, height, width, channels = images.shape
  r0, r1, fr, valid_r = _axis_taps(rows, height, fill_mode)
  c0, c1, fc, valid_c = _axis_taps(cols, width, fill_mode)
  flat = images.reshape(b, height * width, channels).astype(jnp.float32)
  gather = jax.vmap(lambda image, index: image[index])  # [HW, C], [h, w] -> [h, w, C]

  def at(i, r, j, c):
    values = gather(flat, r * width + c)
    if fill_mode == 'grid-constant':
      values = _blend(values, valid_r[i] & valid_c[j], cval)
    return values

  fr, fc = fr[..., None], fc[..., None]
  top = _lerp(at(0, r0, 0, c0), at(0, r0, 1, c1), fc)
  bottom = _lerp(at(1, r1, 0, c0), at(1, r1, 1, c1), fc)
  out = _lerp(top, bottom, fr)
  if fill_mode == 'constant':
    out = _blend(out, valid_r & valid_c, cval)
  return out.astype(images.dtype)


def sample_nearest(images, rows, cols, fill_mode='nearest', cval=0.0):
  """Order-0 sampling as jax.scipy.ndimage.map_coordinates does it: the point rounded half away
  from zero, then the fill mode applied to that pixel."""
  rounded = [jax.lax.round(x, jax.lax.RoundingMethod.AWAY_FROM_ZERO) for x in (rows, cols)]
  return sample_bilinear(images, *rounded, fill_mode, cval)
