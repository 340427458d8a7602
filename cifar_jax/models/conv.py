"""`lax.conv_general_dilated` whose gradients XLA:CPU runs fast everywhere, loops included.

XLA computes a convolution's gradients as two more convolutions: the input gradient convolves
dy with the flipped kernel read as [*k, Cout, Cin] (dimension labels b01f_01oi->b01f), the
weight gradient convolves the input with dy, the batch being the contracted feature dimension
(f01b_i01o->01bf). Outside loops XLA:CPU transposes their operands into the layout its Eigen
convolution takes; inside a while loop (a `lax.fori_loop` of train steps) it does not, and runs
a naive loop nest, 8-300x slower (3x3 128->128 at 16 px, batch 256: weight gradient 57 s
against 0.19 s). So on CPU both gradients here are those convolutions with the transposes
written out (`conv_input_grad`, `conv_weight_grad`): as fast as XLA's outside loops, and inside
them too. For 1x1 kernels the weight gradient is one matmul (`matmul_weight_grad`), 1.5-2x
faster than either convolution (benchmarks/conv_grad.py).

`conv_general_dilated` takes lax.conv_general_dilated's arguments, so flax's nn.Conv accepts it
(`nn.Conv(..., conv_general_dilated=conv.conv_general_dilated)`). The forward pass is XLA's own;
the gradients change only in programs lowered for CPU (`lax.platform_dependent`): on
accelerators they are XLA's, op for op. Convolutions these forms do not cover (dilations,
feature or batch groups, layouts other than channels-last, non-float dtypes) are plain
lax.conv_general_dilated.

The CPU weight gradient's mode: 'auto' (the default; as above), 'conv' (the explicit
convolution for every kernel), 'matmul' (a matmul per kernel tap for every kernel), 'tuned' (the
faster of those two per layer shape, measured on this CPU at first use and cached on disk:
conv_tuning), 'xla' (plain lax.conv_general_dilated everywhere, gradients included). A run sets
it from its config (model.conv_grad: the train steps trace inside `grad_mode(...)`); elsewhere,
and where the config leaves it '', the CIFAR_JAX_CONV_GRAD environment variable does. It is read
when a convolution is traced and travels in its ConvSpec to the gradient, so a jitted function
keeps the mode it was traced with.

The backend: 'xla' (the default; all of the above), 'onednn' (models/onednn_conv.py: oneDNN's
forward and gradients for 2-D float32 convolutions in CPU programs) or 'tuned' (per convolution
problem, and per part of it: forward, input gradient, weight gradient, the faster of oneDNN's
and the XLA forms above on this CPU, measured at first use and cached on disk like the weight
gradient's 'tuned' mode: conv_tuning). Programs for other platforms get XLA's convolutions
whatever the backend. A run sets it from model.conv_backend; the train steps trace inside
`backend(...)`.
"""

import contextlib
import contextvars
import functools
import itertools
import os
from typing import Any, NamedTuple, Sequence

import jax
from jax import lax
import jax.numpy as jnp

from cifar_jax.models import conv_tuning
from cifar_jax.models import onednn_conv

ENV_VAR = 'CIFAR_JAX_CONV_GRAD'
MODES = ('auto', 'conv', 'matmul', 'tuned', 'xla')
_scoped_mode = contextvars.ContextVar('conv_grad_mode', default='')
BACKENDS = ('xla', 'onednn', 'tuned')
_scoped_backend = contextvars.ContextVar('conv_backend', default='xla')

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
  grad_mode: str = 'auto'  # mode() when the convolution was traced.
  # Whose kernel each part (forward, input gradient, weight gradient) runs in CPU programs:
  # 'xla' (the forms of this module) or 'onednn'.
  cpu_kernels: tuple[str, str, str] = ('xla', 'xla', 'xla')


def mode() -> str:
  """The mode convolutions traced now get: grad_mode's if inside one, else $CIFAR_JAX_CONV_GRAD's."""
  value = _scoped_mode.get() or os.environ.get(ENV_VAR, 'auto').lower()
  if value not in MODES:
    raise ValueError(f'{ENV_VAR}={value!r} is unknown; known: {list(MODES)}')
  return value


