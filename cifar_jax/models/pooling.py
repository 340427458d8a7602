"""Max pooling whose backward pass is fast on every backend.

For the common case of non-overlapping windows (pool size == strides, 'valid', sizes that divide),
the forward pass is a reshape + max and the backward pass routes each gradient to the *first*
maximum of its window, exactly what XLA's select-and-scatter (and TensorFlow's MaxPoolGrad) do.
XLA:CPU's select-and-scatter is several times slower than this; other cases fall back to
`flax.linen.max_pool`.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _windows(x, ph, pw):
  b, h, w, c = x.shape
  # [B, H/ph, W/pw, C, ph*pw]: each window's elements last, in row-major window order.
  x = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // ph, w // pw, c, ph * pw)


def _unwindows(x, ph, pw):
  b, hh, ww, c, _ = x.shape
  x = x.reshape(b, hh, ww, c, ph, pw).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, hh * ph, ww * pw, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tiled_max_pool(x, ph, pw):
  return jnp.max(_windows(x, ph, pw), axis=-1)


def _tiled_max_pool_fwd(x, ph, pw):
  windows = _windows(x, ph, pw)
  first_max = jnp.argmax(windows, axis=-1)  # argmax returns the first of tied maxima.
  return jnp.max(windows, axis=-1), first_max


def _tiled_max_pool_bwd(ph, pw, first_max, g):
  routed = jax.nn.one_hot(first_max, ph * pw, dtype=g.dtype) * g[..., None]
  return (_unwindows(routed, ph, pw),)


_tiled_max_pool.defvjp(_tiled_max_pool_fwd, _tiled_max_pool_bwd)


def max_pool(x, window: tuple[int, int], strides: tuple[int, int], padding: str):
  """`flax.linen.max_pool(x, window, strides, padding)` on NHWC inputs, same values and
  gradients, faster backward for non-overlapping windows."""
  ph, pw = window
  if (tuple(strides) == tuple(window) and x.ndim == 4 and x.shape[1] % ph == 0
      and x.shape[2] % pw == 0 and (padding == 'VALID' or (ph, pw) == (1, 1))):
    return _tiled_max_pool(x, ph, pw)
  return nn.max_pool(x, window, strides, padding)
