"""The training loop's callback handling against real Keras 3 `model.fit` traces.

tests/test_callbacks_keras_parity.py checks the deciders one by one; this drives the real loop
(`loop.Run.fit` then `restore_best_weights`, one replica and two) on a tiny model and Keras's
`fit` on a tiny model with the same callbacks: ModelCheckpoint(save_best_only), ReduceLROnPlateau
and two EarlyStoppings with restore_best_weights. The epoch logs are scripted on both sides
(the loop's metric means are replaced, Keras's logs rewritten by a first callback), so the two
must agree exactly on every decision: the learning rate each epoch trained with, the epochs the
best checkpoint was saved at, when and by whom training stopped, and which epoch's weights are
restored at the end (Keras: a marker kernel set to the epoch number; the loop: the params after
each epoch).
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from cifar_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
from cifar_jax.train import config_checks  # pylint: disable=g-import-not-at-top
from cifar_jax.train import loop  # pylint: disable=g-import-not-at-top
from cifar_jax.train import outputs  # pylint: disable=g-import-not-at-top
from configs import base  # pylint: disable=g-import-not-at-top
from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

EPOCHS = 9
LEARNING_RATE = 1e-3


def scripted(loss, accuracy, val_loss, val_accuracy):
  return [dict(loss=a, accuracy=b, val_loss=c, val_accuracy=d)
          for a, b, c, d in zip(loss, accuracy, val_loss, val_accuracy)]


# Replica 0 stops on val_loss (patience 2) at epoch 6 after two plateau reductions (the second
# onto min_lr); replica 1 never stops, yet Keras restores at the end of training: with the
# callbacks list [val_acc, val_loss] val_loss's best epoch (8), with [val_loss, val_acc]
# val_acc's (7), since the last callback that restores wins.
SCRIPTS = [
    scripted(loss=[2.0, 1.9, 1.9, 1.92, 1.7, 1.7, 1.71, 1.6, 1.5],
             accuracy=[0.1, 0.2, 0.25, 0.3, 0.3, 0.31, 0.4, 0.45, 0.5],
             val_loss=[2.1, 1.8, 1.85, 1.7, 1.75, 1.75, 1.2, 1.1, 1.0],
             val_accuracy=[0.1, 0.3, 0.3, 0.35, 0.2, 0.36, 0.5, 0.55, 0.6]),
    scripted(loss=[2.0, 1.8, 1.6, 1.65, 1.64, 1.5, 1.5, 1.5, 1.4],
             accuracy=[0.1, 0.3, 0.35, 0.35, 0.36, 0.4, 0.4, 0.41, 0.42],
             val_loss=[2.0, 1.7, 1.6, 1.5, 1.55, 1.4, 1.45, 1.3, 1.35],
             val_accuracy=[0.1, 0.3, 0.42, 0.40, 0.45, 0.41, 0.47, 0.46, 0.48]),
]


ORDERS = (('val_acc', 'val_loss'), ('val_loss', 'val_acc'))  # The second is not by name.
RESTORED_BY_REPLICA_1 = {ORDERS[0]: 8, ORDERS[1]: 7}


def callbacks_config(config, order):
  base.add_early_stopping(config, 'val_acc', 'val_accuracy', 3, min_delta=0.01,
                          restore_best_weights=True)
  base.add_early_stopping(config, 'val_loss', 'val_loss', 2, restore_best_weights=True)
  config.callbacks.early_stopping_order = order
  config.callbacks.reduce_lr_on_plateau.update(enabled=True, monitor='loss', patience=1,
                                               factor=0.5, cooldown=1, min_lr=3e-4,
                                               min_delta=0.0)
  config.checkpoint.monitor, config.checkpoint.mode = 'val_accuracy', 'max'
  return config


# --- Keras. ----------------------------------------------------------------------------------

class Script(keras.callbacks.Callback):
  """First in the list: replaces the epoch's logs by the script's, records the learning rate
  the epoch trained with and sets the kernel to the epoch number (the weights' name)."""

  def __init__(self, logs_seq):
    super().__init__()
    self.logs_seq = logs_seq
    self.learning_rates = []

  def on_epoch_end(self, epoch, logs=None):
    logs.clear()
    logs.update(self.logs_seq[epoch])
    self.learning_rates.append(float(np.asarray(self.model.optimizer.learning_rate)))
    self.model.set_weights([np.full((1, 1), epoch, np.float32), np.zeros(1, np.float32)])


def keras_trace(config, logs_seq, folder):
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE), loss='mse',
                metrics=['accuracy'])
  script = Script(logs_seq)
  plateau = config.callbacks.reduce_lr_on_plateau.to_dict()
  del plateau['enabled']
  entries = config.callbacks.early_stopping
  stoppers = {name: keras.callbacks.EarlyStopping(**{k: v for k, v in entries[name].items()
                                                     if v is not None})
              for name in config.callbacks.early_stopping_order}  # fit's list order.
  callbacks = [script,
               keras.callbacks.ModelCheckpoint(
                   os.path.join(folder, 'best_{epoch}.weights.h5'), save_weights_only=True,
                   monitor=config.checkpoint.monitor, mode=config.checkpoint.mode,
                   save_best_only=True),
               keras.callbacks.ReduceLROnPlateau(**plateau), *stoppers.values()]
  model.fit(np.zeros((4, 1)), np.zeros((4, 1)), batch_size=4, epochs=EPOCHS, verbose=0,
            callbacks=callbacks)
  epochs_run = len(script.learning_rates)
  stopped = [name for name, cb in stoppers.items()
             if model.stop_training and cb.stopped_epoch == epochs_run - 1]
  return dict(learning_rates=script.learning_rates,
              best_epochs=sorted(int(f.split('_')[1].split('.')[0]) for f in os.listdir(folder)),
              epochs_run=epochs_run, stopped_by=stopped[0] if stopped else None,
              restored_epoch=int(model.get_weights()[0][0, 0]) + 1)


