"""Dropout with flax's masks, whose random bits XLA:CPU computes once per step.

`Dropout(rate)` returns exactly what `flax.linen.Dropout(rate)` returns under the same name and
'dropout' key: the same random bits, the same mask, `x / keep_prob` where kept (values and
gradients, tests/test_dropout.py). Only how the bits are computed on CPU differs.

Why: flax draws its mask with `jax.random.bernoulli`, jax's threefry: a 20-round hash per
element. On CPU jax lowers the hash as a rolled loop, five trips that each pass over all the
words in memory, with copies between them. Unrolled (as jax lowers it elsewhere), the hash is
integer ops XLA:CPU counts as cheap, so it fuses them into every consumer of the mask; one of
those is the gradient of a max-pool before the dropout, which writes four elements per mask
element and so hashes each four times. Here the unrolled hash runs in a loop of two trips, each
drawing half of the elements. XLA keeps a loop of two trips (one trip it folds into the body,
fusing the hash into the consumers again), so each element is drawn once, in one pass, stored,
and read by the mask's users (one byte per element: the mask, not the 4-byte words). Train steps,
flax's Dropout -> this one, the same states bit for bit (`python benchmarks/dropout_bits.py`,
2-core Xeon, oneDNN convolutions): redes/m2 191 -> 174 ms (1.10x), arquitecturas/a2 1.18x,
exp11 1.09x, m3, exp4 and proyecto4/exp1 1.04-1.07x; with XLA's convolutions 1.00-1.12x.

Other platforms keep flax's own computation (`lax.platform_dependent`; GPUs have a threefry
kernel of their own), as do keys of another PRNG implementation, jax's non-partitionable
threefry mode and 64-bit mode, whose draws this does not reproduce.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Threefry-2x32 with 20 rounds (Salmon et al. 2011), as jax computes it: its rotations and the
# key schedule's parity constant.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
# The smallest loop XLA keeps (see the module docstring).
_LOOP_TRIPS = 2


def threefry2x32(key1, key2, count1, count2):
  """jax's threefry2x32 hash of the counter pairs (count1, count2) under (key1, key2), unrolled:
  elementwise uint32 ops XLA fuses into one loop."""
  keys = (key1, key2, key1 ^ key2 ^ _PARITY)
  x0, x1 = count1 + keys[0], count2 + keys[1]
  for block in range(5):
    for r in _ROTATIONS[block % 2]:
      x0 = x0 + x1
      x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
      x1 = x0 ^ x1
    x0 = x0 + keys[(block + 1) % 3]
    x1 = x1 + keys[(block + 2) % 3] + np.uint32(block + 1)
  return x0, x1


def _key_data(key):
  return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def reproduces_jax_draws(key) -> bool:
  """Whether this module's draws equal jax.random's for this key (static)."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    impl = str(jax.random.key_impl(key))
  else:
    impl = jax.config.jax_default_prng_impl
  # With 64-bit types on, jax.random.bernoulli draws a float64 from 64 random bits.
  return (impl == 'threefry2x32' and bool(jax.config.jax_threefry_partitionable)
          and not jax.config.jax_enable_x64)


def random_bits(key, positions):
  """`jax.random.bits(key, shape, jnp.uint32)`'s words at these flat positions of the shape
  (partitionable threefry: position i hashes the counter pair (0, i))."""
  key1, key2 = _key_data(key)
  x0, x1 = threefry2x32(key1, key2, jnp.zeros_like(positions), positions)
  return x0 ^ x1


def _below(bits, p):
  """jax.random.bernoulli's draw from its bits: uniform(bits) < p, in float32."""
  mantissa = (bits >> np.uint32(9)) | np.uint32(0x3F800000)
  return jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0 < p


def bernoulli(key, p: float, shape):
  """`jax.random.bernoulli(key, p, shape)`, each element drawn once and stored: a two-trip
  loop, each trip hashing half of the positions (see the module docstring). One byte per
  element is stored, not the 4-byte random words, for the mask's users to read."""
  n = math.prod(shape)
  if n >= 2**32:
    raise ValueError(f'{n} draws: the counters are 32-bit here (jax goes to 2**64)')
  size = -(-n // _LOOP_TRIPS)

  def draw_part(trip, mask):
    positions = trip.astype(jnp.uint32) * np.uint32(size) + jnp.arange(size, dtype=jnp.uint32)
    return jax.lax.dynamic_update_slice(mask, _below(random_bits(key, positions), p)[None],
                                        (trip, 0))

  mask = jax.lax.fori_loop(0, _LOOP_TRIPS, draw_part, jnp.zeros((_LOOP_TRIPS, size), bool))
  return mask.reshape(-1)[:n].reshape(shape)


class Dropout(nn.Module):
  """`flax.linen.Dropout(rate, deterministic)`, the same values, its bits stored on CPU."""
  rate: float
  deterministic: bool = False

  @nn.compact
  def __call__(self, x):
    if self.rate == 0.0 or self.deterministic or self.rate == 1.0:
      return nn.Dropout(self.rate, deterministic=self.deterministic)(x)
    key = self.make_rng('dropout')
    keep_prob = 1.0 - self.rate
    if not reproduces_jax_draws(key):
      return nn.Dropout(self.rate, deterministic=False)(x, rng=key)
    keep = jax.lax.platform_dependent(
        key, cpu=lambda key: bernoulli(key, keep_prob, x.shape),
        default=lambda key: jax.random.bernoulli(key, p=keep_prob, shape=x.shape))
    return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))
