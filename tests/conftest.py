"""Shared fixtures: synthetic CIFAR-10 files, a tiny config, and where the shared data lives."""

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

import pytest  # pylint: disable=g-import-not-at-top

from tests import synthetic_cifar  # pylint: disable=g-import-not-at-top
from tests import tiny_config as tiny_config_module  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
# The JPEG re-encoded CIFAR-10 copy that sits beside the checkout (../shared), if present.
SHARED_CIFAR10 = REPO.parent / 'shared' / 'data' / 'cifar10-jpeg'


@pytest.fixture(scope='session')
def synthetic_dir(tmp_path_factory):
  """A folder with a small synthetic CIFAR-10 in the official binary layout."""
  root = tmp_path_factory.mktemp('cifar')
  synthetic_cifar.write_binary_dataset(root, num_train=300, num_test=70)
  return str(root)


def tiny_config(data_dir: str = '', **train):
  """tests/tiny_config.py's config, reading `data_dir`, with `train` fields overridden."""
  c = tiny_config_module.get_config()
  c.data.dir = data_dir
  for key, value in train.items():
    c.train[key] = value
  return c
