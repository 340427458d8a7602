"""A config's training setup, built once: data splits, epoch plan, input pipeline, the model and
optimizer of each fine-tuning phase, and fresh TrainStates.

    from cifar_jax.train import create_train_state_from_config, train_step
    state, splits = create_train_state_from_config(config)

is the research entry point. The training loop builds the same `RunSetup` (with its workdir,
where bottleneck mode caches features), and benchmarks and tests call it too, so a script's
state is the state a run starts from. Nothing is rewritten after construction: in bottleneck
mode the splits *are* the backbone's features and the input pipeline the identity from the
start.
"""

import dataclasses
import functools
from typing import Any

import jax.numpy as jnp
import numpy as np

from cifar_jax import memo
from cifar_jax.data import pipeline
from cifar_jax.models import airbench
from cifar_jax.models import create_model
from cifar_jax.models.summary import summarize
from cifar_jax.train import fast_optim
from cifar_jax.train import freezing
from cifar_jax.train import optimizers
from cifar_jax.train import transfer
from cifar_jax.train.config_checks import ConfigError, check_config
from cifar_jax.train.state import TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class EpochPlan:
  """How an epoch walks the training split."""
  num_examples: int
  batch_size: int
  steps_per_epoch: int
  last_batch_size: int  # Smaller than batch_size when the epoch ends on a partial batch.

  @classmethod
  def create(cls, num_examples: int, batch_size: int, steps_per_epoch: int) -> 'EpochPlan':
    if batch_size <= 0:
      raise ConfigError(f'train.batch_size={batch_size} must be positive')
    if steps_per_epoch:  # Keras fit(generator, steps_per_epoch=N): N full batches.
      if steps_per_epoch * batch_size > num_examples:
        raise ConfigError(
            f'train.steps_per_epoch={steps_per_epoch} x batch_size={batch_size} needs '
            f'{steps_per_epoch * batch_size} examples but the training split has {num_examples}; '
            f'lower steps_per_epoch (0 means one pass over the split)')
      return cls(num_examples, batch_size, steps_per_epoch, batch_size)
    steps_needed = -(-num_examples // batch_size)  # Keras fit(x, y): ceil(n / batch).
    return cls(num_examples, batch_size, steps_needed,
               num_examples - (steps_needed - 1) * batch_size)


def array_splits(images, labels) -> pipeline.Splits:
  """Splits made of in-memory arrays (e.g. random data for a benchmark), which serve as both
  the training and the test split; no validation split."""
  split = pipeline.Split(np.asarray(images), np.asarray(labels))
  return pipeline.Splits(train=split, validation=None, test=split,
                         class_names=tuple(str(i) for i in range(10)), source='arrays')


def config_key(config) -> str | None:
  """`config` as sorted JSON: equal for configs equal in every value and type (1 and 1.0
  differ); None when a value has no JSON form (or `config` is no ConfigDict)."""
  try:
    return config.to_json_best_effort(sort_keys=True)
  except (AttributeError, TypeError, ValueError):
    return None


# Model and optimizer objects built by RunSetup.model_and_tx, by what they are built from (the
# model and optim configs, the phase's epochs and steps per epoch); cifar_jax.memo says why.
_BUILT = memo.Memo()


@dataclasses.dataclass(frozen=True)
class RunSetup:
  """Everything a config builds before its first step (host side, nothing replicated)."""
  config: Any
  splits: pipeline.Splits  # Bottleneck mode: the backbone's features.
  plan: EpochPlan
  input_pipeline: pipeline.InputPipeline
  input_shape: tuple[int, ...]  # What the trained model reads (features in bottleneck mode).
  model: Any  # config.model's full model (phase settings aside), for the summary.
  bottleneck: bool
  phases: list  # freezing.Phase: one per fine-tuning phase, one in all for most runs.

  @classmethod
  def create(cls, config, splits: pipeline.Splits | None = None,
             workdir: str | None = None) -> 'RunSetup':
    """Checks `config`, reads its data (unless `splits` are given) and builds the rest.
    `workdir`: where bottleneck mode caches the backbone's features (required there)."""
    check_config(config)
    splits = splits or pipeline.make_splits(config.data)
    model = create_model(config.model)
    plan = EpochPlan.create(len(splits.train), config.train.batch_size,
                            config.train.steps_per_epoch)
    input_pipeline = pipeline.make_input_pipeline(config, splits.train.images)
    input_shape = tuple(config.model.input_shape)
    bottleneck = transfer.uses_bottleneck(model, config)
    if bottleneck:  # The head trains on backbone features computed once, already normalised.
      if workdir is None:
        raise ConfigError('model.backbone.bottleneck caches features in the run folder: pass '
                          'a workdir')
      splits, input_shape = transfer.bottleneck_splits(model, config, splits, input_pipeline,
                                                       workdir)
      input_pipeline = pipeline.InputPipeline(mean=(0.0,), std=(1.0,))
    return cls(config, splits, plan, input_pipeline, input_shape, model, bottleneck,
               freezing.fine_tuning_phases(config))

  @functools.cached_property
  def summary(self):
    """Keras-style summary (parameter counts) of the full model."""
    return summarize(self.model, self.config.model.input_shape)

  def model_and_tx(self, phase: freezing.Phase | None = None):
    """The model and (freezing-aware) optimizer of `phase` (default: the first): the same
    objects for the same model and optim configs in this process (cifar_jax.memo)."""
    phase = phase or self.phases[0]
    # What the builders read: config.model (create_model, freezing) and config.optim.
    key = (config_key(phase.config.model), config_key(phase.config.optim), phase.first_epoch,
           phase.end_epoch, self.plan.steps_per_epoch, self.bottleneck)
    return _BUILT.get(None if None in key[:2] else key, lambda: self._build_model_and_tx(phase))

  def _build_model_and_tx(self, phase: freezing.Phase):
    model, tx = freezing.phase_model_and_tx(phase, self.plan.steps_per_epoch)
    if self.bottleneck:  # Only the head trains; its params are the transfer model's 'head'.
      model = transfer.head_model(model)
      tx = optimizers.make_optimizer(
          phase.config.optim, self.plan.steps_per_epoch,
          self.plan.steps_per_epoch * (phase.end_epoch - phase.first_epoch))
    return model, tx

  def train_states(self, phase: freezing.Phase | None = None,
                   configs=None) -> list[TrainState]:
    """Fresh states for `phase` (default: the first) with the pretrained backbone loaded, one
    per config of `configs` (default: the phase's; replicas pass theirs, which differ in seed).
    They share one model and optimizer, so they stack."""
    phase = phase or self.phases[0]
    model, tx = self.model_and_tx(phase)
    states = []
    for config in configs or [phase.config]:
      state = create_train_state(config, model, tx, self.input_pipeline, self.input_shape)
      state = transfer.load_pretrained(model, config, state)
      states.append(self._data_dependent_init(config, state, tx))
    return states

  def _data_dependent_init(self, config, state: TrainState, tx) -> TrainState:
    """The state with the model's init that needs data filled in (airbench's whitening conv,
    from the training split as the model sees it), and the optimizer state made anew from those
    weights (an optimizer holding a copy of them, the lookahead, starts from these). A resumed
    run restores the same weights from its checkpoint."""
    normalise = lambda images: self.input_pipeline(None, jnp.asarray(images), train=False)
    params, batch_stats = airbench.apply_data_dependent_init(
        config, state.params, state.batch_stats, self.splits.train.images, normalise)
    if params is state.params:
      return state
    return state.replace(params=params, batch_stats=batch_stats,
                         opt_state=fast_optim.init_state(tx, params, batch_stats))

  def train_state(self, phase: freezing.Phase | None = None) -> TrainState:
    return self.train_states(phase)[0]


def create_train_state_from_config(config, splits: pipeline.Splits | None = None,
                                   workdir: str | None = None
                                   ) -> tuple[TrainState, pipeline.Splits]:
  """(the fresh TrainState of `config`, its data splits): the model, optimizer, input pipeline
  and initial weights a run of `config` starts from, on the default device. `splits`: use
  these instead of reading config.data (see `array_splits`)."""
  setup = RunSetup.create(config, splits, workdir)
  return setup.train_state(), setup.splits
