"""A channels-last 2-D float32 convolution whose forward pass and gradients are oneDNN's, on CPU.

The prototype of issue #20's last lever (benchmarks/onednn/README.md): libonednn_conv.so
(onednn_conv.cc, built by build.sh) holds three XLA FFI handlers, forward, input gradient and
weight gradient; `load()` registers them for the CPU platform with jax.ffi, and `conv` is a
custom_vjp convolution over them, lax.conv_general_dilated's NHWC / HWIO / NHWC form with
strides and explicit or 'SAME' / 'VALID' padding. Without the library (`available()` False)
`conv` is XLA's own convolution, gradients included, so a caller keeps working.

    from onednn_conv import conv, load
    load()  # once, before tracing
    y = conv(x, w, (1, 1), 'SAME')
"""

import ctypes
import functools
import os
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = os.path.join(HERE, 'libonednn_conv.so')
TARGETS = {'onednn_conv_fwd': 'OnednnConvFwd', 'onednn_conv_bwd_data': 'OnednnConvBwdData',
           'onednn_conv_bwd_weights': 'OnednnConvBwdWeights'}
DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')

_library = None


def load(path: str = LIBRARY) -> bool:
  """Registers the handlers (once); False when the library is missing or does not load."""
  global _library
  if _library is not None:
    return True
  # libgomp reads this when it loads: its default (spinning OpenMP threads between calls)
  # steals a core from XLA's own threads and, on a loaded 2-core machine, made oneDNN's calls
  # up to 5x slower (benchmarks/onednn/README.md).
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  try:
    library = ctypes.cdll.LoadLibrary(path)
  except OSError:
    return False
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform='cpu')
  library.OnednnConvVersion.restype = ctypes.c_char_p
  _library = library
  return True


def available() -> bool:
  return _library is not None


def version() -> str:
  return _library.OnednnConvVersion().decode() if _library is not None else ''


def implementation(kind: str, x_shape, w_shape, strides, pads) -> str:
  """oneDNN's implementation name for kind 'f' (forward), 'd' (input grad), 'w' (weight grad)."""
  if _library is None:
    return ''
  f = _library.OnednnConvImplInfo
  f.restype = ctypes.c_char_p
  f.argtypes = [ctypes.c_char] + [ctypes.c_int64] * 13
  (top, bottom), (left, right) = pads
  n, h, w, c = x_shape
  kh, kw, _, o = w_shape
  return f(kind.encode(), n, h, w, c, kh, kw, o, strides[0], strides[1], top, bottom, left,
           right).decode()


def explicit_padding(x_shape, w_shape, strides, padding) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def output_spatial(x_shape, w_shape, strides, pads) -> tuple[int, int]:
  return tuple((x_shape[1 + i] + lo + hi - w_shape[i]) // strides[i] + 1
               for i, (lo, hi) in enumerate(pads))


def _attrs(strides, pads) -> dict:
  (top, bottom), (left, right) = pads
  return {'stride_h': np.int64(strides[0]), 'stride_w': np.int64(strides[1]),
          'pad_top': np.int64(top), 'pad_bottom': np.int64(bottom),
          'pad_left': np.int64(left), 'pad_right': np.int64(right)}


def forward(x, w, strides, pads):
  """oneDNN's y = conv(x, w) (the raw FFI call, no gradient)."""
  oh, ow = output_spatial(x.shape, w.shape, strides, pads)
  out = jax.ShapeDtypeStruct((x.shape[0], oh, ow, w.shape[3]), jnp.float32)
  return jax.ffi.ffi_call('onednn_conv_fwd', out)(x, w, **_attrs(strides, pads))


def input_grad(dy, w, x_shape, strides, pads):
  """oneDNN's dL/dx from dL/dy."""
  out = jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32)
  return jax.ffi.ffi_call('onednn_conv_bwd_data', out)(dy, w, **_attrs(strides, pads))


def weight_grad(x, dy, w_shape, strides, pads):
  """oneDNN's dL/dw from the input and dL/dy."""
  out = jax.ShapeDtypeStruct(tuple(w_shape), jnp.float32)
  return jax.ffi.ffi_call('onednn_conv_bwd_weights', out)(x, dy, **_attrs(strides, pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, pads):
  return forward(x, w, strides, pads)


def _conv_fwd(x, w, strides, pads):
  return forward(x, w, strides, pads), (x, w)


def _conv_bwd(strides, pads, residuals, dy):
  x, w = residuals
  return (input_grad(dy, w, x.shape, strides, pads),
          weight_grad(x, dy, w.shape, strides, pads))


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x, w, strides: Sequence[int] = (1, 1), padding='SAME'):
  """NHWC x, HWIO w, float32: oneDNN when loaded, else lax.conv_general_dilated."""
  strides = tuple(int(s) for s in strides)
  pads = explicit_padding(x.shape, w.shape, strides, padding)
  if (_library is None or x.dtype != jnp.float32 or w.dtype != jnp.float32
      or x.ndim != 4 or w.ndim != 4):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DIMENSION_NUMBERS)
  # CPU only: a program lowered for an accelerator gets XLA's convolution (the handlers are
  # registered for the CPU platform alone).
  return lax.platform_dependent(
      x, w, cpu=lambda x, w: _conv(x, w, strides, pads),
      default=lambda x, w: lax.conv_general_dilated(x, w, strides, pads,
                                                    dimension_numbers=DIMENSION_NUMBERS))


_CHANNELS_LAST = None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, out_sharding=None,
                         fallback=lax.conv_general_dilated):
  """lax.conv_general_dilated's signature (what flax's nn.Conv calls): `conv` where it covers the
  arguments (2-D, channels-last, float32, no dilations or groups), else `fallback`'s."""
  global _CHANNELS_LAST
  if _CHANNELS_LAST is None:
    _CHANNELS_LAST = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), DIMENSION_NUMBERS)
  dims = (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
          if lhs.ndim == 4 and rhs.ndim == 4 else None)
  covered = (_library is not None and dims == _CHANNELS_LAST
             and lhs.dtype == jnp.float32 and rhs.dtype == jnp.float32
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1)))
             and feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type in (None, jnp.float32) and out_sharding is None)
  if not covered:
    return fallback(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                    feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                    precision=precision, preferred_element_type=preferred_element_type,
                    out_sharding=out_sharding)
  return conv(lhs, rhs, window_strides, padding)
