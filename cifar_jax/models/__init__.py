"""Models by name. A model is a flax.linen Module called as `model.apply(variables, images, train=...)`
on float images [B, H, W, C] that returns logits; it knows nothing of data sources or training.
The layer stack and the transfer models are made of the Keras layers of layer_kinds.py."""

from cifar_jax.models import airbench
from cifar_jax.models import densenet121
from cifar_jax.models import layer_stack
from cifar_jax.models import vgg16

# name -> builder(model_config) -> flax.linen.Module
MODELS = {
    'layer_stack': layer_stack.build,
    # keras.applications backbone + model.layers as the head (cifar_jax/models/backbone.py).
    'vgg16': vgg16.build,
    'densenet121': densenet121.build,
    'airbench': airbench.build,  # airbench94's net (configs/fast/airbench94.py).
}


def create_model(model_config):
  try:
    builder = MODELS[model_config.name]
  except KeyError:
    raise ValueError(f'model.name={model_config.name!r} is not a known model; '
                     f'known: {sorted(MODELS)}') from None
  return builder(model_config)
