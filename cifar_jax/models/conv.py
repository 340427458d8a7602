"""`lax.conv_general_dilated` whose weight gradient is matmuls on CPU.

XLA:CPU computes a convolution's weight gradient as another convolution: the batch becomes the
contracted feature dimension and dy a kernel the size of the image. For many layer shapes that runs
a few times slower than the forward convolution. The same numbers are one matmul per kernel tap,
dW[tap] = window(tap)^T @ dy, contracting batch and output pixels, where window(tap) is the slice
of the padded input that the tap sees at every output pixel; those run at XLA:CPU's matmul speed.

`conv_general_dilated` takes lax.conv_general_dilated's arguments, so flax's nn.Conv accepts it
(`nn.Conv(..., conv_general_dilated=conv.conv_general_dilated)`). The forward pass and the input
gradient are XLA's own; only the weight gradient changes, and only in programs lowered for CPU
(`lax.platform_dependent`): on accelerators it is XLA's gradient, op for op. Convolutions the
matmul form does not cover (dilations, feature or batch groups, layouts other than channels-last,
non-float dtypes) are plain lax.conv_general_dilated, as are the shapes where XLA:CPU's own
gradient measured as fast (`matmul_weight_grad_pays`).

CIFAR_JAX_CONV_GRAD picks the CPU weight gradient: 'auto' (the default) the matmuls where they
pay, 'xla' never (plain lax.conv_general_dilated everywhere), 'matmul' wherever covered (tests,
benchmarks). It is read when a convolution is traced, so a jitted function keeps the choice it
was traced with.
"""

import functools
import itertools
import os
from typing import Any, NamedTuple, Sequence

import jax
from jax import lax
import jax.numpy as jnp

ENV_VAR = 'CIFAR_JAX_CONV_GRAD'
MODES = ('auto', 'xla', 'matmul')

# Rows (batch x output pixels) per matmul in a tap's contraction: it runs as a batched matmul
# of at least this many rows per batch entry, then a sum. One matmul contracting 10^5+ rows into
# a small [Cin, Cout] block ran up to 2x slower on XLA:CPU; 2k-8k rows measured alike.
ROWS_PER_CHUNK = 4096


class ConvSpec(NamedTuple):
  """The static arguments of a channels-last convolution (hashable: a custom_vjp nondiff arg)."""
  strides: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]
  precision: Any
  preferred_element_type: Any


def mode() -> str:
  value = os.environ.get(ENV_VAR, 'auto').lower()
  if value not in MODES:
    raise ValueError(f'{ENV_VAR}={value!r}; known: {list(MODES)}')
  return value


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None, out_sharding=None):
  """lax.conv_general_dilated, with a matmul weight gradient on CPU where it covers the case."""
  reason = fallback_reason(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count, batch_group_count, out_sharding)
  if reason is not None:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type, out_sharding=out_sharding)
  padding = explicit_padding(lhs.shape, rhs.shape, window_strides, padding)
  spec = ConvSpec(tuple(window_strides), padding, precision, preferred_element_type)
  return _conv(spec, lhs, rhs)


def fallback_reason(lhs, rhs, window_strides, lhs_dilation=None, rhs_dilation=None,
                    dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                    out_sharding=None) -> str | None:
  """Why this convolution is plain lax.conv_general_dilated, or None if it gets the matmul grad."""
  if mode() == 'xla':
    return f'{ENV_VAR}=xla'
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return 'dilation'
  if feature_group_count != 1 or batch_group_count != 1:
    return 'feature or batch groups'
  if out_sharding is not None:
    return 'out_sharding'
  if dimension_numbers is None or (lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                                               dimension_numbers)
                                   != channels_last_dimension_numbers(lhs.ndim)):
    return 'layout is not channels-last (NHWC, HWIO)'
  if not (jnp.issubdtype(lhs.dtype, jnp.floating) and jnp.issubdtype(rhs.dtype, jnp.floating)):
    return 'not floating point'
  if mode() == 'auto' and not matmul_weight_grad_pays(lhs.shape, rhs.shape, window_strides):
    return "XLA:CPU's own weight gradient is as fast for this shape"
  return None


