"""Parity of cifar_jax.train.callbacks with the real Keras 3 callbacks, epoch by epoch.

Keras's callbacks are driven by hand on a tiny compiled model: before each epoch the model's kernel
is set to the epoch number, so the kernel Keras snapshots (`best_weights`) and restores names the
epoch it was taken at. Ours are driven with the same logs, and the loop's side (keeping and
restoring snapshots, carrying the learning rate) is played by the drivers below, through the
helpers the loop calls (callbacks.early_stopping_on_epoch_end and best_weights_index, via
replicas.Callbacks). tests/test_loop_callbacks_keras.py checks the loop itself against fit.
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import json
import math

import keras
import numpy as np
import pytest

from cifar_jax.train import callbacks as cbs
from configs import base

# Keras 3.15 trips over numpy 2's __array__ copy keyword thousands of times; it is harmless here.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

KEYS = ('loss', 'accuracy', 'val_loss', 'val_accuracy')


@pytest.fixture(scope='module')
def model():
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3), loss='mse',
                metrics=['accuracy'])
  # One step builds the compiled 'accuracy' metric, which Keras's mode='auto' looks up.
  model.train_on_batch(np.zeros((1, 1)), np.zeros((1, 1)))
  return model


def _canon(value):
  """NaN-aware equality for traces: NaN != NaN, so compare its name instead."""
  if isinstance(value, float) and math.isnan(value):
    return 'nan'
  if isinstance(value, (list, tuple)):
    return [_canon(v) for v in value]
  if isinstance(value, dict):
    return {k: _canon(v) for k, v in value.items()}
  return value


def _float32(lr):
  return float(np.float32(lr))


# EarlyStopping.


def _es_row(cb, snapshot):
  return dict(best=cb.best, best_epoch=cb.best_epoch, wait=cb.wait,
              stopped_epoch=cb.stopped_epoch, snapshot=snapshot)


def keras_early_stopping(model, kwargs_list, logs_seq):
  """Runs Keras EarlyStoppings like fit(): all see each epoch, then the loop checks the stop."""
  callbacks = [keras.callbacks.EarlyStopping(**kwargs) for kwargs in kwargs_list]
  model.stop_training = False
  for cb in callbacks:
    cb.set_model(model)
    cb.on_train_begin()
  trace = []
  for epoch, logs in enumerate(logs_seq):
    model.set_weights([np.full((1, 1), epoch, np.float32), np.zeros(1, np.float32)])
    rows = []
    for cb in callbacks:
      cb.on_epoch_end(epoch, dict(logs))
      snapshot = None if cb.best_weights is None else int(cb.best_weights[0][0, 0])
      rows.append(_es_row(cb, snapshot))
    trace.append(dict(rows=rows, stop=bool(model.stop_training)))
    if model.stop_training:
      break
  for cb in callbacks:
    cb.on_train_end()
  return trace, int(model.get_weights()[0][0, 0])


def ours_early_stopping(kwargs_list, logs_seq, callbacks=None, start_epoch=0, snapshots=None):
  """Same as keras_early_stopping, for ours; the 'weights' are the epoch number.

  `callbacks`, `start_epoch` and `snapshots` continue an earlier run (for resume tests).
  """
  callbacks = callbacks or [cbs.EarlyStopping(**kwargs) for kwargs in kwargs_list]
  snapshots = dict(snapshots or {})  # callback index -> epoch of its snapshot
  trace = []
  weights = start_epoch - 1
  for epoch in range(start_epoch, len(logs_seq)):
    weights = epoch
    stop = cbs.early_stopping_on_epoch_end(callbacks, epoch, logs_seq[epoch])
    rows = []
    for i, cb in enumerate(callbacks):
      if cb.snapshot_weights:
        snapshots[i] = epoch
      # A callback that fires this epoch asks for a restore exactly when Keras's would restore.
      fired = cb.stop_training and cb.stopped_epoch == epoch
      assert cb.restore_weights == (fired and cb.restore_best_weights)
      # The documented invariant: a snapshot is always from the callback's best_epoch.
      assert i not in snapshots or snapshots[i] == cb.best_epoch
      rows.append(_es_row(cb, snapshots.get(i)))
    trace.append(dict(rows=rows, stop=stop))
    if stop:
      break
  index = cbs.best_weights_index(callbacks)
  if index is not None:
    weights = snapshots[index]
  return trace, weights


def assert_es_parity(model, kwargs_list, logs_seq):
  expected = keras_early_stopping(model, kwargs_list, logs_seq)
  got = ours_early_stopping(kwargs_list, logs_seq)
  assert _canon(got) == _canon(expected), (kwargs_list, logs_seq)
  return got


def _seq(monitor, values):
  """Logs carrying `values` under `monitor` and filler under the other keys."""
  return [{**{k: 0.5 for k in KEYS}, monitor: float(v)} for v in values]


def _stop_epoch(trace):
  return len(trace) - 1 if trace[-1]['stop'] else None


@pytest.mark.parametrize('kwargs, monitor, values, stop_epoch', [
    # Patience 0 and 1 are the same: `wait` is incremented before it is compared.
    (dict(monitor='val_loss', patience=0), 'val_loss', [1.0, 0.9, 0.95, 0.8], 2),
    (dict(monitor='val_loss', patience=1), 'val_loss', [1.0, 0.9, 0.95, 0.8], 2),
    (dict(monitor='val_loss', patience=3), 'val_loss', [1.0, 0.9, 0.95, 0.92, 0.91, 0.8], 4),
    (dict(monitor='loss', patience=2), 'loss', [1.0, 1.0, 1.0, 0.5], 2),  # Ties don't improve.
    (dict(monitor='val_accuracy', patience=1), 'val_accuracy', [0.1, 0.2, 0.15, 0.3], 2),
    (dict(monitor='accuracy', patience=2), 'accuracy', [0.5, 0.4, 0.3, 0.6], 2),
    (dict(monitor='val_accuracy', mode='min', patience=1), 'val_accuracy', [0.5, 0.6], 1),
    (dict(monitor='val_loss', mode='max', patience=1), 'val_loss', [0.5, 0.6, 0.4], 2),
    # |min_delta|: 0.995 is not 0.01 better than 1.0, nor is 0.99 (a float32 tie at the edge).
    (dict(monitor='val_loss', patience=2, min_delta=0.01), 'val_loss', [1.0, 0.995, 0.99, 0.9],
     2),
    (dict(monitor='val_loss', patience=2, min_delta=-0.01), 'val_loss', [1.0, 0.995, 0.99, 0.9],
     2),
    (dict(monitor='val_accuracy', patience=1, min_delta=0.05), 'val_accuracy', [0.5, 0.54, 0.6],
     1),
    # A value that improves on the best but not on the baseline never stops training, yet keeps
    # `wait` counting, so the first non-improvement afterwards stops it.
    (dict(monitor='val_accuracy', patience=2, baseline=0.5), 'val_accuracy',
     [0.1, 0.2, 0.3, 0.4, 0.35], 4),
    (dict(monitor='val_accuracy', patience=2, baseline=0.5), 'val_accuracy',
     [0.1, 0.6, 0.55, 0.58, 0.5], 3),
    (dict(monitor='val_loss', patience=1, baseline=0.5, restore_best_weights=True), 'val_loss',
     [1.0, 1.1, 0.9], 1),
    (dict(monitor='val_loss', patience=1, start_from_epoch=2), 'val_loss',
     [1.0, 2.0, 3.0, 4.0, 5.0], 3),
    (dict(monitor='val_loss', patience=2, restore_best_weights=True), 'val_loss',
     [1.0, 0.5, 0.7, 0.6, 0.4], 3),
    (dict(monitor='val_loss', patience=2, restore_best_weights=True, start_from_epoch=1),
     'val_loss', [0.1, 0.5, 0.7, 0.6], 3),
    # Never stops, but Keras restores the best weights at the end of training all the same.
    (dict(monitor='val_loss', patience=5, restore_best_weights=True), 'val_loss',
     [1.0, 0.5, 0.7, 0.6], None),
    # Comparisons are float32: 0.1 - 1e-10 is below 0.1 in float64 but equal in float32.
    (dict(monitor='val_loss', patience=1), 'val_loss', [0.1, 0.1 - 1e-10], 1),
    # NaN is the first best, and nothing compares better than NaN.
    (dict(monitor='val_loss', patience=1), 'val_loss', [float('nan'), 0.1], 1),
])
def test_early_stopping_cases(model, kwargs, monitor, values, stop_epoch):
  trace, _ = assert_es_parity(model, [kwargs], _seq(monitor, values))
  assert _stop_epoch(trace) == stop_epoch


def test_restore_best_weights_restores_the_best_epoch(model):
  kwargs = dict(monitor='val_loss', patience=2, restore_best_weights=True)
  trace, weights = assert_es_parity(model, [kwargs], _seq('val_loss', [1.0, 0.5, 0.7, 0.6]))
  assert [row['rows'][0]['snapshot'] for row in trace] == [0, 1, 1, 1]
  assert weights == 1


def test_resume_with_a_best_but_no_snapshot_snapshots_next_epoch(model):
  # E.g. restore_best_weights switched on when resuming: Keras snapshots the next monitored epoch
  # even though it is no improvement.
  kwargs = dict(monitor='val_loss', patience=3, restore_best_weights=True)
  keras_cb = keras.callbacks.EarlyStopping(**kwargs)
  keras_cb.set_model(model)
  keras_cb.on_train_begin()
  keras_cb.best = 0.5
  model.set_weights([np.full((1, 1), 7, np.float32), np.zeros(1, np.float32)])
  keras_cb.on_epoch_end(7, dict(val_loss=0.9))
  ours = cbs.EarlyStopping(**kwargs)
  ours.load_state_dict({**ours.state_dict(), 'best': 0.5})
  ours.on_epoch_end(7, dict(val_loss=0.9))
  assert ours.snapshot_weights and keras_cb.best_weights[0][0, 0] == 7
  assert _es_row(ours, 7) == _es_row(keras_cb, 7)


def test_several_early_stoppings_first_fires_last_restore_wins(model):
  kwargs_list = [dict(monitor='val_loss', patience=1, restore_best_weights=True),
                 dict(monitor='val_accuracy', patience=5, restore_best_weights=True)]
  logs_seq = [dict(loss=1.0, accuracy=0.1, val_loss=1.0, val_accuracy=0.1),
              dict(loss=1.0, accuracy=0.1, val_loss=0.8, val_accuracy=0.3),
              dict(loss=1.0, accuracy=0.1, val_loss=0.9, val_accuracy=0.2)]
  trace, weights = assert_es_parity(model, kwargs_list, logs_seq)
  assert _stop_epoch(trace) == 2
  assert weights == 1


# ReduceLROnPlateau.


def keras_reduce_lr(model, kwargs, logs_seq, lr0):
  cb = keras.callbacks.ReduceLROnPlateau(**kwargs)
  cb.set_model(model)
  model.optimizer.learning_rate = lr0
  cb.on_train_begin()
  trace = []
  for epoch, logs in enumerate(logs_seq):
    cb.on_epoch_end(epoch, dict(logs))
    lr = float(np.asarray(model.optimizer.learning_rate))
    trace.append(dict(lr=lr, best=cb.best, wait=cb.wait, cooldown_counter=cb.cooldown_counter))
  return trace


def ours_reduce_lr(kwargs, logs_seq, lr0, cb=None, start_epoch=0):
  cb = cb or cbs.ReduceLROnPlateau(**kwargs)
  trace = []
  lr = lr0
  for epoch in range(start_epoch, len(logs_seq)):
    new_lr = cb.on_epoch_end(epoch, logs_seq[epoch], lr)
    # A reduced rate is already what Keras's float32 variable would hold.
    assert new_lr == lr or new_lr == _float32(new_lr)
    lr = new_lr
    # The loop trains in float32, like Keras's learning-rate variable.
    trace.append(dict(lr=_float32(lr), best=cb.best, wait=cb.wait,
                      cooldown_counter=cb.cooldown_counter))
  return trace


def assert_rlr_parity(model, kwargs, logs_seq, lr0):
  expected = keras_reduce_lr(model, kwargs, logs_seq, lr0)
  got = ours_reduce_lr(kwargs, logs_seq, lr0)
  assert _canon(got) == _canon(expected), (kwargs, lr0, logs_seq)
  return [row['lr'] for row in got]


def test_min_lr_floor_takes_a_second_one_ulp_reduction(model):
  # exp2: from 1e-3 by 0.1 with min_lr=1e-4. float32(1e-3) * 0.1 rounds to the float32 just above
  # 1e-4, which is still > float32(min_lr), so Keras "reduces" once more, by one ulp, to
  # float32(1e-4), restarting wait (and the cooldown) as any reduction does; then it stops.
  kwargs = dict(monitor='val_loss', factor=0.1, patience=1, min_lr=1e-4, cooldown=1)
  lrs = assert_rlr_parity(model, kwargs, _seq('val_loss', [1.0] * 6), 1e-3)
  first = _float32(_float32(1e-3) * 0.1)
  assert first > _float32(1e-4)
  assert lrs == [_float32(1e-3), first] + [_float32(1e-4)] * 4


def test_cooldown_one_holds_nothing_back(model):
  logs_seq = _seq('val_loss', [1.0] * 8)
  lrs = {cooldown: assert_rlr_parity(model, dict(factor=0.5, patience=1, cooldown=cooldown),
                                     logs_seq, 1.0)
         for cooldown in (0, 1, 2)}
  assert lrs[0] == lrs[1] == [0.5 ** k for k in range(8)]
  assert lrs[2] == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625]


@pytest.mark.parametrize('kwargs, monitor, values', [
    (dict(monitor='val_loss', patience=0), 'val_loss', [1.0, 1.0, 0.5, 0.6]),
    (dict(monitor='val_accuracy', patience=2, factor=0.5), 'val_accuracy',
     [0.1, 0.2, 0.2, 0.2, 0.1, 0.3, 0.3]),
    (dict(monitor='accuracy', mode='max', patience=1, min_delta=0.05), 'accuracy',
     [0.1, 0.14, 0.2, 0.24, 0.25]),
    (dict(monitor='loss', patience=1, cooldown=2, factor=0.2), 'loss', [1.0] * 9),
    (dict(monitor='val_loss', patience=1, min_delta=-0.1), 'val_loss', [1.0, 0.95, 0.85, 0.8]),
    (dict(monitor='val_loss', patience=1, min_lr=0.05, factor=0.5), 'val_loss', [1.0] * 8),
    # Keras adds the current rate to the logs, so it can be monitored.
    (dict(monitor='learning_rate', mode='min', patience=1, factor=0.5), 'val_loss', [1.0] * 4),
])
def test_reduce_lr_cases(model, kwargs, monitor, values):
  assert_rlr_parity(model, kwargs, _seq(monitor, values), 0.1)


# Randomised sequences.


def random_logs(rng, length):
  """Random walks for the four keys, rounded so that plateaus and ties are common."""
  logs_seq = [{} for _ in range(length)]
  for key in KEYS:
    start = rng.uniform(0.5, 2.0) if key.endswith('loss') else rng.uniform(0.0, 0.5)
    drift = rng.choice([-0.05, 0.0, 0.05]) * (1 if key.endswith('accuracy') else -1)
    walk = start + np.cumsum(drift + rng.normal(0, rng.choice([0.0, 0.01, 0.05]), length))
    walk = np.round(walk, rng.choice([1, 2, 3, 8]))
    if rng.random() < 0.5:  # Values the loop reports are float32s.
      walk = walk.astype(np.float32)
    if rng.random() < 0.05:
      walk[rng.integers(length)] = np.nan
    for logs, value in zip(logs_seq, walk):
      logs[key] = float(value)
  return logs_seq


def random_es_kwargs(rng, logs_seq):
  monitor = str(rng.choice(KEYS))
  values = [logs[monitor] for logs in logs_seq]
  return dict(
      monitor=monitor,
      mode=str(rng.choice(['auto', 'auto', 'min', 'max'])),
      min_delta=float(rng.choice([0.0, 0.0, 1e-4, 0.01, -0.02])),
      patience=int(rng.integers(0, 5)),
      baseline=None if rng.random() < 0.6 else float(rng.choice(values)) + rng.choice([0, 0.01]),
      restore_best_weights=bool(rng.random() < 0.5),
      start_from_epoch=int(rng.choice([0, 0, 1, 3])))


def random_rlr_kwargs(rng, lr0):
  factor = float(rng.choice([0.1, 0.2, 0.5, 0.0]))
  return dict(
      monitor=str(rng.choice(KEYS)),
      mode=str(rng.choice(['auto', 'auto', 'min', 'max'])),
      factor=factor,
      patience=int(rng.integers(0, 4)),
      min_delta=float(rng.choice([1e-4, 0.0, 0.01, -0.005])),
      cooldown=int(rng.integers(0, 4)),
      min_lr=float(rng.choice([0.0, 1e-5, lr0 * 0.1, lr0 * factor ** 2, lr0])))


def test_random_sequences_early_stopping(model):
  rng = np.random.default_rng(0)
  stops = 0
  for _ in range(400):
    logs_seq = random_logs(rng, int(rng.integers(1, 25)))
    kwargs_list = [random_es_kwargs(rng, logs_seq) for _ in range(rng.choice([1, 1, 2, 3]))]
    trace, _ = assert_es_parity(model, kwargs_list, logs_seq)
    stops += _stop_epoch(trace) is not None
  assert 80 < stops < 380  # The sequences exercise both outcomes.


def test_random_sequences_reduce_lr(model):
  rng = np.random.default_rng(1)
  reductions = 0
  for _ in range(400):
    logs_seq = random_logs(rng, int(rng.integers(1, 25)))
    lr0 = float(rng.choice([1e-3, 1e-2, 0.1, 3e-4]))
    lrs = assert_rlr_parity(model, random_rlr_kwargs(rng, lr0), logs_seq, lr0)
    reductions += lrs[-1] != _float32(lr0)
  assert 80 < reductions < 380


# Resume.


def test_state_dict_round_trip_continues_identically():
  rng = np.random.default_rng(2)
  for _ in range(100):
    logs_seq = random_logs(rng, int(rng.integers(2, 25)))
    split = int(rng.integers(1, len(logs_seq)))

    kwargs_list = [random_es_kwargs(rng, logs_seq) for _ in range(2)]
    straight = ours_early_stopping(kwargs_list, logs_seq)
    callbacks = [cbs.EarlyStopping(**kwargs) for kwargs in kwargs_list]
    first, _ = ours_early_stopping(None, logs_seq[:split], callbacks=callbacks)
    if not first[-1]['stop']:
      resumed = [cbs.EarlyStopping(**kwargs) for kwargs in kwargs_list]
      for old, new in zip(callbacks, resumed):
        new.load_state_dict(json.loads(json.dumps(old.state_dict())))
      snapshots = {i: cb.best_epoch for i, cb in enumerate(callbacks) if cb.has_snapshot}
      rest = ours_early_stopping(None, logs_seq, callbacks=resumed, start_epoch=split,
                                 snapshots=snapshots)
      assert _canon((first + rest[0], rest[1])) == _canon(straight)

    lr0 = 0.01
    kwargs = random_rlr_kwargs(rng, lr0)
    straight = ours_reduce_lr(kwargs, logs_seq, lr0)
    old = cbs.ReduceLROnPlateau(**kwargs)
    first = ours_reduce_lr(None, logs_seq[:split], lr0, cb=old)
    new = cbs.ReduceLROnPlateau(**kwargs)
    new.load_state_dict(json.loads(json.dumps(old.state_dict())))
    rest = ours_reduce_lr(None, logs_seq, first[-1]['lr'], cb=new, start_epoch=split)
    assert _canon(first + rest) == _canon(straight)


def test_load_state_dict_rejects_other_keys():
  with pytest.raises(ValueError, match='state keys'):
    cbs.EarlyStopping().load_state_dict(dict(best=1.0))


# Errors.


def test_missing_monitor_raises_naming_it_and_the_available_keys(model):
  logs = dict(loss=1.0, val_loss=1.0)
  with pytest.raises(KeyError, match=r"'val_acc'.*\['loss', 'val_loss'\]"):
    cbs.EarlyStopping(monitor='val_acc', mode='max').on_epoch_end(0, logs)
  with pytest.raises(KeyError, match=r"'val_acc'.*'learning_rate'"):
    cbs.ReduceLROnPlateau(monitor='val_acc', mode='max').on_epoch_end(0, logs, 0.1)
  # Where Keras only warns and carries on without ever stopping.
  keras_cb = keras.callbacks.EarlyStopping(monitor='val_acc', mode='max')
  keras_cb.set_model(model)
  keras_cb.on_train_begin()
  with pytest.warns(UserWarning, match='val_acc'):
    keras_cb.on_epoch_end(0, logs)


@pytest.mark.parametrize('make', [
    lambda: cbs.EarlyStopping(monitor='val_f1'),  # mode='auto' can't tell the direction.
    lambda: cbs.ReduceLROnPlateau(monitor='learning_rate'),
    lambda: cbs.EarlyStopping(mode='maximum'),
    lambda: cbs.ReduceLROnPlateau(factor=1.0),
])
def test_invalid_arguments_raise(make):
  with pytest.raises(ValueError):
    make()


def test_keras_also_rejects_auto_for_unknown_metrics(model):
  keras_cb = keras.callbacks.EarlyStopping(monitor='val_f1')
  keras_cb.set_model(model)
  keras_cb.on_train_begin()
  with pytest.raises(ValueError, match='val_f1'):
    keras_cb.on_epoch_end(0, dict(val_f1=0.5))


# Config.


def test_make_callbacks_from_config():
  config = base.get_config()
  assert cbs.make_callbacks(config.callbacks) == ([], None)

  base.add_early_stopping(config, 'b_loss', 'val_loss', 3, restore_best_weights=True)
  base.add_early_stopping(config, 'a_acc', 'val_accuracy', 5, baseline=0.4, start_from_epoch=2)
  config.callbacks.reduce_lr_on_plateau.enabled = True
  config.callbacks.reduce_lr_on_plateau.min_lr = 1e-4
  early_stopping, reduce_lr = cbs.make_callbacks(config.callbacks)
  assert [(cb.monitor, cb.mode, cb.patience, cb.baseline, cb.restore_best_weights,
           cb.start_from_epoch) for cb in early_stopping] == [
               ('val_accuracy', 'max', 5, 0.4, False, 2), ('val_loss', 'min', 3, None, True, 0)]
  assert (reduce_lr.monitor, reduce_lr.factor, reduce_lr.patience, reduce_lr.min_delta,
          reduce_lr.min_lr) == ('val_loss', 0.1, 10, -1e-4, 1e-4)

  config.callbacks.reduce_lr_on_plateau.factor = 2.0
  with pytest.raises(ValueError, match='reduce_lr_on_plateau.*factor'):
    cbs.make_callbacks(config.callbacks)
  config.callbacks.early_stopping.a_acc.mode = 'up'
  with pytest.raises(ValueError, match='early_stopping.a_acc.*mode'):
    cbs.make_callbacks(config.callbacks)
