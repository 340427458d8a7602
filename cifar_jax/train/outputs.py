"""The files a run writes in its workdir, which reports and resumes read back.

  config.json      the resolved config
  history.csv/json one row per epoch: epoch (1-based), loss, accuracy, val_loss, val_accuracy,
                   learning_rate (the LR the epoch trained with), time (seconds)
  results.json     test metrics and a run summary
  predictions.npz  test-set class probabilities (float32 [N, classes]), labels, class names
  tensorboard/     event files (scalars per epoch)

Every file goes through cifar_jax.paths: locally written to a temporary name and renamed, so a
killed run never leaves a torn file; on gs:// written once as one object, which appears whole or
not at all. results.json is a run's last file, so a reader never takes an unfinished run (one
with predictions but no results.json yet) for a finished one.
"""

import csv
import io
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from cifar_jax import paths

HISTORY_COLUMNS = ('epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate',
                   'time')


class WorkdirError(OSError):
  """A run file could not be written; the previous version of the file is intact."""


def atomic_write(path: str, data: str | bytes) -> None:
  try:
    paths.write_bytes(path, data.encode('utf-8') if isinstance(data, str) else data)
  except OSError as e:
    raise WorkdirError(f'could not write {path}: {e}. Its previous version is intact; free disk '
                       'space (or fix permissions) and rerun the same command to resume.') from e


def _json_ready(value):
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep them readable.
  return value


def write_json(path: str, data: Mapping[str, Any]) -> None:
  atomic_write(path, json.dumps({k: _json_ready(v) for k, v in data.items()}, indent=2,
                                sort_keys=False) + '\n')


def write_history(workdir: str, rows: Sequence[Mapping[str, Any]]) -> None:
  columns = list(HISTORY_COLUMNS) + sorted({k for r in rows for k in r} - set(HISTORY_COLUMNS))
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction='ignore')
  writer.writeheader()
  writer.writerows(rows)
  atomic_write(paths.join(workdir, 'history.csv'), buffer.getvalue())
  atomic_write(paths.join(workdir, 'history.json'),
               json.dumps([{k: _json_ready(v) for k, v in r.items()} for r in rows], indent=1))


def read_history(workdir: str) -> list[dict[str, Any]]:
  return json.loads(paths.read_text(paths.join(workdir, 'history.json')))


def write_predictions(workdir: str, probabilities, labels, class_names) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, probabilities=probabilities[:len(labels)].astype(np.float32),
           labels=np.asarray(labels, np.int32), class_names=np.asarray(class_names))
  atomic_write(paths.join(workdir, 'predictions.npz'), buffer.getvalue())


def read_predictions(workdir: str):
  with np.load(paths.bytes_file(paths.join(workdir, 'predictions.npz'))) as data:
    return data['probabilities'], data['labels'], tuple(data['class_names'].tolist())


class _ObjectEventFile:
  """An event file on an object store, for tensorboardX: objects cannot be appended to, so each
  flush writes the whole file again as one object (a run's scalars are a few KB)."""

  def __init__(self, path: str):
    self.path, self.buffer, self.written = path, io.BytesIO(), -1

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    if self.buffer.tell() != self.written:
      paths.write_bytes(self.path, self.buffer.getvalue())
      self.written = self.buffer.tell()

  def close(self) -> None:
    self.flush()


class _ObjectEventFiles:
  """tensorboardX's writer factory for gs:// log dirs, through cifar_jax.paths (its own uses
  google-cloud-storage's client, a second way to the bucket with its own credentials)."""

  def open(self, path: str) -> _ObjectEventFile:
    return _ObjectEventFile(path)

  def directory_check(self, path: str) -> None:
    paths.makedirs(path)


class ScalarWriter:
  """TensorBoard event files through tensorboardX, with clu's MetricWriter methods
  (write_scalars, write_texts, write_hparams, flush, close) so either can serve the loop.
  tensorboardX needs no TensorFlow; clu's writers import it (log.writer='clu', an optional
  extra). Only the writing process (process 0) creates files."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
      record_writer.register_writer_factory('gs', _ObjectEventFiles())
      self._writer = SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is not None:
      for name, value in scalars.items():
        self._writer.add_scalar(name, value, step)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    if self._writer is not None:
      for tag, text in texts.items():
        self._writer.add_text(tag, text, step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self.write_texts(0, {'hparams': json.dumps(dict(hparams), indent=1, default=str)})

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


WRITERS = ('tensorboardx', 'clu')
CLU_EXTRA = 'requirements-clu.txt'


def make_writer(kind: str, logdir: str, is_writer: bool):
  """The run's metric writer: 'tensorboardx' (default) or 'clu' (clu.metric_writers'
  default writer: TensorBoard through TensorFlow plus a logging writer on every process)."""
  if kind == 'tensorboardx':
    return ScalarWriter(logdir, enabled=is_writer)
  if kind != 'clu':
    raise ValueError(f'log.writer={kind!r} is unknown; known: {list(WRITERS)}')
  return import_clu_writers().create_default_writer(logdir, just_logging=not is_writer)


def import_clu_writers():
  """clu.metric_writers, or an ImportError that says how to get it."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"log.writer='clu' needs clu's TensorFlow writer, which failed to import ({e}); install "
        f"the optional extra with `pip install -r {CLU_EXTRA}` or use "
        "--config.log.writer=tensorboardx") from e
  return metric_writers
