"""A Keras-Sequential-like stack of layers, built from a config, with Keras defaults.

Each layer is a dict with a 'type' and Keras's argument names (see `LAYER_ARGS`). Submodules
get Keras's auto-generated names (conv2d, conv2d_1, batch_normalization, dense, ...), so weights
map one-to-one to a Keras model and the summary reads like `model.summary()`.

A final softmax is left out: the model returns logits and the loss applies log-softmax, which
is the same function, computed stably. `kernel_regularizer=l2(λ)` is sown into the 'losses'
collection as λ·Σw², like Keras's `model.losses`.
"""

from typing import Any, Mapping, Sequence

from flax.core import FrozenDict
import flax.linen as nn
import jax.numpy as jnp

from cifar_jax.models import conv
from cifar_jax.models import pooling

# Every argument each layer type accepts, with Keras's default. Anything else is an error.
LAYER_ARGS = {
    'conv2d': dict(filters=None, kernel_size=None, strides=1, padding='valid', activation=None,
                   use_bias=True, kernel_initializer='glorot_uniform', l2=0.0, negative_slope=None),
    'dense': dict(units=None, activation=None, use_bias=True, kernel_initializer='glorot_uniform',
                  l2=0.0, negative_slope=None),
    'batch_normalization': dict(momentum=0.99, epsilon=1e-3, center=True, scale=True),
    'activation': dict(activation=None, negative_slope=None),
    'leaky_re_lu': dict(negative_slope=0.3),
    're_lu': dict(),  # keras.layers.ReLU() (arquitecturas puts it after BatchNormalization).
    'max_pooling2d': dict(pool_size=2, strides=None, padding='valid'),
    'average_pooling2d': dict(pool_size=2, strides=None, padding='valid'),
    'global_average_pooling2d': dict(),
    'dropout': dict(rate=None),
    'flatten': dict(),
}

# Keras initializer names -> flax initializers (same variance-scaling maths, incl. the
# truncated-normal correction constant).
INITIALIZERS = {
    'glorot_uniform': nn.initializers.glorot_uniform(),
    'glorot_normal': nn.initializers.variance_scaling(1.0, 'fan_avg', 'truncated_normal'),
    'he_normal': nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal'),
    'he_uniform': nn.initializers.variance_scaling(2.0, 'fan_in', 'uniform'),
    'lecun_normal': nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'),
    'lecun_uniform': nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'),
}

ACTIVATIONS = ('relu', 'leaky_relu', 'swish', 'silu', 'elu', 'gelu', 'tanh', 'sigmoid', 'softmax',
               'linear')


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def resolve_layer(spec: Mapping[str, Any], index: int) -> dict[str, Any]:
  """Fills Keras defaults into a layer dict; unknown types, arguments or values are errors."""
  kind = spec.get('type')
  if kind not in LAYER_ARGS:
    raise ValueError(f'model.layers[{index}]: unknown layer type {kind!r}; '
                     f'known: {sorted(LAYER_ARGS)}')
  defaults = LAYER_ARGS[kind]
  unknown = set(spec) - set(defaults) - {'type'}
  if unknown:
    raise ValueError(f'model.layers[{index}] ({kind}): unknown argument(s) {sorted(unknown)}; '
                     f'known: {sorted(defaults)}')
  layer = {**defaults, **{k: v for k, v in spec.items() if k != 'type'}}
  missing = [k for k, v in layer.items() if v is None and k in ('filters', 'kernel_size', 'units',
                                                                  'rate')]
  if missing:
    raise ValueError(f'model.layers[{index}] ({kind}): missing required argument(s) {missing}')
  if layer.get('activation') not in (None, *ACTIVATIONS):
    raise ValueError(f"model.layers[{index}] ({kind}): unknown activation {layer['activation']!r}; "
                     f'known: {list(ACTIVATIONS)}')
  if layer.get('kernel_initializer', 'glorot_uniform') not in INITIALIZERS:
    raise ValueError(f"model.layers[{index}] ({kind}): unknown kernel_initializer "
                     f"{layer['kernel_initializer']!r}; known: {sorted(INITIALIZERS)}")
  if str(layer.get('padding', 'valid')).lower() not in ('valid', 'same'):
    raise ValueError(f"model.layers[{index}] ({kind}): padding must be 'valid' or 'same'")
  return {'type': kind, **layer}


def apply_activation(x, name, negative_slope=None):
  if name in (None, 'linear'):
    return x
  if name == 'relu':
    return nn.relu(x)
  if name == 'leaky_relu':  # keras.activations.leaky_relu defaults to 0.2 (the layer to 0.3).
    return nn.leaky_relu(x, 0.2 if negative_slope is None else negative_slope)
  if name in ('swish', 'silu'):
    return nn.swish(x)
  if name == 'elu':
    return nn.elu(x)
  if name == 'gelu':  # activation='gelu' is keras.activations.gelu: the exact erf form.
    return nn.gelu(x, approximate=False)
  if name == 'tanh':
    return jnp.tanh(x)
  if name == 'sigmoid':
    return nn.sigmoid(x)
  if name == 'softmax':
    return nn.softmax(x)
  raise ValueError(f'unknown activation {name!r}')


