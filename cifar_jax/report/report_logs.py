"""The reports' own per-epoch training logs, parsed once into configs/report_logs.json.

    python -m cifar_jax.report.report_logs [--reports ../shared/reports] [--check]

Only p2cnn printed Keras's fit log (every model, in the order of its sections: exp1 ... exp8);
the other reports show plots, not numbers. A Keras epoch reads, wrapped anywhere and with
markdown's escaped underscores:

    Epoch 3/50
    704/704  2s 3ms/step - categorical_accuracy: 0.6405 - loss: 1.0275 -
    val_categorical_accuracy: 0.6592 - val_loss: 0.9663

The first value of each metric after an `Epoch` line is that epoch's (the evaluation line after
the last epoch repeats the names). The data file maps a config name to its log, with Keras's
`categorical_accuracy` renamed `accuracy` as in a run's history.json, so a report can overlay
the report's curves on a run's (curves.py) and compare validation accuracies epoch by epoch.
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from cifar_jax.report import tables

REPO = Path(__file__).resolve().parents[2]
DATA_FILE = REPO / 'configs' / 'report_logs.json'
# Beside the checkout, as tests/conftest.py finds the shared data.
DEFAULT_REPORTS_DIR = REPO.parent / 'shared' / 'reports'
# Report file -> the configs its fit logs belong to, in the order the logs appear.
LOGS_OF_REPORT = {
    'p2cnn.txt': tuple(f'p2cnn/exp{i}' for i in range(1, 9)),
}
MISSING = tables.MISSING
COLUMNS = ('epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy')
_EPOCH = re.compile(r'^\s*Epoch (\d+)/(\d+)\s*$')
_METRIC = re.compile(r'\b((?:val_)?(?:categorical_)?(?:accuracy|loss)): ([0-9]+(?:\.[0-9]+)?)')


@dataclasses.dataclass(frozen=True)
class ReportLog:
  """One fit log: where it starts (1-based line), the epochs fit was asked for, and its rows."""
  line: int
  planned_epochs: int
  rows: tuple[dict[str, float], ...]

  def column(self, key: str) -> list[float]:
    return [row.get(key, math.nan) for row in self.rows]

  @property
  def last_epoch(self) -> int:
    return int(self.rows[-1]['epoch'])

  def to_json(self, report: str) -> dict[str, Any]:
    return {'report': report, 'line': self.line, 'planned_epochs': self.planned_epochs,
            'columns': list(COLUMNS),
            'rows': [[row.get(c) for c in COLUMNS] for row in self.rows]}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> 'ReportLog':
    rows = tuple({c: v for c, v in zip(data['columns'], row) if v is not None}
                 for row in data['rows'])
    return cls(data['line'], data['planned_epochs'], rows)


def parse_fit_logs(text: str) -> list[ReportLog]:
  """Every Keras fit log in `text`, in order; a log starts at `Epoch 1/N`. An epoch line with no
  metrics after it (a run cut off mid-epoch) is left out."""
  lines = text.replace('\\_', '_').split('\n')
  starts = [(i, _EPOCH.match(line)) for i, line in enumerate(lines)]
  starts = [(i, m) for i, m in starts if m]
  logs: list[tuple[int, int, list[dict[str, float]]]] = []
  for k, (i, match) in enumerate(starts):
    epoch, planned = int(match[1]), int(match[2])
    end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
    row: dict[str, float] = {}
    for name, value in _METRIC.findall(' '.join(lines[i + 1:end])):
      key = name.replace('categorical_', '')
      if key in row:  # The next output (model.evaluate) reuses the names.
        break
      row[key] = float(value)
    if epoch == 1 or not logs:
      logs.append((i + 1, planned, []))
    if row:
      logs[-1][2].append({'epoch': epoch, **row})
  return [ReportLog(line, planned, tuple(rows)) for line, planned, rows in logs]


def parse_reports(reports_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
  """The data file's content: config name -> its log, from the report texts.

  Raises:
    ValueError: a report holds another number of logs than LOGS_OF_REPORT names.
  """
  parsed = {}
  for report, configs in LOGS_OF_REPORT.items():
    logs = parse_fit_logs(Path(reports_dir, report).read_text(encoding='utf-8'))
    if len(logs) != len(configs):
      raise ValueError(f'{report}: {len(logs)} fit logs, but LOGS_OF_REPORT names '
                       f'{len(configs)} configs for it')
    parsed.update({name: log.to_json(report) for name, log in zip(configs, logs)})
  return parsed


def to_text(parsed: dict[str, dict[str, Any]]) -> str:
  """The data file: one line per epoch, so it stays small and diffs stay readable."""
  parts = []
  for name, log in parsed.items():
    head = {k: v for k, v in log.items() if k != 'rows'}
    rows = ',\n'.join(f'    {json.dumps(row)}' for row in log['rows'])
    parts.append(f'  {json.dumps(name)}: {json.dumps(head)[:-1]}, "rows": [\n{rows}\n  ]}}')
  return '{\n' + ',\n'.join(parts) + '\n}\n'


@functools.lru_cache(maxsize=4)
def load(path: str = str(DATA_FILE)) -> dict[str, ReportLog]:
  """config name -> its report's fit log; empty when the data file is absent."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {name: ReportLog.from_json(log) for name, log in json.load(f).items()}