def effective_mode(value: str) -> str:
  """The mode a step traced inside grad_mode(value) gives its convolutions."""
  with grad_mode(value):
    return mode()


@contextlib.contextmanager
def grad_mode(value: str):
  """Convolutions traced inside get mode `value` ('': whatever they would get outside)."""
  if not value:
    yield
    return
  if value not in MODES:
    raise ValueError(f'model.conv_grad={value!r} is unknown; known: {list(MODES)}')
  with _set_within(_scoped_mode, value):
    yield


def current_backend() -> str:
  """The backend convolutions traced now get: backend()'s if inside one, else 'xla'."""
  return _scoped_backend.get()


@contextlib.contextmanager
def backend(value: str):
  """Convolutions traced inside get backend `value` (one of BACKENDS). jit keeps a function's
  trace whatever the scope: a TrainState carries its backend as a static field instead, which is
  part of jit's cache key."""
  if value not in BACKENDS:
    raise ValueError(f'model.conv_backend={value!r} is unknown; known: {list(BACKENDS)}')
  with _set_within(_scoped_backend, value):
    yield


@contextlib.contextmanager
def _set_within(variable: contextvars.ContextVar, value):
  token = variable.set(value)
  try:
    yield
  finally:
    variable.reset(token)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None, out_sharding=None):
  """lax.conv_general_dilated, with the CPU weight gradient of the module docstring."""
  reason = layout_reason(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                         feature_group_count, batch_group_count, out_sharding)
  if reason is None:
    padding = explicit_padding(lhs.shape, rhs.shape, window_strides, padding)
  # oneDNN where asked for, on CPU (an accelerator host never loads it: XLA's convolutions).
  onednn = (reason is None and current_backend() != 'xla' and jax.default_backend() == 'cpu'
            and onednn_conv.covers(lhs, rhs, padding, preferred_element_type))
  if not onednn and reason is None and mode() == 'xla':
    reason = f'{ENV_VAR}=xla'
  if reason is not None:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type, out_sharding=out_sharding)
  spec = ConvSpec(tuple(window_strides), padding, precision, preferred_element_type, mode())
  if onednn:
    onednn_conv.load()
    kernels = (('onednn',) * 3 if current_backend() == 'onednn'
               else tuned_cpu_kernels(spec, lhs, rhs))
    spec = spec._replace(cpu_kernels=kernels)
  return _conv(spec, lhs, rhs)


def fallback_reason(lhs, rhs, window_strides, lhs_dilation=None, rhs_dilation=None,
                    dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                    out_sharding=None) -> str | None:
  """Why this convolution is plain lax.conv_general_dilated under backend 'xla', or None if it
  gets the custom VJP."""
  del window_strides  # (lax's signature.)
  if mode() == 'xla':
    return f'{ENV_VAR}=xla'
  return layout_reason(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                       feature_group_count, batch_group_count, out_sharding)


def layout_reason(lhs, rhs, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                  feature_group_count=1, batch_group_count=1, out_sharding=None) -> str | None:
  """What in this convolution's form no custom convolution here covers, or None."""
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


# --- The convolution with a custom VJP. -----------------------------------------------------

