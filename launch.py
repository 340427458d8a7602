"""Runs one cifar_jax experiment: `python launch.py --config=configs/exp0.py [--workdir=runs/exp0]`.

Any config value can be overridden: `--config.optim.learning_rate=0.01`. Running the same
command again resumes from the workdir's last checkpoint. `--summary` prints the Keras-style
model summary and exits; `--evaluate=best|latest` evaluates a checkpoint without training;
`--verbosity=0|1|2` is Keras fit's `verbose` (3 adds libraries' INFO logs).
"""

import datetime
import logging
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where the run writes its files (default: runs/<config.name>).')
flags.DEFINE_bool('summary', False, 'Print the model summary and exit.')
flags.DEFINE_enum('evaluate', None, ['best', 'latest'],
                  'Evaluate this checkpoint of --workdir on validation and test, without training.')
flags.DEFINE_string('preview_augmentation', None, 'Write a PNG grid of training images and their '
                    'augmented versions (what the model sees) to this path, and exit.')
flags.DEFINE_bool('fresh', False, 'Start over: move an existing --workdir aside (renamed with a '
                  'timestamp, nothing is deleted) instead of resuming it.')
flags.DEFINE_string('coordinator_address', None, 'Multi-process runs: host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: how many processes.')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process (0-based).')
flags.DEFINE_bool('distributed', False, 'Multi-process runs with auto-detected settings '
                  '(Cloud TPU pod slices, SLURM): calls jax.distributed.initialize().')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def set_aside(workdir: str) -> None:
  if os.path.exists(workdir):
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    os.rename(workdir, f'{workdir}.replaced-{stamp}')
    print(f'--fresh: moved the previous run to {workdir}.replaced-{stamp}', file=sys.stderr)


def apply_verbosity(config) -> None:
  """`--verbosity` is Keras fit's `verbose` (absl owns the flag; launch.py takes it over): 0 is
  silent, 1 a progress bar and a line per epoch, 2 a line per epoch; 3 also shows libraries' INFO
  logs (orbax's per-save lines). Without the flag, config.log.verbosity decides."""
  if FLAGS['verbosity'].present:
    config.log.verbosity = min(max(FLAGS.verbosity, 0), 2)
  library_info = FLAGS['verbosity'].present and FLAGS.verbosity >= 3
  for name in ('', 'absl'):  # The root logger and absl's (orbax logs through absl).
    logging.getLogger(name).setLevel(logging.INFO if library_info else logging.WARNING)
  logging.getLogger('cifar_jax').setLevel(logging.INFO if config.log.verbosity else
                                          logging.WARNING)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  apply_verbosity(FLAGS.config)  # Before the imports below log anything.
  # Imported here so that --help and flag errors stay fast.
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.data.cifar10 import DataError  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from cifar_jax.models.summary import format_summary, summarize  # pylint: disable=g-import-not-at-top
  from cifar_jax import train  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import interrupts  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import outputs  # pylint: disable=g-import-not-at-top
  from cifar_jax.train.config_checks import ConfigError  # pylint: disable=g-import-not-at-top

  from cifar_jax.train import sharding  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  if FLAGS.summary:
    print(format_summary(summarize(create_model(config.model), config.model.input_shape),
                         title=config.name))
    return
  if FLAGS.preview_augmentation:
    from cifar_jax.data import preview  # pylint: disable=g-import-not-at-top
    preview.write_preview(config, FLAGS.preview_augmentation)
    print(f'wrote {FLAGS.preview_augmentation}')
    return
  workdir = FLAGS.workdir or os.path.join('runs', config.name)
  # Before anything touches the devices.
  sharding.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id, auto=FLAGS.distributed)
  logging.getLogger('cifar_jax.launch').info('process %d/%d, devices: %s', jax.process_index(),
                                             jax.process_count(), jax.devices())
  try:
    if FLAGS.evaluate:
      train.evaluate_checkpoint(config, workdir, FLAGS.evaluate)
      return
    if FLAGS.fresh:
      set_aside(workdir)
    train.train_and_evaluate(config, workdir)
  except interrupts.Interrupted as e:
    print(str(e), file=sys.stderr)
    sys.exit(130)
  except (DataError, ConfigError, FloatingPointError, checkpointing.CheckpointError,
          checkpointing.ConfigMismatchError, outputs.WorkdirError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
