"""Reproduction records: one small JSON file per finished run that backs a claim.

Written and read here; the command line (`python -m cifar_jax.report.experiments add|table|
compare`), the README's Experiments table and the comparison with the reports' logs are in
cifar_jax/report/experiments.py, which builds on this module.

A record says what ran (config name and hash, seed, overrides, the cifar_jax commit and whether
the tree was clean), on what (data source and checksum, device, CPU, precision, dtype) and what
came out (test accuracy and loss, best validation accuracy and epoch, epochs run, why it
stopped, train time, the per-epoch history). Everything comes from the files a run writes plus
the provenance.json its launcher wrote before it started (cifar_jax.zoo writes one; a
num_seeds run's seed_<i>/ folders share their parent's). Records hold no machine paths.
Workdirs, their data and the records folder may be local or gs:// (cifar_jax.paths), so the
records of a pod's runs are made from the bucket, where the runs wrote them.

The config hash covers what changes the computation: config.json without the seed, where data
and checkpoints live, logging, the dispatch size and the report's name and numbers (a record
keeps the hashed settings too). The table pools the records of each config's current version
(the same hash, or the same settings but for fields added to base.py since, at their defaults);
records of an older version are shown, marked, only while no current one exists.
"""

import functools
import hashlib
import importlib
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from cifar_jax import paths
from cifar_jax.report import results
from cifar_jax.report import run_files

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS_DIR = 'results'
# Besides results.NOT_THE_EXPERIMENT: keys that change no number a run computes, or only its
# float32 rounding (the kernels behind a convolution; the record names them: conv_grad,
# conv_backend), so a run on oneDNN counts as a run of the config.
NOT_IN_HASH = results.NOT_THE_EXPERIMENT + ('name', 'report', 'reported_test_accuracy',
                                            'train.steps_per_dispatch', 'train.device_loop',
                                            'model.conv_grad', 'model.conv_backend')
# History columns kept in a record, and their rounding (significant digits): accuracies over
# 10,000 images need 4 decimals, over 40,000 six.
HISTORY_DIGITS = {'epoch': None, 'loss': 6, 'accuracy': 6, 'val_loss': 6, 'val_accuracy': 6,
                  'learning_rate': 6, 'time': 4, 'progbar_loss': 6, 'progbar_accuracy': 6}
# results.json's data_source: '<layout> folder|tarball <path>' or 'TFDS cifar10 in <path>', the
# path absolute or a gs:// URL.
_SOURCE_PATH = re.compile(
    r'^(?P<kind>.*?\b(?:folder|tarball|in)) (?P<path>(?:/|[a-zA-Z][a-zA-Z0-9+.-]*://).*)$')


class RecordError(ValueError):
  """A workdir cannot give a record (unfinished, no provenance, dirty tree, no data checksum);
  the message names it and the fix."""


def settings(config: dict[str, Any]) -> dict[str, Any]:
  """What in config.json changes the computation (all but NOT_IN_HASH)."""
  return json.loads(json.dumps(results.experiment_config(config, NOT_IN_HASH), default=str))


