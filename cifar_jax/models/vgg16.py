"""VGG16 as keras.applications.vgg16.VGG16 builds it: the same layers, names, shapes and order.

    graph = vgg16.VGG16(include_top=False)            # a KerasGraph, like the Keras model
    model = vgg16.build(config.model)                 # backbone + head from a config

Keras's `model.layers` order is the list below: the InputLayer, five blocks of 3x3 'same' ReLU
convolutions (block{b}_conv{c}) each closed by a 2x2 max pooling (block{b}_pool), then either the
classifier (flatten, fc1, fc2, predictions) or the optional global pooling.
"""

from cifar_jax.models import backbone
from cifar_jax.models.backbone import keras_layer

# (filters, convolutions) of blocks 1..5.
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def keras_layers(include_top: bool = True, pooling: str | None = None, classes: int = 1000,
                 classifier_activation: str = 'softmax') -> tuple[backbone.KerasLayer, ...]:
  """The layers of `keras.applications.VGG16(include_top, pooling=pooling, classes=classes)`."""
  layers = [keras_layer('input_layer', 'input')]
  for block, (filters, num_convs) in enumerate(BLOCKS, start=1):
    for conv in range(1, num_convs + 1):
      layers.append(keras_layer(f'block{block}_conv{conv}', 'conv2d', filters=filters,
                                kernel_size=3, padding='same', activation='relu'))
    layers.append(keras_layer(f'block{block}_pool', 'max_pooling2d', pool_size=2, strides=2))
  if include_top:
    layers += [keras_layer('flatten', 'flatten'),
               keras_layer('fc1', 'dense', units=4096, activation='relu'),
               keras_layer('fc2', 'dense', units=4096, activation='relu'),
               keras_layer('predictions', 'dense', units=classes,
                           activation=classifier_activation)]
  elif pooling:
    layers.append(backbone.global_pooling(pooling))  # Unnamed in Keras: an auto name.
  return tuple(layers)


def VGG16(  # Keras's name. pylint: disable=invalid-name
    include_top: bool = True, pooling: str | None = None, classes: int = 1000,
    classifier_activation: str = 'softmax', **graph_args) -> backbone.KerasGraph:
  """The network alone, as `keras.applications.VGG16(weights=None, ...)`; `graph_args` go to
  KerasGraph (frozen, logits, dtype)."""
  return backbone.KerasGraph(keras_layers(include_top, pooling, classes, classifier_activation),
                             **graph_args)


def build(model_config) -> backbone.TransferModel:
  return backbone.build(model_config, keras_layers)
