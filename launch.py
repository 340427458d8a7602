"""Runs one cifar_jax experiment: `python launch.py --config=configs/exp0.py [--workdir=runs/exp0]`.

Any config value can be overridden: `--config.optim.learning_rate=0.01`. Running the same
command again resumes from the workdir's last checkpoint. `--summary` prints the Keras-style
model summary and exits; `--evaluate=best|latest` evaluates a checkpoint without training;
`--verbosity=0|1|2` is Keras fit's `verbose` (3 adds libraries' INFO logs).

A mistake on the command line or in the config file (unknown key, missing or broken config file,
bad value) is one `error:` line, a `hint:` line where one helps, and exit code 2, before any data
loads or anything compiles; `--debug` (or CIFAR_JAX_DEBUG=1) shows the traceback instead.
"""

import datetime
import difflib
import importlib.util
import logging
import os
import re
import sys
import traceback

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
flags.DEFINE_bool('debug', False, 'On an error, show the full traceback (also: CIFAR_JAX_DEBUG=1).')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


class UserError(Exception):
  """A mistake of the user's, reported as `error: <message>` (+ `hint: <hint>`), exit code 2."""

  def __init__(self, message: str, hint: str = ''):
    super().__init__(message)
    self.hint = hint


def debugging(argv=()) -> bool:
  return (os.environ.get('CIFAR_JAX_DEBUG', '') not in ('', '0') or '--debug' in argv or
          (FLAGS.is_parsed() and FLAGS.debug))


def fail(error: BaseException, hint: str = '') -> None:
  """Prints `error: <message>` (and `hint: <hint>`) to stderr and exits with code 2."""
  if debugging(sys.argv) and not isinstance(error, UserError):
    traceback.print_exception(error)
  hint = hint or getattr(error, 'hint', '')
  print(f'error: {error}', file=sys.stderr)
  if hint:
    print(f'hint: {hint}', file=sys.stderr)
  sys.exit(2)


def _config_path(argv) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1].split(':', 1)[0]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].split(':', 1)[0]
  return ''


def _config_overrides(argv) -> list[str]:
  return [arg.split('=', 1)[0][2:] for arg in argv if arg.startswith('--config.')]


def _last_line(text: str) -> str:
  lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
  return lines[-1] if lines else ''


def explain_flag_error(error: Exception, argv) -> UserError:
  """One line (and a hint) for what went wrong while absl and ml_collections read the flags."""
  path = _config_path(argv)
  if isinstance(error, flags.Error) and 'Error whilst parsing config file' in str(error):
    # get_config() raised a ValueError/TypeError; ml_collections put its traceback in the text.
    return UserError(f'--config={path}: the config does not load ({_last_line(error)})',
                     'rerun with --debug for the traceback')
  if isinstance(error, flags.Error) and '--config must have a value' in str(error):
    return UserError('--config is required', 'e.g. --config=configs/exp0.py')
  if isinstance(error, flags.Error):  # absl's: unknown flag, bad value.
    text = str(error).strip().splitlines()[0]
    message, _, suggestion = text.partition('. Did you mean:')
    hint = f'did you mean --{suggestion.strip(" ?")}?' if suggestion else ''
    return UserError(message.removeprefix('flag '), hint)
  if isinstance(error, OSError) and 'Failed loading config file' in str(error):
    if not os.path.exists(path):
      return UserError(f'--config={path}: no such config file',
                       'experiment configs are under configs/, e.g. --config=configs/exp0.py')
    return UserError(f'--config={path}: cannot read the config file ({_last_line(error)})')
  if isinstance(error, (AttributeError, KeyError)):  # An override of a key the config lacks.
    text = str(error.args[0] if error.args else error).strip('\'"')
    key = re.match(r"[\\'\"]*([\w.]+)", text)
    key = key.group(1) if key else text
    overrides = _config_overrides(argv)
    flag = next((f for f in overrides if f.split('.')[-1] == key or f'.{key}.' in f'{f}.'),
                overrides[-1] if overrides else 'config')
    known = _known_keys(path)
    close = difflib.get_close_matches(flag.removeprefix('config.'), known, n=1)
    suggestion = re.search(r'Did you mean "([\w.]+)"', text)
    hint = (f'did you mean --config.{close[0]}?' if close else
            f'did you mean {suggestion.group(1)}?' if suggestion else
            f'the keys are listed with their defaults in configs/base.py')
    return UserError(f'--{flag}: the config has no key {flag.removeprefix("config.")!r}', hint)
  if isinstance(error, SyntaxError):
    return UserError(f'--config={path}: syntax error in {error.filename}, line {error.lineno}: '
                     f'{error.msg}')
  # Anything else is get_config() (or an override's value) failing inside the config file.
  detail = _last_line(error) or type(error).__name__
  if not detail.startswith(type(error).__name__) and ':' not in detail[:40]:
    detail = f'{type(error).__name__}: {detail}'
  return UserError(f'--config={path}: the config does not load ({detail})',
                   'rerun with --debug for the traceback')


