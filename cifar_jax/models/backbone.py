"""Transfer-learning models: a keras.applications backbone, then a head from the layer stack.

A backbone is a tuple of `KerasLayer`s: the layers of the Keras application in `model.layers`
order, with Keras's names (block1_conv1, conv2_block1_0_bn, ...) and wiring, so weight files map
onto it by name and "the last 30 layers" counts what Keras counts. Each holds a layer of
layer_kinds.py, the layers a `model.layers` stack is made of. `KerasGraph` runs such a tuple;
vgg16.py and densenet121.py write the tuples.

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
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import keras_weights
from cifar_jax.models import layer_kinds
from cifar_jax.models import layer_stack

PREPROCESS_MODES = ('none', 'caffe', 'torch', 'tf')
POOLINGS = ('', 'avg', 'max')

# keras.applications.imagenet_utils: ImageNet channel statistics.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # Of 0..255 pixels, in BGR order.
TORCH_MEAN = (0.485, 0.456, 0.406)           # Of 0..1 pixels, RGB.
TORCH_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class KerasLayer:
  """One layer of a Keras functional model: its name, the layer, and the layers feeding it
  (() means the previous one). Hashable: module attributes end up in jit cache keys."""
  name: str
  layer: layer_kinds.Layer
  inputs: tuple = ()

  @property
  def kind(self) -> str:
    return self.layer.kind


def keras_layer(name: str, kind: str, *inputs: str, **options) -> KerasLayer:
  """The layer `name`: `kind` of layer_kinds.LAYERS with Keras arguments `options`."""
  return KerasLayer(name, layer_kinds.create(kind, options, f'backbone layer {name!r}'), inputs)


def global_pooling(pooling: str, name: str | None = None) -> KerasLayer:
  """keras.applications' `pooling='avg'|'max'` layer (unnamed layers get Keras's auto name)."""
  kind = {'avg': 'global_average_pooling2d', 'max': 'global_max_pooling2d'}[pooling]
  return keras_layer(name or kind, kind)


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
      ctx = layer_kinds.Context(self, layer.name, train, self.dtype,
                                frozen=layer.name in self.frozen,
                                logits=self.logits and i == len(self.layers) - 1)
      x = layer.layer(ctx, *inputs)
      if layer.name in kept:
        outputs[layer.name] = x
      # For the summary (keys sort in layer order); a no-op unless 'intermediates' is mutable.
      self.sow('intermediates', f'{i:04d}_{layer.name}:{layer.layer.keras_class}', x)
    return x


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
