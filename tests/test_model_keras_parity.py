"""The Flax layer stack computes what the same Keras 3 Sequential computes.

Each stack below is run by both implementations on the same weights (`keras_reference` copies
ours into Keras): inference outputs, training-mode BatchNorm (outputs and moving statistics), the
L2 terms, the loss and its gradients, the summary (names, shapes, parameter counts), and the
initialisers' distributions. Between them the stacks use every layer type and argument of a
`model.layers` entry (each kind alone: tests/test_layer_kinds.py).
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import functools  # pylint: disable=g-import-not-at-top
import importlib  # pylint: disable=g-import-not-at-top
import math  # pylint: disable=g-import-not-at-top

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from scipy import stats  # pylint: disable=g-import-not-at-top

import cifar_jax.models  # pylint: disable=g-import-not-at-top
from cifar_jax.models import layer_kinds  # pylint: disable=g-import-not-at-top
from cifar_jax.models import layer_stack  # pylint: disable=g-import-not-at-top
from cifar_jax.models import summary  # pylint: disable=g-import-not-at-top
from configs import base  # pylint: disable=g-import-not-at-top
from configs import layers as L  # pylint: disable=g-import-not-at-top
from cifar_jax.testing import keras_reference  # pylint: disable=g-import-not-at-top

NUM_CLASSES = 10
BATCH = 4  # One batch size throughout: eager ops compile once per shape.


def avgpool(pool_size=2, **kwargs):
  return dict(type='average_pooling2d', pool_size=pool_size, **kwargs)


def activation(name, **kwargs):
  return dict(type='activation', activation=name, **kwargs)


def config_layers(module):
  """(layers, input shape) of configs/<module>.py."""
  config = importlib.import_module(f'configs.{module}').get_config()
  return tuple(config.model.layers), tuple(config.model.input_shape)


# name -> (layers, input shape). Odd spatial sizes check the 'same'/'valid' padding conventions.
STACKS = {
    # Conv options: same/valid, strides 2 and (1, 2), even kernel with 'same', every
    # kernel_initializer, conv activations, use_bias=False, l2.
    'conv_options': ((
        L.conv(4, 3, padding='same', activation='relu', kernel_initializer='he_normal', l2=1e-3),
        L.conv(5, 3, strides=2, padding='same', activation='leaky_relu',
               kernel_initializer='he_uniform'),
        L.conv(6, (2, 3), strides=(1, 2), padding='same', activation='swish', use_bias=False,
               kernel_initializer='lecun_normal', l2=2e-3),
        L.conv(4, 2, strides=2, activation='elu', kernel_initializer='lecun_uniform'),
        L.conv(3, 1, activation='silu', kernel_initializer='glorot_normal', l2=5e-4),
        L.flatten(),
        L.dense(NUM_CLASSES, activation='softmax', kernel_initializer='glorot_normal', l2=1e-4),
    ), (9, 9, 3)),
    # Standalone activations, ReLU, LeakyReLU, BN before/after activations and on 4-D dense output,
    # BN center/scale/momentum/epsilon options, a mid-stack softmax, GAP, a final softmax
    # Activation layer.
    'activations_batchnorm': ((
        L.conv(6, 3, padding='same'),
        L.bn(),
        dict(type='re_lu'),
        activation('tanh'),
        dict(type='leaky_re_lu'),
        L.conv(6, 3, padding='same', activation='leaky_relu', negative_slope=0.1),
        L.bn(center=False),
        activation('leaky_relu', negative_slope=0.05),
        L.conv(5, 3, activation='sigmoid'),
        L.bn(scale=False, momentum=0.9, epsilon=1e-5),
        dict(type='leaky_re_lu', negative_slope=0.2),
        L.dense(4, activation='elu'),  # On a 4-D tensor: applies to the channel axis.
        activation('softmax'),
        L.bn(center=False, scale=False),
        dict(type='global_average_pooling2d'),
        L.dense(7, activation='tanh', use_bias=False, l2=1e-3),
        activation('linear'),
        L.dense(NUM_CLASSES),
        activation('softmax'),
    ), (8, 8, 3)),
    # Pooling with 'same' padding on odd sizes (the average leaves the padding out), strided
    # pools, dropout, and a dropout after the final softmax.
    'pooling_same': ((
        L.conv(4, 3, padding='same', activation='relu'),
        avgpool(2, padding='same'),                  # 7x7 -> 4x4
        L.conv(6, 3, padding='same', activation='sigmoid'),
        L.maxpool(3, strides=2, padding='same'),     # 4x4 -> 2x2
        avgpool(3, strides=1, padding='same'),       # 2x2 -> 2x2, mostly padding
        L.dropout(0.3),
        L.flatten(),
        L.dense(NUM_CLASSES, activation='softmax'),
        L.dropout(0.2),
    ), (7, 7, 3)),
    # 'valid' pools on odd sizes, BN after Dense, dropout, dense use_bias=False, an output that
    # is not a softmax.
    'pooling_valid_dense_bn': ((
        L.maxpool(2),                                # 7x7 -> 3x3
        avgpool(2, strides=1),                       # 3x3 -> 2x2
        L.conv(8, 1, activation='relu'),
        L.maxpool((2, 1)),                           # 2x2 -> 1x2
        L.flatten(),
        L.dense(16, activation='leaky_relu', negative_slope=0.15, l2=1e-3),
        L.bn(),
        L.dropout(0.5),
        L.dense(12, activation='swish', use_bias=False, kernel_initializer='he_normal'),
        L.bn(momentum=0.9),
        L.dense(NUM_CLASSES, activation='tanh'),
    ), (7, 7, 2)),
    # entregable4's first and best models, from their configs.
    'exp0': config_layers('exp0'),
    'exp11': config_layers('exp11'),  # 15M parameters: inference and summary only.
}
SMALL_STACKS = [name for name in STACKS if name != 'exp11']
# More real models, for the summary only (names, shapes, parameter counts): ReLU and LeakyReLU
# layers, l2, He initialisers, and the largest config (36.6M parameters).
SUMMARY_CONFIGS = ['arquitecturas.a3', 'arquitecturas.a2_leaky', 'p2cnn.exp8', 'proyecto4.exp10',
                   'redes.m6']
# The reports' Keras model.summary() totals: (total, trainable, non-trainable).
REPORTED_PARAMS = {'exp0': (263402, 263402, 0), 'exp11': (15448842, 15438986, 9856)}


def make_model(layers, input_shape):
  config = base.get_config()
  config.model.layers = tuple(layers)
  config.model.input_shape = tuple(input_shape)
  return cifar_jax.models.create_model(config.model)


def without_dropout(layers):
  """Dropout has no weights and no effect on the other layers' names, so the same variables fit."""
  return tuple(layer for layer in layers if layer['type'] != 'dropout')