def config_hash(config: dict[str, Any]) -> str:
  """A stable hash of settings(config)."""
  text = json.dumps(settings(config), sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_current(record: dict[str, Any], config: dict[str, Any]) -> bool:
  """Whether `record` ran `config` (a config.json as it would be now): the same hash, or the
  same settings but for keys added to the config since, at their base.py defaults (a new field
  that keeps the old behaviour does not make every record stale)."""
  if record['config_hash'] == config_hash(config):
    return True
  old = record.get('settings')
  # settings() of the old settings: keys left out of the hash since then are left out here too.
  return old is not None and _same_but_new_defaults(settings(config), settings(old),
                                                    settings(_base_config()))


def _same_but_new_defaults(now: Any, old: Any, default: Any) -> bool:
  if not (isinstance(now, dict) and isinstance(old, dict)):
    return now == old
  for key in now.keys() | old.keys():
    if key not in now:
      return False
    base = default.get(key) if isinstance(default, dict) else None
    if key not in old:
      if not isinstance(default, dict) or key not in default or now[key] != base:
        return False
    elif not _same_but_new_defaults(now[key], old[key], base):
      return False
  return True


@functools.lru_cache(maxsize=1)


def _base_config() -> dict[str, Any]:
  return json.loads(config_module('base').get_config().to_json_best_effort())


def relative_source(source: str) -> str:
  """results.json's data_source without the machine's folders or the bucket: 'binary folder
  /x/y/cifar10-jpeg/cifar-10-batches-bin' (or gs://bucket/x/cifar10-jpeg/...) -> 'binary folder
  cifar10-jpeg/cifar-10-batches-bin'."""
  match = _SOURCE_PATH.match(source or '')
  if not match:
    return source
  parts = [part for part in re.sub(r'^[^/]*://', '', match['path']).split('/') if part]
  return f'{match["kind"]} {"/".join(parts[-2:])}'


def data_checksum(path: str) -> str:
  """sha256 over the files the run read: a tarball, or a folder's files in name order (each
  file's name and content digest), so one data set has one checksum wherever it lives."""
  is_file = paths.isfile(path)
  files = [path] if is_file else [
      paths.join(path, name) for name in paths.listdir(path)
      if paths.isfile(paths.join(path, name))]
  # The zoo records many runs of one data set: hash it once, unless a file changed.
  stamps = tuple((f, *_size_and_mtime(f)) for f in files)
  return _checksum_of(path, is_file, stamps)


def _size_and_mtime(file: str) -> tuple[int, int]:
  """What tells a changed file from the one hashed before (an object's upload time on gs://)."""
  if paths.is_url(file):
    stat = paths.epath(file).stat()
    return stat.length, stat.mtime
  stat = os.stat(file)
  return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=8)


def _checksum_of(path: str, is_file: bool, stamps: tuple) -> str:
  if is_file:
    return 'sha256:' + paths.file_digest(path)
  digest = hashlib.sha256()
  for file, _, _ in stamps:
    digest.update(f'{paths.name(file)}\0{paths.file_digest(file)}\n'.encode())
  return 'sha256:' + digest.hexdigest()




def read_provenance(workdir: str) -> dict[str, Any]:
  """The workdir's provenance.json, or its parent's for a num_seeds run's seed_<i> folder.

  Raises:
    RecordError: neither exists.
  """
  for folder in (workdir, paths.parent(workdir)):
    path = paths.join(folder, 'provenance.json')
    if paths.exists(path):
      return json.loads(paths.read_text(path))
  raise RecordError(f'{workdir}: no provenance.json (the commit it ran): run it with '
                    '`python -m cifar_jax.zoo`, which writes one before it starts')


def seed_run_dirs(workdir: str) -> list[str]:
  """A num_seeds workdir's seed_<i> folders (in seed order), else [workdir]."""
  if paths.exists(paths.join(workdir, 'history.json')):
    return [workdir]
  seeds = [name for name in paths.listdir(workdir) if re.fullmatch(r'seed_\d+', name)]
  return [paths.join(workdir, name) for name in sorted(seeds, key=lambda n: int(n[5:]))] or [
      workdir]


def build_records(workdir: str, allow_dirty: bool = False) -> list[dict[str, Any]]:
  """One record per finished run in `workdir` (one, or one per seed of a num_seeds run).

  Raises:
    RecordError: the run is unfinished or unreadable, has no provenance, ran from a dirty tree
      (unless allow_dirty), or its data cannot be found for the checksum.
  """
  if not paths.isdir(workdir):
    raise RecordError(f'{workdir}: no such folder')
  provenance = read_provenance(workdir)
  if provenance.get('dirty') and not allow_dirty:
    raise RecordError(f'{workdir}: ran from a tree with uncommitted changes (provenance.json '
                      '"dirty"), so no commit names its code; pass --allow-dirty to record it '
                      'anyway (marked dirty)')
  runs = seed_run_dirs(workdir)
  return [_record(run, provenance, seeds_in_program=len(runs)) for run in runs]


