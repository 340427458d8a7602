"""Keras 3 `EarlyStopping` and `ReduceLROnPlateau`, as host-side deciders for a JAX training loop.

The loop calls these between epochs, outside jit, with that epoch's logs (0-based `epoch`, Python
floats, as Keras passes them). They only decide: the loop owns the weights and the learning rate,
keeps a copy of the weights when told to (`snapshot_weights`) and loads it back when told to.

The semantics are those of keras/src/callbacks/{monitor_callback,early_stopping,
reduce_lr_on_plateau}.py in Keras 3.15.1 (tests/test_callbacks_keras_parity.py runs the real ones),
including the details that are easy to get wrong:

* Comparisons are float32. Keras compares with `ops.less`/`ops.greater`, which under the JAX
  backend turn both Python floats into float32 arrays after the float64 `current - min_delta`, so
  values equal in float32 are ties (no improvement).
* EarlyStopping increments `wait` before testing, so patience 0 and patience 1 behave alike, and
  it only stops on an epoch that is not an improvement: with a `baseline`, an epoch that improves
  on the best so far but not on the baseline keeps `wait` counting yet never stops training.
* ReduceLROnPlateau counts the cooldown down before testing, so `cooldown=1` holds nothing back.
  The learning rate lives in a float32 variable in Keras, so it is reduced only while
  float32(lr) > float32(min_lr), and a reduced rate is rounded to float32. Hence 1e-3 by 0.1 with
  min_lr=1e-4 is reduced twice: to just above float32(1e-4), then by one ulp onto it; the second
  reduction restarts `wait` and the cooldown like any other.
* Keras restores best weights in `on_train_end`, whether or not that callback stopped training.

Deliberate differences: a monitor missing from the logs raises a `KeyError` (Keras warns and skips
the epoch, so a misspelt monitor silently disables the callback); an unknown `mode` raises (Keras
warns and falls back to 'auto'); mode 'auto' is resolved at construction from the metric's name,
since there is no compiled Keras model to ask for the metric's direction.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_MODES = ('auto', 'min', 'max')

# The names Keras's accuracy metrics log under (`metrics=['accuracy']` logs 'accuracy'); Keras's
# mode 'auto' maximises them because the compiled metric has `_direction == 'up'`.
_MAXIMIZED_METRICS = frozenset({
    'accuracy', 'acc', 'binary_accuracy', 'categorical_accuracy', 'sparse_categorical_accuracy',
    'top_k_categorical_accuracy', 'sparse_top_k_categorical_accuracy'})


def _resolve_mode(owner: str, monitor: str, mode: str) -> str:
  """Returns 'min' or 'max', deciding 'auto' like Keras's MonitorCallback._set_monitor_op."""
  if mode not in _MODES:
    raise ValueError(f'{owner}: mode must be one of {_MODES}, got {mode!r}.')
  if mode != 'auto':
    return mode
  name = monitor.removeprefix('val_')
  if name == 'loss':
    return 'min'
  if name in _MAXIMIZED_METRICS:
    return 'max'
  raise ValueError(
      f"{owner}: mode='auto' cannot tell whether monitor={monitor!r} should be minimised or "
      "maximised; pass mode='min' or mode='max'.")


class _MonitorCallback:
  """Keras's MonitorCallback: reading the monitored value and deciding what is an improvement."""

  def __init__(self, monitor: str, mode: str, min_delta: float):
    self.monitor = monitor
    self.mode = _resolve_mode(type(self).__name__, monitor, mode)
    # Keras keeps |min_delta| and negates it when minimising, so that the improvement test is
    # `current - min_delta OP reference` in both modes.
    self.min_delta = abs(min_delta) if self.mode == 'max' else -abs(min_delta)

  def _is_improvement(self, current: float, reference: float | None) -> bool:
    if reference is None:
      return True
    lhs, rhs = np.float32(current - self.min_delta), np.float32(reference)
    return bool(lhs > rhs) if self.mode == 'max' else bool(lhs < rhs)

  def _monitor_value(self, logs: Mapping[str, float]) -> float:
    value = logs.get(self.monitor)
    if value is None:
      raise KeyError(
          f'{type(self).__name__} monitors {self.monitor!r}, which is not in the logs; '
          f'available: {sorted(logs)}.')
    return float(value)


def _load_state(obj: Any, state: Mapping[str, Any]) -> None:
  """Sets the attributes named by `obj.state_dict()` from `state`, insisting on the same keys."""
  expected = set(obj.state_dict())
  if set(state) != expected:
    raise ValueError(f'{type(obj).__name__}: state keys {sorted(state)} != {sorted(expected)}.')
  for key, value in state.items():
    setattr(obj, key, value)