def log_of(config_name: str) -> ReportLog | None:
  return load().get(config_name)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One of our metrics against the report's, epoch by epoch (fractions for accuracies)."""
  epochs: tuple[int, ...]  # Epochs both logged.
  ours: tuple[float, ...]
  report: tuple[float, ...]
  report_last_epoch: int
  ours_at_report_last: float | None  # None: our run stopped before that epoch.

  @property
  def mean_abs_difference(self) -> float:
    """Mean |ours - report| over the common epochs, in percentage points."""
    if not self.epochs:
      return math.nan
    return 100.0 * sum(abs(a - b) for a, b in zip(self.ours, self.report)) / len(self.epochs)

  @property
  def report_at_last(self) -> float:
    return self.report[-1] if self.epochs and self.epochs[-1] == self.report_last_epoch else (
        math.nan)


# The report's train columns are what Keras 3's progress bar printed (steps.PROGBAR_SUMS): a
# run's progbar_* columns are the same statistic; its loss/accuracy are History's epoch means.
OURS_FOR_REPORTS = {'loss': 'progbar_loss', 'accuracy': 'progbar_accuracy'}


def compare(history: Sequence[dict[str, Any]], log: ReportLog,
            key: str = 'val_accuracy') -> Comparison:
  """A run's history (history.json rows) against a report's log, for the report's column `key`
  (a train column against the run's progbar_* column, where the run has it)."""
  ours_key = OURS_FOR_REPORTS.get(key, key)
  if not any(ours_key in row for row in history):
    ours_key = key  # A run from before progbar_*: History's means, which are not the same.
  ours = {int(row['epoch']): float(row[ours_key]) for row in history if ours_key in row}
  theirs = {int(row['epoch']): float(row[key]) for row in log.rows if key in row}
  common = sorted(ours.keys() & theirs.keys())
  return Comparison(tuple(common), tuple(ours[e] for e in common),
                    tuple(theirs[e] for e in common), log.last_epoch,
                    ours.get(log.last_epoch))


def last_logged_epoch_cell(config_name: str, histories: Sequence[Sequence[dict]]) -> str:
  """'70.12 vs 70.14 (epoch 50)': our validation accuracy (mean over the runs that got there)
  at the report's last logged epoch, against the report's; '—' without a log."""
  log = log_of(config_name)
  if log is None or not histories or 'val_accuracy' not in log.rows[-1]:
    return MISSING
  reached = [c.ours_at_report_last for c in (compare(h, log) for h in histories)
             if c.ours_at_report_last is not None]
  theirs = 100.0 * log.rows[-1]['val_accuracy']
  if not reached:
    return f'stopped earlier vs {theirs:.2f} (epoch {log.last_epoch})'
  ours = sum(100.0 * v for v in reached) / len(reached)
  some = '' if len(reached) == len(histories) else f', {len(reached)} of {len(histories)} runs'
  return f'{ours:.2f} vs {theirs:.2f} (epoch {log.last_epoch}{some})'


def mean_difference_cell(config_name: str, histories: Sequence[Sequence[dict]]) -> str:
  """The mean over runs of each run's mean |ours - report| validation accuracy over the epochs
  both logged, in points; '—' without a log."""
  log = log_of(config_name)
  if log is None or not histories:
    return MISSING
  differences = [compare(h, log).mean_abs_difference for h in histories]
  differences = [d for d in differences if not math.isnan(d)]
  return f'{sum(differences) / len(differences):.2f}' if differences else MISSING


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(prog='python -m cifar_jax.report.report_logs',
                                   description=__doc__.split('\n\n')[2])
  parser.add_argument('--reports', default=str(DEFAULT_REPORTS_DIR),
                      help='the folder of the report texts (default %(default)s)')
  parser.add_argument('--out', default=str(DATA_FILE), help='the data file (default %(default)s)')
  parser.add_argument('--check', action='store_true',
                      help='only check that the data file matches the reports (exit 1 if not)')
  args = parser.parse_args(argv)
  try:
    text = to_text(parse_reports(args.reports))
  except (OSError, ValueError) as e:
    print(f'error: {e} (pass --reports=DIR, the folder of the report .txt files)', file=sys.stderr)
    return 2
  if args.check:
    same = os.path.exists(args.out) and Path(args.out).read_text() == text
    print(f'{args.out}: {"matches" if same else "differs from"} the reports')
    return 0 if same else 1
  Path(args.out).write_text(text)
  print(args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
