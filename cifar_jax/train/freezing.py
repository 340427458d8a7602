"""Keras `layer.trainable = False` for the optimizer, and fine-tuning phases.

A frozen layer in Keras 3 is left out of `trainable_weights`, so the optimizer never touches it
(no Adam moments, no AdamW decay), and a frozen BatchNormalization runs in inference mode, so its
moving statistics stay as they are. The model side lives in the model (see
cifar_jax/models/backbone.py: frozen weights are read through stop_gradient and frozen BatchNorm
uses its moving statistics); this module gives the optimizer side:

    tx = freezing.freeze_optimizer(optimizers.make_optimizer(...), model)

wraps the optimizer in `optax.multi_transform` so that frozen params get `set_to_zero` updates and
no optimizer state. Models without frozen layers get `tx` back unchanged.

Fine-tuning phases (config.model.phases) are Keras's "train, set trainable, recompile, fit
again": each phase has its own freeze spec and learning rate and starts with a fresh optimizer.
"""

import dataclasses
from typing import Any, Mapping

import jax
import ml_collections
import optax

from cifar_jax.models import create_model
from cifar_jax.train import optimizers

TRAINABLE, FROZEN = 'trainable', 'frozen'


def make_trainable_mask(model, params):
  """A pytree like `params`: True where the optimizer may change the parameter.

  Models that freeze nothing (the layer stack) have no `trainable_mask`: all True.
  """
  mask_fn = getattr(model, 'trainable_mask', None)
  if mask_fn is None:
    return jax.tree.map(lambda _: True, params)
  return mask_fn(params)


def freeze_optimizer(tx: optax.GradientTransformation, model) -> optax.GradientTransformation:
  """`tx` for the trainable params, zero updates (and no state) for the frozen ones.

  The labels are computed from the params the optimizer is initialised with, so this can wrap the
  optimizer before the params exist. A model without frozen layers gets `tx` unchanged, keeping
  the optimizer state's structure (and checkpoints) as before.
  """
  if not getattr(model, 'frozen', None):
    return tx

  def labels(params):
    return jax.tree.map(lambda trainable: TRAINABLE if trainable else FROZEN,
                        make_trainable_mask(model, params))

  return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, labels)


# --- Fine-tuning phases. ----------------------------------------------------------------------

PHASE_KEYS = ('epochs', 'learning_rate', 'freeze')


@dataclasses.dataclass(frozen=True)
class Phase:
  """Epochs [first_epoch, end_epoch) (0-based) of a run, trained with `config`: the run's config
  with this phase's model.freeze and optim.learning_rate."""
  first_epoch: int
  end_epoch: int
  config: ml_collections.ConfigDict


def fine_tuning_phases(config) -> list[Phase]:
  """The run's phases, in order; one phase of train.epochs when model.phases is empty.

  Each entry of model.phases is a dict with 'epochs', and optionally 'learning_rate' and
  'freeze' (keys of model.freeze; the ones given replace the run's, the others are cleared).
  The last phase runs until train.epochs.
  """
  entries = list(config.model.phases) or [{}]
  phases, start = [], 0
  for i, entry in enumerate(entries):
    entry = dict(entry)
    unknown = set(entry) - set(PHASE_KEYS)
    if unknown:
      raise ValueError(f'model.phases[{i}]: unknown key(s) {sorted(unknown)}; known: '
                       f'{list(PHASE_KEYS)}')
    last = i == len(entries) - 1
    if not last and entry.get('epochs', 0) <= 0:
      raise ValueError(f'model.phases[{i}]: epochs must be > 0 (only the last phase may omit it)')
    end = config.train.epochs if last else min(start + int(entry['epochs']), config.train.epochs)
    phase_config = config.copy_and_resolve_references()
    if 'learning_rate' in entry:
      phase_config.optim.learning_rate = float(entry['learning_rate'])
    if 'freeze' in entry:
      freeze = dict(entry['freeze'])
      unknown = set(freeze) - set(phase_config.model.freeze)
      if unknown:
        raise ValueError(f'model.phases[{i}].freeze: unknown key(s) {sorted(unknown)}; known: '
                         f'{sorted(phase_config.model.freeze)}')
      for key, value in phase_config.model.freeze.items():
        phase_config.model.freeze[key] = freeze.get(key, type(value)())
    if start < end:
      phases.append(Phase(start, end, phase_config))
    start = end
  return phases


def phase_at(phases: list[Phase], epoch: int) -> Phase:
  """The phase that trains 0-based `epoch` (e.g. the one to rebuild when resuming)."""
  for phase in phases:
    if phase.first_epoch <= epoch < phase.end_epoch:
      return phase
  raise ValueError(f'epoch {epoch} is outside every phase')


def saved_epoch(host: Mapping[str, Any]) -> int:
  """The 0-based epoch whose phase shaped a latest checkpoint's optimizer state: the epoch in
  progress for a save within an epoch, else the last one completed."""
  return host['epoch'] if host.get('partial_sums') is not None else max(host['epoch'] - 1, 0)


def phase_of_epoch(phases: list[Phase], config, epoch: int) -> Phase:
  """phase_at, tolerant of a run whose train.epochs was lowered since."""
  return phase_at(phases, min(max(epoch, 0), config.train.epochs - 1))


def phase_model_and_tx(phase: Phase, steps_per_epoch: int):
  """A fine-tuning phase's model and its optimizer, with the phase's frozen layers."""
  model = create_model(phase.config.model)
  phase_steps = steps_per_epoch * (phase.end_epoch - phase.first_epoch)
  tx = optimizers.make_optimizer(phase.config.optim, steps_per_epoch, phase_steps)
  return model, freeze_optimizer(tx, model)

