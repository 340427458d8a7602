"""VGG16 and DenseNet121 in Flax compute what keras.applications computes, on Keras's own weights.

Keras builds each network with weights=None (random init, no download), randomises what its init
leaves trivial (biases, BatchNorm statistics), and saves the weights in its formats; we import
them by layer name and compare inference outputs. Freezing follows Keras's `trainable = False`:
the same trainable counts, and one training step that matches Keras's and leaves frozen weights
and frozen BatchNorm statistics bit-identical. Inputs are 32x32 to keep the networks cheap.
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import functools  # pylint: disable=g-import-not-at-top
import importlib  # pylint: disable=g-import-not-at-top
import math  # pylint: disable=g-import-not-at-top

import h5py  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
from keras.src.applications import densenet as keras_densenet  # pylint: disable=g-import-not-at-top
from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from cifar_jax.data.pipeline import InputPipeline  # pylint: disable=g-import-not-at-top
from cifar_jax.models import backbone  # pylint: disable=g-import-not-at-top
from cifar_jax.models import densenet121  # pylint: disable=g-import-not-at-top
from cifar_jax.models import keras_weights  # pylint: disable=g-import-not-at-top
from cifar_jax.models import vgg16  # pylint: disable=g-import-not-at-top
from cifar_jax.models.summary import summarize  # pylint: disable=g-import-not-at-top
from cifar_jax.train import freezing  # pylint: disable=g-import-not-at-top
from cifar_jax.train import optimizers  # pylint: disable=g-import-not-at-top
from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
from cifar_jax.train import transfer  # pylint: disable=g-import-not-at-top
from cifar_jax.train.state import TrainState  # pylint: disable=g-import-not-at-top
from configs import base  # pylint: disable=g-import-not-at-top
from configs import layers as L  # pylint: disable=g-import-not-at-top

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def images(n, seed=0, scale=1.0):
  return (scale * np.random.default_rng(seed).uniform(size=(n, *INPUT_SHAPE))).astype(np.float32)


def randomize(model, seed=0):
  """Non-trivial weights: random biases and BatchNorm gamma/beta/moving statistics."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.8, 1.2, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                         rng.uniform(0.5, 1.5, n)])
    elif getattr(layer, 'bias', None) is not None:
      layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape))


def save(model, path, kind):
  """`model`'s weights as keras.applications' legacy .h5, Keras 3 .weights.h5, or .keras."""
  if kind == 'legacy.h5':
    with h5py.File(path, 'w') as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, model)
  elif kind == 'weights.h5':
    model.save_weights(path)
  else:
    model.save(path)
  return str(path)


def shapes(module, input_shape=INPUT_SHAPE):
  """'params' and 'batch_stats' as ShapeDtypeStructs (import fills them; no slow init)."""
  variables = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                             jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  return variables['params'], variables.get('batch_stats', {})


def imported(module, path, scope=()):
  params, batch_stats = keras_weights.load_keras_weights(path, *shapes(module), scope=scope)
  return {'params': params, 'batch_stats': batch_stats}


def run_once(fn, *args):
  """fn(*args), jitted (with the suite's fast-compile XLA flags: tests/conftest.py)."""
  return jax.jit(fn)(*args)


def flax_inference(module, variables, x):
  return np.asarray(run_once(functools.partial(module.apply, train=False), variables, x))


def keras_inference(model, x):
  """`model(x, training=False)`: Keras's own layers, jitted as `run_once` does ours."""
  def call(trainable, non_trainable, x):
    return model.stateless_call(trainable, non_trainable, x, training=False)[0]
  return np.asarray(run_once(call, [v.value for v in model.trainable_variables],
                             [v.value for v in model.non_trainable_variables], x))


def trees_equal(a, b):
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_close(ours, theirs, tol=1e-4):
  """Within tol, relative to the output's scale."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * np.abs(theirs).max())


def transfer_config(name, *, layers=(), **backbone_options):
  c = base.get_config()
  c.model.name = name
  c.model.layers = layers
  for key, value in backbone_options.items():
    target = c.model.freeze if key in c.model.freeze else c.model.backbone
    target[key] = value
  return c


def trainable_counts(keras_model):
  def count(weights):
    return sum(math.prod(w.shape) for w in weights)
  return count(keras_model.trainable_weights), count(keras_model.non_trainable_weights)


def set_trainable(keras_model, first_trainable_index):
  """The reports' loops: layers before the index frozen, the rest trainable."""
  for i, layer in enumerate(keras_model.layers):
    layer.trainable = i >= first_trainable_index


