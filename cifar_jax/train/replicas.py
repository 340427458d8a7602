"""The host side of a run, per replica: its record (history, callback states), its Keras
callbacks and where its files go. A run of one config is one replica; `num_seeds=N` is N, each
its own Keras run (seeds.py).

`Callbacks` is the one place where Keras fit's callback semantics live on top of the deciders of
callbacks.py: which callbacks run at an epoch's end and in what order (the reports' order:
ModelCheckpoint(save_best_only), ReduceLROnPlateau, the EarlyStoppings), what the loop must do
after them (save the best checkpoint, set the learning rate, keep weight snapshots, stop), and
which snapshot Keras restores when training ends. tests/test_loop_callbacks_keras.py drives it
through the real loop against real Keras fit traces.
"""

import dataclasses
from typing import Any

import jax

from cifar_jax.models import conv
from cifar_jax.models import conv_tuning
from cifar_jax.models import onednn_conv
from cifar_jax.train import callbacks as callbacks_lib
from cifar_jax.train import checkpointing
from cifar_jax.train import seeds


@dataclasses.dataclass
class RunState:
  """The host side of a run or of one replica, saved as JSON in every checkpoint."""
  epoch: int = 0  # Epochs completed.
  history: list = dataclasses.field(default_factory=list)
  stopped_by: str | None = None
  train_seconds: float = 0.0
  callbacks: dict = dataclasses.field(default_factory=dict)
  snapshot_names: list = dataclasses.field(default_factory=list)
  # Metric sums of an unfinished epoch, for a checkpoint taken mid-epoch.
  partial_sums: dict | None = None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EpochEnd:
  """What the loop does after one replica's epoch, as the callbacks decided it."""
  save_best: bool  # ModelCheckpoint: this epoch's state is the new best.
  learning_rate: float  # For the next epoch (ReduceLROnPlateau); the epoch's own if unchanged.
  snapshot: list[str]  # EarlyStoppings that keep this epoch's weights as their best.
  stopped_by: str | None  # The first EarlyStopping that stops training, if any.


class Callbacks:
  """One replica's Keras callbacks. EarlyStopping and ReduceLROnPlateau are built per
  fine-tuning phase (Keras builds new ones for each fit call); the best-checkpoint monitor spans
  the run."""

  def __init__(self, config, best: callbacks_lib.ModelCheckpointMonitor | None = None):
    """`config`: the run's (or phase's) config; `best`: the monitor to keep, if any."""
    self.stoppers, self.plateau = callbacks_lib.make_callbacks(config.callbacks)
    self.stopper_names = [name for name, _ in
                          callbacks_lib.early_stopping_entries(config.callbacks)]
    self.best = best or callbacks_lib.ModelCheckpointMonitor(config.checkpoint.monitor,
                                                             config.checkpoint.mode)

  def for_phase(self, phase_config) -> 'Callbacks':
    return Callbacks(phase_config, self.best)

  def on_epoch_end(self, epoch: int, logs: dict, learning_rate: float,
                   checkpointing_enabled: bool = True) -> EpochEnd:
    """Keras's on_epoch_end of every callback, in order, for 0-based `epoch`; `learning_rate`
    is the rate the epoch trained with (Keras's optimizer.learning_rate)."""
    save_best = (checkpointing_enabled and self.best.monitor in logs and
                 self.best.on_epoch_end(epoch, logs))
    new_lr = learning_rate
    if self.plateau is not None:
      new_lr = self.plateau.on_epoch_end(epoch, logs, learning_rate)
    callbacks_lib.early_stopping_on_epoch_end(self.stoppers, epoch, logs)
    pairs = list(zip(self.stopper_names, self.stoppers))
    return EpochEnd(save_best=save_best, learning_rate=new_lr,
                    snapshot=[name for name, s in pairs if s.snapshot_weights],
                    stopped_by=next((name for name, s in pairs if s.stop_training), None))

  def restore_at_train_end(self) -> tuple[str, int] | None:
    """(name, 0-based best epoch) of the EarlyStopping whose snapshot Keras loads when training
    ends (the last one that restores wins), or None."""
    index = callbacks_lib.best_weights_index(self.stoppers)
    if index is None:
      return None
    return self.stopper_names[index], self.stoppers[index].best_epoch

  def state_dict(self) -> dict:
    return {'early_stopping': {n: cb.state_dict() for n, cb in
                               zip(self.stopper_names, self.stoppers)},
            'reduce_lr_on_plateau': self.plateau.state_dict() if self.plateau else None,
            'model_checkpoint': self.best.state_dict()}

  def load_state_dict(self, states: dict) -> None:
    for name, callback in zip(self.stopper_names, self.stoppers):
      callback.load_state_dict(states['early_stopping'][name])
    if self.plateau:
      self.plateau.load_state_dict(states['reduce_lr_on_plateau'])
    self.best.load_state_dict(states['model_checkpoint'])


