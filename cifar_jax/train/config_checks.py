"""Checks a config before any work starts, so a bad value fails in seconds, naming the key.

Unknown keys and wrong types are already refused by the locked, type-safe ConfigDict (see
configs/base.py); this checks values that need knowledge of the code.
"""

from cifar_jax.data import augment
from cifar_jax.data import pipeline
from cifar_jax.models import MODELS
from cifar_jax.models import backbone
from cifar_jax.train import outputs


class ConfigError(ValueError):
  """A config value cifar_jax cannot run with; the message names the key."""


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def check_config(config) -> None:
  _require(config.model.name in MODELS,
           f'model.name={config.model.name!r} is not a known model; known: {sorted(MODELS)}')
  _require(config.data.normalization in pipeline.NORMALIZATIONS,
           f'data.normalization={config.data.normalization!r} is unknown; '
           f'known: {list(pipeline.NORMALIZATIONS)}')
  _require(config.train.epochs >= 1, f'train.epochs={config.train.epochs} must be >= 1')
  _require(config.train.batch_size >= 1, f'train.batch_size={config.train.batch_size} must be >= 1')
  _require(config.train.eval_batch_size >= 1,
           f'train.eval_batch_size={config.train.eval_batch_size} must be >= 1')
  _require(config.train.steps_per_epoch >= 0,
           f'train.steps_per_epoch={config.train.steps_per_epoch} must be >= 0')
  _require(config.optim.learning_rate > 0,
           f'optim.learning_rate={config.optim.learning_rate} must be > 0')
  _require(0.0 <= config.loss.label_smoothing < 1.0,
           f'loss.label_smoothing={config.loss.label_smoothing} must be in [0, 1)')
  _require(config.model.dtype in ('float32', 'bfloat16', 'float16'),
           f"model.dtype={config.model.dtype!r} must be 'float32', 'bfloat16' or 'float16'")
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
  _check_seeds(config)
  augment.validate_augment_config(config.augment)
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
