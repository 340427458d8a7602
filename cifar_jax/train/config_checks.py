"""Checks a config before any work starts, so a bad value fails in seconds, naming the key.

Unknown keys and wrong types are already refused by the locked, type-safe ConfigDict (see
configs/base.py); this checks values that need knowledge of the code: names against the
registries (models, optimizers, schedules, augmentation layers, TTA modes, callbacks), every
number being finite, and the split sizes, which CIFAR-10 fixes (50,000 train, 10,000 test: the
readers accept nothing else), so validation and batch sizes are checked before the data loads.
"""

import difflib
import math
import numbers

import jax
import jax.numpy as jnp

from cifar_jax.data import augment
from cifar_jax.data import cifar10
from cifar_jax.data import pipeline
from cifar_jax.models import MODELS
from cifar_jax.models import create_model
from cifar_jax.models import backbone
from cifar_jax.models import conv
from cifar_jax.models import onednn_conv
from cifar_jax.train import callbacks as callbacks_lib
from cifar_jax.train import optimizers
from cifar_jax.train import outputs
from cifar_jax.train.state import MATMUL_PRECISIONS


class ConfigError(ValueError):
  """A config value cifar_jax cannot run with; the message names the key."""


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _choice(key: str, value, known) -> None:
  """`value` must be one of `known`; the error suggests the closest name."""
  if value in known:
    return
  close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  raise ConfigError(f'{key}={value!r} is unknown{hint}; known: {", ".join(map(str, known))}')


