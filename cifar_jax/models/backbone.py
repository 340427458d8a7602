"""Transfer-learning models: a keras.applications backbone, then a head from the layer stack.

A backbone is a tuple of `KerasLayer`s: the layers of the Keras application in `model.layers`
order, with Keras's names (block1_conv1, conv2_block1_0_bn, ...) and wiring, so weight files map
onto it by name and "the last 30 layers" counts what Keras counts. `KerasGraph` runs such a
tuple; vgg16.py and densenet121.py write the tuples.

`TransferModel` is what a config builds (model.name 'vgg16' or 'densenet121'):

    images -> preprocess_input (model.backbone.preprocess) -> Resizing (model.backbone.resize)
           -> backbone, cut after model.backbone.output_layer, + Flatten (model.backbone.flatten)
           -> head (model.layers, the generic layer stack)

Frozen layers (model.freeze, Keras `layer.trainable = False`) are part of the model, as in Keras:
their weights get no gradient (stop_gradient, so XLA skips that work), their BatchNorm runs in
inference mode and leaves its moving statistics alone (Keras 3), and `trainable_mask` tells the
optimizer (cifar_jax/train/freezing.py) and the summary which parameters are frozen.
"""

import dataclasses
import hashlib
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.models import conv
from cifar_jax.models import keras_weights
from cifar_jax.models import layer_stack
from cifar_jax.models import pooling

# Keras class of each layer kind, for the summary.
KERAS_CLASSES = {
    'input': 'InputLayer', 'zero_padding2d': 'ZeroPadding2D', 'conv2d': 'Conv2D',
    'batch_normalization': 'BatchNormalization', 'activation': 'Activation',
    'max_pooling2d': 'MaxPooling2D', 'average_pooling2d': 'AveragePooling2D',
    'concatenate': 'Concatenate', 'flatten': 'Flatten', 'dense': 'Dense',
    'global_average_pooling2d': 'GlobalAveragePooling2D',
    'global_max_pooling2d': 'GlobalMaxPooling2D',
}
PREPROCESS_MODES = ('none', 'caffe', 'torch', 'tf')
POOLINGS = ('', 'avg', 'max')

# keras.applications.imagenet_utils: ImageNet channel statistics.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # Of 0..255 pixels, in BGR order.
TORCH_MEAN = (0.485, 0.456, 0.406)           # Of 0..1 pixels, RGB.
TORCH_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class KerasLayer:
  """One layer of a Keras functional model: its name, kind, arguments and inputs.

  `options` are (argument, value) pairs, so that a tuple of layers is hashable (module attributes
  end up in jit cache keys). `inputs` names the layers feeding this one; () means the previous.
  """
  name: str
  kind: str
  options: tuple = ()
  inputs: tuple = ()

  def get(self, key: str, default: Any = None) -> Any:
    return dict(self.options).get(key, default)


def keras_layer(name: str, kind: str, *inputs: str, **options) -> KerasLayer:
  if kind not in KERAS_CLASSES:
    raise ValueError(f'layer {name!r}: unknown kind {kind!r}; known: {sorted(KERAS_CLASSES)}')
  return KerasLayer(name, kind, tuple(sorted(options.items())), inputs)


def global_pooling(pooling: str, name: str | None = None) -> KerasLayer:
  """keras.applications' `pooling='avg'|'max'` layer (unnamed layers get Keras's auto name)."""
  kind = {'avg': 'global_average_pooling2d', 'max': 'global_max_pooling2d'}[pooling]
  return keras_layer(name or kind, kind)


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def _stop_gradient(variables):
  return jax.tree.map(jax.lax.stop_gradient, variables)


