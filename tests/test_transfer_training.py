"""Transfer learning through the training loop: pretrained weights loaded, freezing honoured,
fine-tuning phases, bottleneck features."""

import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from cifar_jax.models import keras_weights
from cifar_jax.train import train_and_evaluate
from configs import layers as L
from tests.conftest import tiny_config


@pytest.fixture(scope='module')
def vgg16_weights(tmp_path_factory):
  """VGG16 weights as Keras saves them (random init: no download)."""
  import keras  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('weights') / 'vgg16.weights.h5')
  keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3)).save_weights(
      path)
  return path


def transfer_config(data_dir, weights, **train):
  """VGG16 cut after block1 (cheap on a CPU), a small head on top."""
  c = tiny_config(data_dir, **train)
  c.model.name = 'vgg16'
  c.model.backbone.weights = weights
  c.model.backbone.output_layer = 'block1_pool'
  c.model.layers = (L.flatten(), L.dense(10, activation='softmax'))
  return c


def saved_backbone(workdir, step):
  state = ocp.PyTreeCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', 'latest', str(step), 'state'))
  return state['params']['backbone']


def test_phases_freeze_then_fine_tune_from_the_pretrained_backbone(synthetic_dir, vgg16_weights,
                                                                  tmp_path):
  config = transfer_config(synthetic_dir, vgg16_weights, epochs=2)
  config.model.freeze.backbone = True
  config.model.phases = (dict(epochs=1), dict(learning_rate=1e-4, freeze=dict(backbone=False)))
  workdir = str(tmp_path)
  results = train_and_evaluate(config, workdir)
  assert results['epochs_run'] == 2
  pretrained = keras_weights.read_keras_weights(vgg16_weights)
  kernel = np.asarray(next(w for w in pretrained['block1_conv1'] if np.ndim(w) == 4))
  after_phase_1 = saved_backbone(workdir, 8)   # 240 examples / 32 = 8 steps per epoch
  after_phase_2 = saved_backbone(workdir, 16)
  np.testing.assert_array_equal(after_phase_1['block1_conv1']['kernel'], kernel)
  assert not np.array_equal(after_phase_2['block1_conv1']['kernel'], kernel)
  with open(os.path.join(workdir, 'history.json')) as f:
    assert [row['learning_rate'] for row in json.load(f)] == pytest.approx([1e-3, 1e-4])


def test_bottleneck_mode_trains_the_head_on_cached_features(synthetic_dir, vgg16_weights,
                                                            tmp_path):
  config = transfer_config(synthetic_dir, vgg16_weights, epochs=1)
  config.model.freeze.backbone = True
  config.model.backbone.bottleneck = True
  results = train_and_evaluate(config, str(tmp_path))
  assert results['epochs_run'] == 1 and 0.0 <= results['test_accuracy'] <= 1.0
  cached = os.listdir(tmp_path / 'bottleneck')
  assert sorted(name.split('-')[0] for name in cached) == ['test', 'train', 'validation']
  # The summary is that of the whole model, as Keras's would be.
  assert results['params'] > results['trainable_params'] > 0


def test_resume_at_a_phase_boundary(synthetic_dir, vgg16_weights, tmp_path):
  """A checkpoint taken at the end of phase 1 holds phase 1's optimizer state; extending the
  run resumes it, then enters phase 2."""
  config = transfer_config(synthetic_dir, vgg16_weights, epochs=1)
  config.model.freeze.backbone = True
  config.model.phases = (dict(epochs=1), dict(learning_rate=1e-4, freeze=dict(backbone=False)))
  train_and_evaluate(config, str(tmp_path))
  config.train.epochs = 2
  assert train_and_evaluate(config, str(tmp_path))['epochs_run'] == 2
