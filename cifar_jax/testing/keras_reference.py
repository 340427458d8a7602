"""The Keras 3 reference for a cifar_jax layer stack: the same model as a `keras.Sequential`.

Builds the Sequential from the layer dicts a `model.layers` config holds (each kind's
`keras_layer` in models/layer_kinds.py: the argument names are Keras's, so they pass through
almost verbatim) and moves weights between it and the Flax variables (along each kind's
`weights`), so parity tests and benchmarks can run both on the same weights:

    keras_model = keras_reference.build_keras_model(config.model.layers, (32, 32, 3),
                                                    variables=variables)
    probs = keras_model(images, training=False)  # == softmax(model.apply(variables, images))
    keras_reference.copy_flax_to_keras(new_variables, keras_model)  # Later: sync again.
    keras_reference.copy_keras_to_flax(keras_model)  # And back: {'params', 'batch_stats'}.

Weights are matched by position (Keras layer i is config layer i) and named the way the Flax
model names its submodules, so the mapping works whatever auto names Keras handed out. Unlike
the Flax model, the Keras model keeps a trailing softmax, as the reports' models did.

Importing this module imports Keras (a test and benchmark dependency), selecting the JAX backend
unless KERAS_BACKEND is already set.
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cifar_jax.models import layer_kinds  # pylint: disable=g-import-not-at-top
from cifar_jax.models import layer_stack  # pylint: disable=g-import-not-at-top

# Keras class name -> layer kind ('Conv2D' -> 'conv2d').
LAYER_TYPES = {cls.keras_class: kind for kind, cls in layer_kinds.LAYERS.items()}


def keras_layer(spec, **overrides):
  """The Keras layer for one layer dict; `overrides` are extra Keras arguments (initializers).

  Only the arguments the dict gives are passed, so whatever it leaves out takes *Keras's*
  default: with raw config dicts, the parity tests also check layer_kinds' defaults.
  """
  args = {k: v for k, v in spec.items() if k != 'type'}
  return layer_kinds.LAYERS[spec['type']].keras_layer(keras, args, **overrides)


def value_initializer(value):
  """A Keras initializer that returns `value` (the Flax array), shape-checked."""
  def initializer(shape, dtype=None):
    if tuple(shape) != tuple(value.shape):
      raise ValueError(f'Keras asks for a weight of shape {tuple(shape)}, the Flax one is '
                       f'{tuple(value.shape)}')
    return np.asarray(value, dtype=dtype)
  return initializer


def initializers_from(variables, kind, name):
  """Initializer arguments that start a layer's Keras weights at its Flax variables' values."""
  overrides = {}
  for weight in layer_kinds.LAYERS[kind].weights:
    value = variables.get(weight.collection, {}).get(name, {}).get(weight.leaf)
    if value is not None:
      overrides[weight.keras_initializer] = value_initializer(value)
  return overrides


def build_keras_model(layer_dicts, input_shape, *, variables=None,
                      clear_session=False) -> keras.Sequential:
  """The `keras.Sequential` for `layer_dicts`, built on images of `input_shape` (H, W, C).

  Args:
    layer_dicts: the `model.layers` entries, as a config holds them (arguments left out take
      Keras's defaults). Checked with `layer_stack.parse_layers`, so an unknown type or
      argument is an error here too.
    input_shape: (H, W, C).
    variables: Flax variables ('params', 'batch_stats') for the weights to start from, as after
      `copy_flax_to_keras` (which also checks that both sides have the same weights). Without,
      Keras initialises them itself, with the configured initializers. Starting from values
      is also much faster on CPU, where every random draw of a new shape is an XLA compile.
    clear_session: start Keras's naming scope afresh, so layers get the auto names of a first
      model (conv2d, conv2d_1, ...).
  """
  layers = [dict(spec) for spec in layer_dicts]
  layer_stack.parse_layers(layers)
  if clear_session:
    keras.backend.clear_session()
  names = layer_stack.KerasNames()
  keras_layers = [
      keras_layer(layer, **(initializers_from(variables, layer['type'], names(layer['type']))
                            if variables is not None else {}))
      for layer in layers]
  keras_model = keras.Sequential([keras.Input(shape=tuple(input_shape)), *keras_layers])
  if variables is not None:
    copy_flax_to_keras(variables, keras_model)
  return keras_model


def layer_weights(keras_layer_, kind, name):
  """Yields (Keras variable, Flax collection, Flax layer name, Flax leaf name) per weight of one
  layer of `kind` whose Flax submodule is `name`."""
  for weight in layer_kinds.LAYERS[kind].weights:
    variable = getattr(keras_layer_, weight.keras_attribute)
    if variable is not None:  # use_bias=False, center=False, scale=False: neither side has it.
      yield variable, weight.collection, name, weight.leaf


def weight_map(keras_model):
  """Yields (Keras variable, Flax collection, Flax layer name, Flax leaf name) per weight."""
  names = layer_stack.KerasNames()
  for layer in keras_model.layers:
    kind = LAYER_TYPES[type(layer).__name__]
    yield from layer_weights(layer, kind, names(kind))


def _flax_leaf(variables, collection, name, leaf, variable):
  try:
    value = variables[collection][name][leaf]
  except KeyError:
    raise KeyError(f'Keras weight {variable.path} has no Flax counterpart '
                   f'{collection}/{name}/{leaf}') from None
  if tuple(value.shape) != tuple(variable.shape):
    raise ValueError(f'{collection}/{name}/{leaf} has shape {tuple(value.shape)}, Keras weight '
                     f'{variable.path} has {tuple(variable.shape)}')
  return value


def pairs(variables, weights):
  """[(Keras variable, Flax value)] for every weight of `weights` (as `weight_map` yields them);
  both sides must hold the same weights."""
  found, used = [], set()
  for variable, collection, name, leaf in weights:
    found.append((variable, _flax_leaf(variables, collection, name, leaf, variable)))
    used.add((collection, name, leaf))
  flax_leaves = {(collection, name, leaf)
                 for collection in ('params', 'batch_stats')
                 for name, leaves in variables.get(collection, {}).items() for leaf in leaves}
  if flax_leaves != used:
    raise ValueError(f'Flax variables with no Keras weight: {sorted(flax_leaves - used)}')
  return found


def copy_flax_to_keras(variables, keras_model) -> None:
  """Assigns Flax `variables` ('params' and 'batch_stats') to the Keras model's weights."""
  for variable, value in pairs(variables, weight_map(keras_model)):
    variable.assign(np.asarray(value))


def flax_variables(weights) -> dict:
  """`weights` (as `weight_map` yields them) as Flax variables {'params', 'batch_stats'}."""
  variables = {}
  for variable, collection, name, leaf in weights:
    variables.setdefault(collection, {}).setdefault(name, {})[leaf] = np.asarray(variable.value)
  return variables


def copy_keras_to_flax(keras_model) -> dict:
  """The Keras model's weights as Flax variables {'params': ..., 'batch_stats': ...}."""
  return flax_variables(weight_map(keras_model))


def stateless_values(keras_model, variables):
  """(trainable, non_trainable) value lists for `keras_model.stateless_call`, taken from Flax
  `variables` (traced arrays welcome, so jax.grad can differentiate through Keras with respect
  to a Flax params tree); Keras-only state (e.g. dropout seeds) keeps its current value."""
  from_flax = {id(variable): value for variable, value in pairs(variables, weight_map(keras_model))}

  def values(keras_variables):
    return [from_flax.get(id(v), v.value) for v in keras_variables]

  return values(keras_model.trainable_variables), values(keras_model.non_trainable_variables)
