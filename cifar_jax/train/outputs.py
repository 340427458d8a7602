"""The files a run writes in its workdir, which reports and resumes read back.

  config.json      the resolved config
  history.csv/json one row per epoch: epoch (1-based), loss, accuracy, val_loss, val_accuracy,
                   learning_rate (the LR the epoch trained with), time (seconds)
  results.json     test metrics and a run summary
  predictions.npz  test-set class probabilities (float32 [N, classes]), labels, class names
  tensorboard/     event files (scalars per epoch)

Every file is written to a temporary name and renamed, so a killed run never leaves a torn file.
"""

import csv
import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

HISTORY_COLUMNS = ('epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate',
                   'time')


class WorkdirError(OSError):
  """A run file could not be written; the previous version of the file is intact."""


def atomic_write(path: str, text: str) -> None:
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
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
  atomic_write(os.path.join(workdir, 'history.csv'), buffer.getvalue())
  atomic_write(os.path.join(workdir, 'history.json'),
               json.dumps([{k: _json_ready(v) for k, v in r.items()} for r in rows], indent=1))


def read_history(workdir: str) -> list[dict[str, Any]]:
  with open(os.path.join(workdir, 'history.json')) as f:
    return json.load(f)


def write_predictions(workdir: str, probabilities, labels, class_names) -> None:
  path = os.path.join(workdir, 'predictions.npz')
  with open(f'{path}.tmp', 'wb') as f:
    np.savez(f, probabilities=probabilities[:len(labels)].astype(np.float32),
             labels=np.asarray(labels, np.int32), class_names=np.asarray(class_names))
  os.replace(f'{path}.tmp', path)


def read_predictions(workdir: str):
  with np.load(os.path.join(workdir, 'predictions.npz')) as data:
    return data['probabilities'], data['labels'], tuple(data['class_names'].tolist())


class ScalarWriter:
  """TensorBoard scalars through tensorboardX, which needs no TensorFlow (clu's writers import
  TensorFlow). Only the writing process (process 0) creates files."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is not None:
      for name, value in scalars.items():
        self._writer.add_scalar(name, value, step)

  def write_text(self, tag: str, text: str) -> None:
    if self._writer is not None:
      self._writer.add_text(tag, text, 0)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
