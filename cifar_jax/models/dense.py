"""`lax.dot_general` for Dense layers, with a weight gradient XLA:CPU runs fast.

A Dense layer's weight gradient x^T @ dy contracts the batch, the leading dimension of both
operands. When the layer narrows a lot (a Flatten into a few units), XLA:CPU runs that form
1.8-2.9x slower than dy^T @ x followed by a transpose of its small [out, in] result (exp0's
8192->32 layer at batch 512: 8.4 -> 2.9 ms; 256->10 at batch 1024: 0.58 -> 0.25 ms; 2-core AMD
EPYC Zen 4, `python benchmarks/dense_grad.py`). Where it narrows 8x the two are 0.94-1.23x, at
4x XLA's form wins (up to 1.6x), so the transposed form is taken only when in >= NARROWING * out.
XLA's simplifier folds a transpose back into the dot it follows, so an optimization barrier
keeps the two apart. Whole train steps gain a few percent (p2cnn/exp1 6-8%, exp0 0-4%, redes/m1
within noise). The forward pass and the input gradient are XLA's; so is everything in programs
lowered for other platforms (`lax.platform_dependent`), whose libraries transpose for free.

The convolutions' gradient mode (conv.mode(): model.conv_grad, or $CIFAR_JAX_CONV_GRAD) applies
here too: 'xla' leaves Dense layers plain lax.dot_general, gradient included; 'tuned' measures
both weight-gradient forms per layer shape on this CPU at first use and caches the faster
(conv_tuning); every other mode takes the NARROWING rule. `nn.Dense(...,
dot_general=dense.dot_general)` uses it.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from cifar_jax.models import conv
from cifar_jax.models import conv_tuning

NARROWING = 8  # in_features / out_features from which the transposed weight gradient is used.


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general`; a Dense layer's contraction (lhs [..., in] with rhs [in, out]) gets
  the CPU weight gradient above."""
  dense_numbers = (((lhs.ndim - 1,), (0,)), ((), ()))
  grad_mode = conv.mode()  # Read when traced, like a convolution's.
  if (rhs.ndim != 2 or preferred_element_type is not None or grad_mode == 'xla'
      or _canonical(dimension_numbers) != dense_numbers):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)
  return _dense(precision, grad_mode, lhs, rhs)


def _canonical(dimension_numbers):
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  return ((tuple(lhs_contract), tuple(rhs_contract)), (tuple(lhs_batch), tuple(rhs_batch)))


def _forward(precision, x, kernel):
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _dense(precision, grad_mode, x, kernel):
  del grad_mode  # The backward pass's.
  return _forward(precision, x, kernel)


def _dense_fwd(precision, grad_mode, x, kernel):
  del grad_mode
  return _forward(precision, x, kernel), (x, kernel)


def _dense_bwd(precision, grad_mode, residuals, dy):
  x, kernel = residuals
  dx = lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())), precision=precision)
  rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
  dkernel = lax.platform_dependent(rows_x, rows_dy,
                                   cpu=functools.partial(cpu_weight_grad, precision, grad_mode),
                                   default=functools.partial(weight_grad, precision))
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def weight_grad(precision, x, dy):
  """x^T @ dy for rows x [n, in] and dy [n, out]: what jax.grad of the forward computes."""
  return lax.dot_general(x, dy, (((0,), (0,)), ((), ())), precision=precision)


def transposed_weight_grad(precision, x, dy):
  """weight_grad as (dy^T @ x)^T, the transpose kept out of the dot."""
  transposed = lax.dot_general(dy, x, (((0,), (0,)), ((), ())), precision=precision)
  return lax.optimization_barrier(transposed).T


FORMS = {'xla': weight_grad, 'transposed': transposed_weight_grad}


def weight_grad_form(precision, grad_mode: str, x, dy) -> str:
  """'xla' or 'transposed': the CPU weight gradient `grad_mode` picks for rows x and dy."""
  if grad_mode == 'tuned':
    key = (f'dense x {tuple(x.shape)} {jnp.dtype(x.dtype).name}, dy {tuple(dy.shape)} '
           f'{jnp.dtype(dy.dtype).name}, precision {precision}')
    forms = {name: functools.partial(form, precision) for name, form in FORMS.items()}
    return conv_tuning.fastest(key, forms, x, dy)
  return 'transposed' if x.shape[1] >= NARROWING * dy.shape[1] else 'xla'


def cpu_weight_grad(precision, grad_mode: str, x, dy):
  """x^T @ dy in the form weight_grad_form picks."""
  return FORMS[weight_grad_form(precision, grad_mode, x, dy)](precision, x, dy)
