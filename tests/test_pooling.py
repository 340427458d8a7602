"""The fast max pool equals flax's (XLA reduce_window / select_and_scatter) bit for bit."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.models import pooling


@pytest.mark.parametrize('shape, window, strides, padding', [
    ((4, 8, 8, 3), (2, 2), (2, 2), 'VALID'),
    ((2, 6, 9, 5), (3, 3), (3, 3), 'VALID'),
    ((2, 7, 7, 3), (2, 2), (2, 2), 'VALID'),   # sizes do not divide: the last row/column out
    ((2, 4, 4, 5), (3, 3), (3, 3), 'VALID'),   # airbench94's last pool: one window of nine
    ((2, 8, 8, 3), (3, 3), (2, 2), 'SAME'),    # fallback: overlapping windows
])
def test_values_and_gradients_equal_flax_max_pool(shape, window, strides, padding):
  rng = np.random.default_rng(0)
  # Rounded values and a ReLU make many ties, where the gradient must go to the first maximum.
  x = jnp.asarray(np.maximum(np.round(rng.normal(size=shape), 1), 0.0), jnp.float32)
  g = jnp.asarray(rng.normal(size=nn.max_pool(x, window, strides, padding).shape), jnp.float32)

  def grad(pool):
    return jax.grad(lambda x: jnp.sum(pool(x, window, strides, padding) * g))(x)

  np.testing.assert_array_equal(pooling.max_pool(x, window, strides, padding),
                                nn.max_pool(x, window, strides, padding))
  np.testing.assert_array_equal(jax.jit(grad, static_argnums=0)(pooling.max_pool),
                                jax.jit(grad, static_argnums=0)(nn.max_pool))


@pytest.mark.parametrize('shape, window', [((4, 8, 8, 3), (2, 2)), ((2, 4, 4, 5), (3, 3))])
def test_non_overlapping_windows_compile_without_select_and_scatter(shape, window):
  # The point of the module: XLA:CPU's select-and-scatter is what makes flax's slow.
  def loss(x):
    return jnp.sum(pooling.max_pool(x, window, window, 'VALID') ** 2)

  def program(loss):  # StableHLO, before XLA:CPU rewrites select-and-scatter into loops.
    return jax.jit(jax.grad(loss)).lower(jnp.ones(shape)).as_text()

  assert not {'select_and_scatter', 'reduce_window'} & set(re.findall(r'stablehlo\.(\w+)',
                                                                     program(loss)))
  flax_program = program(lambda x: jnp.sum(nn.max_pool(x, window, window, 'VALID') ** 2))
  assert 'stablehlo.select_and_scatter' in flax_program  # (The check above can see one.)
