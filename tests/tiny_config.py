"""A tiny conv net (BN, dropout, l2) for fast end-to-end tests:

    python launch.py --config=tests/tiny_config.py --config.data.dir=DIR --workdir=/tmp/tiny
"""

from configs import base
from configs import layers as L


def get_config():
  c = base.get_config()
  c.name = 'tiny'
  # The synthetic part of the test data (tests/synthetic_cifar.py; conftest's synthetic_dir).
  c.data.num_train_examples = 300
  c.data.num_test_examples = 70
  c.data.num_validation = 60
  c.model.layers = (L.conv(8, padding='same', activation='relu', l2=1e-3), L.bn(), L.maxpool(),
                    L.dropout(0.25), L.flatten(), L.dense(16, activation='relu'),
                    L.dense(10, activation='softmax'))
  c.train.batch_size = 32
  c.train.epochs = 2
  c.train.eval_batch_size = 50
  c.checkpoint.every_epochs = 1  # The tests resume from, and count, every epoch's checkpoint.
  c.log.verbosity = 0
  return c
