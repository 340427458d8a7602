"""Runs one cifar_jax experiment: `python launch.py --config=configs/exp0.py [--workdir=runs/exp0]`.

Any config value can be overridden: `--config.optim.learning_rate=0.01`. `--summary` prints the
Keras-style model summary and exits without training.
"""

import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where the run writes its files (default: runs/<config.name>).')
flags.DEFINE_bool('summary', False, 'Print the model summary and exit.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Imported here so that --help and flag errors stay fast.
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.data.cifar10 import DataError  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from cifar_jax.models.summary import format_summary, summarize  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from cifar_jax.train.config_checks import ConfigError  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  if FLAGS.summary:
    print(format_summary(summarize(create_model(config.model), config.model.input_shape),
                         title=config.name))
    return
  workdir = FLAGS.workdir or f'runs/{config.name}'
  logging.info('process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  try:
    train_and_evaluate(config, workdir)
  except (DataError, ConfigError, FloatingPointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