def ends_in_softmax(model):
  return layer_stack.final_softmax_index(model.layers) is not None


def _initial_value(rng, path, shape):
  """Weights drawn with numpy (jax.random would compile per shape: seconds on CPU): He-scaled
  kernels, and non-trivial biases and BatchNorm parameters/statistics, so that copying the wrong
  one shows."""
  name = path[-1].key
  if name == 'kernel':
    value = rng.normal(size=shape) * np.sqrt(2 / math.prod(shape[:-1]))
  elif name in ('var', 'scale'):
    value = rng.uniform(0.5, 2.0, size=shape)
  else:
    value = 0.2 * rng.normal(size=shape)
  return value.astype(np.float32)


def variables_like(model, input_shape, draw):
  """'params' and 'batch_stats' of `model`, each leaf `draw(path, shape)`."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          {'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                          jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  shapes = {k: shapes[k] for k in ('params', 'batch_stats') if k in shapes}
  return jax.tree_util.tree_map_with_path(lambda path, leaf: draw(path, leaf.shape), shapes)


def random_variables(model, input_shape, seed=0):
  rng = np.random.default_rng(seed)
  return variables_like(model, input_shape, functools.partial(_initial_value, rng))


@functools.cache
def setup(stack):
  """(model, variables, layers, input_shape) for a stack; variables hold random weights."""
  layers, input_shape = STACKS[stack]
  model = make_model(layers, input_shape)
  return model, random_variables(model, input_shape), layers, input_shape


def images(batch, input_shape, seed=3):
  return np.random.default_rng(seed).uniform(size=(batch, *input_shape)).astype(np.float32)


def keras_copy(layers, input_shape, variables):
  return keras_reference.build_keras_model(layers, input_shape, variables=variables)


def sown_losses(state):
  return jax.tree.leaves(state.get('losses', {}))


@pytest.mark.parametrize('stack', list(STACKS))
def test_inference_matches_keras(stack):
  model, variables, layers, input_shape = setup(stack)
  x = images(2 if stack == 'exp11' else BATCH, input_shape)
  ours = model.apply(variables, x, train=False)
  if ends_in_softmax(model):
    ours = jax.nn.softmax(ours)
  theirs = keras_copy(layers, input_shape, variables)(x, training=False)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_gelu_activation_matches_keras():
  layers, input_shape = (L.flatten(), L.dense(16, activation='gelu'), L.dense(8)), (3, 3, 2)
  model = make_model(layers, input_shape)
  x = 2 * images(BATCH, input_shape)
  variables = random_variables(model, input_shape)
  ours = model.apply(variables, x, train=False)
  theirs = keras_copy(layers, input_shape, variables)(x, training=False)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stack', SMALL_STACKS)
def test_training_batchnorm_matches_keras(stack):
  _, variables, layers, input_shape = setup(stack)
  layers = without_dropout(layers)
  model = make_model(layers, input_shape)
  x = images(BATCH, input_shape)
  ours, state = model.apply(variables, x, train=True, mutable=['batch_stats', 'losses'])
  if ends_in_softmax(model):
    ours = jax.nn.softmax(ours)
  keras_model = keras_copy(layers, input_shape, variables)
  # Eager call in training mode: Keras's BatchNormalization assigns its moving statistics.
  theirs = keras_model(x, training=True)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  updated = keras_reference.copy_keras_to_flax(keras_model).get('batch_stats', {})
  assert jax.tree.structure(state.get('batch_stats', {})) == jax.tree.structure(updated)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
               state.get('batch_stats', {}), updated)
  if 'batch_stats' in variables:  # The statistics did move.
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, variables['batch_stats'],
                                                updated)))


@pytest.mark.parametrize('stack', SMALL_STACKS)
def test_l2_losses_match_keras(stack):
  model, variables, layers, input_shape = setup(stack)
  _, state = model.apply(variables, images(BATCH, input_shape), train=False, mutable=['losses'])
  ours = sown_losses(state)
  theirs = keras_copy(layers, input_shape, variables).losses
  num_l2 = sum(1 for layer in model.layers if getattr(layer, 'l2', 0.0))
  assert len(ours) == len(theirs) == num_l2
  np.testing.assert_allclose(sum(ours), sum(theirs), rtol=1e-6)


@pytest.mark.parametrize('train', [False, True], ids=['inference', 'training'])
@pytest.mark.parametrize('stack', SMALL_STACKS)
def test_loss_and_gradients_match_keras(stack, train):
  """Cross-entropy (+ L2) and its gradient w.r.t. every parameter, with Keras's gradient taken
  by jax.grad through `stateless_call`. In training mode without the dropout layers (Keras's
  dropout masks come from its own RNG), so BatchNorm uses the batch statistics."""
  _, variables, layers, input_shape = setup(stack)
  if train:
    layers = without_dropout(layers)
  model = make_model(layers, input_shape)
  from_logits = not ends_in_softmax(model)  # A non-softmax output is taken as logits by both.
  x = images(BATCH, input_shape)
  labels = np.random.default_rng(4).integers(0, NUM_CLASSES, size=BATCH)
  mutable = ['batch_stats', 'losses'] if train else ['losses']

  def our_loss(params):
    logits, state = model.apply({**variables, 'params': params}, x, train=train, mutable=mutable)
    log_probs = jax.nn.log_softmax(logits)
    cross_entropy = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
    return cross_entropy + sum(sown_losses(state))

  keras_model = keras_copy(layers, input_shape, variables)

  def keras_loss(params):
    trainable, non_trainable = keras_reference.stateless_values(
        keras_model, {**variables, 'params': params})
    outputs, _, losses = keras_model.stateless_call(trainable, non_trainable, x, training=train,
                                                    return_losses=True)
    cross_entropy = keras.losses.sparse_categorical_crossentropy(labels, outputs,
                                                                 from_logits=from_logits)
    return jnp.mean(cross_entropy) + sum(losses)

  # Jitted: one compile each instead of one per eager op of the backward pass.
  our_value, our_grads = jax.jit(jax.value_and_grad(our_loss))(variables['params'])
  keras_value, keras_grads = jax.jit(jax.value_and_grad(keras_loss))(variables['params'])
  np.testing.assert_allclose(our_value, keras_value, rtol=1e-5)
  assert jax.tree.structure(our_grads) == jax.tree.structure(keras_grads)

  # Relative to each leaf's largest entry, with a floor for leaves whose exact gradient is 0
  # (e.g. a conv bias feeding training-mode BatchNorm), where both hold float32 noise.
  floor = 1e-5 * max(float(np.max(np.abs(g))) for g in jax.tree.leaves(keras_grads))

  def check(path, ours, theirs):
    atol = 1e-4 * float(np.max(np.abs(theirs))) + floor
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=atol,
                               err_msg=jax.tree_util.keystr(path))

  jax.tree_util.tree_map_with_path(check, our_grads, keras_grads)


@pytest.mark.parametrize('stack', list(STACKS) + SUMMARY_CONFIGS)
def test_summary_matches_keras(stack):
  layers, input_shape = STACKS[stack] if stack in STACKS else config_layers(stack)
  model = make_model(layers, input_shape)
  ours = summary.summarize(model, input_shape)
  # Weights play no part (zeros build fastest); a fresh naming scope gives a first model's names.
  zeros = variables_like(model, input_shape, lambda path, shape: np.zeros(shape, np.float32))
  keras_model = keras_reference.build_keras_model(layers, input_shape, variables=zeros,
                                                  clear_session=True)

  def count(weights):
    return sum(math.prod(w.shape) for w in weights)

  assert ours.total == keras_model.count_params()
  assert ours.trainable == count(keras_model.trainable_weights)
  assert ours.non_trainable == count(keras_model.non_trainable_weights)
  if stack in REPORTED_PARAMS:
    assert (ours.total, ours.trainable, ours.non_trainable) == REPORTED_PARAMS[stack]
  assert len(ours.rows) == len(keras_model.layers)
  for row, layer in zip(ours.rows, keras_model.layers):
    assert (row.name, row.class_name) == (layer.name, type(layer).__name__)
    shape = tuple(None if d == 'None' else d for d in row.output_shape)
    assert shape == tuple(layer.output.shape), row.name
    assert row.params == layer.count_params(), row.name


@pytest.mark.parametrize('kind', ['conv', 'dense'])
@pytest.mark.parametrize('initializer', [None, *sorted(layer_kinds.INITIALIZERS)])
def test_initializers_draw_from_keras_law(initializer, kind):
  """Same distribution as Keras's initializer (not the same values): moments, range, and a
  two-sample Kolmogorov-Smirnov test on ~0.4M draws each (fixed seeds: deterministic). None:
  both sides' default. fan_in != fan_out, so that fan_in/fan_out/fan_avg modes differ."""
  kwargs = {} if initializer is None else dict(kernel_initializer=initializer)
  if kind == 'conv':
    layers, input_shape = (L.conv(384, 3, **kwargs),), (3, 3, 128)
  else:
    layers, input_shape = (L.dense(384, **kwargs),), (1, 1, 1024)
  model = make_model(layers, input_shape)
  params = model.init(jax.random.key(0), jnp.zeros((1, *input_shape)), train=False)['params']
  ours = np.asarray(params[layers[0]['type']]['kernel'])
  keras.utils.set_random_seed(0)
  keras_layer = keras_reference.build_keras_model(layers, input_shape).layers[0]
  theirs = np.asarray(keras_layer.kernel.value)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.01)
  assert abs(ours.mean()) < 0.01 * theirs.std()
  np.testing.assert_allclose([ours.min(), ours.max()], [theirs.min(), theirs.max()], rtol=0.01)
  assert stats.ks_2samp(ours.ravel(), theirs.ravel()).pvalue > 1e-3
  assert not np.any(params[layers[0]['type']]['bias'])
  assert not np.any(np.asarray(keras_layer.bias.value))


