"""Shared fixtures: synthetic CIFAR-10 files, a tiny config, and where the shared data lives."""

import os
import pathlib

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Keras is the parity reference; jax backend.

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
