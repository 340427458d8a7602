"""benchmarks/keras_run.py: a config's whole fit in the real Keras 3 (here on jax), on the tiny
config and synthetic data."""

import json
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))

import keras_run  # pylint: disable=g-import-not-at-top
import suite  # pylint: disable=g-import-not-at-top
from cifar_jax.report import records as records_lib  # pylint: disable=g-import-not-at-top


def test_a_whole_fit_is_written_with_its_history_stop_and_test(synthetic_dir, tmp_path):
  out = tmp_path / 'run.json'
  assert keras_run.main(['--config=tests/tiny_config.py', f'--data_dir={synthetic_dir}',
                         '--seed=3', '--epochs=2', f'--results={tmp_path / "none"}',
                         f'--out={out}']) == 0
  run = json.loads(out.read_text())
  assert (run['schema'], run['config'], run['seed']) == (keras_run.SCHEMA, 'tiny', 3)
  assert run['epochs_run'] == 2 and run['early_stopping'] == []
  assert all(len(values) == 2 for values in run['history'].values())
  assert {'loss', 'accuracy', 'val_loss', 'val_accuracy'} <= set(run['history'])
  assert 0 <= run['test_accuracy'] <= 1 and run['test_loss'] > 0
  assert run['best_val_accuracy'] == max(run['history']['val_accuracy'])
  # The tiny config's split of the synthetic data, checksummed as a record's is.
  assert (run['data']['train'], run['data']['validation'], run['data']['test']) == (240, 60, 70)
  assert run['data']['checksum'] == records_lib.data_checksum(
      str(pathlib.Path(synthetic_dir) / 'cifar-10-batches-bin'))
  assert run['cifar_jax'] == {'records': [], 'mean_test_accuracy': None}
  assert run['machine']['commit'] and run['epochs_limit'] == 2
  # --refresh sets the same run beside the records as they are now, and changes nothing else.
  before = dict(run)
  assert keras_run.main(['--refresh', f'--results={tmp_path / "none"}', f'--out={out}']) == 0
  assert json.loads(out.read_text()) == before


def test_curves_are_compared_over_the_epochs_both_ran():
  keras = {'loss': [2.0, 1.0, 0.5], 'accuracy': [0.1, 0.5, 0.7],
           'val_loss': [2.0, 1.5, 1.4], 'val_accuracy': [0.2, 0.4, 0.6]}
  record = {'history': {'loss': [2.5, 1.0], 'accuracy': [0.2, 0.4],
                        'val_loss': [2.0, 2.0], 'val_accuracy': [0.2, 0.4]}}
  differences = keras_run.curve_differences(keras, record)
  assert differences == pytest.approx({'epochs': 2, 'loss': 0.25, 'accuracy': 0.1,
                                       'val_loss': 0.25, 'val_accuracy': 0.0})


def test_stoppers_go_to_keras_in_the_reports_list_order():
  """arquitecturas' callbacks=[callback_val_loss, callback_val_accuracy]: both restore, so the
  order decides which best epoch the test sees."""
  config = suite.load_config('configs/arquitecturas/a2.py', '')
  callbacks = keras_run.keras_callbacks(config)
  assert [(c.monitor, c.patience, c.restore_best_weights) for c in callbacks] == [
      ('val_loss', 10, True), ('val_accuracy', 10, True)]


@pytest.mark.parametrize('override, reason', [
    (dict(schedule='cosine'), "optim.schedule.name='cosine'"),
    (dict(steps_per_epoch=5), 'train.steps_per_epoch'),
])
def test_training_a_plain_fit_cannot_express_is_refused(override, reason):
  config = suite.load_config('tests/tiny_config.py', '')
  config.optim.schedule.name = override.get('schedule', 'constant')
  config.train.steps_per_epoch = override.get('steps_per_epoch', 0)
  assert reason in keras_run.refusal(config)
  assert keras_run.refusal(suite.load_config('tests/tiny_config.py', '')) == ''