def xla_conv(spec: ConvSpec, lhs, rhs):
  """The plain XLA convolution `spec` describes (channels-last)."""
  return lax.conv_general_dilated(
      lhs, rhs, spec.strides, spec.padding,
      dimension_numbers=channels_last_dimension_numbers(lhs.ndim), precision=spec.precision,
      preferred_element_type=spec.preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(spec: ConvSpec, lhs, rhs):
  if spec.cpu_kernels[0] == 'xla':
    return xla_conv(spec, lhs, rhs)
  # Picked when the program is lowered, per platform, as the gradients below.
  return lax.platform_dependent(lhs, rhs, cpu=functools.partial(_cpu_forward, spec),
                                default=functools.partial(xla_conv, spec))


def _conv_fwd(spec: ConvSpec, lhs, rhs):
  return _conv(spec, lhs, rhs), (lhs, rhs)


def _conv_bwd(spec: ConvSpec, residuals, dy):
  lhs, rhs = residuals
  # Picked when the program is lowered, per platform: a CPU program gets _cpu_grads, any other
  # XLA's own gradient convolutions.
  return lax.platform_dependent(lhs, rhs, dy, cpu=functools.partial(_cpu_grads, spec),
                                default=functools.partial(xla_grads, spec))


_conv.defvjp(_conv_fwd, _conv_bwd)


def xla_grads(spec: ConvSpec, lhs, rhs, dy):
  """XLA's input and weight gradients: what jax.grad of lax.conv_general_dilated computes."""
  return jax.vjp(lambda x, w: xla_conv(spec, x, w), lhs, rhs)[1](dy)


def _cpu_grads(spec: ConvSpec, lhs, rhs, dy):
  return _cpu_input_grad(spec, lhs, rhs, dy), _cpu_weight_grad(spec, lhs, rhs, dy)


def _cpu_forward(spec: ConvSpec, lhs, rhs):
  if spec.cpu_kernels[0] == 'onednn':
    return onednn_conv.forward(lhs, rhs, spec.strides, spec.padding)
  return xla_conv(spec, lhs, rhs)


def _cpu_input_grad(spec: ConvSpec, lhs, rhs, dy):
  if spec.cpu_kernels[1] == 'onednn':
    return onednn_conv.input_grad(dy, rhs, lhs.shape, spec.strides, spec.padding)
  if spec.grad_mode == 'xla':
    return xla_grads(spec, lhs, rhs, dy)[0]
  return conv_input_grad(dy, rhs, lhs.shape, spec).astype(lhs.dtype)


def _cpu_weight_grad(spec: ConvSpec, lhs, rhs, dy):
  if spec.cpu_kernels[2] == 'onednn':
    return onednn_conv.weight_grad(lhs, dy, rhs.shape, spec.strides, spec.padding)
  if spec.grad_mode == 'xla':
    return xla_grads(spec, lhs, rhs, dy)[1]
  kernel_size = rhs.shape[:-2]
  dw = _bound_weight_grad(weight_grad_form(lhs, dy, kernel_size, spec), kernel_size, spec, lhs, dy)
  return dw.astype(rhs.dtype)


def tuned_cpu_kernels(spec: ConvSpec, lhs, rhs) -> tuple[str, str, str]:
  """Backend 'tuned': per part (forward, input gradient, weight gradient), 'onednn' or 'xla',
  whichever ran this problem faster on this CPU (conv_tuning: measured once, then cached). The
  XLA side of a gradient is the form spec's mode gives it. oneDNN's version and threads are part
  of the problem: either changes its speed."""
  dy = jax.eval_shape(functools.partial(xla_conv, spec), lhs, rhs)
  problem = (f'{conv_tuning.conv_problem(lhs, rhs, spec.strides, spec.padding, spec.precision)}, '
             f'weight gradient mode {spec.grad_mode}, oneDNN {onednn_conv.version()} on '
             f'{os.environ.get(onednn_conv.THREADS_ENV_VAR, "")} threads')

  def form(part: str, kernels: str):
    """The part as a function of its two operands (a gradient's other operand: zeros of its
    shape, which it does not depend on), every part of spec on `kernels`."""
    s = spec._replace(cpu_kernels=(kernels,) * 3)
    if part == 'forward':
      return functools.partial(_cpu_forward, s)
    if part == 'input gradient':
      return lambda dy, w: _cpu_input_grad(s, jnp.zeros(lhs.shape, lhs.dtype), w, dy)
    return lambda x, dy: _cpu_weight_grad(s, x, jnp.zeros(rhs.shape, rhs.dtype), dy)

  operands = {'forward': (lhs, rhs), 'input gradient': (dy, rhs), 'weight gradient': (lhs, dy)}
  return tuple(conv_tuning.fastest(f'{part}: {problem}',
                                   {kernels: form(part, kernels) for kernels in ('xla', 'onednn')},
                                   *args)
               for part, args in operands.items())


def weight_grad_form(lhs, dy, kernel_size: Sequence[int], spec: ConvSpec) -> str:
  """'conv' or 'matmul': the CPU weight gradient spec's mode picks for this problem."""
  chosen = spec.grad_mode
  if chosen in ('conv', 'matmul'):
    return chosen
  if chosen == 'tuned':
    forms = {name: functools.partial(_bound_weight_grad, name, kernel_size, spec)
             for name in ('conv', 'matmul')}
    key = conv_tuning.problem_key(lhs, dy, kernel_size, spec.strides, spec.padding,
                                  spec.precision)
    return conv_tuning.fastest(key, forms, lhs, dy)
  return 'matmul' if _prod(kernel_size) == 1 else 'conv'


def _bound_weight_grad(form: str, kernel_size, spec: ConvSpec, lhs, dy):
  weight_grad = matmul_weight_grad if form == 'matmul' else conv_weight_grad
  return weight_grad(lhs, dy, kernel_size, spec.strides, spec.padding, spec.precision)


# --- The input gradient as a convolution with explicit transposes. ----------------------------

def conv_input_grad(dy, rhs, lhs_shape, spec: ConvSpec):
  """dx of a channels-last convolution: dy, dilated by the strides, convolved with the kernel
  flipped in space and transposed to [*kernel_size, Cout, Cin] (the layout XLA:CPU's Eigen
  convolution takes; XLA's own gradient leaves that transpose to its layout passes, which skip
  while-loop bodies: 8x slower there for redes/m1's 6x6 convolutions)."""
  kernel_size = rhs.shape[:-2]
  kernel = jnp.swapaxes(jnp.flip(rhs, tuple(range(len(kernel_size)))), -1, -2)
  pads = []
  for size, out, k, s, (low, _) in zip(lhs_shape[1:-1], dy.shape[1:-1], kernel_size,
                                       spec.strides, spec.padding):
    before = k - 1 - low
    pads.append((before, size + k - 1 - ((out - 1) * s + 1) - before))
  return lax.conv_general_dilated(
      dy, kernel, (1,) * len(kernel_size), pads, lhs_dilation=spec.strides,
      dimension_numbers=channels_last_dimension_numbers(dy.ndim), precision=spec.precision,
      preferred_element_type=spec.preferred_element_type)


# --- The weight gradient as a convolution with explicit transposes. --------------------------

def conv_weight_grad(lhs, dy, kernel_size: Sequence[int], strides: Sequence[int],
                     padding: Sequence[tuple[int, int]], precision=None):
  """dW [*kernel_size, Cin, Cout] of a channels-last convolution, as a channels-last convolution.

  dW[k, ci, co] = sum over n, o of padded_lhs[n, o*s + k, ci] * dy[n, o, co]: a stride-1
  convolution of lhs laid out [Cin, *spatial, N] (Cin as its batch, N as its features) with dy
  laid out [*out_spatial, N, Cout] as its kernel, dilated by the strides. The high padding is
  set so that the output is exactly the kernel's size (it may crop: a stride that does not
  divide the padded input leaves its last rows unread).
  """
  lhs_t = jnp.moveaxis(lhs, (0, lhs.ndim - 1), (lhs.ndim - 1, 0))  # [Cin, *spatial, N]
  dy_t = jnp.moveaxis(dy, 0, dy.ndim - 2)  # [*out_spatial, N, Cout]
  pads = [(low, k + (out - 1) * s - size - low)
          for size, out, k, s, (low, _) in zip(lhs.shape[1:-1], dy.shape[1:-1], kernel_size,
                                               strides, padding)]
  accumulate = jnp.promote_types(jnp.result_type(lhs.dtype, dy.dtype), jnp.float32)
  grad = lax.conv_general_dilated(
      lhs_t, dy_t, (1,) * len(kernel_size), pads, rhs_dilation=tuple(strides),
      dimension_numbers=channels_last_dimension_numbers(lhs.ndim), precision=precision,
      preferred_element_type=accumulate)  # [Cin, *kernel_size, Cout]
  return jnp.moveaxis(grad, 0, grad.ndim - 2)


# --- The weight gradient as matmuls (one per kernel tap). --------------------------------------

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
