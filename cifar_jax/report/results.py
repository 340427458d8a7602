"""Tables over runs: one row per run (comparison) and one row per config (results vs reports).

Runs are one config when their config.json files agree on everything but the seed and where the
data and checkpoints live; their test accuracies are summarised as mean ± sample std.
"""

import json
import re
from typing import Any, Sequence

import numpy as np

from cifar_jax.report import report_logs
from cifar_jax.report import tables
from cifar_jax.report.run_files import Run

# Config keys (dotted prefixes) that do not change the experiment, only where or how it ran.
NOT_THE_EXPERIMENT = ('seed', 'data_seed', 'num_seeds', 'seeds_share_data_order', 'data.dir',
                      'data.download', 'log.', 'checkpoint.')
# 'entregable4 (Entregable 4 - Vision por Computador, CIFAR10), exp6 "l2(0.0001), Dense 256"'.
_REPORT_PATTERN = re.compile(r'^(?P<name>[^\s(,]+)\s*(?:\([^)]*\))?,\s*(?P<section>.*)$')


def runs_table(runs: Sequence[Run]) -> tables.Table:
  """One row per run, in the order given."""
  rows = []
  for run in runs:
    best = run.best_epoch()
    rows.append([run.label, run.name, _text(run.seed), tables.percent(run.results['test_accuracy']),
                 _best_cell(best), str(len(run.history)),
                 _text(run.results.get('stopped_by')),
                 tables.duration(run.results.get('train_seconds')),
                 tables.count(run.results.get('params')), _text(run.results.get('device'))])
  return tables.Table(['run', 'config', 'seed', 'test acc. (%)', 'best val. acc. (%)', 'epochs',
                       'stopped by', 'train time', 'params', 'device'], rows,
                      numeric=[False, False, True, True, True, True, False, True, True, False])


def results_table(runs: Sequence[Run]) -> tables.Table:
  """One row per config (its runs with other seeds pooled), ordered by report, then name."""
  groups = group_by_config(runs)
  ambiguous = _identities_of_several_configs(groups)
  rows = []
  for group in groups:
    first = group[0]
    report, section = split_report(first.config.get('report', ''))
    changed = section
    if _identity(first) in ambiguous:  # Say which setting tells this row from its namesakes.
      changed = ', '.join(filter(None, [section, _differences(group, groups)]))
    accuracies = [run.test_accuracy_percent for run in group]
    rows.append([first.name, report or tables.MISSING, changed or tables.MISSING,
                 tables.count(first.results.get('params')),
                 _text(first.results.get('reported_test_accuracy')),
                 mean_and_std(accuracies),
                 _seeds(group),
                 _span([len(r.history) for r in group]),
                 tables.duration(np.mean([r.results.get('train_seconds', np.nan) for r in group])),
                 ', '.join(sorted({_text(r.results.get('device')) for r in group})),
                 report_logs.last_logged_epoch_cell(first.name, [r.history for r in group])])
  return tables.Table(['config', 'report', 'what changed', 'params', 'reported test acc. (%)',
                       'cifar_jax test acc. (%)', 'runs', 'epochs', 'train time (mean)',
                       'device', "val. acc. at the report's last logged epoch: ours vs report"],
                      rows, numeric=[False, False, False, True, True, True, False, True, True,
                                     False, False])


def group_by_config(runs: Sequence[Run]) -> list[list[Run]]:
  """Runs of one config, ordered by report and then config name."""
  groups: dict[str, list[Run]] = {}
  for run in runs:
    key = json.dumps(experiment_settings(run), sort_keys=True, default=str)
    groups.setdefault(key, []).append(run)
  return sorted(groups.values(), key=lambda group: [natural_key(part)
                                                    for part in _identity(group[0])[::-1]])


def experiment_settings(run: Run) -> dict[str, Any]:
  """The run's config without the keys in NOT_THE_EXPERIMENT."""
  return experiment_config(run.config)


def experiment_config(config: dict[str, Any],
                      ignored: Sequence[str] = NOT_THE_EXPERIMENT) -> dict[str, Any]:
  """A config.json without the `ignored` keys (dotted; a trailing '.' drops a whole section)."""
  return _without_run_details(config, '', tuple(ignored))


def _without_run_details(tree: dict[str, Any], prefix: str,
                         ignored: tuple[str, ...]) -> dict[str, Any]:
  kept = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if any(path == p or (p.endswith('.') and path.startswith(p)) for p in ignored):
      continue
    kept[key] = (_without_run_details(value, f'{path}.', ignored) if isinstance(value, dict)
                 else value)
  return kept


def split_report(report: str) -> tuple[str, str]:
  """config.json `report`, 'NAME (TITLE), SECTION' by the configs' convention, as
  (NAME, SECTION): 'entregable4 (Entregable 4 - ...), exp0 "Arquitectura base"' ->
  ('entregable4', 'exp0 "Arquitectura base"'). Anything else is all NAME."""
  match = _REPORT_PATTERN.match(report)
  return (match['name'], match['section']) if match else (report, '')


def mean_and_std(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f'{values[0]:.2f}'
  return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}'


def _differences(group: list[Run], groups: list[list[Run]]) -> str:
  """What sets this group apart from the others of its name: `key=value`, `+key` (a setting
  only this one has, e.g. an extra early stopper) or `-key` (one it lacks)."""
  mine = experiment_settings(group[0])
  found = []
  for other in groups:
    if other is not group and _identity(other[0]) == _identity(group[0]):
      found += [d for d in _tree_differences(mine, experiment_settings(other[0])) if d not in found]
  return ', '.join(sorted(found))


def _tree_differences(mine: dict, other: dict, prefix: str = '') -> list[str]:
  found = []
  for key in sorted(mine.keys() | other.keys()):
    path = f'{prefix}{key}'
    if key not in other:
      found.append(f'+{path}' if isinstance(mine[key], dict) else f'{path}={_text(mine[key])}')
    elif key not in mine:
      found.append(f'-{path}')
    elif isinstance(mine[key], dict) and isinstance(other[key], dict):
      found += _tree_differences(mine[key], other[key], f'{path}.')
    elif mine[key] != other[key]:
      found.append(f'{path}={_text(mine[key])}')
  return found


def _identity(run: Run) -> tuple[str, str]:
  """What a reader tells configs apart by: the name and the report (reports reuse names)."""
  return run.name, run.config.get('report', '')


def _identities_of_several_configs(groups: list[list[Run]]) -> set[tuple[str, str]]:
  identities = [_identity(group[0]) for group in groups]
  return {i for i in identities if identities.count(i) > 1}


def _best_cell(best) -> str:
  note = '' if best.monitor == 'val_accuracy' else f', {best.monitor}: no validation split'
  return f'{tables.percent(best.value)} (epoch {best.epoch}{note})'


def _seeds(group: list[Run]) -> str:
  seeds = ', '.join(_text(run.seed) for run in group)
  return f'{len(group)} (seed{"s" if len(group) > 1 else ""} {seeds})'


def _span(values: Sequence[int]) -> str:
  low, high = min(values), max(values)
  return str(low) if low == high else f'{low}–{high}'


def natural_key(text: str):
  """'exp2' before 'exp10'."""
  return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text)]


def _text(value) -> str:
  return tables.MISSING if value is None or value == '' else str(value)
