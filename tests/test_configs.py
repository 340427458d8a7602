"""Every entregable4 config: exact Keras parameter counts, runnable, and strict about keys."""

import importlib
import subprocess
import sys

import pytest

from cifar_jax.models import create_model
from cifar_jax.models.summary import summarize
from configs import base
from tests.conftest import REPO

# (total, trainable, non-trainable), as the report's model.summary() prints them.
ENTREGABLE4_PARAMS = {
    'exp0': (263_402, 263_402, 0),
    'exp1': (961_706, 961_706, 0),
    'exp2': (961_706, 961_706, 0),
    **{f'exp{i}': (965_034, 963_370, 1_664) for i in range(3, 8)},
    **{name: (7_525_194, 7_517_770, 7_424) for name in ('exp8a', 'exp8b', 'exp9', 'exp10')},
    'exp11': (15_448_842, 15_438_986, 9_856),
}


def load(name):
  return importlib.import_module(f'configs.{name}').get_config()


@pytest.mark.parametrize('name', sorted(ENTREGABLE4_PARAMS))
def test_parameter_counts_match_the_report(name):
  summary = summarize(create_model(load(name).model), (32, 32, 3))
  assert (summary.total, summary.trainable, summary.non_trainable) == ENTREGABLE4_PARAMS[name]


@pytest.mark.parametrize('name', sorted(ENTREGABLE4_PARAMS))
def test_config_documents_itself(name):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  assert config.name == name
  assert f'python launch.py --config=configs/{name}.py' in module.__doc__
  assert f'{config.reported_test_accuracy:.2f}' in module.__doc__.replace('%', '')
  assert 'entregable4' in config.report


def test_summary_command_prints_keras_totals():
  out = subprocess.run([sys.executable, 'launch.py', '--config=configs/exp11.py', '--summary'],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert 'Total params: 15,448,842' in out
  assert 'Trainable params: 15,438,986' in out
  assert 'Non-trainable params: 9,856' in out
  assert 'conv2d_10 (Conv2D)' in out and '(None, 4, 4, 512)' in out


def test_unknown_key_in_config_code_is_refused():
  config = base.get_config()
  with pytest.raises(AttributeError, match='lerning_rate'):
    config.optim.lerning_rate = 0.1


@pytest.mark.parametrize('override, message', [
    ('--config.optim.lerning_rate=0.1', 'lerning_rate'),
    ('--config.train.batch_size=big', 'batch_size'),
])
def test_bad_command_line_override_fails_naming_the_key(override, message):
  result = subprocess.run([sys.executable, 'launch.py', '--config=configs/exp0.py', override,
                           '--summary'], cwd=REPO, capture_output=True, text=True)
  assert result.returncode != 0
  assert message in result.stderr


def test_config_overrides_reach_the_config():
  result = subprocess.run([sys.executable, '-c', (
      'from absl import flags; import sys; from ml_collections import config_flags;'
      'c = config_flags.DEFINE_config_file("config", lock_config=True);'
      'flags.FLAGS(sys.argv); print(flags.FLAGS.config.optim.learning_rate)'),
      '--config=configs/exp9.py', '--config.optim.learning_rate=0.003'],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '0.003'