# --- VGG16. -----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def keras_vgg16():
  model = keras.applications.VGG16(weights=None, include_top=False, input_shape=INPUT_SHAPE)
  randomize(model)
  return model


@pytest.fixture(scope='module')
def vgg16_files(keras_vgg16, tmp_path_factory):
  folder = tmp_path_factory.mktemp('vgg16')
  # The name keras.applications downloads: vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5.
  return {kind: save(keras_vgg16, folder / f'vgg16_notop.{kind}', kind)
          for kind in ('legacy.h5', 'weights.h5')}  # .keras: test_nested_model_files_import_alike.


def test_vgg16_inference_matches_keras_from_every_file_format(keras_vgg16, vgg16_files):
  graph = vgg16.VGG16(include_top=False)
  variables = {kind: imported(graph, path) for kind, path in vgg16_files.items()}
  assert trees_equal(variables['legacy.h5'], variables['weights.h5'])
  x = images(4, scale=255.0)
  assert_close(flax_inference(graph, variables['weights.h5'], x), keras_inference(keras_vgg16, x))


def test_vgg16_cut_at_block3_pool_bottleneck_features_match_keras(keras_vgg16, vgg16_files,
                                                                   tmp_path):
  """exp12's `vgg.get_layer('block3_pool').output`, flattened, through the bottleneck helpers."""
  c = transfer_config('vgg16', output_layer='block3_pool', flatten=True,
                      weights=vgg16_files['legacy.h5'])
  model = vgg16.build(c.model)
  params, batch_stats = backbone.load_pretrained(c.model, *shapes(model))
  reference = keras.Model(keras_vgg16.input,
                          keras.layers.Flatten()(keras_vgg16.get_layer('block3_pool').output))
  x = (255 * images(5)).astype(np.uint8)
  calls = []

  def compute(batch):  # 5 images in batches of 2: the last batch is padded.
    calls.append(len(batch))
    return transfer.compute_bottleneck_features(
        model, {'params': params, 'batch_stats': batch_stats}, batch, batch_size=2,
        normalize=lambda b: b.astype(jnp.float32) / 255)

  first = transfer.cached_bottleneck_features(str(tmp_path), 'train', c.model, x, compute)
  again = transfer.cached_bottleneck_features(str(tmp_path), 'train', c.model, x, compute)
  assert calls == [5] and np.array_equal(first, again)
  assert first.shape == (5, 4 * 4 * 256)
  assert_close(first, keras_inference(reference, x.astype(np.float32) / 255))


def test_vgg16_trainable_counts_match_keras(keras_vgg16):
  """exp12's loop (trainable from block3_conv1) on VGG16 without a head."""
  c = transfer_config('vgg16', trainable_from='block3_conv1')
  summary = summarize(vgg16.build(c.model), INPUT_SHAPE)
  names = [layer.name for layer in keras_vgg16.layers]
  try:
    set_trainable(keras_vgg16, names.index('block3_conv1'))
    assert (summary.trainable, summary.non_trainable) == trainable_counts(keras_vgg16)
  finally:
    set_trainable(keras_vgg16, 0)


# --- DenseNet121. -----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def keras_densenet121():
  """With its top (global average pooling, Dense) and logits out, so both get compared."""
  model = keras.applications.DenseNet121(weights=None, include_top=True, classes=NUM_CLASSES,
                                         classifier_activation=None, input_shape=INPUT_SHAPE)
  randomize(model)
  return model


def test_densenet121_layers_are_keras_layers(keras_densenet121):
  """Same classes, order and names (auto-named layers compare by class only)."""
  ours = densenet121.keras_layers(include_top=True, classes=NUM_CLASSES)
  assert len(ours) == len(keras_densenet121.layers) == 429
  for layer, theirs in zip(ours, keras_densenet121.layers):
    assert layer.layer.keras_class == type(theirs).__name__, layer.name
    if not isinstance(theirs, (keras.layers.InputLayer, keras.layers.ZeroPadding2D)):
      assert layer.name == theirs.name


