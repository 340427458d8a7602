"""Shared fixtures: synthetic CIFAR-10 files, a tiny config, and where the shared data lives."""

import contextlib
import os
import pathlib

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Keras is the parity reference; jax backend.
# Parity and exactness tests compare float32 arithmetic: pin it on every backend (GPUs default to
# TensorFloat-32, TPUs to bfloat16 passes), for cifar_jax's steps, Keras's ops and the tests' own.
os.environ.setdefault('JAX_DEFAULT_MATMUL_PRECISION', 'highest')

# The suite is compile-bound (tiny models, few steps): XLA:CPU's LLVM optimisations multiply
# compile times by ~5 (dropout's and init's random bits the most) and change no result here.
# Set before jax starts, so this process and every launch.py subprocess compile this way.
# CIFAR_JAX_TEST_XLA_OPTIMIZE=1 keeps XLA's optimisations (the programs users run).
FAST_COMPILE_XLA_FLAGS = ('--xla_backend_optimization_level=0 '
                          '--xla_llvm_disable_expensive_passes=true '
                          '--xla_cpu_use_fusion_emitters=false')
if os.environ.get('CIFAR_JAX_TEST_XLA_OPTIMIZE') != '1':
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_XLA_FLAGS}".strip()

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tests import synthetic_cifar  # pylint: disable=g-import-not-at-top
from tests import tiny_config as tiny_config_module  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
# The JPEG re-encoded CIFAR-10 copy that sits beside the checkout (../shared), if present.
SHARED_CIFAR10 = REPO.parent / 'shared' / 'data' / 'cifar10-jpeg'


@pytest.fixture(scope='session', autouse=True)
def subprocess_compilation_cache(tmp_path_factory):
  """One XLA compilation cache for the session's subprocesses (launch.py runs, mostly of the
  tiny config, dozens of them): each compiles only what no earlier one did. Set once this
  process has imported jax, which read its own settings then: this process compiles as before
  (tests/test_compiles.py counts its compilations). Cached programs are the ones a compilation
  would give, so no result changes."""
  import jax  # pylint: disable=g-import-not-at-top,unused-import
  cache = {'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('xla_compilation_cache')),
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
           'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
  saved = {name: os.environ.get(name) for name in cache}
  os.environ.update(cache)
  yield
  for name, value in saved.items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value


@pytest.fixture(scope='session')
def synthetic_dir(tmp_path_factory):
  """A folder with a small synthetic CIFAR-10 in the official binary layout."""
  root = tmp_path_factory.mktemp('cifar')
  synthetic_cifar.write_binary_dataset(root, num_train=300, num_test=70)
  return str(root)


@contextlib.contextmanager
def compile_counter():
  """Yields a list that grows by one name per XLA compilation while the block runs."""
  import jax  # pylint: disable=g-import-not-at-top
  compiled = []

  def listener(event, duration_secs, **kwargs):
    del duration_secs
    if event == '/jax/core/compile/backend_compile_duration':
      compiled.append(kwargs.get('fun_name', '?'))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiled
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def tiny_state(config, num_images: int = 32, seed: int = 0):
  """(the fresh TrainState of `config`, its uint8 images, labels): `num_images` random images
  as the training split, through the research API (no files)."""
  from cifar_jax.train import create_train_state_from_config, setup  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_images, *config.model.input_shape), dtype=np.uint8)
  labels = rng.integers(0, 10, num_images).astype(np.int32)
  state, _ = create_train_state_from_config(config, setup.array_splits(images, labels))
  return state, images, labels


def tiny_config(data_dir: str = '', **train):
  """tests/tiny_config.py's config, reading `data_dir`, with `train` fields overridden."""
  c = tiny_config_module.get_config()
  c.data.dir = data_dir
  for key, value in train.items():
    c.train[key] = value
  return c


def forget_train_step_programs():
  """Drops the compiled programs that trace cifar_jax.train.steps.train_step (one program per
  step, the device loop, stacked seeds' step), so that a test's monkeypatched train_step is
  traced, and after it the real one again. Every other program stays compiled: jax.clear_caches()
  would make the tests after it compile theirs again."""
  from cifar_jax.train import seeds, steps  # pylint: disable=g-import-not-at-top
  seeds_step = seeds._accumulate_seeds_step  # pylint: disable=protected-access
  for program in (steps.accumulate_train_step, steps.loop_steps, seeds_step):
    program.clear_cache()