class KerasNames:
  """Keras's per-model auto names: conv2d, conv2d_1, ..."""

  def __init__(self):
    self._counts = {}

  def __call__(self, kind: str) -> str:
    n = self._counts.get(kind, 0)
    self._counts[kind] = n + 1
    return kind if n == 0 else f'{kind}_{n}'


def final_softmax_index(layers: Sequence[Mapping[str, Any]]) -> int | None:
  """Index of a trailing softmax (on a Dense or an Activation), which the model leaves out."""
  for i in reversed(range(len(layers))):
    if layers[i]['type'] in ('dropout',):
      continue
    return i if layers[i].get('activation') == 'softmax' else None
  return None


class LayerStack(nn.Module):
  """Applies `layers` (resolved with `resolve_layer`) in order; returns logits."""
  layers: tuple
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    names = KerasNames()
    skip_softmax_at = final_softmax_index(self.layers)
    x = x.astype(self.dtype)
    for i, layer in enumerate(self.layers):
      kind = layer['type']
      name = names(kind)
      activation = None if i == skip_softmax_at else layer.get('activation')
      if kind == 'conv2d':
        module = nn.Conv(layer['filters'], _pair(layer['kernel_size']), strides=_pair(layer['strides']),
                         padding=layer['padding'].upper(), use_bias=layer['use_bias'],
                         kernel_init=INITIALIZERS[layer['kernel_initializer']], dtype=self.dtype,
                         conv_general_dilated=conv.conv_general_dilated, name=name)
        x = apply_activation(module(x), activation, layer['negative_slope'])
        self._sow_l2(module, layer['l2'], name)
      elif kind == 'dense':
        module = nn.Dense(layer['units'], use_bias=layer['use_bias'],
                          kernel_init=INITIALIZERS[layer['kernel_initializer']], dtype=self.dtype,
                          name=name)
        x = apply_activation(module(x), activation, layer['negative_slope'])
        self._sow_l2(module, layer['l2'], name)
      elif kind == 'batch_normalization':
        # Keras computes the batch variance as mean((x - mean)^2), not E[x^2] - E[x]^2.
        x = nn.BatchNorm(use_running_average=not train, momentum=layer['momentum'],
                         epsilon=layer['epsilon'], use_bias=layer['center'],
                         use_scale=layer['scale'], use_fast_variance=False, dtype=self.dtype,
                         name=name)(x)
      elif kind == 'activation':
        x = apply_activation(x, activation, layer['negative_slope'])
      elif kind == 'leaky_re_lu':
        x = nn.leaky_relu(x, layer['negative_slope'])
      elif kind == 're_lu':
        x = nn.relu(x)
      elif kind in ('max_pooling2d', 'average_pooling2d'):
        window = _pair(layer['pool_size'])
        strides = _pair(layer['strides'] if layer['strides'] is not None else layer['pool_size'])
        padding = layer['padding'].upper()
        if kind == 'max_pooling2d':
          x = pooling.max_pool(x, window, strides, padding)
        else:  # Keras (like TF) leaves the padding out of the average.
          x = nn.avg_pool(x, window, strides, padding, count_include_pad=False)
      elif kind == 'global_average_pooling2d':
        x = jnp.mean(x, axis=(1, 2))
      elif kind == 'dropout':
        x = nn.Dropout(layer['rate'], deterministic=not train, name=name)(x)
      elif kind == 'flatten':
        x = x.reshape((x.shape[0], -1))
      # For the summary (keys sort in layer order); a no-op unless 'intermediates' is mutable.
      self.sow('intermediates', f'{i:04d}_{name}', x)
    return x.astype(jnp.float32)

  def _sow_l2(self, module, factor, name):
    if factor:
      kernel = module.variables['params']['kernel']
      self.sow('losses', f'{name}_l2', factor * jnp.sum(jnp.square(kernel.astype(jnp.float32))))


def build(model_config) -> LayerStack:
  layers = tuple(resolve_layer(dict(spec), i) for i, spec in enumerate(model_config.layers))
  if not layers:
    raise ValueError('model.layers is empty: a layer_stack model needs at least one layer')
  return LayerStack(layers=tuple(_freeze(layer) for layer in layers),
                    dtype=jnp.dtype(model_config.dtype))


def _freeze(layer: dict):
  """Layer dicts become hashable (module attributes end up in jit cache keys)."""
  return FrozenDict({k: tuple(v) if isinstance(v, list) else v for k, v in layer.items()})
