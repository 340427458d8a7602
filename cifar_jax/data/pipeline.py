"""From CIFAR-10 arrays to what the jitted steps consume, all of it on the device.

The splits stay uint8 on the device for the whole run (150 MB for the train split); batches are
gathered, augmented and normalised inside the jitted steps, so no image crosses from host to
device after start-up.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.data import augment as augment_lib
from cifar_jax.data import sources

NORMALIZATIONS = ('rescale', 'standardize', 'none')
VALIDATION_SOURCES = ('train', 'test')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split as host arrays: uint8 images [N, H, W, C] and int32 labels [N]."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Splits:
  train: Split
  validation: Split | None
  test: Split
  class_names: tuple[str, ...]
  source: str


def validation_size(num_examples: int, num_validation: int, validation_split: float) -> int:
  """How many examples the end of the training arrays gives to validation, as Keras counts."""
  if num_validation and validation_split:
    raise ValueError('data.num_validation and data.validation_split are both set; set only one '
                     '(e.g. --config.data.validation_split=0.0)')
  if not 0.0 <= validation_split < 1.0:
    raise ValueError(f'data.validation_split={validation_split} must be in [0, 1)')
  if validation_split:
    # keras.utils.split at int(floor(n * (1 - validation_split))): the *last* part validates.
    return num_examples - int(np.floor(num_examples * (1.0 - validation_split)))
  if not 0 <= num_validation < num_examples:
    raise ValueError(f'data.num_validation={num_validation} must be in [0, {num_examples}) '
                     f'(there are {num_examples} training examples)')
  return num_validation


def make_splits(data_config) -> Splits:
  """Loads CIFAR-10 as `data_config` says and carves the validation split off the end (or, with
  data.validation_source='test', validates on the test set)."""
  # Only the images the run keeps are converted (every file is still read and checked).
  dataset = sources.load_cifar10(data_config.dir, download=data_config.download,
                                 limits=(data_config.num_train_examples or None,
                                         data_config.num_test_examples or None))
  train_images, train_labels = dataset.train_images, dataset.train_labels
  test_images, test_labels = dataset.test_images, dataset.test_labels
  if data_config.num_train_examples:
    train_images = train_images[:data_config.num_train_examples]
    train_labels = train_labels[:data_config.num_train_examples]
  if data_config.num_test_examples:
    test_images = test_images[:data_config.num_test_examples]
    test_labels = test_labels[:data_config.num_test_examples]
  n_val = validation_size(len(train_labels), data_config.num_validation,
                          data_config.validation_split)
  n_train = len(train_labels) - n_val
  validation = Split(train_images[n_train:], train_labels[n_train:]) if n_val else None
  if data_config.validation_source == 'test':  # Keras validation_data=(x_test, y_test)
    validation = Split(test_images, test_labels)
  return Splits(train=Split(train_images[:n_train], train_labels[:n_train]),
                validation=validation, test=Split(test_images, test_labels),
                class_names=dataset.class_names, source=dataset.source)


def normalization_constants(normalization: str, train_images: np.ndarray):
  """Per-channel (mean, std) such that the model sees (x - mean) / std."""
  channels = train_images.shape[-1]
  if normalization == 'rescale':
    return (0.0,) * channels, (255.0,) * channels
  if normalization == 'none':
    return (0.0,) * channels, (1.0,) * channels
  if normalization == 'standardize':
    pixels = train_images.reshape(-1, channels).astype(np.float64)
    return tuple(pixels.mean(0).tolist()), tuple(pixels.std(0).tolist())
  raise ValueError(f'data.normalization={normalization!r} is unknown; known: {list(NORMALIZATIONS)}')


@dataclasses.dataclass(frozen=True)
class InputPipeline:
  """uint8 batch -> (augmented when training) normalised float32 batch, inside jit.

  Augmentation has two stages (cifar_jax/data/augment.py), both in training only: `augment` works
  on raw 0..255 pixels, before normalisation, as Keras's ImageDataGenerator applies its random
  transform before `rescale`; `layers` (config.augment.layers) works on the normalised batch, as
  preprocessing layers at the top of a Keras model see it after Rescaling(1/255).
  """
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  layers: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  # config.augment.alternating_flip: applied by the train step, which knows each example's
  # index and epoch (research_augment.alternating_flip).
  alternating_flip: bool = False

  def __call__(self, rng, images, train: bool):
    x = images.astype(jnp.float32)
    if train and self.augment is not None:
      x = self.augment(rng, x)
    x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
    if train and self.layers is not None:
      # A key of its own; `augment` keeps using `rng` itself, so its draws do not depend on
      # whether there are layers.
      x = self.layers(jax.random.fold_in(rng, 1), x)
    return x


def make_input_pipeline(config, train_images: np.ndarray) -> InputPipeline:
  mean, std = normalization_constants(config.data.normalization, train_images)
  return InputPipeline(mean=mean, std=std, augment=augment_lib.make_augment_fn(config.augment),
                       layers=augment_lib.make_layers_fn(config.augment),
                       alternating_flip=bool(config.augment.get('alternating_flip', False)))


@dataclasses.dataclass(frozen=True)
class EvalBatches:
  """A split padded to whole batches, shaped [num_batches, batch, ...], with a 0/1 mask so
  every example counts exactly once."""
  images: jax.Array
  labels: jax.Array
  mask: jax.Array

  @property
  def num_examples(self) -> int:
    return int(self.mask.sum())


def make_eval_batches(split: Split, batch_size: int, put=jax.device_put,
                      multiple_of: int = 1) -> EvalBatches:
  """Pads `split` to whole batches (rounded up to a multiple of `multiple_of`, e.g. the device
  count) and places each array with `put`."""
  n = len(split)
  batch_size = -(-min(batch_size, n) // multiple_of) * multiple_of
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  images = np.concatenate([split.images, np.zeros((pad, *split.images.shape[1:]), np.uint8)])
  labels = np.concatenate([split.labels, np.zeros((pad,), np.int32)])
  mask = np.concatenate([np.ones((n,), np.float32), np.zeros((pad,), np.float32)])
  shape = (num_batches, batch_size)
  return EvalBatches(images=put(images.reshape(*shape, *images.shape[1:])),
                     labels=put(labels.reshape(shape)), mask=put(mask.reshape(shape)))