def test_densenet121_inference_matches_keras(keras_densenet121, tmp_path):
  graph = densenet121.DenseNet121(include_top=True, classes=NUM_CLASSES,
                                  classifier_activation=None)
  legacy = imported(graph, save(keras_densenet121, tmp_path / 'd.h5', 'legacy.h5'))
  keras3 = imported(graph, save(keras_densenet121, tmp_path / 'd.weights.h5', 'weights.h5'))
  assert trees_equal(legacy, keras3)
  x = images(4, scale=255.0)
  assert_close(flax_inference(graph, keras3, x), keras_inference(keras_densenet121, x))


def test_densenet121_last_30_layers_trainable_counts_match_keras(keras_densenet121):
  """tl_densenet121: `Model(base.input, Flatten()(base.output)).layers[-30:]` trainable."""
  notop = keras_densenet121.get_layer('relu').output
  prebase = keras.Model(keras_densenet121.input, keras.layers.Flatten()(notop))
  c = transfer_config('densenet121', flatten=True, trainable_last=30)
  summary = summarize(densenet121.build(c.model), INPUT_SHAPE)
  assert len(prebase.layers) == 428
  try:
    set_trainable(prebase, len(prebase.layers) - 30)
    assert (summary.trainable, summary.non_trainable) == trainable_counts(prebase)
    assert summary.trainable == 639_616  # The report's base summary.
  finally:
    set_trainable(prebase, 0)


# --- Fine-tuning: one step, frozen layers. ------------------------------------------------------

SMALL_BLOCKS = (1, 1, 1, 1)  # Keras's DenseNet(blocks) at its smallest: the same code paths.
UNFROZEN = 9  # Starts mid-block in conv5: frozen and trainable BatchNorm layers on both sides.


def small_densenet_config(learning_rate=0.1):
  c = transfer_config('densenet121', flatten=True, trainable_last=UNFROZEN,
                      layers=(L.dense(NUM_CLASSES, activation='softmax'),))
  c.optim.name = 'sgd'
  c.optim.learning_rate = learning_rate
  return c


def small_densenet(model_config):
  keras_layers = functools.partial(densenet121.keras_layers, blocks=SMALL_BLOCKS)
  return backbone.build(model_config, keras_layers)


@pytest.fixture(scope='module')
def keras_small_densenet():
  base_model = keras_densenet.DenseNet(list(SMALL_BLOCKS), include_top=False, weights=None,
                                       input_shape=INPUT_SHAPE)
  prebase = keras.Model(base_model.input, keras.layers.Flatten()(base_model.output))
  set_trainable(prebase, len(prebase.layers) - UNFROZEN)
  model = keras.Sequential([keras.Input(INPUT_SHAPE), prebase,
                            keras.layers.Dense(NUM_CLASSES, activation='softmax', name='dense')])
  randomize(prebase)
  return model


def frozen_leaves(model, tree):
  """{path: is frozen} for params; batch_stats are frozen where their layer is."""
  paths = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p): p[0].key == 'backbone' and p[1].key in model.frozen
          for p, _ in paths}


def test_fine_tuning_step_matches_keras_and_keeps_frozen_layers(keras_small_densenet, tmp_path):
  c = small_densenet_config()
  model = small_densenet(c.model)
  assert model.frozen and len(model.backbone_layers) == len(keras_small_densenet.layers[0].layers)
  variables = imported(model, save(keras_small_densenet, tmp_path / 'small.weights.h5',
                                   'weights.h5'))
  x, labels = images(8, seed=1), np.arange(8) % NUM_CLASSES
  assert_close(jax.nn.softmax(flax_inference(model, variables, x)),
               keras_inference(keras_small_densenet, x))

  tx = freezing.freeze_optimizer(optimizers.make_optimizer(c.optim, 1, 1), model)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                            batch_stats=variables['batch_stats'], rng=jax.random.PRNGKey(0),
                            input_pipeline=InputPipeline(mean=(0.0,) * 3, std=(1.0,) * 3))
  new_state, _ = run_once(steps.train_step, state, {'image': x, 'label': labels})
  keras_small_densenet.compile(optimizer=keras.optimizers.SGD(c.optim.learning_rate),
                               loss='sparse_categorical_crossentropy')
  keras_small_densenet.train_on_batch(x, labels)
  expected = imported(model, save(keras_small_densenet, tmp_path / 'after.weights.h5',
                                  'weights.h5'))

  before = {'params': state.params, 'batch_stats': state.batch_stats}
  after = {'params': new_state.params, 'batch_stats': new_state.batch_stats}
  for collection in ('params', 'batch_stats'):
    frozen = frozen_leaves(model, before[collection])
    assert any(frozen.values()) and not all(frozen.values())
    for (path, old), new, keras_new in zip(
        jax.tree_util.tree_leaves_with_path(before[collection]),
        jax.tree.leaves(after[collection]), jax.tree.leaves(expected[collection])):
      key = jax.tree_util.keystr(path)
      if frozen[key]:
        assert np.array_equal(new, old), f'frozen {collection}{key} changed'
      else:
        assert not np.array_equal(new, old), f'trainable {collection}{key} did not change'
      assert_close(new, keras_new)  # Float32 noise in the gradients: ~2e-6 here.


