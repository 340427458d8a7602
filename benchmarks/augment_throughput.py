"""How fast the on-device augmentation is, and what it costs a training step.

    python benchmarks/augment_throughput.py --out=augment_throughput.json
    python benchmarks/augment_throughput.py --exp11_steps=0     # throughput only (~15 s)

1. Throughput (images/s, batch 512) of cifar_jax's jitted input pipeline (uint8 -> augmented,
   normalised float32) with the augmentation of entregable4 exp8b (= exp9, exp11) and exp7, of
   p2cnn exp8's in-model layers, and of pad-and-crop + flip + cutout; and of Keras's
   `ImageDataGenerator.flow` (numpy/scipy on the host, rescale=1/255 as in the reports) with the
   exp8b and exp7 settings, on the same machine.
2. entregable4 exp11 (batch 512): one jitted `cifar_jax.train.train_step` with its augmentation
   against one without (alternating, so that both see the same machine load; medians over
   --exp11_steps each), and, since on a CPU the augmentation is far below the noise of such a
   step, the ratio 1 + (augmentation time alone) / (plain step time) too. A whole exp11 epoch is
   78 such steps: far too slow on a CPU to time directly.

Prints a table and writes the numbers as JSON to --out. The default run takes about 5 minutes
on a loaded 2-core CPU, nearly all of it the four exp11 steps (two of them compiling).
"""

import os
import pathlib
import statistics
import sys
import time

import json_out  # This folder's --out writer (local or gs://).

os.environ.setdefault('KERAS_BACKEND', 'jax')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # The repository root.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
from keras.src.legacy.preprocessing import image as keras_image
import numpy as np

from cifar_jax.data import augment
from cifar_jax.data import pipeline
from cifar_jax.models import create_model
from cifar_jax.train import create_train_state, train_step
from cifar_jax.train import optimizers
from configs import base
from configs import exp7
from configs import exp8b
from configs import exp11

_OUT = flags.DEFINE_string('out', 'augment_throughput.json', 'Where to write the JSON results.')
_BATCH = flags.DEFINE_integer('batch_size', 512, 'Batch size of every measurement.')
_ITERS = flags.DEFINE_integer('iters', 20, 'Timed batches per cifar_jax pipeline.')
_KERAS_BATCHES = flags.DEFINE_integer('keras_batches', 4, 'Timed ImageDataGenerator batches.')
_EXP11_STEPS = flags.DEFINE_integer('exp11_steps', 1,
                                    'Timed exp11 train steps per variant (0: skip the step test).')



def generator_settings(config) -> dict:
  """The ImageDataGenerator arguments a config sets (its non-default stage-1 keys)."""
  given = config.augment.to_dict()
  return {k: given[k] for k in augment.IMAGE_DATA_GENERATOR_KEYS
          if given[k] != augment.DEFAULTS[k]}


# Each row: name, ImageDataGenerator settings (also timed in Keras) or None, augment.layers.
PIPELINES = [
    ('exp8b ImageDataGenerator', generator_settings(exp8b.get_config()), ()),
    ('exp7 ImageDataGenerator', generator_settings(exp7.get_config()), ()),
    ('p2cnn exp8 layers (flip, rotation 0.1)', None,  # In-model Keras layers, as the report.
     (dict(type='random_flip', mode='horizontal'), dict(type='random_rotation', factor=0.1))),
    ('pad_and_crop 4 + flip + cutout 16', None,
     (dict(type='pad_and_crop', pad=4), dict(type='random_flip', mode='horizontal'),
      dict(type='cutout', size=16))),
]


def images_and_labels(n: int):
  rs = np.random.RandomState(0)
  return rs.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8), rs.randint(0, 10, n)


def timed(fn, repeats: int) -> list[float]:
  """Seconds of each of `repeats` calls of fn(i), after one untimed call (compilation)."""
  jax.block_until_ready(fn(repeats))
  seconds = []
  for i in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(i))
    seconds.append(time.perf_counter() - start)
  return seconds


def pipeline_throughput(generator_settings, layers, batch_size: int, iters: int) -> float:
  """Images/s of the jitted InputPipeline (uint8 in, augmented normalised float32 out)."""
  config = base.get_config()  # Pixels / 255, nothing else on.
  for key, value in (generator_settings or {}).items():
    config.augment[key] = value
  config.augment.layers = layers
  images, _ = images_and_labels(batch_size)
  images = jax.device_put(images)
  input_pipeline = pipeline.make_input_pipeline(config, images)
  key = jax.random.PRNGKey(0)
  run = jax.jit(lambda i, x: input_pipeline(jax.random.fold_in(key, i), x, train=True))
  seconds = timed(lambda i: run(i, images), iters)
  return batch_size / statistics.median(seconds)