def _record(run_dir: str, provenance: dict[str, Any], seeds_in_program: int) -> dict[str, Any]:
  try:
    run = run_files.load_run(run_dir)
  except run_files.RunFilesError as e:
    raise RecordError(str(e)) from None
  config, res = run.config, run.results
  best = run.best_epoch()
  source = res.get('data_source', '')
  return {
      'config': run.name,
      'config_hash': config_hash(config),
      # What the hash covers, so a later version of the config can say what changed.
      'settings': settings(config),
      'seed': config.get('seed'),
      'config_file': provenance.get('config_file'),
      'overrides': _overrides(provenance.get('overrides', [])),
      'commit': provenance.get('commit') or res.get('commit'),
      'dirty': bool(provenance.get('dirty', False)),
      'started': provenance.get('started'),
      'data': {'source': relative_source(source), 'checksum': _checksum(run_dir, source),
               'num_train': res.get('num_train'), 'num_validation': res.get('num_validation'),
               'num_test': res.get('num_test')},
      'device': res.get('device'),
      'device_kind': provenance.get('device_kind'),
      'cpu': provenance.get('cpu'),
      # The run's model.matmul_precision (results.json); with 'default', or from before the key,
      # the process's jax default as the zoo found it (provenance), else jax's own.
      'precision': (res.get('matmul_precision') if res.get('matmul_precision', 'default') !=
                    'default' else provenance.get('precision', 'default')),
      'dtype': config.get('model', {}).get('dtype'),
      # The CPU convolutions' weight-gradient form (None: a run from before results.json said).
      'conv_grad': res.get('conv_grad'),
      # Whose convolution kernels (None: a run from before the key; those were XLA's).
      'conv_backend': res.get('conv_backend'),
      'jax_version': res.get('jax_version'),
      'reported_test_accuracy': config.get('reported_test_accuracy'),
      'test_accuracy': res['test_accuracy'],
      'test_loss': res.get('test_loss'),
      f'best_{best.monitor}': _round(best.value, 6),
      'best_epoch': best.epoch,
      'epochs_run': res.get('epochs_run', len(run.history)),
      'planned_epochs': config.get('train', {}).get('epochs'),
      'stopped_by': res.get('stopped_by'),
      'train_seconds': res.get('train_seconds'),
      # A num_seeds run trains its seeds in one program: each seed's train_seconds is the
      # program's, so the machine time of one seed is train_seconds / seeds_in_program.
      'seeds_in_program': seeds_in_program,
      'params': res.get('params'),
      'history': _history(run.history),
  }


def _overrides(overrides) -> list[str]:
  """The launcher's extra flags, without machine paths (data.dir is recorded as the source)."""
  if isinstance(overrides, str):
    overrides = shlex.split(overrides)
  return [flag for flag in overrides
          if not flag.startswith(('--config.data.dir=', '--workdir=', '--config='))]


def _checksum(run_dir: str, source: str) -> str:
  try:
    return source_checksum(source)
  except RecordError as e:
    raise RecordError(f'{run_dir}: {e}') from None


def source_checksum(source: str) -> str:
  """data_checksum of what a data source string ('binary folder /x/cifar-10-batches-bin', as
  cifar_jax.data.sources names it) read."""
  match = _SOURCE_PATH.match(source or '')
  if not match or not paths.exists(match['path']):
    raise RecordError(f'cannot checksum its data: results.json data_source '
                      f'{source!r} names no file here (build the record where the run read it)')
  return data_checksum(match['path'])


def _history(rows: Sequence[dict[str, Any]]) -> dict[str, list]:
  """Columns of rounded values: one entry per epoch."""
  columns = {}
  for key, digits in HISTORY_DIGITS.items():
    if rows and all(key in row for row in rows):
      columns[key] = [int(row[key]) if digits is None else _round(row[key], digits)
                      for row in rows]
  return columns


