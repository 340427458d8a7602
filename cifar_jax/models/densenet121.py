"""DenseNet121 as keras.applications.densenet builds it: the same layers, names, shapes and order.

    graph = densenet121.DenseNet121(include_top=False)   # a KerasGraph, like the Keras model
    model = densenet121.build(config.model)              # backbone + head from a config

The 427 layers of Keras's `model.layers` (include_top=False), in order: the InputLayer, a 7x7/2
stem (zero padding, conv1_conv, conv1_bn, conv1_relu, zero padding, pool1), four dense blocks
(conv{2..5}) of BN-ReLU-1x1 conv (128)-BN-ReLU-3x3 conv (32) layers, each concatenated onto its
input, with a transition (pool{2..4}: BN, ReLU, 1x1 conv halving the channels, 2x2 average pooling)
between blocks, then the final bn and relu. Every BatchNormalization has epsilon 1.001e-5 and
every convolution is bias-free. `keras_layers(blocks=...)` builds the other depths (Keras's
private `DenseNet(blocks)`), which tests use for a small network.
"""

from cifar_jax.models import backbone
from cifar_jax.models.backbone import keras_layer

DENSENET121_BLOCKS = (6, 12, 24, 16)
GROWTH_RATE = 32
COMPRESSION = 0.5  # Transition layers keep this fraction of the channels.
BN_EPSILON = 1.001e-5
STEM_FILTERS = 64


def _bn_relu(name: str) -> list[backbone.KerasLayer]:
  return [keras_layer(f'{name}_bn', 'batch_normalization', epsilon=BN_EPSILON),
          keras_layer(f'{name}_relu', 'activation', activation='relu')]


def _conv(name: str, filters: int, kernel_size: int, **options) -> backbone.KerasLayer:
  return keras_layer(f'{name}_conv', 'conv2d', filters=filters, kernel_size=kernel_size,
                     use_bias=False, **options)


def _conv_block(name: str, block_input: str) -> list[backbone.KerasLayer]:
  """keras densenet.conv_block: BN-ReLU-1x1 conv, BN-ReLU-3x3 conv, concatenated onto the input."""
  return [*_bn_relu(f'{name}_0'), _conv(f'{name}_1', 4 * GROWTH_RATE, 1),
          *_bn_relu(f'{name}_1'), _conv(f'{name}_2', GROWTH_RATE, 3, padding='same'),
          keras_layer(f'{name}_concat', 'concatenate', block_input, f'{name}_2_conv')]


def _transition(name: str, channels: int) -> list[backbone.KerasLayer]:
  """keras densenet.transition_block: BN-ReLU, 1x1 conv to half the channels, 2x2 avg pool."""
  return [*_bn_relu(name), _conv(name, int(channels * COMPRESSION), 1),
          keras_layer(f'{name}_pool', 'average_pooling2d', pool_size=2, strides=2)]


def keras_layers(include_top: bool = True, pooling: str | None = None, classes: int = 1000,
                 classifier_activation: str = 'softmax',
                 blocks: tuple[int, ...] = DENSENET121_BLOCKS) -> tuple[backbone.KerasLayer, ...]:
  """The layers of `keras.applications.DenseNet121(include_top, pooling=..., classes=...)`."""
  layers = [keras_layer('input_layer', 'input'),
            keras_layer('zero_padding2d', 'zero_padding2d', padding=((3, 3), (3, 3))),
            _conv('conv1', STEM_FILTERS, 7, strides=2), *_bn_relu('conv1'),
            keras_layer('zero_padding2d_1', 'zero_padding2d', padding=((1, 1), (1, 1))),
            keras_layer('pool1', 'max_pooling2d', pool_size=3, strides=2)]
  channels = STEM_FILTERS
  for stage, num_blocks in enumerate(blocks, start=2):
    for i in range(1, num_blocks + 1):
      layers += _conv_block(f'conv{stage}_block{i}', block_input=layers[-1].name)
      channels += GROWTH_RATE
    if stage < len(blocks) + 1:
      layers += _transition(f'pool{stage}', channels)
      channels = int(channels * COMPRESSION)
  layers += [keras_layer('bn', 'batch_normalization', epsilon=BN_EPSILON),
             keras_layer('relu', 'activation', activation='relu')]
  if include_top:
    layers += [keras_layer('avg_pool', 'global_average_pooling2d'),
               keras_layer('predictions', 'dense', units=classes,
                           activation=classifier_activation)]
  elif pooling:
    layers.append(backbone.global_pooling(pooling, name=f'{pooling}_pool'))
  return tuple(layers)


def DenseNet121(  # Keras's name. pylint: disable=invalid-name
    include_top: bool = True, pooling: str | None = None, classes: int = 1000,
    classifier_activation: str = 'softmax', **graph_args) -> backbone.KerasGraph:
  """The network alone, as `keras.applications.DenseNet121(weights=None, ...)`; `graph_args` go
  to KerasGraph (frozen, logits, dtype)."""
  return backbone.KerasGraph(keras_layers(include_top, pooling, classes, classifier_activation),
                             **graph_args)


def build(model_config) -> backbone.TransferModel:
  return backbone.build(model_config, keras_layers)
