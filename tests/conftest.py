"""Shared fixtures: synthetic CIFAR-10 files, a tiny config, and where the shared data lives."""

import os
import pathlib

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Keras is the parity reference; jax backend.

import pytest  # pylint: disable=g-import-not-at-top

from configs import base  # pylint: disable=g-import-not-at-top
from configs import layers as L  # pylint: disable=g-import-not-at-top
from tests import synthetic_cifar  # pylint: disable=g-import-not-at-top

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
  """A small conv net (BN, dropout, l2) for a few fast steps."""
  c = base.get_config()
  c.name = 'tiny'
  c.data.dir = data_dir
  c.data.num_validation = 60
  c.model.layers = (L.conv(8, padding='same', activation='relu', l2=1e-3), L.bn(), L.maxpool(),
                    L.dropout(0.25), L.flatten(), L.dense(16, activation='relu'),
                    L.dense(10, activation='softmax'))
  c.train.batch_size = 32
  c.train.epochs = 2
  c.train.eval_batch_size = 50
  c.log.verbosity = 0
  for key, value in train.items():
    c.train[key] = value
  return c