# --- The loop. -------------------------------------------------------------------------------

class ScriptedProgram:
  """The run's device program, with the script's metric means instead of the measured ones."""

  def __init__(self, program, scripts):
    self.program, self.scripts, self.epoch = program, scripts, 0

  def __getattr__(self, name):
    return getattr(self.program, name)

  def means(self, sums):
    del sums
    self.epoch += 1  # The loop asks for the training means once per epoch, first.
    return [{k: s[self.epoch - 1][k] for k in ('loss', 'accuracy')} for s in self.scripts]

  def evaluate(self, state, batches):
    del state, batches
    return [{k: s[self.epoch - 1][f'val_{k}'] for k in ('loss', 'accuracy')}
            for s in self.scripts]


def loop_traces(config, scripts, workdir, monkeypatch):
  """Runs the loop with scripted logs; the same trace per replica as keras_trace."""
  run = loop.Run(config, workdir)
  run.program = ScriptedProgram(run.program, scripts)
  params_after = [[] for _ in scripts]  # Per replica, per epoch.
  saved_best = {}  # Folder -> steps.
  write_history = outputs.write_history
  save_best = checkpointing.Checkpointer.save_best

  def record_params(directory, rows):
    i = [r.directory for r in run.replicas].index(directory)
    params_after[i].append(jax.device_get(run.program.replica(run.state.params, i)))
    write_history(directory, rows)

  def record_best(checkpointer, step, state):
    saved_best.setdefault(os.path.dirname(checkpointer.directory), []).append(step)
    save_best(checkpointer, step, state)

  monkeypatch.setattr(outputs, 'write_history', record_params)
  monkeypatch.setattr(checkpointing.Checkpointer, 'save_best', record_best)
  try:
    run.fit()
    run.restore_best_weights()
    final = jax.device_get(run.state.params)
  finally:
    run.close()
  traces = []
  steps_per_epoch = run.plan.steps_per_epoch
  for i, replica in enumerate(run.replicas):
    history = replica.record.history
    params = run.program.replica(final, i)
    restored = [epoch + 1 for epoch, p in enumerate(params_after[i])
                if all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p),
                                                            jax.tree.leaves(params)))]
    assert len(restored) == 1, restored  # Every epoch's weights differ: one match.
    traces.append(dict(
        learning_rates=[row['learning_rate'] for row in history],
        best_epochs=[step // steps_per_epoch
                     for step in saved_best.get(os.path.abspath(replica.directory), [])],
        epochs_run=len(history), stopped_by=replica.record.stopped_by,
        restored_epoch=restored[0]))
  return traces


@pytest.mark.parametrize('order', ORDERS)
def test_callback_parity_cases_cover_what_they_claim(tmp_path, order):
  keras_traces = []
  for i, logs_seq in enumerate(SCRIPTS):
    os.makedirs(tmp_path / str(i))
    keras_traces.append(keras_trace(callbacks_config(tiny_config(), order), logs_seq,
                                    tmp_path / str(i)))
  # Replica 0: reduced twice (to the floor), stopped by val_loss; replica 1 runs to the end
  # and still gets the weights of a best epoch back; several best checkpoints.
  assert len(set(keras_traces[0]['learning_rates'])) == 3
  assert keras_traces[0]['stopped_by'] == 'val_loss' and keras_traces[0]['epochs_run'] < EPOCHS
  assert keras_traces[1]['stopped_by'] is None and keras_traces[1]['epochs_run'] == EPOCHS
  assert keras_traces[1]['restored_epoch'] == RESTORED_BY_REPLICA_1[order]
  assert all(len(t['best_epochs']) >= 3 for t in keras_traces)


@pytest.mark.parametrize('order', ORDERS)
@pytest.mark.parametrize('num_seeds', [1, 2])
def test_the_loop_makes_the_callback_decisions_of_keras_fit(synthetic_dir, tmp_path,
                                                            monkeypatch, num_seeds, order):
  config = callbacks_config(tiny_config(synthetic_dir, epochs=EPOCHS, steps_per_epoch=1), order)
  config.optim.learning_rate = LEARNING_RATE
  config.num_seeds = num_seeds
  scripts = SCRIPTS[:num_seeds]
  expected = []
  for i, logs_seq in enumerate(scripts):
    os.makedirs(tmp_path / f'keras_{i}')
    expected.append(keras_trace(config, logs_seq, tmp_path / f'keras_{i}'))
  got = loop_traces(config, scripts, str(tmp_path / 'run'), monkeypatch)
  assert got == expected


@pytest.mark.parametrize('order, message', [
    ((), r"\['val_acc', 'val_loss'\] all restore best weights .* set "
         r'callbacks.early_stopping_order'),
    (('val_loss',), r"early_stopping_order=\['val_loss'\] must name every .*entry once"),
    (('val_loss', 'val_acc', 'val_loss'), 'must name every'),
])
def test_a_config_must_order_the_stoppers_whose_weights_it_restores(synthetic_dir, order,
                                                                    message):
  """A ConfigDict sorts its keys, so without an order the restored weights would depend on the
  entries' names: refused up front, like any bad config."""
  config = callbacks_config(tiny_config(synthetic_dir), order)
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.check_config(config)
