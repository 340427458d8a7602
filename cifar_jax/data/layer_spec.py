"""What an entry of `config.augment.layers` becomes: a random layer, checked when it is built.

Each layer type is a frozen, keyword-only dataclass whose fields are the entry's keys (Keras's
argument names for the Keras layers), so an unknown key or a bad value fails before any work
starts, naming the key. A layer draws its per-example parameters (`sample`) and applies them
(`apply`) separately, so tests can feed Keras's own draws to `apply`.
"""

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax


def is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check(condition: bool, name: str, value: Any, requirement: str) -> None:
  """Raises ValueError('name=value: requirement.') unless `condition`."""
  if not condition:
    raise ValueError(f'{name}={value!r}: {requirement}.')


def check_choice(name: str, value: Any, choices) -> None:
  check(value in choices, name, value, f'must be one of {tuple(choices)}')


def check_pair(name: str, value: Any) -> tuple[float, float]:
  """A (lo, hi) pair of finite numbers, as a tuple of floats."""
  check(isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value)),
        name, value, 'must be a pair of finite numbers (lo, hi)')
  return float(value[0]), float(value[1])


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentLayer:
  """fn(rng, images) -> images on a float batch [B, H, W, C]; pure, jittable."""

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ValueError('field=value: why') for a bad field."""

  def sample(self, rng, batch: int, height: int, width: int) -> dict[str, jax.Array]:
    """Per-example random parameters, each an array with leading dimension `batch`."""
    raise NotImplementedError

  def apply(self, images: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    raise NotImplementedError

  def __call__(self, rng, images: jax.Array) -> jax.Array:
    batch, height, width, _ = images.shape
    return self.apply(images, self.sample(rng, batch, height, width))


def build_layer(registry: Mapping[str, type], index: int, entry) -> AugmentLayer:
  """`registry[entry['type']](**rest)`, with errors naming `augment.layers[index].<key>`."""
  where = f'augment.layers[{index}]'
  if not isinstance(entry, Mapping):
    raise ValueError(f'{where}={entry!r}: must be a dict with a "type" key.')
  kwargs = dict(entry)
  kind = kwargs.pop('type', None)
  if kind not in registry:
    raise ValueError(f'{where}.type={kind!r}: unknown layer type; known: {sorted(registry)}.')
  layer_class = registry[kind]
  fields = {f.name: f for f in dataclasses.fields(layer_class)}
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ValueError(f'{where}: unknown key(s) {unknown} for type {kind!r}; known: '
                     f'{sorted(fields)}.')
  missing = sorted(name for name, f in fields.items() if name not in kwargs
                   and f.default is dataclasses.MISSING)
  if missing:
    raise ValueError(f'{where}: type {kind!r} needs key(s) {missing}.')
  try:
    return layer_class(**kwargs)
  except ValueError as e:
    raise ValueError(f'{where}.{str(e).rstrip(".")} (type {kind!r}).') from None