def test_nested_model_files_import_alike(keras_small_densenet, tmp_path):
  """A backbone nested in a Sequential, saved in every format (and as a whole legacy model)."""
  model = small_densenet(small_densenet_config().model)
  reference = imported(model, save(keras_small_densenet, tmp_path / 'm.weights.h5', 'weights.h5'))
  for kind in ('legacy.h5', 'keras'):
    assert trees_equal(imported(model, save(keras_small_densenet, tmp_path / f'm.{kind}', kind)),
                       reference), kind
  keras_small_densenet.save(tmp_path / 'whole.h5')  # Legacy: weights under 'model_weights'.
  assert trees_equal(imported(model, str(tmp_path / 'whole.h5')), reference)


def test_frozen_params_get_no_update_and_no_optimizer_state():
  """AdamW would decay every weight it is given: the wrapper gives it only the trainable ones."""
  c = transfer_config('vgg16', output_layer='block2_pool', trainable_from='block2_conv1',
                      layers=(L.flatten(), L.dense(NUM_CLASSES)))
  c.optim.update(dict(name='adamw', learning_rate=1e-3, weight_decay=0.1))
  model = vgg16.build(c.model)
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes(model)[0])
  tx = freezing.freeze_optimizer(optimizers.make_optimizer(c.optim, 1, 1), model)
  opt_state = tx.init(params)
  updates, opt_state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), opt_state, params)
  mask = freezing.make_trainable_mask(model, params)
  for update, trainable in zip(jax.tree.leaves(updates), jax.tree.leaves(mask)):
    assert bool(jnp.all(update != 0)) if trainable else bool(jnp.all(update == 0))
  adam_moments = sum(leaf.size for leaf in jax.tree.leaves(opt_state) if leaf.ndim)  # m and v.
  trainable_size = sum(p.size for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if t)
  assert adam_moments == 2 * trainable_size
  # ReduceLROnPlateau still finds and sets the LR inside the wrapped state.
  opt_state = optimizers.set_learning_rate(opt_state, 5e-4, c.optim, step=1)
  assert optimizers.learning_rate(opt_state) == np.float32(5e-4)
  c.model.freeze.trainable_from = ''
  assert freezing.freeze_optimizer(tx, vgg16.build(c.model)) is tx


def test_fine_tuning_phases():
  c = small_densenet_config(learning_rate=1e-3)
  c.train.epochs = 10
  c.model.phases = (dict(epochs=3, freeze=dict(backbone=True)),
                    dict(learning_rate=1e-5, freeze=dict(trainable_last=5)))
  phases = freezing.fine_tuning_phases(c)
  assert [(p.first_epoch, p.end_epoch) for p in phases] == [(0, 3), (3, 10)]
  assert phases[0].config.model.freeze.backbone and not phases[0].config.model.freeze.trainable_last
  assert phases[0].config.optim.learning_rate == 1e-3
  assert phases[1].config.model.freeze.trainable_last == 5
  assert not phases[1].config.model.freeze.backbone
  assert phases[1].config.optim.learning_rate == 1e-5
  assert freezing.phase_at(phases, 7) is phases[1]
  assert len(small_densenet(phases[0].config.model).frozen) == len(
      densenet121.keras_layers(include_top=False, blocks=SMALL_BLOCKS)) + 1  # + Flatten.


