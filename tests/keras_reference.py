"""The Keras 3 reference for a cifar_jax layer stack: the same model as a `keras.Sequential`.

Builds the Sequential from the layer dicts a `model.layers` config holds (their argument names
are Keras's, so they pass through almost verbatim) and moves weights between it and the Flax
variables, so parity tests can run both on the same weights:

    keras_model = keras_reference.build_keras_model(config.model.layers, (32, 32, 3),
                                                    variables=variables)
    probs = keras_model(images, training=False)  # == softmax(model.apply(variables, images))
    keras_reference.copy_flax_to_keras(new_variables, keras_model)  # Later: sync again.
    keras_reference.copy_keras_to_flax(keras_model)  # And back: {'params', 'batch_stats'}.

Weights are matched by position (Keras layer i is config layer i) and named the way the Flax
model names its submodules, so the mapping works whatever auto names Keras handed out. Unlike
the Flax model, the Keras model keeps a trailing softmax, as the reports' models did.

Importing this module selects the JAX backend for Keras unless KERAS_BACKEND is already set.
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cifar_jax.models import layer_stack  # pylint: disable=g-import-not-at-top
from cifar_jax.models import summary  # pylint: disable=g-import-not-at-top

# Keras class name -> layer dict 'type' ('Conv2D' -> 'conv2d').
LAYER_TYPES = {class_name: kind for kind, class_name in summary.KERAS_CLASS_NAMES.items()}

# Per layer type: (Flax collection, Flax leaf, Keras attribute, Keras initializer argument) for
# each weight. A Keras attribute that is None (use_bias=False, center=False, scale=False) has no
# Flax leaf either.
WEIGHTS = {
    'conv2d': (('params', 'kernel', 'kernel', 'kernel_initializer'),
               ('params', 'bias', 'bias', 'bias_initializer')),
    'dense': (('params', 'kernel', 'kernel', 'kernel_initializer'),
              ('params', 'bias', 'bias', 'bias_initializer')),
    'batch_normalization': (('params', 'scale', 'gamma', 'gamma_initializer'),
                            ('params', 'bias', 'beta', 'beta_initializer'),
                            ('batch_stats', 'mean', 'moving_mean', 'moving_mean_initializer'),
                            ('batch_stats', 'var', 'moving_variance',
                             'moving_variance_initializer')),
}


def keras_activation(name, negative_slope=None):
  """What Keras's `activation=` argument takes for our (activation, negative_slope) pair."""
  if name == 'leaky_relu' and negative_slope is not None:
    def leaky_relu(x):
      return keras.activations.leaky_relu(x, negative_slope=negative_slope)
    return leaky_relu
  return name  # None and every other name are Keras's own activation strings.


def keras_layer(spec, **overrides):
  """The Keras layer for one layer dict; `overrides` are extra Keras arguments (initializers).

  Only the arguments the dict gives are passed, so whatever it leaves out takes *Keras's*
  default: with raw config dicts, the parity tests also check `layer_stack.LAYER_ARGS`'s
  defaults. The dict's argument names are Keras's, except `l2` (kernel_regularizer=L2(l2)) and,
  outside LeakyReLU, `negative_slope` (an argument of the leaky_relu activation).
  """
  kind = spec['type']
  kwargs = {k: v for k, v in spec.items() if k not in ('type', 'l2', 'negative_slope')}
  if spec.get('l2'):
    kwargs['kernel_regularizer'] = keras.regularizers.L2(spec['l2'])
  if 'activation' in spec:
    kwargs['activation'] = keras_activation(spec['activation'], spec.get('negative_slope'))
  elif kind == 'leaky_re_lu' and 'negative_slope' in spec:
    kwargs['negative_slope'] = spec['negative_slope']
  return getattr(keras.layers, summary.KERAS_CLASS_NAMES[kind])(**{**kwargs, **overrides})


def _value_initializer(value):
  """A Keras initializer that returns `value` (the Flax array), shape-checked."""
  def initializer(shape, dtype=None):
    if tuple(shape) != tuple(value.shape):
      raise ValueError(f'Keras asks for a weight of shape {tuple(shape)}, the Flax one is '
                       f'{tuple(value.shape)}')
    return np.asarray(value, dtype=dtype)
  return initializer