def channels_last_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """(N, spatial..., C) input and output, (spatial..., I, O) kernel: what flax's nn.Conv uses."""
  lhs_spec = (0, ndim - 1) + tuple(range(1, ndim - 1))
  rhs_spec = (ndim - 1, ndim - 2) + tuple(range(0, ndim - 2))
  return lax.ConvDimensionNumbers(lhs_spec, rhs_spec, lhs_spec)


def explicit_padding(lhs_shape, rhs_shape, strides, padding) -> tuple[tuple[int, int], ...]:
  """'SAME' / 'VALID' / explicit pairs as ((low, high), ...) per spatial dim, as lax computes it."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs_shape[1:-1], rhs_shape[:-2], strides, padding)
  return tuple((int(low), int(high)) for low, high in padding)


def matmul_weight_grad_pays(lhs_shape, rhs_shape, strides) -> bool:
  """Whether, on CPU, the matmul weight gradient measured faster than XLA's for this shape.

  Measured with benchmarks/conv_grad.py on a busy 2-core Xeon (AVX-512), wall and CPU time:
  the matmuls win for 1x1 kernels (2-8x: XLA's gradient convolution is slowest there) and for
  3x3 kernels of 64->128 channels or wider (128->128, 256->256: 1.4-3x) on 8x8+ images when
  batch x pixels is 8192+. XLA's own is as fast, faster or a toss-up for narrower layers (3->64,
  64->64, DenseNet's 128->32 growth convs), for 5x5+ kernels (m1's 6x6, the 7x7 stem), on 4x4
  images, and for small batches of small images, where the tap matmuls get too small.
  """
  kernel_taps = _prod(rhs_shape[:-2])
  cin, cout = rhs_shape[-2:]
  out_pixels = _prod(-(-size // stride) for size, stride in zip(lhs_shape[1:-1], strides))
  if kernel_taps == 1:
    return True
  return (kernel_taps <= 9 and min(cin, cout) >= 64 and cin * cout >= 8192 and out_pixels >= 64
          and lhs_shape[0] * out_pixels >= 8192)


# --- The convolution with a custom VJP. -----------------------------------------------------

def xla_conv(spec: ConvSpec, lhs, rhs):
  """The plain XLA convolution `spec` describes (channels-last)."""
  return lax.conv_general_dilated(
      lhs, rhs, spec.strides, spec.padding,
      dimension_numbers=channels_last_dimension_numbers(lhs.ndim), precision=spec.precision,
      preferred_element_type=spec.preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(spec: ConvSpec, lhs, rhs):
  return xla_conv(spec, lhs, rhs)


def _conv_fwd(spec: ConvSpec, lhs, rhs):
  return xla_conv(spec, lhs, rhs), (lhs, rhs)


def _conv_bwd(spec: ConvSpec, residuals, dy):
  lhs, rhs = residuals
  _, input_vjp = jax.vjp(lambda x: xla_conv(spec, x, rhs), lhs)
  (dx,) = input_vjp(dy)
  # Picked when the program is lowered, per platform: a CPU program gets the matmuls, any other
  # only XLA's gradient convolution.
  dw = lax.platform_dependent(lhs, rhs, dy, cpu=functools.partial(_cpu_weight_grad, spec),
                              default=functools.partial(xla_weight_grad, spec))
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def xla_weight_grad(spec: ConvSpec, lhs, rhs, dy):
  """XLA's weight gradient: what jax.grad of lax.conv_general_dilated computes."""
  _, kernel_vjp = jax.vjp(lambda w: xla_conv(spec, lhs, w), rhs)
  return kernel_vjp(dy)[0]


def _cpu_weight_grad(spec: ConvSpec, lhs, rhs, dy):
  grad = matmul_weight_grad(lhs, dy, rhs.shape[:-2], spec.strides, spec.padding, spec.precision)
  return grad.astype(rhs.dtype)


# --- The weight gradient as matmuls. ----------------------------------------------------------

