"""The reports' per-epoch logs: the parser on Keras's wrapped, markdown-escaped output, the
committed data file against the report texts, which config each log belongs to, the comparison
with a run, and the report's curves drawn on a run's."""

import json

import pytest

from cifar_jax.report import curves
from cifar_jax.report import figures
from cifar_jax.report import report_logs
from cifar_jax.report.run_files import Run
from tests.conftest import REPO

SHARED_REPORTS = REPO.parent / 'shared' / 'reports'

# As p2cnn.txt prints them: escaped underscores, a blank line inside an epoch, metrics wrapped
# over lines, then model.evaluate's line reusing the names, and a second log cut off mid-epoch.
SNIPPET = r"""history = model.fit(x, y, epochs=2)
```

Epoch 1/2

704/704 37s 51ms/step -

categorical\_accuracy: 0.2300 - loss: 2.0169 - val\_categorical\_accuracy: 0.3876 -
val\_loss: 1.6728

Epoch 2/2
704/704          2s 3ms/step - categorical_accuracy: 0.5689 - loss: 1.2150 -
val_categorical_accuracy: 0.6250 - val_loss: 1.0704
```
[21]: loss, acc = model.evaluate(x_test, y_test)
313/313          2s 5ms/step - categorical_accuracy: 0.6865 - loss: 2.9846
Test accuracy: 0.685

Epoch 1/200
35/35 41s 298ms/step - categorical_accuracy: 0.1285 - loss: 2.9143 -
val_categorical_accuracy: 0.2321 - val_loss: 2.1723
Epoch 2/200

```
Hemos tenido un problema con la plataforma de Google Colab.
"""


def test_parser_reads_wrapped_escaped_epochs_and_stops_at_the_evaluation():
  first, second = report_logs.parse_fit_logs(SNIPPET)

  assert (first.line, first.planned_epochs) == (4, 2)  # 1-based, as an editor shows it.
  assert first.rows == (
      {'epoch': 1, 'accuracy': 0.23, 'loss': 2.0169, 'val_accuracy': 0.3876, 'val_loss': 1.6728},
      {'epoch': 2, 'accuracy': 0.5689, 'loss': 1.215, 'val_accuracy': 0.625, 'val_loss': 1.0704})
  # The cut-off epoch 2 has no metrics and is left out.
  assert second.planned_epochs == 200
  assert [row['epoch'] for row in second.rows] == [1]
  assert second.rows[0]['val_loss'] == 2.1723


@pytest.mark.skipif(not SHARED_REPORTS.is_dir(),
                    reason=f'the report texts are not beside the checkout ({SHARED_REPORTS})')
def test_committed_data_file_is_the_parse_of_the_report_texts():
  parsed = report_logs.parse_reports(SHARED_REPORTS)

  assert report_logs.DATA_FILE.read_text() == report_logs.to_text(parsed)
  assert json.loads(report_logs.DATA_FILE.read_text()) == parsed
  # Spot checks against the text itself: p2cnn exp1's epoch 1 and 50 (lines 155-360).
  exp1 = report_logs.load()['p2cnn/exp1']
  assert exp1.rows[0] == {'epoch': 1, 'accuracy': 0.3485, 'loss': 1.777,
                          'val_accuracy': 0.5452, 'val_loss': 1.2948}
  assert exp1.rows[-1]['val_accuracy'] == 0.7014


def test_each_log_is_its_configs_run():
  """The logs are in the report's section order; each asked fit for its config's epochs, logged
  every epoch from 1 and stopped where the config's docstring says."""
  logs = report_logs.load()
  assert sorted(logs) == [f'p2cnn/exp{i}' for i in range(1, 9)]
  stopped_at = {'p2cnn/exp4': 17, 'p2cnn/exp6': 24, 'p2cnn/exp7': 52, 'p2cnn/exp8': 95}
  for name, log in logs.items():
    config = report_logs.REPO / 'configs' / f'{name}.py'
    module = __import__('configs.' + name.replace('/', '.'), fromlist=['get_config'])
    assert log.planned_epochs == module.get_config().train.epochs, config
    assert [row['epoch'] for row in log.rows] == list(range(1, log.last_epoch + 1))
    assert log.last_epoch == stopped_at.get(name, log.planned_epochs)
    assert all(set(row) == set(report_logs.COLUMNS) for row in log.rows)