# One config of each report (issue 5), as its own layers: 'same' pooling of odd sizes and 2x2 /
# 4x4 kernels (p2cnn), swish and relu with BN and dropout (proyecto4), ReLU and LeakyReLU layers
# after BN with He initialisers and l2 (arquitecturas), 6x6 kernels (redes).
REPORT_CONFIGS = ['p2cnn.exp2', 'proyecto4.exp7', 'arquitecturas.a1_mejorada',
                  'arquitecturas.a2_leaky', 'redes.m3']


@pytest.mark.parametrize('module', REPORT_CONFIGS)
def test_report_config_matches_keras(module):
  """Inference outputs and the l2 penalty equal Keras's on copied weights, and so do the
  training-mode outputs (BatchNorm on batch statistics; without Dropout, whose masks come from
  each side's own RNG)."""
  layers, input_shape = config_layers(module)
  model = make_model(layers, input_shape)
  variables = random_variables(model, input_shape)
  x = images(BATCH, input_shape)
  keras_model = keras_copy(layers, input_shape, variables)
  ours, state = model.apply(variables, x, train=False, mutable=['losses'])
  np.testing.assert_allclose(jax.nn.softmax(ours), keras_model(x, training=False), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(sum(sown_losses(state)), sum(keras_model.losses), rtol=1e-6)

  layers = without_dropout(layers)
  ours, _ = make_model(layers, input_shape).apply(variables, x, train=True,
                                                  mutable=['batch_stats', 'losses'])
  theirs = keras_copy(layers, input_shape, variables)(x, training=True)
  # Up to 14 BatchNorms on the statistics of 4 images amplify float32 rounding (~1e-5 here).
  np.testing.assert_allclose(jax.nn.softmax(ours), theirs, rtol=1e-4, atol=1e-4)