class EarlyStopping(_MonitorCallback):
  """keras.callbacks.EarlyStopping; the loop keeps and restores the best weights.

  After each `on_epoch_end`:
    stop_training: training must stop now (stays True once set, like Keras's model.stop_training).
    snapshot_weights: keep a copy of this epoch's weights as this callback's best (Keras's
      `best_weights = model.get_weights()`); the copy is always from epoch `best_epoch`.
    restore_weights: True on the epoch this callback stops training, if it restores best weights.
  Keras also restores at the end of a run that this callback did not stop; `on_train_end()` (or
  `best_weights_index` for several callbacks) says when.
  """

  def __init__(self, monitor: str = 'val_loss', min_delta: float = 0.0, patience: int = 0,
               mode: str = 'auto', baseline: float | None = None,
               restore_best_weights: bool = False, start_from_epoch: int = 0):
    super().__init__(monitor, mode, min_delta)
    self.patience = patience
    self.baseline = baseline
    self.restore_best_weights = restore_best_weights
    self.start_from_epoch = start_from_epoch
    # What Keras's on_train_begin resets.
    self.best = None
    self.best_epoch = 0
    self.wait = 0
    self.stopped_epoch = 0
    self.has_snapshot = False  # Keras: `best_weights is not None`.
    self.stop_training = False
    self.snapshot_weights = False
    self.restore_weights = False

  def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
    self.snapshot_weights = self.restore_weights = False
    current = self._monitor_value(logs)
    if epoch < self.start_from_epoch:
      return
    if self.restore_best_weights and not self.has_snapshot:
      self._snapshot(epoch)  # Keras: with no snapshot yet, the current weights are the best.
    self.wait += 1
    if self._is_improvement(current, self.best):
      self.best = current
      self.best_epoch = epoch
      if self.restore_best_weights:
        self._snapshot(epoch)
      # Keras restarts the wait only on beating both the previous best and the baseline.
      if self.baseline is None or self._is_improvement(current, self.baseline):
        self.wait = 0
      return
    if self.wait >= self.patience and epoch > 0:
      self.stopped_epoch = epoch
      self.stop_training = True
      self.restore_weights = self.on_train_end()

  def on_train_end(self) -> bool:
    """Whether the loop must load this callback's snapshot when training ends, however it ends."""
    return self.restore_best_weights and self.has_snapshot

  def _snapshot(self, epoch: int) -> None:
    self.snapshot_weights = self.has_snapshot = True
    self.best_epoch = epoch

  def state_dict(self) -> dict[str, Any]:
    """The counters, JSON-serialisable (a NaN best is written as NaN); not the weights."""
    return dict(best=self.best, best_epoch=self.best_epoch, wait=self.wait,
                stopped_epoch=self.stopped_epoch, has_snapshot=self.has_snapshot,
                stop_training=self.stop_training)

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    _load_state(self, state)


class ReduceLROnPlateau(_MonitorCallback):
  """keras.callbacks.ReduceLROnPlateau; returns the learning rate rather than setting it.

  The monitor may be 'learning_rate': Keras adds the current rate to the logs before reading them.
  """

  def __init__(self, monitor: str = 'val_loss', factor: float = 0.1, patience: int = 10,
               mode: str = 'auto', min_delta: float = 1e-4, cooldown: int = 0,
               min_lr: float = 0.0):
    super().__init__(monitor, mode, min_delta)
    if factor >= 1.0:
      raise ValueError(f'ReduceLROnPlateau does not support a factor >= 1.0, got {factor}.')
    self.factor = factor
    self.patience = patience
    self.cooldown = cooldown
    self.min_lr = min_lr
    self.best = None
    self.wait = 0
    self.cooldown_counter = 0

  def in_cooldown(self) -> bool:
    return self.cooldown_counter > 0

  def on_epoch_end(self, epoch: int, logs: Mapping[str, float], learning_rate: float) -> float:
    """Returns the learning rate for the next epoch: `learning_rate` itself unless reduced."""
    del epoch  # Keras uses it only in its message.
    # Keras reads the rate back from the optimizer's float32 variable.
    lr = float(np.float32(learning_rate))
    current = self._monitor_value({**logs, 'learning_rate': lr})
    if self.in_cooldown():
      self.cooldown_counter -= 1
      self.wait = 0
    if self._is_improvement(current, self.best):
      self.best = current
      self.wait = 0
    elif not self.in_cooldown():
      self.wait += 1
      # At the floor Keras reduces nothing, so neither wait nor the cooldown restart.
      if self.wait >= self.patience and np.float32(lr) > np.float32(self.min_lr):
        self.cooldown_counter = self.cooldown
        self.wait = 0
        return float(np.float32(max(lr * self.factor, self.min_lr)))
    return float(learning_rate)

  def state_dict(self) -> dict[str, Any]:
    """The counters, JSON-serialisable (a NaN best is written as NaN)."""
    return dict(best=self.best, wait=self.wait, cooldown_counter=self.cooldown_counter)

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    _load_state(self, state)


