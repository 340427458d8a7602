"""The benchmarks' one way to read a config: `load_config('configs/exp11.py')` is that file's
get_config(). A relative path is the repository's (benchmarks run from anywhere). And their one
way to time its train step: `random_step_inputs(config)`, its fresh TrainState and one batch; and
`use_conv_backend(config, 'onednn')`, which sets a config's convolutions and checks they can run."""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str):
  if REPO not in sys.path:  # Config files import `configs.base`.
    sys.path.insert(0, REPO)
  spec = importlib.util.spec_from_file_location('benchmarked_config', os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def random_step_inputs(config, seed: int = 0):
  """(state, batch): `config`'s fresh TrainState and one batch of train.batch_size random uint8
  images and labels on the device, what a train step's time is measured on (the pixels' values
  do not change it). The optimizer is built for 100 steps an epoch. Imports cifar_jax (and so
  sets its XLA:CPU flags): call it in the process that measures."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import create_train_state, optimizers  # pylint: disable=g-import-not-at-top
  n = config.train.batch_size
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, *config.model.input_shape), dtype=np.uint8)
  labels = rng.integers(0, 10, (n,), dtype=np.int32)
  tx = optimizers.make_optimizer(config.optim, 100, 100 * config.train.epochs)
  state = create_train_state(config, create_model(config.model), tx,
                             pipeline.make_input_pipeline(config, images))
  return state, step_batch(config, images, labels)


def step_batch(config, images, labels):
  """The train step's batch of `images` and `labels`, on the device: with the fields the
  config's augmentation also reads."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  batch = {'image': images, 'label': labels}
  if config.augment.get('alternating_flip'):  # Its flip reads each example's place and epoch.
    n = len(labels)
    batch.update(index=np.arange(n, dtype=np.int32), epoch=np.zeros(n, np.int32))
  return jax.device_put(batch)


def use_conv_backend(config, backend: str) -> dict:
  """Sets config.model.conv_backend; 'onednn' and 'tuned' load oneDNN's convolutions first
  (compiled on first use, seconds). Returns the row's backend fields. Raises onednn_conv.Unavailable where
  they cannot run: without oneDNN or g++, or on an accelerator, which would run XLA's
  convolutions and so time the cifar_jax child again."""
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import onednn_conv  # pylint: disable=g-import-not-at-top
  config.model.conv_backend = backend
  if backend == 'xla':
    return {'conv_backend': backend}
  if jax.default_backend() != 'cpu':
    raise onednn_conv.Unavailable(f'oneDNN convolutions are CPU-only; this host computes on '
                                  f'{jax.default_backend()}, where they are XLA\'s')
  return {'conv_backend': backend, 'onednn_version': onednn_conv.load()}
