"""cifar_jax's Dropout equals flax's bit for bit, and its hash is computed once on CPU."""

import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cifar_jax.models
from cifar_jax.models import dropout
from cifar_jax.models import layer_kinds
from cifar_jax.models import pooling
from configs import layers as L
from tests import tiny_config


@pytest.mark.parametrize('make_key', [jax.random.PRNGKey, jax.random.key])
def test_random_bits_equal_jax_random_bits(make_key):
  key = make_key(11)
  assert dropout.reproduces_jax_draws(key)
  shape = (3, 5, 7)
  positions = jnp.arange(105, dtype=jnp.uint32).reshape(shape)
  np.testing.assert_array_equal(jax.jit(dropout.random_bits)(key, positions),
                                jax.random.bits(key, shape, jnp.uint32))


@pytest.mark.parametrize('shape', [(1,), (2,), (7,), (1000,), (5, 9, 91)])
@pytest.mark.parametrize('p', [0.5, 0.75, 0.9, 0.3])
def test_bernoulli_equals_jax_random_bernoulli(shape, p):
  key = jax.random.PRNGKey(4)
  draw = jax.jit(dropout.bernoulli, static_argnums=(1, 2))(key, p, shape)
  np.testing.assert_array_equal(draw, jax.random.bernoulli(key, p, shape))


def _outputs_and_gradients(module, x, key):
  def loss(x):
    y = module.apply({}, x, rngs={'dropout': key})
    return jnp.sum(y * jnp.cos(y)), y

  return jax.jit(jax.value_and_grad(loss, has_aux=True))(x)


@pytest.mark.parametrize('shape', [(8, 6, 6, 5), (3, 7), (1,)])
@pytest.mark.parametrize('rate', [0.5, 0.25, 0.3, 0.1])
@pytest.mark.parametrize('make_key', [jax.random.PRNGKey, jax.random.key])
def test_values_and_gradients_equal_flax_dropout(shape, rate, make_key):
  x = jax.random.normal(jax.random.key(3), shape)
  key = make_key(7)
  ours = _outputs_and_gradients(dropout.Dropout(rate), x, key)
  flax = _outputs_and_gradients(nn.Dropout(rate, deterministic=False), x, key)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax)):
    np.testing.assert_array_equal(a, b)
  if x.size > 100:  # Really dropping: about `rate` of the elements are zero.
    assert abs(float(jnp.mean(ours[0][1] == 0)) - rate) < 0.1


@pytest.mark.parametrize('rate, deterministic', [(0.0, False), (1.0, False), (0.5, True)])
def test_edge_cases_follow_flax(rate, deterministic):
  x = jax.random.normal(jax.random.key(3), (4, 5))
  key = jax.random.key(1)
  np.testing.assert_array_equal(
      dropout.Dropout(rate, deterministic=deterministic).apply({}, x, rngs={'dropout': key}),
      nn.Dropout(rate, deterministic=deterministic).apply({}, x, rngs={'dropout': key}))


def _assert_same_as_flax(x, key):
  np.testing.assert_array_equal(
      dropout.Dropout(0.5).apply({}, x, rngs={'dropout': key}),
      nn.Dropout(0.5, deterministic=False).apply({}, x, rngs={'dropout': key}))


def test_other_prng_implementations_fall_back_to_flax():
  key = jax.random.key(5, impl='rbg')
  assert not dropout.reproduces_jax_draws(key)
  _assert_same_as_flax(jax.random.normal(jax.random.key(3), (16, 9)), key)


def test_64_bit_mode_falls_back_to_flax():
  # jax.random.bernoulli then draws float64s from 64-bit words: other bits than these.
  with jax.enable_x64(True):
    key = jax.random.key(5)
    assert not dropout.reproduces_jax_draws(key)
    _assert_same_as_flax(jax.random.normal(jax.random.key(3), (16, 9)), key)
  assert dropout.reproduces_jax_draws(jax.random.key(5))


def _computations(hlo: str) -> dict:
  """The compiled module's computations by name: their text."""
  return {m.group(1): m.group(0) for m in re.finditer(r'^(?:ENTRY )?%(\S+) .*?^}', hlo, re.M | re.S)}


def _hashing(computations: dict) -> list:
  """The computations holding a threefry hash: 20 rounds, each ending in an xor."""
  return [name for name, text in computations.items() if len(re.findall(r' xor\(', text)) >= 20]


def test_xla_cpu_hashes_once_in_a_loop_where_flax_rehashes_per_consumer():
  # A dropout after a 2x2 max-pool, forward and backward: the pool's gradient reads the mask
  # four times per element. Flax's bits come from a rolled loop (four rounds a trip); an
  # unrolled hash XLA fuses into each consumer. Here the hash is one computation, a two-trip
  # loop's body: computed once and stored.
  cpu = jax.devices('cpu')[0]  # (On a GPU host too: the CPU program is the one in question.)
  x = jax.device_put(jax.random.normal(jax.random.key(3), (8, 8, 8, 4)), cpu)

  def loss(x, key, module):
    y = module.apply({}, pooling.max_pool(x, (2, 2), (2, 2), 'VALID'), rngs={'dropout': key})
    return jnp.sum(y ** 2)

  def computations(module):
    grad = jax.jit(jax.grad(loss), static_argnums=2)
    key = jax.device_put(jax.random.key(1), cpu)
    return _computations(grad.lower(x, key, module).compile().as_text())

  ours = computations(dropout.Dropout(0.5))
  [hashing] = _hashing(ours)
  [caller] = [name for name, text in ours.items() if f'calls=%{hashing},' in text]
  assert re.search(rf'while\(.*body=%{re.escape(caller)},', '\n'.join(ours.values())), (
      'the hash is not in a loop: XLA may fuse it into every consumer of the bits')
  assert not _hashing(computations(nn.Dropout(0.5, deterministic=False)))


def test_vmapped_over_keys_equals_flax():
  # config.num_seeds vmaps the train step over the replicas' keys.
  x = jax.random.normal(jax.random.key(0), (3, 16, 8))
  keys = jax.random.split(jax.random.PRNGKey(1), 3)

  def replicas(module):
    return jax.jit(jax.vmap(lambda x, k: module.apply({}, x, rngs={'dropout': k})))(x, keys)

  ours = replicas(dropout.Dropout(0.5))
  np.testing.assert_array_equal(ours, replicas(nn.Dropout(0.5, deterministic=False)))
  assert not np.array_equal(ours[0] == 0, ours[1] == 0)  # each replica its own mask


def test_a_model_trains_as_with_flax_dropout(monkeypatch):
  # In a model the layer's key comes from its name and scope (make_rng): the same as flax's
  # Dropout under that name, so a model's outputs and gradients are flax's bit for bit.
  config = tiny_config.get_config()
  config.model.layers = (*config.model.layers[:-1], L.dropout(0.5), config.model.layers[-1])
  images = jax.random.uniform(jax.random.key(0), (8, *config.model.input_shape))
  model = cifar_jax.models.create_model(config.model)
  variables = jax.jit(lambda: model.init(jax.random.key(1), images, train=False))()

  def outputs_and_gradients():
    def loss(params):
      logits, _ = model.apply({**variables, 'params': params}, images, train=True,
                              rngs={'dropout': jax.random.PRNGKey(2)},
                              mutable=['batch_stats', 'losses'])
      return jnp.sum(logits ** 2), logits
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])

  ours = outputs_and_gradients()
  monkeypatch.setattr(layer_kinds, 'dropout', types.SimpleNamespace(Dropout=nn.Dropout))
  flax = outputs_and_gradients()
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax)):
    np.testing.assert_array_equal(a, b)