def _as_config_error(check, *args):
  """Runs a builder that validates its input, turning its ValueError into a ConfigError."""
  try:
    return check(*args)
  except ConfigError:
    raise
  except (ValueError, KeyError, TypeError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    raise ConfigError(str(message)) from e


def _flatten(tree, prefix=''):
  """(dotted key, value) for every leaf of a config dict, inside lists and tuples too."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _flatten(value, f'{prefix}.{key}' if prefix else str(key))
  elif isinstance(tree, (list, tuple)):
    for i, value in enumerate(tree):
      yield from _flatten(value, f'{prefix}[{i}]')
  else:
    yield prefix, tree


def check_finite(config) -> None:
  """No number anywhere in the config is NaN or +-inf (a learning rate of inf trains NaN)."""
  for key, value in _flatten(config.to_dict()):
    if (isinstance(value, numbers.Real) and not isinstance(value, bool) and
        not math.isfinite(value)):
      raise ConfigError(f'{key}={value}: must be a finite number')


def split_sizes(data_config) -> tuple[int, int, int]:
  """(train, validation, test) example counts the run will have, from the config alone."""
  n_total = data_config.num_train_examples or cifar10.NUM_TRAIN_EXAMPLES
  n_test = data_config.num_test_examples or cifar10.NUM_TEST_EXAMPLES
  try:
    n_carved = pipeline.validation_size(n_total, data_config.num_validation,
                                        data_config.validation_split)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  n_val = n_test if data_config.validation_source == 'test' else n_carved
  return n_total - n_carved, n_val, n_test


def _check_data(config) -> None:
  data = config.data
  _choice('data.normalization', data.normalization, pipeline.NORMALIZATIONS)
  for key, full in (('num_train_examples', cifar10.NUM_TRAIN_EXAMPLES),
                    ('num_test_examples', cifar10.NUM_TEST_EXAMPLES)):
    value = data[key]
    _require(value is None or 0 <= value <= full,
             f'data.{key}={value}: must be in [1, {full}] (CIFAR-10 has {full} '
             f'{key.split("_")[1]} images), or 0 for all of them')
  _require(data.num_validation >= 0, f'data.num_validation={data.num_validation} must be >= 0')
  _choice('data.validation_source', data.validation_source, pipeline.VALIDATION_SOURCES)
  _require(data.validation_source == 'train' or not (data.num_validation or data.validation_split),
           f"data.validation_source='test' validates on the test set, so nothing is carved from "
           f'the training images: set data.num_validation=0 and data.validation_split=0.0')
  n_train, n_val, _ = split_sizes(data)
  _require(n_train >= 1, f'data.validation_split={data.validation_split} leaves no training '
           f'example out of {data.num_train_examples or cifar10.NUM_TRAIN_EXAMPLES}; lower it')
  batch, steps = config.train.batch_size, config.train.steps_per_epoch
  _require(not steps or steps * batch <= n_train,
           f'train.steps_per_epoch={steps} x batch_size={batch} needs {steps * batch} examples '
           f'but the training split has {n_train}; lower steps_per_epoch (0 means one pass over '
           'the split)')


def _check_optimizer(config) -> None:
  optim = config.optim
  _choice('optim.name', optim.name, optimizers.OPTIMIZERS)
  _choice('optim.schedule.name', optim.schedule.name, optimizers.SCHEDULES)
  _require(optim.learning_rate > 0, f'optim.learning_rate={optim.learning_rate} must be > 0')
  _require(0.0 <= optim.momentum <= 1.0, f'optim.momentum={optim.momentum} must be in [0, 1]')
  for key in ('beta_1', 'beta_2', 'rho'):
    _require(0.0 <= optim[key] < 1.0, f'optim.{key}={optim[key]} must be in [0, 1)')
  _require(optim.epsilon >= 0, f'optim.epsilon={optim.epsilon} must be >= 0')
  _require(optim.weight_decay >= 0, f'optim.weight_decay={optim.weight_decay} must be >= 0')
  # Builds the optax transform (no arrays): the builder's own checks (weight decay with adamw
  # only, schedule arguments) fail here, not after the data has loaded.
  _as_config_error(optimizers.make_optimizer, optim, 1, max(1, config.train.epochs))


def _check_callbacks(config) -> None:
  _as_config_error(callbacks_lib.make_callbacks, config.callbacks)
  _as_config_error(callbacks_lib.ModelCheckpointMonitor, config.checkpoint.monitor,
                   config.checkpoint.mode)
  for key in ('every_steps', 'every_epochs', 'every_minutes'):
    value = config.checkpoint[key]
    _require(value >= 0 and math.isfinite(value),
             f'checkpoint.{key}={value} must be a finite number >= 0 (0: off)')
  # What an epoch logs; a monitor of anything else would never fire (or fail after an epoch).
  _, n_val, _ = split_sizes(config.data)
  logged = ['loss', 'accuracy'] + (['val_loss', 'val_accuracy'] if n_val else []) + [
      'learning_rate']
  monitors = [('checkpoint.monitor', config.checkpoint.monitor)]
  monitors += [(f'callbacks.early_stopping.{name}.monitor', entry.monitor)
               for name, entry in config.callbacks.early_stopping.items()]
  if config.callbacks.reduce_lr_on_plateau.enabled:
    monitors.append(('callbacks.reduce_lr_on_plateau.monitor',
                     config.callbacks.reduce_lr_on_plateau.monitor))
  for key, monitor in monitors:
    # Without validation ModelCheckpoint(val_*) saves no best checkpoint, as Keras skips it
    # (base.py's default); the callbacks refuse a missing monitor (callbacks.py), so up front.
    if key == 'checkpoint.monitor' and monitor in ('val_loss', 'val_accuracy'):
      continue
    if monitor not in logged and monitor.startswith('val_') and not n_val:
      raise ConfigError(f'{key}={monitor!r} needs a validation split; set data.num_validation '
                        'or data.validation_split')
    _choice(key, monitor, logged)


# model configs whose check passed in this process: launch.py checks a config before the data
# loads and the run's setup checks it again (as it does for research scripts); one trace will do.
_MODELS_CHECKED = set()


def _check_conv_backend(config) -> None:
  """A known backend; 'onednn' or 'tuned' on a CPU host builds and loads oneDNN's library now
  (seconds, once per machine), so that a missing oneDNN or compiler is one line before any work."""
  backend = config.model.get('conv_backend', 'xla')
  _require(backend in conv.BACKENDS,
           f'model.conv_backend={backend!r} is unknown; known: {list(conv.BACKENDS)}')
  if backend != 'xla' and jax.default_backend() == 'cpu':
    try:
      onednn_conv.load()
    except onednn_conv.Unavailable as e:
      _require(False, f"model.conv_backend={backend!r}: {e}; or set model.conv_backend='xla'")


def _check_model(config) -> None:
  """Builds the model and, for a layer stack, traces its init abstractly (no compile, no
  device): an unknown layer type or argument in model.layers fails here. Transfer backbones
  are left to the run (tracing DenseNet takes seconds)."""
  key = config.model.to_json_best_effort(sort_keys=True)
  if key in _MODELS_CHECKED:
    return
  model = _as_config_error(create_model, config.model)
  if config.model.name == 'layer_stack':
    x = jax.ShapeDtypeStruct((1, *config.model.input_shape), jnp.float32)

    def init(images):
      rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
      return model.init(rngs, images, train=False)

    _as_config_error(jax.eval_shape, init, x)
  _MODELS_CHECKED.add(key)


def check_config(config) -> None:
  """Raises ConfigError naming the key of the first value cifar_jax cannot run with."""
  check_finite(config)
  _choice('model.name', config.model.name, sorted(MODELS))
  _require(config.train.epochs >= 1, f'train.epochs={config.train.epochs} must be >= 1')
  _require(config.train.batch_size >= 1, f'train.batch_size={config.train.batch_size} must be >= 1')
  _require(config.train.eval_batch_size >= 1,
           f'train.eval_batch_size={config.train.eval_batch_size} must be >= 1')
  _require(config.train.steps_per_epoch >= 0,
           f'train.steps_per_epoch={config.train.steps_per_epoch} must be >= 0')
  _check_data(config)
  _check_optimizer(config)
  _check_callbacks(config)
  _check_model(config)
  _require(0.0 <= config.loss.label_smoothing < 1.0,
           f'loss.label_smoothing={config.loss.label_smoothing} must be in [0, 1)')
  _require(config.model.dtype in ('float32', 'bfloat16', 'float16'),
           f"model.dtype={config.model.dtype!r} must be 'float32', 'bfloat16' or 'float16'")
  _require(config.model.matmul_precision in MATMUL_PRECISIONS,
           f'model.matmul_precision={config.model.matmul_precision!r} is unknown; known: '
           f'{list(MATMUL_PRECISIONS)}')
  try:  # The config's value, or the environment variable's where the config defers to it.
    conv.effective_mode(config.model.conv_grad)
  except ValueError as e:
    _require(False, f"{e}; set it to one of them (model.conv_grad='' defers to ${conv.ENV_VAR})")
  _check_conv_backend(config)
  _require(config.log.writer in outputs.WRITERS,
           f'log.writer={config.log.writer!r} is unknown; known: {list(outputs.WRITERS)}')
  _require(config.log.verbosity in (0, 1, 2),
           f'log.verbosity={config.log.verbosity} must be 0 (silent), 1 (progress bar and a line '
           'per epoch) or 2 (a line per epoch)')
  if config.log.writer == 'clu':
    try:
      outputs.import_clu_writers()
    except ImportError as e:
      raise ConfigError(str(e)) from e
  _require(config.train.max_steps >= 0, f'train.max_steps={config.train.max_steps} must be >= 0')
  _check_seeds(config)
  _as_config_error(augment.validate_augment_config, config.augment)
  try:
    backbone.check_transfer_config(config, TRANSFER_MODELS)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  _require(not (config.model.backbone.bottleneck and augment.make_augment_fn(config.augment)),
           'model.backbone.bottleneck trains on features computed once, so it cannot use '
           'config.augment; turn the augmentation off or the bottleneck mode off')


def _check_seeds(config) -> None:
  """num_seeds (cifar_jax/train/seeds.py): what a run of several replicas cannot combine with."""
  n = config.num_seeds
  _require(n >= 1, f'num_seeds={n} must be >= 1')
  if n > 1:
    _require(not config.model.phases,
             f'num_seeds={n} cannot be combined with model.phases (fine-tuning phases); run the '
             'seeds one at a time (num_seeds=1 and seed=...)')
    _require(not config.model.backbone.bottleneck,
             f'num_seeds={n} cannot be combined with model.backbone.bottleneck; run the seeds '
             'one at a time (num_seeds=1 and seed=...)')


TRANSFER_MODELS = ('vgg16', 'densenet121')  # Built by models/backbone.py.
