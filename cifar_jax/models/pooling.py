"""Max pooling whose backward pass is fast on every backend.

For non-overlapping windows (pool size == strides, 'valid'), the forward pass is an elementwise
maximum over the window's strided slices and the backward pass routes each gradient to the
*first* maximum of its window, exactly what XLA's select-and-scatter (and TensorFlow's
MaxPoolGrad) do. Both passes are elementwise, so XLA fuses each into one loop over the data.
Forward + backward of the configs' pools (benchmarks/max_pool.py, 2-core AMD EPYC Zen 4): 3.2-3.8x
faster than flax's (XLA:CPU's select-and-scatter) for 2x2 windows, 6x for airbench94's 3x3 on
4x4; an argmax over a transposed window axis (a variadic reduce XLA:CPU does not vectorise), this
module's first form, was 1.5-1.8x slower than the slices. Whole train steps move by a few percent
at most (airbench94's ~5%; exp0's, m1's and p2cnn's within noise, the pool being fused with its
neighbours there). The residual is the first maximum's position as an int8, a sixteenth of the
input's bytes. Other cases (overlapping windows, 'same' padding) fall back to
`flax.linen.max_pool`.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _window_slices(x, ph, pw):
  """The ph * pw strided slices [B, H/ph, W/pw, C] of x, in row-major window order."""
  return [x[:, i::ph, j::pw, :] for i in range(ph) for j in range(pw)]


def _max_and_first(x, ph, pw):
  """Each window's maximum and the position of its first maximum, in one pass over the slices.

  The position is an int8 (a sixteenth of x's bytes). A later element takes over only when
  strictly greater, as select-and-scatter's `ge` keeps the earlier one.
  """
  parts = _window_slices(x, ph, pw)
  index_dtype = jnp.int8 if len(parts) <= 127 else jnp.int32
  pooled, first = parts[0], jnp.zeros(parts[0].shape, index_dtype)
  for k, part in enumerate(parts[1:], 1):
    first = jnp.where(part > pooled, jnp.asarray(k, index_dtype), first)
    pooled = jnp.maximum(pooled, part)
  return pooled, first


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tiled_max_pool(x, ph, pw):
  return _max_and_first(x, ph, pw)[0]


def _tiled_max_pool_fwd(x, ph, pw):
  return _max_and_first(x, ph, pw)


def _tiled_max_pool_bwd(ph, pw, first, g):
  # Each input element's gradient, in the input's own layout viewed as [B, H/ph, ph, W/pw, pw, C]:
  # its window's g where it is the window's first maximum, else 0. Broadcasts only, so XLA
  # writes the gradient in one vectorised pass (stacking the ph * pw routed copies and
  # transposing them into place ran 1.5x slower).
  b, hh, ww, c = g.shape
  shape = (b, hh, ph, ww, pw, c)
  position = jnp.arange(ph * pw, dtype=first.dtype).reshape(1, 1, ph, 1, pw, 1)
  is_first = first[:, :, None, :, None, :] == position
  grad = jnp.where(is_first, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  return (jnp.broadcast_to(grad, shape).reshape(b, hh * ph, ww * pw, c),)


_tiled_max_pool.defvjp(_tiled_max_pool_fwd, _tiled_max_pool_bwd)


def max_pool(x, window: tuple[int, int], strides: tuple[int, int], padding: str):
  """`flax.linen.max_pool(x, window, strides, padding)` on NHWC inputs, same values and
  gradients, faster backward for non-overlapping windows."""
  ph, pw = window
  if tuple(strides) == tuple(window) and x.ndim == 4 and (
      padding == 'VALID' or (ph, pw) == (1, 1)):
    # 'valid' windows leave out the rows and columns past the last whole window.
    h, w = x.shape[1] // ph * ph, x.shape[2] // pw * pw
    if h and w:
      return _tiled_max_pool(x[:, :h, :w, :], ph, pw)
  return nn.max_pool(x, window, strides, padding)