# --- Preprocessing and resizing. --------------------------------------------------------------

@pytest.mark.parametrize('mode', ['caffe', 'torch', 'tf'])
def test_preprocess_input_matches_keras(mode):
  x = images(3, scale=255.0)
  theirs = importlib.import_module('keras.applications.imagenet_utils').preprocess_input(
      x.copy(), mode=mode)
  np.testing.assert_allclose(backbone.preprocess_input(jnp.asarray(x), mode), theirs, rtol=1e-6,
                             atol=1e-5)


@pytest.mark.parametrize('size, method, keras_layer', [
    ((45, 40), 'bilinear', lambda: keras.layers.Resizing(45, 40, interpolation='bilinear')),
    ((64, 64), 'nearest', lambda: keras.layers.UpSampling2D(2)),
])
def test_resize_matches_keras(size, method, keras_layer):
  model = backbone.TransferModel(backbone_layers=(backbone.keras_layer('input_layer', 'input'),),
                                 resize=size, resize_method=method)
  x = images(2, scale=255.0)
  assert_close(model.apply({}, x), keras_layer()(x), tol=1e-6)


# --- Errors and files. --------------------------------------------------------------------------

def test_import_errors_name_the_layer(vgg16_files, keras_densenet121, tmp_path):
  wrong_input = shapes(vgg16.VGG16(include_top=False), (32, 32, 4))
  with pytest.raises(keras_weights.WeightsError, match=r"block1_conv1.*kernel.*\(3, 3, 3, 64\)"):
    keras_weights.load_keras_weights(vgg16_files['weights.h5'], *wrong_input)
  densenet_file = save(keras_densenet121, tmp_path / 'd.weights.h5', 'weights.h5')
  with pytest.raises(keras_weights.WeightsError, match="no weights for layer 'block1_conv1'"):
    keras_weights.load_keras_weights(densenet_file, *shapes(vgg16.VGG16(include_top=False)))


def test_config_checks():
  from configs.arquitecturas import tl_basic  # pylint: disable=g-import-not-at-top
  c = tl_basic.get_config()
  backbone.check_transfer_config(c, ('vgg16',))
  c.model.backbone.preprocess = 'caffe'
  with pytest.raises(ValueError, match="data.normalization='none'"):
    backbone.check_transfer_config(c, ('vgg16',))
  c.model.backbone.preprocess = 'none'
  c.model.freeze.backbone = False
  with pytest.raises(ValueError, match='bottleneck'):
    backbone.check_transfer_config(c, ('vgg16',))
  c = base.get_config()
  c.model.freeze.trainable_last = 3
  with pytest.raises(ValueError, match="not model.name='layer_stack'"):
    backbone.check_transfer_config(c, ('vgg16',))
  with pytest.raises(ValueError, match="trainable_from='block9_conv1' is not a backbone layer"):
    vgg16.build(transfer_config('vgg16', trainable_from='block9_conv1').model)


def test_fetch_uses_the_keras_cache_and_never_downloads_when_told(monkeypatch, tmp_path):
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  with pytest.raises(keras_weights.WeightsError, match='vgg16/vgg16_weights_tf_dim_ordering'):
    keras_weights.fetch_keras_weights('vgg16', download=False)
  cached = tmp_path / 'models' / 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
  cached.parent.mkdir()
  cached.write_bytes(b'')
  assert keras_weights.fetch_keras_weights('vgg16', download=False) == str(cached)


# --- The configs. -------------------------------------------------------------------------------

@pytest.mark.parametrize('config_module, total, trainable', [
    ('configs.exp12', 12_897_098, 12_630_794),
    ('configs.arquitecturas.tl_basic', 21_173_194, 6_457_738),
    ('configs.arquitecturas.tl_vgg16', 21_173_194, 13_537_162),        # The report's summary.
    ('configs.arquitecturas.tl_densenet121', 19_918_538, 13_519_882),  # The report's summary.
])
def test_config_summaries(config_module, total, trainable):
  from cifar_jax.models import create_model  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(config_module).get_config()
  summary = summarize(create_model(c.model), c.model.input_shape)
  assert (summary.total, summary.trainable) == (total, trainable)