class KerasGraph(nn.Module):
  """Runs `layers` (a keras.applications model as `KerasLayer`s) with Keras's layer semantics.

  Submodules carry the Keras layer names, so params are {'block1_conv1': {'kernel', 'bias'}, ...}.
  Layers named in `frozen` are Keras `trainable=False` layers. With `logits`, a final softmax is
  left out (the loss applies log-softmax).
  """
  layers: tuple[KerasLayer, ...]
  frozen: frozenset = frozenset()
  logits: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kept = {name for layer in self.layers for name in layer.inputs}
    outputs = {}
    for i, layer in enumerate(self.layers):
      inputs = [outputs[name] for name in layer.inputs] if layer.inputs else [x]
      x = self._apply(layer, inputs, train, last=i == len(self.layers) - 1)
      if layer.name in kept:
        outputs[layer.name] = x
      # For the summary (keys sort in layer order); a no-op unless 'intermediates' is mutable.
      self.sow('intermediates', f'{i:04d}_{layer.name}:{KERAS_CLASSES[layer.kind]}', x)
    return x

  def _module(self, cls, layer: KerasLayer):
    """`cls` itself, or for a frozen layer `cls` whose weights are read through stop_gradient."""
    if layer.name in self.frozen:
      return nn.map_variables(cls, 'params', trans_in_fn=_stop_gradient,
                              init=self.is_initializing())
    return cls

  def _apply(self, layer: KerasLayer, inputs, train: bool, last: bool):
    x, kind = inputs[0], layer.kind
    if kind == 'input':
      return x
    if kind in ('conv2d', 'dense'):
      common = dict(use_bias=layer.get('use_bias', True), dtype=self.dtype, name=layer.name,
                    kernel_init=nn.initializers.glorot_uniform())  # Keras's default.
      if kind == 'conv2d':
        module = self._module(nn.Conv, layer)(
            layer.get('filters'), _pair(layer.get('kernel_size')),
            strides=_pair(layer.get('strides', 1)), padding=layer.get('padding', 'valid').upper(),
            conv_general_dilated=conv.conv_general_dilated, **common)
      else:
        module = self._module(nn.Dense, layer)(layer.get('units'), **common)
      activation = layer.get('activation')
      if last and self.logits and activation == 'softmax':
        activation = None
      return layer_stack.apply_activation(module(x), activation)
    if kind == 'batch_normalization':
      # A frozen BatchNorm runs in inference mode, as in Keras 3 (`training and self.trainable`).
      frozen = layer.name in self.frozen
      return self._module(nn.BatchNorm, layer)(
          use_running_average=not train or frozen, momentum=layer.get('momentum', 0.99),
          epsilon=layer.get('epsilon', 1e-3), use_fast_variance=False, dtype=self.dtype,
          name=layer.name)(x)
    if kind == 'activation':
      activation = layer.get('activation')
      if last and self.logits and activation == 'softmax':
        return x
      return layer_stack.apply_activation(x, activation)
    if kind == 'zero_padding2d':
      (top, bottom), (left, right) = layer.get('padding')
      return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    if kind in ('max_pooling2d', 'average_pooling2d'):
      window = _pair(layer.get('pool_size'))
      strides = _pair(layer.get('strides') or layer.get('pool_size'))
      if kind == 'max_pooling2d':
        return pooling.max_pool(x, window, strides, 'VALID')
      return nn.avg_pool(x, window, strides, 'VALID')
    if kind == 'global_average_pooling2d':
      return jnp.mean(x, axis=(1, 2))
    if kind == 'global_max_pooling2d':
      return jnp.max(x, axis=(1, 2))
    if kind == 'concatenate':
      return jnp.concatenate(inputs, axis=-1)
    if kind == 'flatten':
      return x.reshape((x.shape[0], -1))
    raise ValueError(f'layer {layer.name!r}: unknown kind {kind!r}')


def preprocess_input(x, mode: str):
  """keras.applications.imagenet_utils.preprocess_input on 0..255 RGB pixels, in Keras's op order.

  'caffe' (VGG16): RGB->BGR, minus the ImageNet mean. 'torch' (DenseNet): /255, minus the mean,
  divided by the std. 'tf': to [-1, 1]. 'none': unchanged (the reports' x/255 comes from
  data.normalization instead).
  """
  if mode == 'none':
    return x
  if mode == 'tf':
    return x / 127.5 - 1.0
  if mode == 'torch':
    x, mean, std = x / 255.0, TORCH_MEAN, TORCH_STD
  elif mode == 'caffe':
    x, mean, std = x[..., ::-1], CAFFE_BGR_MEAN, None
  else:
    raise ValueError(f'preprocess mode {mode!r} is unknown; known: {list(PREPROCESS_MODES)}')
  x = x + jnp.asarray([-m for m in mean], x.dtype)  # Keras adds the negated mean.
  return x if std is None else x / jnp.asarray(std, x.dtype)


class TransferModel(nn.Module):
  """preprocess_input -> Resizing -> backbone (`KerasGraph`) -> head (`LayerStack`); logits.

  Params are {'backbone': {Keras layer names}, 'head': {layer stack names}}. Without a head, the
  backbone's output is the model's (a final softmax left out).
  """
  backbone_layers: tuple[KerasLayer, ...]
  head_layers: tuple = ()
  frozen: frozenset = frozenset()
  preprocess: str = 'none'
  resize: tuple = ()
  resize_method: str = 'bilinear'
  dtype: Any = jnp.float32

  def setup(self):
    self.backbone = KerasGraph(self.backbone_layers, self.frozen, logits=not self.head_layers,
                               dtype=self.dtype)
    if self.head_layers:
      self.head = layer_stack.LayerStack(self.head_layers, dtype=self.dtype)

  def features(self, images, train: bool = False):
    """The backbone's output: what bottleneck mode computes once and caches."""
    x = preprocess_input(images.astype(jnp.float32), self.preprocess)
    if self.resize:
      # keras.layers.Resizing on the jax backend is this call (antialias=False).
      x = jax.image.resize(x, (x.shape[0], *self.resize, x.shape[-1]), self.resize_method,
                           antialias=False)
      self.sow('intermediates', '0000_resizing:Resizing', x)
    return self.backbone(x.astype(self.dtype), train)

  def __call__(self, images, train: bool = False):
    x = self.features(images, train)
    if self.head_layers:
      return self.head(x, train)
    return x.astype(jnp.float32)

  def trainable_mask(self, params):
    """True for each parameter the optimizer may change (Keras's `trainable_weights`)."""
    def trainable(path, _):
      keys = tuple(getattr(k, 'key', k) for k in path)
      return not (keys[0] == 'backbone' and keys[1] in self.frozen)
    return jax.tree_util.tree_map_with_path(trainable, params)