@dataclasses.dataclass
class Replica:
  """One replica's host side."""
  config: Any  # The single run it trains like (seeds.seed_config for one of several).
  directory: str  # Its run files: the workdir, or WORKDIR/seed_<i>.
  name: str  # For messages: '' for a single run, else e.g. 'seed 4'.
  callbacks: Callbacks
  checkpointer: Any  # Where its best checkpoint goes (checkpointing.Checkpointer), or None.
  record: RunState = dataclasses.field(default_factory=RunState)
  writer: Any = None  # Its TensorBoard writer while the loop runs.


def make_replicas(config, workdir: str, checkpointer) -> list[Replica]:
  """The replicas of a run of `config`: the run itself, or one per seed (own folders, and own
  checkpointers for their best epochs, as a single run saves them)."""
  if config.num_seeds == 1:
    return [Replica(config, workdir, '', Callbacks(config), checkpointer)]
  replicas = []
  for i in range(config.num_seeds):
    c, directory = seeds.seed_config(config, i), seeds.seed_dir(workdir, i)
    replicas.append(Replica(
        c, directory, f'seed {c.seed}', Callbacks(c),
        checkpointing.Checkpointer(directory) if config.checkpoint.enabled else None))
  return replicas


# --- The checkpoint's host state. ------------------------------------------------------------
# One replica: its record, with the run's epoch, time, snapshot names and partial sums (the
# format single runs have always written). Several: the run's record plus 'seeds', a list of the
# replicas' records.

def host_state(run: RunState, records: list[RunState]) -> dict:
  if len(records) == 1:
    record = records[0]
    return {**run.to_json(), 'history': record.history, 'stopped_by': record.stopped_by,
            'callbacks': record.callbacks}
  return {**run.to_json(), 'seeds': [record.to_json() for record in records]}


def from_host_state(host: dict, num_replicas: int) -> tuple[RunState, list[RunState]]:
  """(the run's record, the replicas' records) of a checkpoint's host state."""
  host = dict(host)
  if num_replicas == 1:
    return RunState(**host), [RunState(**host)]
  records = [RunState(**r) for r in host.pop('seeds')]
  return RunState(**host), records


def results(replica: Replica, test: dict, steps_run: int, setup) -> dict:
  """results.json of one replica (a single run's)."""
  history, config, summary = replica.record.history, replica.config, setup.summary
  monitor = 'val_accuracy' if history and 'val_accuracy' in history[0] else 'accuracy'
  best = max(history, key=lambda r: r[monitor]) if history else None
  return {
      'config': config.name,
      'test_accuracy': test['accuracy'],
      'test_loss': test['loss'],
      'epochs_run': len(history),
      'steps_run': steps_run,
      'best_epoch': best['epoch'] if best else None,
      f'best_{monitor}': best[monitor] if best else None,
      'stopped_by': replica.record.stopped_by,
      'train_seconds': round(replica.record.train_seconds, 3),
      'params': summary.total,
      'trainable_params': summary.trainable,
      'non_trainable_params': summary.non_trainable,
      'reported_test_accuracy': config.reported_test_accuracy,
      # What inference needs to feed raw images like training did: (x - mean) / std.
      'normalization': {'mean': list(setup.input_pipeline.mean),
                        'std': list(setup.input_pipeline.std)},
      'data_source': setup.splits.source,
      'num_train': len(setup.splits.train),
      'num_validation': len(setup.splits.validation or ()),
      'num_test': len(setup.splits.test),
      'device': f'{jax.devices()[0].platform} x{jax.device_count()}',
      'device_kind': jax.devices()[0].device_kind,
      # The arithmetic it trained in: matmul/convolution precision and compute dtype.
      'matmul_precision': config.model.matmul_precision,
      'dtype': config.model.dtype,
      # The CPU convolutions' weight-gradient form, and with 'tuned' the form of each shape.
      'conv_grad': conv.effective_mode(config.model.conv_grad),
      'conv_grad_choices': conv_tuning.choices(),
      # Whose convolution kernels CPU programs ran, and oneDNN's version where they were its.
      'conv_backend': config.model.conv_backend,
      'onednn_version': onednn_conv.version(),
      'jax_version': jax.__version__,
  }
