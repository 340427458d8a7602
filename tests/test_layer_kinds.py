"""Every layer kind of cifar_jax.models.layer_kinds, alone, against its Keras 3 layer.

Each registered kind has cases here: arguments (the fewest the Keras layer needs, so that our
defaults meet Keras's, then others) and an input shape. Both layers run on the same input and
the same weights, in inference and in training mode: the outputs, BatchNorm's moving statistics
and the L2 penalty agree, the weights pair one for one (`Layer.weights`), and so do the Keras
class and the parameter count the summary shows. A kind without a case fails
`test_every_kind_has_a_case`: adding a kind is its class and its cases here.
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import math  # pylint: disable=g-import-not-at-top
import subprocess  # pylint: disable=g-import-not-at-top
import sys  # pylint: disable=g-import-not-at-top

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from cifar_jax.models import keras_weights  # pylint: disable=g-import-not-at-top
from cifar_jax.models import layer_kinds  # pylint: disable=g-import-not-at-top
from cifar_jax.models import layer_stack  # pylint: disable=g-import-not-at-top
from cifar_jax.testing import keras_reference  # pylint: disable=g-import-not-at-top
from tests.conftest import REPO  # pylint: disable=g-import-not-at-top

BATCH = 2
IMAGE = (5, 5, 3)  # Odd sizes check the 'same'/'valid' conventions.

# (kind, arguments, input shape). Inputs: a layer of `inputs` N > 1 gets the input N times.
CASES = [
    ('conv2d', dict(filters=3, kernel_size=3), IMAGE),
    ('conv2d', dict(filters=4, kernel_size=(2, 3), strides=(1, 2), padding='same',
                    activation='leaky_relu', negative_slope=0.1, use_bias=False,
                    kernel_initializer='he_normal', l2=1e-3), IMAGE),
    ('dense', dict(units=4), (6,)),
    ('dense', dict(units=3, activation='softmax', l2=2e-3), IMAGE),  # On the channel axis.
    ('batch_normalization', dict(), IMAGE),
    ('batch_normalization', dict(momentum=0.9, epsilon=1e-5, center=False, scale=False), (6,)),
    ('activation', dict(activation='gelu'), IMAGE),
    ('activation', dict(activation='leaky_relu', negative_slope=0.05), IMAGE),
    ('leaky_re_lu', dict(), IMAGE),
    ('leaky_re_lu', dict(negative_slope=0.1), IMAGE),
    ('re_lu', dict(), IMAGE),
    ('max_pooling2d', dict(), IMAGE),
    ('max_pooling2d', dict(pool_size=3, strides=2, padding='same'), IMAGE),
    ('average_pooling2d', dict(pool_size=2), IMAGE),  # Keras 3 requires pool_size here.
    ('average_pooling2d', dict(pool_size=(2, 3), strides=1, padding='same'), IMAGE),
    ('global_average_pooling2d', dict(), IMAGE),
    ('global_max_pooling2d', dict(), IMAGE),
    ('zero_padding2d', dict(), IMAGE),
    ('zero_padding2d', dict(padding=((1, 2), (0, 3))), IMAGE),
    ('dropout', dict(rate=0.5), IMAGE),
    ('flatten', dict(), IMAGE),
    ('input', dict(), IMAGE),
    ('concatenate', dict(), IMAGE),
]
INPUTS = {'concatenate': 2}


def case_id(case):
  kind, args, _ = case
  return '-'.join([kind, *args])


class Alone(nn.Module):
  """One layer run the way the interpreters run it, its submodule named 'layer'."""
  layer: layer_kinds.Layer
  inputs: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    return self.layer(layer_kinds.Context(self, 'layer', train, jnp.float32), *[x] * self.inputs)


def random_variables(model, x, rng):
  """The model's variables with random values (non-trivial biases and statistics, so that a
  weight copied to the wrong place shows)."""
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  variables = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}

  def draw(path, leaf):
    if path[-1].key in ('var', 'scale'):
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.5, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, variables)


def test_every_kind_has_a_case():
  assert {kind for kind, _, _ in CASES} == set(layer_kinds.LAYERS)
  assert set(keras_reference.LAYER_TYPES.values()) == set(layer_kinds.LAYERS)


def test_weight_files_read_every_kind():
  """keras_weights reads a layer's arrays in KERAS_ORDER: each kind's Keras order must be in it."""
  for kind, cls in layer_kinds.LAYERS.items():
    slots = [(weight.collection, weight.leaf) for weight in cls.weights]
    assert [slot for slot in keras_weights.KERAS_ORDER if slot in slots] == slots, kind


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_kind_matches_its_keras_layer(case):
  kind, args, input_shape = case
  cls = layer_kinds.LAYERS[kind]
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, *input_shape)).astype(np.float32)
  model = Alone(layer_kinds.create(kind, args, kind), INPUTS.get(kind, 1))
  variables = random_variables(model, x, rng)
  ours = model.apply(variables, x, train=False)

  if kind == 'input':  # Keras's InputLayer is no callable layer: it hands the input on.
    keras_layer = keras.layers.InputLayer(shape=input_shape)
    assert type(keras_layer).__name__ == cls.keras_class
    assert tuple(keras_layer.output.shape) == (None, *input_shape)
    np.testing.assert_array_equal(ours, x)
    return
  keras_layer = cls.keras_layer(keras, args)
  assert type(keras_layer).__name__ == cls.keras_class
  inputs = [x] * INPUTS[kind] if kind in INPUTS else x
  keras_layer(inputs, training=False)  # Builds the weights, which then get ours.
  weights = keras_reference.layer_weights(keras_layer, kind, 'layer')
  for variable, value in keras_reference.pairs(variables, weights):
    variable.assign(np.asarray(value))
  # The summary's count of the layer: the size of its variables.
  assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables)) == \
      keras_layer.count_params()

  np.testing.assert_allclose(ours, keras_layer(inputs, training=False), rtol=1e-5, atol=1e-6)
  ours, state = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)},
                            mutable=['batch_stats', 'losses'])
  theirs = keras_layer(inputs, training=True)  # Keras's BatchNorm updates its statistics.
  if kind == 'dropout':  # Masks come from each side's RNG: both keep x / (1 - rate), or 0.
    for out in (np.asarray(ours), np.asarray(theirs)):
      kept = out != 0
      assert 0 < kept.mean() < 1
      np.testing.assert_allclose(out[kept], x[kept] / (1 - args['rate']), rtol=1e-6)
  else:
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
  updated = keras_reference.flax_variables(keras_reference.layer_weights(keras_layer, kind,
                                                                         'layer'))
  if 'batch_stats' in variables:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 state['batch_stats'], updated['batch_stats'])
  np.testing.assert_allclose(sum(jax.tree.leaves(state.get('losses', {}))),
                             sum(keras_layer.losses), rtol=1e-6)


@pytest.mark.parametrize('spec, message', [
    (dict(type='conv3d'), r"model.layers\[0\]: unknown layer type 'conv3d'"),
    (dict(type='dense', units=3, filters=2),
     r"model.layers\[0\] \(dense\): unknown argument.*filters"),
    (dict(type='conv2d', filters=3), r"missing required argument.*kernel_size"),
    (dict(type='dense', units=3, activation='mish'), r"unknown activation 'mish'"),
    (dict(type='dense', units=3, kernel_initializer='ones'), r"unknown kernel_initializer"),
    (dict(type='max_pooling2d', padding='full'), r"padding must be 'valid' or 'same'"),
    (dict(type='concatenate'), r"unknown layer type 'concatenate'"),  # Graph wiring only.
])
def test_bad_layers_name_the_entry(spec, message):
  with pytest.raises(ValueError, match=message):
    layer_stack.parse_layers([spec])


def test_layers_are_hashable():
  """Module attributes end up in jit cache keys: lists from a command line become tuples."""
  layers = layer_stack.parse_layers([dict(type='conv2d', filters=3, kernel_size=[2, 3])])
  assert hash(layers) == hash(layer_stack.parse_layers([dict(type='conv2d', filters=3,
                                                              kernel_size=(2, 3))]))


def test_importing_cifar_jax_imports_no_keras():
  """Keras is a test and benchmark dependency (cifar_jax.testing), not cifar_jax's."""
  code = ('import sys, cifar_jax.models, cifar_jax.train, cifar_jax.predict; '
          'assert "keras" not in sys.modules, "keras imported"')
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)