def test_comparison_with_a_run_that_stopped_before_the_reports_last_epoch():
  log = report_logs.ReportLog(1, 3, tuple(
      {'epoch': e, 'val_accuracy': v} for e, v in ((1, 0.5), (2, 0.6), (3, 0.7))))
  history = [{'epoch': 1, 'val_accuracy': 0.52}, {'epoch': 2, 'val_accuracy': 0.57}]

  comparison = report_logs.compare(history, log)

  assert comparison.epochs == (1, 2)
  assert comparison.mean_abs_difference == pytest.approx((2 + 3) / 2)
  assert comparison.ours_at_report_last is None
  full = history + [{'epoch': 3, 'val_accuracy': 0.66}]
  assert report_logs.compare(full, log).ours_at_report_last == 0.66


def test_the_reports_train_columns_are_compared_with_the_progress_bars_statistic():
  log = report_logs.ReportLog(1, 2, tuple(
      {'epoch': e, 'loss': l, 'accuracy': a} for e, l, a in ((1, 1.8, 0.35), (2, 1.2, 0.57))))
  plain = [{'epoch': e, 'loss': l, 'accuracy': a} for e, l, a in ((1, 1.5, 0.44), (2, 1.1, 0.6))]
  progbar = [dict(row, progbar_loss=row['loss'] + 0.25, progbar_accuracy=row['accuracy'] - 0.08)
             for row in plain]

  # History's epoch means are not what p2cnn's Keras printed; progbar_* is, where a run has it.
  assert report_logs.compare(plain, log, 'loss').ours == (1.5, 1.1)
  assert report_logs.compare(progbar, log, 'loss').ours == (1.75, 1.35)
  assert report_logs.compare(progbar, log, 'accuracy').ours == pytest.approx((0.36, 0.52))
  assert report_logs.compare(progbar, log).epochs == ()  # No validation column: nothing shared.


def test_cells_for_a_logged_config():
  exp1 = report_logs.load()['p2cnn/exp1']
  ours = [dict(row, val_accuracy=row['val_accuracy'] - 0.01) for row in exp1.rows]

  assert report_logs.last_logged_epoch_cell('p2cnn/exp1', [ours]) == '69.14 vs 70.14 (epoch 50)'
  assert report_logs.mean_difference_cell('p2cnn/exp1', [ours, exp1.rows]) == '0.50'
  assert report_logs.last_logged_epoch_cell('p2cnn/exp1', [ours[:10]]) == (
      'stopped earlier vs 70.14 (epoch 50)')
  assert report_logs.last_logged_epoch_cell('exp0', [ours]) == '—'


def test_run_curves_overlay_the_reports_log(monkeypatch, tmp_path):
  drawn = []
  monkeypatch.setattr(figures, 'save', lambda figure, path: drawn.append(figure) or path)
  history = [{'epoch': e, 'loss': 1.0, 'accuracy': 0.5, 'val_loss': 1.1, 'val_accuracy': 0.45,
              'learning_rate': 1e-3} for e in (1, 2, 3)]
  results = {'test_accuracy': 0.5, 'stopped_by': None, 'epochs_run': 3}

  def labels(name):
    curves.plot_run_curves(Run(str(tmp_path), 'run', {'name': name}, history, results), 'x.png')
    return {line.get_label() for ax in drawn[-1].axes for line in ax.get_lines()}

  assert {"report's log: train", "report's log: validation"} <= labels('p2cnn/exp1')
  assert "train, as the report's Keras printed it" not in labels('p2cnn/exp1')
  assert not any(label.startswith("report's log") for label in labels('exp0'))
  for row in history:
    row.update(progbar_loss=1.2, progbar_accuracy=0.4)
  assert "train, as the report's Keras printed it" in labels('p2cnn/exp1')
