"""dense.dot_general: XLA's Dense values, the same gradients, the transposed weight gradient only
where the layer narrows, and only in CPU programs."""

import flax.linen as nn
import jax
from jax import export
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.models import conv
from cifar_jax.models import conv_tuning
from cifar_jax.models import dense

HIGHEST = lax.Precision.HIGHEST


def _inputs(shape_x, n_out, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape_x), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(shape_x[-1], n_out)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=shape_x[:-1] + (n_out,)), jnp.float32)
  return x, kernel, dy


def _vjp(dot, x, kernel, dy):
  y, pull_back = jax.vjp(
      lambda x, k: dot(x, k, (((x.ndim - 1,), (0,)), ((), ())), precision=HIGHEST), x, kernel)
  return (y,) + pull_back(dy)


@pytest.mark.parametrize('shape_x, n_out', [
    ((64, 512), 8),        # narrows 64x: the transposed weight gradient
    ((4, 6, 256), 10),     # leading dimensions beyond the batch, flattened into rows
    ((32, 64), 32),        # narrows 2x: XLA's form
])
def test_values_and_gradients_match_lax_dot_general(shape_x, n_out):
  x, kernel, dy = _inputs(shape_x, n_out)
  ours = jax.jit(lambda *a: _vjp(dense.dot_general, *a))(x, kernel, dy)
  xla = jax.jit(lambda *a: _vjp(lax.dot_general, *a))(x, kernel, dy)
  for a, b in zip(ours, xla):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(b))))
  np.testing.assert_array_equal(ours[0], xla[0])  # The forward pass is XLA's own.


def _program(shape_x, n_out):
  x, kernel, dy = _inputs(shape_x, n_out)
  return jax.jit(lambda *a: _vjp(dense.dot_general, *a)).lower(x, kernel, dy).as_text()


def test_transposed_form_only_where_the_layer_narrows():
  assert 'optimization_barrier' in _program((64, 8 * 16), 16)
  assert 'optimization_barrier' not in _program((64, 8 * 16 - 1), 16)


def test_grad_mode_xla_leaves_dense_plain():
  with conv.grad_mode('xla'):
    program = _program((64, 512), 8)
  assert 'optimization_barrier' not in program and 'custom' not in program.lower()


def test_grad_mode_tuned_measures_each_shape_once_and_uses_the_choice(monkeypatch):
  monkeypatch.setenv(conv_tuning.CACHE_ENV_VAR, '')  # Choices in memory only.
  before = len(conv_tuning.measured)
  with conv.grad_mode('tuned'):
    programs = [_program((96, 512), 8), _program((96, 512), 8)]
  keys = conv_tuning.measured[before:]
  assert len(keys) == 1 and keys[0].startswith('dense x (96, 512) float32, dy (96, 8)')
  chosen = conv_tuning.choices()[keys[0]]
  assert ('optimization_barrier' in programs[0]) == (chosen == 'transposed')


def test_other_platforms_get_xla_gradient():
  x, kernel, dy = _inputs((64, 512), 8)
  grads = jax.jit(lambda *a: _vjp(dense.dot_general, *a)[1:])
  cuda = export.export(grads, platforms=['cuda'])(x, kernel, dy).mlir_module()
  cpu = export.export(grads, platforms=['cpu'])(x, kernel, dy).mlir_module()
  assert 'optimization_barrier' not in cuda and 'optimization_barrier' in cpu


def test_other_contractions_are_plain_dot_general():
  x, kernel, _ = _inputs((8, 16), 4)
  numbers = (((0,), (0,)), ((), ()))  # Not a Dense layer's.
  np.testing.assert_array_equal(dense.dot_general(x, x, numbers), lax.dot_general(x, x, numbers))
  with_type = dense.dot_general(x, kernel, (((1,), (0,)), ((), ())),
                                preferred_element_type=jnp.float32)
  np.testing.assert_array_equal(with_type, x @ kernel)


def test_flax_dense_with_it_under_vmap_matches_plain_dense():
  # Stacked seeds (num_seeds) vmap the whole step: the custom VJP must batch.
  layers = {name: nn.Dense(4, dot_general=dot, precision=HIGHEST)
            for name, dot in (('ours', dense.dot_general), ('plain', lax.dot_general))}
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 16, 64)), jnp.float32)
  params = jax.vmap(lambda k: layers['plain'].init(k, x[0]))(jax.random.split(jax.random.key(0), 3))

  def grads(layer):
    loss = lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))
    return jax.jit(jax.vmap(jax.grad(loss)))(params, x)

  for a, b in zip(jax.tree.leaves(grads(layers['ours'])), jax.tree.leaves(grads(layers['plain']))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
