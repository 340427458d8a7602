"""A Keras-Sequential-like stack of layers, built from a config, with Keras defaults.

Each `model.layers` entry is a dict with a 'type' (a kind of layer_kinds.LAYERS) and Keras's
argument names; what it leaves out takes Keras's default. Submodules get Keras's auto-generated
names (conv2d, conv2d_1, batch_normalization, dense, ...), so weights map one-to-one to a Keras
model and the summary reads like `model.summary()`.

A final softmax is left out: the model returns logits and the loss applies log-softmax, which
is the same function, computed stably. `kernel_regularizer=l2(λ)` is sown into the 'losses'
collection as λ·Σw², like Keras's `model.losses`.
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cifar_jax.models import layer_kinds


def parse_layers(layer_dicts: Sequence[Mapping[str, Any]]) -> tuple[layer_kinds.Layer, ...]:
  """The layers of `model.layers` entries; an unknown type, argument or value is an error that
  names the entry (`model.layers[3] (conv2d): ...`)."""
  layers = []
  for i, spec in enumerate(layer_dicts):
    args = dict(spec)
    layers.append(layer_kinds.create(args.pop('type', None), args, f'model.layers[{i}]',
                                     in_stack=True))
  return tuple(layers)


class KerasNames:
  """Keras's per-model auto names: conv2d, conv2d_1, ..."""

  def __init__(self):
    self._counts = {}

  def __call__(self, kind: str) -> str:
    n = self._counts.get(kind, 0)
    self._counts[kind] = n + 1
    return kind if n == 0 else f'{kind}_{n}'


def final_softmax_index(layers: Sequence[layer_kinds.Layer]) -> int | None:
  """Index of a trailing softmax (on a Dense or an Activation), which the model leaves out."""
  for i in reversed(range(len(layers))):
    if layers[i].kind == 'dropout':
      continue
    return i if getattr(layers[i], 'activation', None) == 'softmax' else None
  return None


class LayerStack(nn.Module):
  """Applies `layers` (layer_kinds.Layer, as `parse_layers` makes them) in order; returns logits."""
  layers: tuple
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    names = KerasNames()
    logits_at = final_softmax_index(self.layers)
    x = x.astype(self.dtype)
    for i, layer in enumerate(self.layers):
      name = names(layer.kind)
      x = layer(layer_kinds.Context(self, name, train, self.dtype, logits=i == logits_at), x)
      # For the summary (keys sort in layer order); a no-op unless 'intermediates' is mutable.
      self.sow('intermediates', f'{i:04d}_{name}:{layer.keras_class}', x)
    return x.astype(jnp.float32)


def build(model_config) -> LayerStack:
  layers = parse_layers(model_config.layers)
  if not layers:
    raise ValueError('model.layers is empty: a layer_stack model needs at least one layer')
  return LayerStack(layers=layers, dtype=jnp.dtype(model_config.dtype))
