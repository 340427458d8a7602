"""progbar_loss / progbar_accuracy: an epoch's train metrics as the reports' Keras 3 printed them.

Keras 3 releases of the reports' time (3.3 to 3.8 read alike) showed fit's train metrics through
a progress bar that averaged, over the epoch's steps, the running means the metrics already
were, and at the epoch's end added the epoch's mean once more (keras-team/keras#20212). p2cnn's
logs print those numbers; History kept the plain epoch means. The loop accumulates both
(steps.accumulate_on_batch) and programs.means turns them into logs; here they are checked
against Keras's own Progbar fed the same running means in the same calls.
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from cifar_jax.train import programs  # pylint: disable=g-import-not-at-top
from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
from tests.conftest import tiny_config, tiny_state  # pylint: disable=g-import-not-at-top

BATCH = 8


def _epoch(num_images):
  """One epoch of tiny_config's real train step over `num_images` in batches of BATCH (the last
  smaller): the running (loss, accuracy) after each step, and the epoch's logs."""
  state, images, labels = tiny_state(tiny_config(), num_images=num_images)
  accumulate = jax.jit(steps.accumulate_on_batch)
  sums, first_nonfinite = steps.zero_sums(state.step), steps.no_nonfinite_step(state.step)
  running = []
  for start in range(0, num_images, BATCH):
    batch = {'image': images[start:start + BATCH], 'label': labels[start:start + BATCH]}
    state, sums, first_nonfinite = accumulate(state, batch, sums, first_nonfinite)
    done = jax.device_get(sums)
    running.append((done['loss'] / done['count'], done['correct'] / done['count']))
  return running, programs.means(jax.device_get(sums))


def _keras_progress_bar(running):
  """What the Keras 3 of the reports printed at the epoch's end: ProgbarLogger updated its
  Progbar after every batch with the running means (finalize=False), then at on_epoch_end with
  the epoch's logs (finalize=True), which those releases averaged like any other update
  (value_base = max(target - seen, 1) = 1). Today's Progbar shows a finalize update as is, so
  that last update is made here with finalize=False: the reports' arithmetic, Keras's code."""
  bar = keras.utils.Progbar(target=len(running), verbose=0)
  for step, (loss, accuracy) in enumerate(running, start=1):
    bar.update(step, [('loss', loss), ('accuracy', accuracy)], finalize=False)
  bar.update(len(running), [('loss', running[-1][0]), ('accuracy', running[-1][1])],
             finalize=False)
  return {key: total / count for key, (total, count) in bar._values.items()}  # pylint: disable=protected-access


def test_progbar_metrics_are_what_keras_progress_bar_printed():
  running, logs = _epoch(num_images=6 * BATCH + 3)
  shown = _keras_progress_bar(running)
  assert logs['progbar_loss'] == pytest.approx(shown['loss'], rel=1e-5)
  assert logs['progbar_accuracy'] == pytest.approx(shown['accuracy'], rel=1e-5, abs=1e-6)
  # The plain epoch means are the last running means (History's numbers), and differ.
  np.testing.assert_allclose([logs['loss'], logs['accuracy']], running[-1], rtol=1e-5)
  assert abs(logs['progbar_loss'] - logs['loss']) > 1e-4


def test_a_one_step_epoch_prints_its_mean():
  running, logs = _epoch(num_images=BATCH)
  assert logs['progbar_loss'] == pytest.approx(logs['loss'], rel=1e-6)
  assert logs['progbar_accuracy'] == pytest.approx(logs['accuracy'], rel=1e-6)