class ModelCheckpointMonitor(_MonitorCallback):
  """The best-model decision of keras.callbacks.ModelCheckpoint(monitor, save_best_only=True,
  mode): an epoch is saved as best when it improves (float32, no min_delta) on the best so far."""

  def __init__(self, monitor: str = 'val_loss', mode: str = 'auto'):
    super().__init__(monitor, mode, 0.0)
    self.best = None

  def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> bool:
    """Returns whether this epoch's weights are the new best."""
    del epoch
    current = self._monitor_value(logs)
    if self._is_improvement(current, self.best):
      self.best = current
      return True
    return False

  def state_dict(self) -> dict[str, Any]:
    return {'best': self.best}

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    _load_state(self, state)


def early_stopping_on_epoch_end(callbacks: Sequence[EarlyStopping], epoch: int,
                                logs: Mapping[str, float]) -> bool:
  """Updates every callback and returns whether training stops (the first that fires stops it).

  Like Keras, all callbacks see the epoch even when an earlier one fires. The loop then keeps a
  snapshot for each callback whose `snapshot_weights` is set; callbacks snapshotting the same
  epoch can share one copy.
  """
  for callback in callbacks:
    callback.on_epoch_end(epoch, logs)
  return any(callback.stop_training for callback in callbacks)


def best_weights_index(callbacks: Sequence[EarlyStopping]) -> int | None:
  """Which callback's snapshot (taken at its `best_epoch`) to load when training ends, if any.

  Keras calls on_train_end on every callback in order and each that restores sets the weights,
  so the last one with a snapshot wins.
  """
  restoring = [i for i, callback in enumerate(callbacks) if callback.on_train_end()]
  return restoring[-1] if restoring else None


def early_stopping_entries(callbacks_config) -> list[tuple[str, Any]]:
  """The EarlyStopping entries of `config.callbacks` as (name, entry), in the order of Keras's
  `fit(callbacks=[...])`: `early_stopping_order`, or by name (ConfigDict's order) when it is
  empty.

  The order decides one thing, which snapshot `best_weights_index` loads when several restore
  best weights (the last). A ConfigDict keeps no insertion order, so with two such entries the
  config must give the order: by name, arquitecturas' [val_loss, val_accuracy] would evaluate
  val_loss's best epoch instead of val_accuracy's.
  """
  entries = callbacks_config.early_stopping
  order = tuple(callbacks_config.early_stopping_order)
  if order and sorted(order) != sorted(entries.keys()):
    raise ValueError(f'callbacks.early_stopping_order={list(order)} must name every '
                     f'callbacks.early_stopping entry once: {sorted(entries.keys())}')
  restoring = [name for name, entry in entries.items() if entry.restore_best_weights]
  if len(restoring) > 1 and not order:
    raise ValueError(f'callbacks.early_stopping: {restoring} all restore best weights and Keras '
                     "evaluates the last one's in fit's callbacks list: set "
                     'callbacks.early_stopping_order to that list, e.g. '
                     f'"{tuple(restoring)}"')
  return [(name, entries[name]) for name in order or entries.keys()]


def make_callbacks(callbacks_config) -> tuple[list[EarlyStopping], ReduceLROnPlateau | None]:
  """Builds the callbacks described by `config.callbacks` (see configs/base.py); the
  EarlyStoppings in fit's list order (`early_stopping_entries`)."""
  early_stopping = []
  for name, entry in early_stopping_entries(callbacks_config):
    try:
      early_stopping.append(EarlyStopping(**entry.to_dict()))
    except (TypeError, ValueError) as e:
      raise ValueError(f'callbacks.early_stopping.{name}: {e}') from e
  kwargs = callbacks_config.reduce_lr_on_plateau.to_dict()
  if not kwargs.pop('enabled'):
    return early_stopping, None
  try:
    return early_stopping, ReduceLROnPlateau(**kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f'callbacks.reduce_lr_on_plateau: {e}') from e