def matmul_weight_grad(lhs, dy, kernel_size: Sequence[int], strides: Sequence[int],
                       padding: Sequence[tuple[int, int]], precision=None):
  """dW [*kernel_size, Cin, Cout] of a channels-last convolution: a matmul per kernel tap.

  lhs: [N, *spatial, Cin]; dy: [N, *out_spatial, Cout]. Accumulates in float32 (or wider); the
  caller casts to the kernel's dtype. Taps run one at a time (a scan), so beyond the input's
  stride phases only one tap's window is in memory, whatever the kernel size.
  """
  kernel_size, strides = tuple(kernel_size), tuple(strides)
  out_spatial = dy.shape[1:-1]
  dtype = jnp.result_type(lhs.dtype, dy.dtype)
  lhs, dy = lhs.astype(dtype), dy.astype(dtype)
  phases = stride_phases(lhs, padding, strides, kernel_size, out_spatial)
  chunks = batch_chunks(dy.shape[0], _prod(out_spatial))
  taps = list(itertools.product(*(range(k) for k in kernel_size)))
  window_shape = (1, *dy.shape[:-1], lhs.shape[-1])
  if len(taps) == 1:  # A 1x1 kernel: one matmul (on lhs itself if stride 1 and no padding).
    window = lax.slice(phases, (0,) * phases.ndim, window_shape)[0]
    grads = _contract_rows(window, dy, chunks, precision)[None]
  else:
    starts = jnp.asarray([tap_start(tap, strides) for tap in taps], jnp.int32)

    def tap_grad(carry, start):
      window = lax.dynamic_slice(phases, (start[0], 0, *start[1:], 0), window_shape)[0]
      return carry, _contract_rows(window, dy, chunks, precision)

    _, grads = lax.scan(tap_grad, None, starts)
  return grads.reshape(*kernel_size, lhs.shape[-1], dy.shape[-1])


def tap_start(tap: Sequence[int], strides: Sequence[int]) -> tuple[int, ...]:
  """(stride phase index, start in that phase per spatial dim) of the window a kernel tap sees.

  Tap t reads padded input positions t + s*p (p: output position), i.e. positions t//s + p of
  the phase that starts at t % s.
  """
  phase = 0
  for t, s in zip(tap, strides):
    phase = phase * s + t % s
  return (phase, *(t // s for t, s in zip(tap, strides)))


def stride_phases(lhs, padding, strides, kernel_size, out_spatial):
  """The padded input split by stride phase: [prod(strides), N, *phase_spatial, C].

  Phase (a, b, ...) holds padded positions a, a+s, a+2s, ...; with these a strided tap window is
  a contiguous slice of one phase (so a scan can dynamic_slice it). For stride 1 this is just the
  padded input. Phases are cut or zero-padded to the common length out + (k-1)//s; zeros past
  the input are never read by a tap.
  """
  pad_config = ((0, 0, 0), *((low, high, 0) for low, high in padding), (0, 0, 0))
  padded = lax.pad(lhs, jnp.zeros((), lhs.dtype), pad_config)
  lengths = [o + (k - 1) // s for o, k, s in zip(out_spatial, kernel_size, strides)]
  phases = []
  for offsets in itertools.product(*(range(s) for s in strides)):
    phase = padded[(slice(None),) + tuple(slice(a, None, s) for a, s in zip(offsets, strides))]
    phase = phase[(slice(None),) + tuple(slice(0, n) for n in lengths)]
    missing = [(0, n - have) for n, have in zip(lengths, phase.shape[1:-1])]
    phases.append(jnp.pad(phase, ((0, 0), *missing, (0, 0))))
  return jnp.stack(phases)


def batch_chunks(batch: int, pixels: int, rows_per_chunk: int = ROWS_PER_CHUNK) -> int:
  """How many equal batch chunks of at least rows_per_chunk rows (or the whole batch) to use."""
  images = min(batch, max(1, -(-rows_per_chunk // pixels)))
  while batch % images:
    images += 1
  return batch // images


def _contract_rows(window, dy, chunks: int, precision):
  """window [N, ..., Cin], dy [N, ..., Cout] -> [Cin, Cout], contracting every other dim."""
  cin, cout = window.shape[-1], dy.shape[-1]
  accumulate = jnp.promote_types(window.dtype, jnp.float32)
  window, dy = window.reshape(chunks, -1, cin), dy.reshape(chunks, -1, cout)
  per_chunk = lax.dot_general(window, dy, (((1,), (1,)), ((0,), (0,))), precision=precision,
                              preferred_element_type=accumulate)
  return per_chunk.sum(0)


def _prod(values) -> int:
  out = 1
  for v in values:
    out *= v
  return out
