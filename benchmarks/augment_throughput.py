"""How fast the on-device augmentation is, and what it costs a training step.

    python benchmarks/augment_throughput.py --out=augment_throughput.json
    python benchmarks/augment_throughput.py --exp11_steps=0     # throughput only (~1 minute)

1. Throughput (images/s, batch 512) of cifar_jax's jitted input pipeline (uint8 -> augmented,
   normalised float32) with the augmentation of entregable4 exp8b and exp7, of p2cnn exp8's
   in-model layers, and of pad-and-crop + cutout; and of Keras's `ImageDataGenerator.flow`
   (numpy/scipy on the host, rescale=1/255 as in the reports) with the exp8b and exp7 settings,
   on the same machine.
2. entregable4 exp11 (batch 512): the time of one jitted `cifar_jax.train.train_step` with its
   augmentation over the time without. Steps alternate between the two, so that a machine whose
   load changes treats both alike; the ratio of medians is reported. (A whole exp11 epoch is 78
   such steps: far too slow on a CPU to time directly.)

Prints a table and writes the numbers as JSON to --out. The default run takes a few minutes on a
2-core CPU, most of it the exp11 steps.
"""

import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault('KERAS_BACKEND', 'jax')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # The repository root.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np

from cifar_jax.data import pipeline
from cifar_jax.models import create_model
from cifar_jax.train import create_train_state, train_step
from cifar_jax.train import optimizers
from configs import entregable4
from configs import exp7
from configs import exp11

_OUT = flags.DEFINE_string('out', 'augment_throughput.json', 'Where to write the JSON results.')
_BATCH = flags.DEFINE_integer('batch_size', 512, 'Batch size of every measurement.')
_ITERS = flags.DEFINE_integer('iters', 20, 'Timed batches per cifar_jax pipeline.')
_KERAS_BATCHES = flags.DEFINE_integer('keras_batches', 4, 'Timed ImageDataGenerator batches.')
_EXP11_STEPS = flags.DEFINE_integer('exp11_steps', 3,
                                    'Timed exp11 train steps per variant (0: skip the step test).')

EXP7_AUGMENT = dict(horizontal_flip=True, rotation_range=40.0, shear_range=0.2,
                    width_shift_range=0.1, height_shift_range=0.1, fill_mode='nearest')
# Each row: (name, ImageDataGenerator settings (also timed in Keras), or None; layers).
PIPELINES = [
    ('exp8b ImageDataGenerator', entregable4.AUGMENT_EXP8B, ()),
    ('exp7 ImageDataGenerator', EXP7_AUGMENT, ()),
    ('p2cnn exp8 layers (flip, rotation 0.1)', None,
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
  config = exp7.get_config()
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
  from keras.src.legacy.preprocessing import image as keras_image  # pylint: disable=g-import-not-at-top
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
  batch_size = _BATCH.value
  results = {'device': str(jax.devices()[0]), 'batch_size': batch_size, 'throughput': []}
  print(f'device: {results["device"]}, batch {batch_size}')
  print(f'{"augmentation":42s} {"cifar_jax img/s":>16s} {"Keras flow img/s":>17s} {"speed-up":>9s}')
  for name, generator_settings, layers in PIPELINES:
    ours = pipeline_throughput(generator_settings, layers, batch_size, _ITERS.value)
    keras = (keras_flow_throughput(generator_settings, batch_size, _KERAS_BATCHES.value)
             if generator_settings else None)
    results['throughput'].append({'augmentation': name, 'cifar_jax_images_per_s': ours,
                                  'keras_flow_images_per_s': keras})
    keras_text = f'{keras:17,.0f} {ours / keras:8.1f}x' if keras else f'{"-":>17s} {"-":>9s}'
    print(f'{name:42s} {ours:16,.0f} {keras_text}', flush=True)
  if _EXP11_STEPS.value:
    step = exp11_step_seconds(batch_size, _EXP11_STEPS.value)
    ratio = step['augmented'] / step['plain']
    results['exp11_train_step'] = {**{f'{k}_seconds': v for k, v in step.items()},
                                   'ratio': ratio, 'steps_per_variant': _EXP11_STEPS.value}
    print(f'exp11 train step, batch {batch_size}: {step["augmented"]:.2f} s augmented, '
          f'{step["plain"]:.2f} s plain: ratio {ratio:.3f} (an epoch is 78 such steps)')
  with open(_OUT.value, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