def _initializers_from(variables, kind, name):
  """Initializer arguments that start a layer's Keras weights at its Flax variables' values."""
  overrides = {}
  for collection, leaf, _, argument in WEIGHTS.get(kind, ()):
    value = variables.get(collection, {}).get(name, {}).get(leaf)
    if value is not None:
      overrides[argument] = _value_initializer(value)
  return overrides


def build_keras_model(layer_dicts, input_shape, *, variables=None,
                      clear_session=False) -> keras.Sequential:
  """The `keras.Sequential` for `layer_dicts`, built on images of `input_shape` (H, W, C).

  Args:
    layer_dicts: the `model.layers` entries: raw config dicts (arguments left out take Keras's
      defaults) or resolved ones (`model.layers`, every argument explicit). Checked with
      `layer_stack.resolve_layer`, so an unknown type or argument is an error here too.
    input_shape: (H, W, C).
    variables: Flax variables ('params', 'batch_stats') for the weights to start from, as after
      `copy_flax_to_keras` (which also checks that both sides have the same weights). Without,
      Keras initialises them itself, with the configured initializers. Starting from values
      is also much faster on CPU, where every random draw of a new shape is an XLA compile.
    clear_session: start Keras's naming scope afresh, so layers get the auto names of a first
      model (conv2d, conv2d_1, ...).
  """
  layers = [dict(spec) for spec in layer_dicts]
  for i, spec in enumerate(layers):
    layer_stack.resolve_layer(spec, i)
  if clear_session:
    keras.backend.clear_session()
  names = layer_stack.KerasNames()
  keras_layers = [
      keras_layer(layer, **(_initializers_from(variables, layer['type'], names(layer['type']))
                            if variables is not None else {}))
      for layer in layers]
  keras_model = keras.Sequential([keras.Input(shape=tuple(input_shape)), *keras_layers])
  if variables is not None:
    copy_flax_to_keras(variables, keras_model)
  return keras_model


def weight_map(keras_model):
  """Yields (Keras variable, Flax collection, Flax layer name, Flax leaf name) per weight."""
  names = layer_stack.KerasNames()
  for layer in keras_model.layers:
    kind = LAYER_TYPES[type(layer).__name__]
    name = names(kind)
    for collection, leaf, attribute, _ in WEIGHTS.get(kind, ()):
      variable = getattr(layer, attribute)
      if variable is not None:
        yield variable, collection, name, leaf


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


def _pairs(variables, keras_model):
  """[(Keras variable, Flax value)] for every weight; both sides must hold the same weights."""
  pairs, used = [], set()
  for variable, collection, name, leaf in weight_map(keras_model):
    pairs.append((variable, _flax_leaf(variables, collection, name, leaf, variable)))
    used.add((collection, name, leaf))
  flax_leaves = {(collection, name, leaf)
                 for collection in ('params', 'batch_stats')
                 for name, leaves in variables.get(collection, {}).items() for leaf in leaves}
  if flax_leaves != used:
    raise ValueError(f'Flax variables with no Keras weight: {sorted(flax_leaves - used)}')
  return pairs


def copy_flax_to_keras(variables, keras_model) -> None:
  """Assigns Flax `variables` ('params' and 'batch_stats') to the Keras model's weights."""
  for variable, value in _pairs(variables, keras_model):
    variable.assign(np.asarray(value))


def copy_keras_to_flax(keras_model) -> dict:
  """The Keras model's weights as Flax variables {'params': ..., 'batch_stats': ...}."""
  variables = {}
  for variable, collection, name, leaf in weight_map(keras_model):
    variables.setdefault(collection, {}).setdefault(name, {})[leaf] = np.asarray(variable.value)
  return variables


def stateless_values(keras_model, variables):
  """(trainable, non_trainable) value lists for `keras_model.stateless_call`, taken from Flax
  `variables` (traced arrays welcome, so jax.grad can differentiate through Keras with respect
  to a Flax params tree); Keras-only state (e.g. dropout seeds) keeps its current value."""
  from_flax = {id(variable): value for variable, value in _pairs(variables, keras_model)}

  def values(keras_variables):
    return [from_flax.get(id(v), v.value) for v in keras_variables]

  return values(keras_model.trainable_variables), values(keras_model.non_trainable_variables)