def cut(layers: tuple[KerasLayer, ...], output_layer: str) -> tuple[KerasLayer, ...]:
  """The layers up to and including `output_layer` (Keras `model.get_layer(name).output`)."""
  names = [layer.name for layer in layers]
  if output_layer not in names:
    raise ValueError(f'model.backbone.output_layer={output_layer!r} is not a backbone layer; '
                     f'known: {names}')
  return layers[:names.index(output_layer) + 1]


def frozen_layers(layers: tuple[KerasLayer, ...], freeze) -> frozenset:
  """Names of the backbone layers `freeze` (config.model.freeze) makes `trainable=False`.

  backbone: all of them (`base.trainable = False`); trainable_from=X: those before X (the
  reports' `if layer.name == X: trainable = True` loop); trainable_last=N: all but the last N
  (`for layer in model.layers[-N:]: layer.trainable = True`, counting the InputLayer and Flatten
  as Keras does).
  """
  names = [layer.name for layer in layers]
  chosen = [key for key in ('backbone', 'trainable_from', 'trainable_last') if freeze[key]]
  if len(chosen) > 1:
    raise ValueError(f'model.freeze: set at most one of backbone, trainable_from, '
                     f'trainable_last (got {chosen})')
  if freeze.backbone:
    return frozenset(names)
  if freeze.trainable_from:
    if freeze.trainable_from not in names:
      raise ValueError(f'model.freeze.trainable_from={freeze.trainable_from!r} is not a backbone '
                       f'layer; known: {names}')
    return frozenset(names[:names.index(freeze.trainable_from)])
  if freeze.trainable_last:
    if not 0 < freeze.trainable_last <= len(names):
      raise ValueError(f'model.freeze.trainable_last={freeze.trainable_last} must be in '
                       f'[1, {len(names)}] (the backbone has {len(names)} layers)')
    return frozenset(names[:-freeze.trainable_last])
  return frozenset()


def backbone_layers(model_config, keras_layers: Callable[..., tuple]) -> tuple[KerasLayer, ...]:
  """The configured backbone: keras_layers(include_top, pooling, classes), cut, + Flatten."""
  b = model_config.backbone
  if b.pooling not in POOLINGS:
    raise ValueError(f'model.backbone.pooling={b.pooling!r} must be one of {list(POOLINGS)}')
  # Without a head the backbone's top is the classifier, so it predicts num_classes.
  classes = model_config.num_classes if not model_config.layers else 1000
  layers = tuple(keras_layers(include_top=b.include_top, pooling=b.pooling or None,
                              classes=classes))
  if b.output_layer:
    layers = cut(layers, b.output_layer)
  if b.flatten:
    layers += (keras_layer('flatten', 'flatten'),)
  return layers


def build(model_config, keras_layers: Callable[..., tuple]) -> TransferModel:
  """A TransferModel from config.model; `keras_layers` is vgg16's or densenet121's."""
  b = model_config.backbone
  if b.preprocess not in PREPROCESS_MODES:
    raise ValueError(f'model.backbone.preprocess={b.preprocess!r} is unknown; '
                     f'known: {list(PREPROCESS_MODES)}')
  if len(b.resize) not in (0, 2):
    raise ValueError(f'model.backbone.resize={b.resize!r} must be () or (height, width)')
  layers = backbone_layers(model_config, keras_layers)
  head = layer_stack.build(model_config).layers if model_config.layers else ()
  return TransferModel(backbone_layers=layers, head_layers=head,
                       frozen=frozen_layers(layers, model_config.freeze),
                       preprocess=b.preprocess, resize=tuple(b.resize),
                       resize_method=b.resize_method, dtype=jnp.dtype(model_config.dtype))