def _known_keys(path: str) -> list[str]:
  """Every dotted key of the config file's get_config(), for suggestions ([] if it fails)."""
  try:
    spec = importlib.util.spec_from_file_location('cifar_jax_suggest_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [key for key, _ in _leaves(module.get_config().to_dict())]
  except Exception:  # pylint: disable=broad-except  (only a suggestion)
    return []


def _leaves(tree, prefix=''):
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      yield from _leaves(value, f'{prefix}{key}.')
    yield f'{prefix}{key}', value


def parse_flags(argv):
  """absl's flag parsing, with every failure turned into one `error:` line and exit code 2."""
  try:
    rest = FLAGS(argv)
    _ = FLAGS.config.lock  # ml_collections reports a config file's load error on first use.
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except  (absl and config files fail many ways)
    if debugging(argv):
      traceback.print_exc()
    fail(explain_flag_error(e, argv))
  return rest


def set_aside(workdir: str) -> None:
  """--fresh: renames an existing workdir (local or gs://) with a timestamp. One process does
  it; the others wait for it, so that none of them resumes the old run."""
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax import paths  # pylint: disable=g-import-not-at-top
  workdir = workdir.rstrip('/') or workdir
  if jax.process_index() == 0 and paths.exists(workdir):
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    paths.rename(workdir, f'{workdir}.replaced-{stamp}')
    print(f'--fresh: moved the previous run to {workdir}.replaced-{stamp}', file=sys.stderr)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('cifar_jax --fresh')


def check_paths(workdir: str, config) -> None:
  """A gs:// workdir or data folder without its optional packages is an error before any work."""
  from cifar_jax import paths  # pylint: disable=g-import-not-at-top
  for path in (workdir, config.data.dir, os.environ.get('CIFAR10_DIR', ''),
               os.environ.get('TFDS_DATA_DIR', '')):
    try:
      paths.check_usable(path)
    except ImportError as e:
      fail(UserError(str(e)))


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
    fail(UserError(f'unexpected arguments: {" ".join(argv[1:])}',
                   'flags take the form --name=value, e.g. --config.train.epochs=5'))
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
  from cifar_jax.train.config_checks import ConfigError, check_config  # pylint: disable=g-import-not-at-top

  from cifar_jax.train import sharding  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  try:  # Every config mistake, before data loads or anything compiles.
    check_config(config)
  except ConfigError as e:
    fail(e)
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
  check_paths(workdir, config)
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
    fail(e)


if __name__ == '__main__':
  # First of all: glibc reads GLIBC_TUNABLES only at startup (see cifar_jax/huge_pages.py).
  from cifar_jax import huge_pages  # pylint: disable=g-import-not-at-top
  huge_pages.reexec_with_huge_pages()
  app.run(main, flags_parser=parse_flags)