def history_difference(a: dict[str, list], b: dict[str, list], keys: Iterable[str],
                       absolute: bool = False) -> dict[str, Any]:
  """Two runs' histories (record['history'], or a Keras History's dict) compared over the epochs
  both ran: {'epochs': n, key: mean of a - b (or |a - b|)} for each of `keys` both have."""
  keys = [key for key in keys if key in a and key in b]
  epochs = min((len(history[key]) for history in (a, b) for key in keys), default=0)
  out: dict[str, Any] = {'epochs': epochs}
  for key in keys:
    gaps = [x - y for x, y in zip(a[key][:epochs], b[key][:epochs])]
    out[key] = sum(abs(g) if absolute else g for g in gaps) / epochs if epochs else None
  return out


def _round(value, digits: int):
  value = float(value)
  return value if not math.isfinite(value) else float(f'{value:.{digits}g}')


def record_path(results_dir: str, record: dict[str, Any]) -> str:
  """results/<config, '/' -> '_'>/seed<seed>-<commit>-<config hash>.json."""
  folder = record['config'].replace('/', '_')
  commit = (record['commit'] or 'nocommit')[:10] + ('-dirty' if record['dirty'] else '')
  name = f'seed{record["seed"]}-{commit}-{record["config_hash"][:8]}.json'
  return paths.join(results_dir, folder, name)


def write_record(results_dir: str, record: dict[str, Any]) -> str:
  """Writes the record (local: atomically; gs://: one object) and returns its path."""
  path = record_path(results_dir, record)
  paths.makedirs(paths.parent(path))
  body = {k: v for k, v in record.items() if k not in ('settings', 'history')}
  # The settings on one line and a line per history column keep the file short.
  history = ',\n'.join(f'    {json.dumps(k)}: {json.dumps(v)}'
                       for k, v in record['history'].items())
  text = (json.dumps(body, indent=2)[:-2] + f',\n  "settings": {json.dumps(record["settings"])}'
          f',\n  "history": {{\n{history}\n  }}\n}}\n')
  paths.write_text(path, text)
  return path


def load_records(results_dir: str) -> list[dict[str, Any]]:
  """Every record in `results_dir` (<config>/<record>.json), in path order; none if it does not
  exist yet (a first zoo run)."""
  if not paths.isdir(results_dir):
    return []
  found = []
  for folder in paths.listdir(results_dir):  # (Hidden names skipped, as a glob would.)
    if folder.startswith('.') or not paths.isdir(paths.join(results_dir, folder)):
      continue
    for name in paths.listdir(paths.join(results_dir, folder)):
      if name.endswith('.json') and not name.startswith('.'):
        found.append(json.loads(paths.read_text(paths.join(results_dir, folder, name))))
  return found


def has_record(records: Iterable[dict[str, Any]], config: dict[str, Any], seed: int) -> bool:
  """Whether a record of this seed of `config` (a config.json) exists."""
  return any(r['config'] == config['name'] and r['seed'] == seed and is_current(r, config)
             for r in records)


def config_module(name: str):
  if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
  return importlib.import_module('configs.' + name.replace('/', '.'))


@functools.lru_cache(maxsize=None)


def current_config(name: str) -> dict[str, Any]:
  """configs/<name>.py's config, as its run's config.json would hold it."""
  return json.loads(config_module(name).get_config().to_json_best_effort())


def choose_records(records: Sequence[dict[str, Any]], name: str,
                   config: dict[str, Any] | None) -> tuple[list[dict[str, Any]], bool]:
  """(the records to pool, whether they are of an older config): those of `config` (the current
  config.json; None: any), else those of the latest recorded hash."""
  mine = [r for r in records if r['config'] == name]
  current = [r for r in mine if config is None or is_current(r, config)]
  if current or not mine:
    return _by_seed(current), False
  latest = max(mine, key=lambda r: r.get('started', '') or '')['config_hash']
  return _by_seed([r for r in mine if r['config_hash'] == latest]), True


def _by_seed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One record per seed (the last written, if a seed ran twice), in seed order."""
  by_seed = {r['seed']: r for r in records}
  return [by_seed[s] for s in sorted(by_seed)]


def history_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
  """A record's columnar history as history.json's rows."""
  columns = record['history']
  return [dict(zip(columns, values)) for values in zip(*columns.values())]