def check_transfer_config(config, transfer_models) -> None:
  """Mistakes the builder cannot see, as they involve other sections (for check_config).

  `transfer_models` are the model names built by `build` (vgg16, densenet121).
  """
  m = config.model
  if m.name not in transfer_models:
    if any(m.freeze.values()) or m.backbone.weights or m.backbone.bottleneck or m.phases:
      raise ValueError(f'model.backbone / model.freeze / model.phases apply to '
                       f'{sorted(transfer_models)}, not model.name={m.name!r}')
    return
  if m.backbone.preprocess != 'none' and config.data.normalization != 'none':
    raise ValueError(f"model.backbone.preprocess={m.backbone.preprocess!r} expects 0..255 pixels; "
                     f"set data.normalization='none' (it is {config.data.normalization!r})")
  if m.backbone.bottleneck and not (m.freeze.backbone and m.layers and not m.phases):
    raise ValueError('model.backbone.bottleneck computes the backbone once: it needs '
                     'model.freeze.backbone=True, a head in model.layers, and no model.phases')


def head_model(model: TransferModel) -> layer_stack.LayerStack:
  """The head alone, for bottleneck training; its params are the TransferModel's params['head']."""
  if not model.head_layers:
    raise ValueError('bottleneck mode needs a head (model.layers is empty)')
  return layer_stack.LayerStack(model.head_layers, dtype=model.dtype)


# --- Pretrained weights. --------------------------------------------------------------------

def weights_path(model_config) -> str:
  """The weight file model.backbone.weights names ('' for Keras's weights=None)."""
  weights = model_config.backbone.weights
  if weights == 'imagenet':
    return keras_weights.fetch_keras_weights(model_config.name,
                                             include_top=model_config.backbone.include_top)
  return weights


def load_pretrained(model_config, params, batch_stats):
  """(params, batch_stats) with the backbone's layers read from model.backbone.weights.

  Layers of the file that the (cut) backbone lacks are ignored, as `vgg.get_layer(...)` drops
  them in Keras; a backbone layer missing from the file is an error. The head keeps its init.
  """
  path = weights_path(model_config)
  if not path:
    return params, batch_stats
  return keras_weights.load_keras_weights(path, params, batch_stats, scope=('backbone',))


# --- Bottleneck features (compute the frozen backbone once, train the head on them). ---------

def compute_bottleneck_features(model: TransferModel, variables, images: np.ndarray,
                                batch_size: int, normalize: Callable | None = None) -> np.ndarray:
  """`model.features` of every image, in inference mode, batched on the device: float32 [N, ...].

  `normalize` maps a raw batch to the model's input inside jit (e.g. the run's input pipeline,
  `lambda x: input_pipeline(None, x, train=False)`); None feeds the images as float32. The last
  batch is padded to `batch_size`, so one compilation serves every batch.
  """
  variables = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}

  # The variables are an argument: closed over, they would be baked into the program.
  @jax.jit
  def features(variables, batch):
    x = normalize(batch) if normalize is not None else batch.astype(jnp.float32)
    return model.apply(variables, x, train=False, method=TransferModel.features)

  n = len(images)
  out = None

  def store(start, size, result):
    nonlocal out
    result = np.asarray(result)[:size]
    if out is None:
      out = np.empty((n, *result.shape[1:]), np.float32)
    out[start:start + size] = result

  pending = None  # One batch in flight: the device computes it while the host stores the last.
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    size = len(batch)
    if size < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - size, *batch.shape[1:]), batch.dtype)])
    result = features(variables, batch)
    if pending is not None:
      store(*pending)
    pending = (start, size, result)
  if pending is not None:
    store(*pending)
  return out


def _fingerprint(model_config, images: np.ndarray) -> str:
  """What the features depend on: the backbone config, the weight file and the images."""
  digest = hashlib.blake2b(digest_size=12)
  digest.update(repr((model_config.name, model_config.backbone.to_dict(),
                      model_config.input_shape, model_config.dtype)).encode())
  path = weights_path(model_config)
  if path:
    stat = os.stat(path)
    digest.update(repr((os.path.abspath(path), stat.st_size, stat.st_mtime_ns)).encode())
  digest.update(repr(images.shape).encode())
  digest.update(np.ascontiguousarray(images).data)
  return digest.hexdigest()


def cached_bottleneck_features(cache_dir: str, split_name: str, model_config, images: np.ndarray,
                               compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """`compute(images)`, cached as <cache_dir>/bottleneck/<split_name>-<fingerprint>.npy.

  The fingerprint covers the backbone config, the weight file and the images, so a changed
  backbone or split recomputes, and a rerun in the same workdir loads the file instead.
  """
  folder = os.path.join(cache_dir, 'bottleneck')
  path = os.path.join(folder, f'{split_name}-{_fingerprint(model_config, images)}.npy')
  if os.path.exists(path):
    return np.load(path)
  features = compute(images)
  os.makedirs(folder, exist_ok=True)
  partial = path + '.partial.npy'  # np.save appends .npy to a name without it.
  np.save(partial, features)
  os.replace(partial, path)  # Atomic: a killed run leaves no truncated cache behind.
  return features