def keras_flow_throughput(generator_settings, batch_size: int, batches: int) -> float:
  """Images/s of Keras's ImageDataGenerator(...).flow, as the reports call it."""
  images, labels = images_and_labels(batch_size * 2)
  generator = keras_image.ImageDataGenerator(rescale=1 / 255, **generator_settings)
  flow = generator.flow(images, labels, batch_size=batch_size, seed=0)
  seconds = timed(lambda i: next(flow), batches)
  return batch_size / statistics.median(seconds)


def exp11_step_seconds(batch_size: int, steps: int) -> dict[str, float]:
  """Median seconds of one jitted exp11 train step with and without its augmentation."""
  config = exp11.get_config()
  model = create_model(config.model)
  tx = optimizers.make_optimizer(config.optim, config.train.steps_per_epoch,
                                 config.train.steps_per_epoch * config.train.epochs)
  images, labels = images_and_labels(batch_size)
  batch = {'image': jax.device_put(images), 'label': jax.device_put(labels.astype(np.int32))}
  with_augmentation = pipeline.make_input_pipeline(config, images)
  variants = {'augmented': with_augmentation,
              'plain': pipeline.InputPipeline(mean=with_augmentation.mean,
                                              std=with_augmentation.std)}
  states = {name: create_train_state(config, model, tx, p) for name, p in variants.items()}
  step = jax.jit(train_step, donate_argnums=0)

  def run(name):
    states[name], metrics = step(states[name], batch)
    jax.block_until_ready(metrics)

  for name in states:  # Compile both.
    run(name)
  seconds = {name: [] for name in states}
  for _ in range(steps):  # Alternate, so both see the same machine load.
    for name in states:
      start = time.perf_counter()
      run(name)
      seconds[name].append(time.perf_counter() - start)
  return {name: statistics.median(s) for name, s in seconds.items()}


def main(argv):
  del argv
  json_out.check(_OUT.value)
  batch_size = _BATCH.value
  results = {'device': str(jax.devices()[0]), 'batch_size': batch_size, 'throughput': []}
  print(f'device: {results["device"]}, batch {batch_size}')
  print(f'{"augmentation":42s} {"cifar_jax img/s":>16s} {"Keras flow img/s":>17s} {"speed-up":>9s}')
  for name, settings, layers in PIPELINES:
    ours = pipeline_throughput(settings, layers, batch_size, _ITERS.value)
    keras = (keras_flow_throughput(settings, batch_size, _KERAS_BATCHES.value)
             if settings else None)
    results['throughput'].append({'augmentation': name, 'cifar_jax_images_per_s': ours,
                                  'keras_flow_images_per_s': keras})
    keras_text = f'{keras:17,.0f} {ours / keras:8.1f}x' if keras else f'{"-":>17s} {"-":>9s}'
    print(f'{name:42s} {ours:16,.0f} {keras_text}', flush=True)
  if _EXP11_STEPS.value:
    step = exp11_step_seconds(batch_size, _EXP11_STEPS.value)
    # The step's own augmentation, timed alone: a ratio that machine noise cannot swamp.
    augment_seconds = batch_size / pipeline_throughput(
        generator_settings(exp11.get_config()), (), batch_size, _ITERS.value)
    results['exp11_train_step'] = {
        'augmented_seconds': step['augmented'], 'plain_seconds': step['plain'],
        'measured_ratio': step['augmented'] / step['plain'],
        'augmentation_seconds': augment_seconds,
        'ratio_from_augmentation_time': 1 + augment_seconds / step['plain'],
        'steps_per_variant': _EXP11_STEPS.value}
    print(f'exp11 train step, batch {batch_size} (an epoch is 78 of them): '
          f'{step["augmented"]:.2f} s augmented, {step["plain"]:.2f} s plain, ratio '
          f'{step["augmented"] / step["plain"]:.3f}; its augmentation alone takes '
          f'{augment_seconds * 1e3:.1f} ms: ratio {1 + augment_seconds / step["plain"]:.4f}')
  json_out.write(_OUT.value, results)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
