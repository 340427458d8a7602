"""One finished run as its files say it: config.json, history.json, results.json, predictions.npz.

The workdir may be local or gs:// (read through cifar_jax.paths). A run is finished when its
results.json exists: the loop writes it last, so a run killed while writing its files (on an
object store, where they are separate objects) reads as unfinished, never as finished.

The history and the predictions are read by cifar_jax.train.outputs, the module that writes
them, so a report and the loop cannot disagree on their format.
"""

import dataclasses
import functools
import json
from typing import Any, Callable, NamedTuple, TypeVar

import numpy as np

from cifar_jax import paths
from cifar_jax.data import cifar10
from cifar_jax.data import sources
from cifar_jax.train import outputs

_T = TypeVar('_T')
RUN_FILES = ('config.json', 'history.json', 'results.json', 'predictions.npz')


class RunFilesError(FileNotFoundError):
  """A run's file is missing or unreadable; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Predictions:
  """Test-set class probabilities [N, classes], true labels [N] and the class names."""
  probabilities: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]

  @property
  def predicted(self) -> np.ndarray:
    return self.probabilities.argmax(axis=1)


class BestEpoch(NamedTuple):
  epoch: int
  monitor: str  # The history column it is best in.
  value: float


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished run: its workdir, a short label for plots and tables, and its files."""
  workdir: str
  label: str
  config: dict[str, Any]
  history: list[dict[str, float]]
  results: dict[str, Any]

  @property
  def name(self) -> str:
    return self.config.get('name') or self.results.get('config') or self.label

  @property
  def description(self) -> str:
    """The label, with the config name where it differs: 'exp0_seed1 (exp0)'."""
    return self.label if self.label == self.name else f'{self.label} ({self.name})'

  @property
  def seed(self):
    return self.config.get('seed')

  def column(self, key: str) -> np.ndarray:
    """One history column as floats (NaN where an epoch lacks it, e.g. no validation split)."""
    return np.array([float(row.get(key, 'nan')) for row in self.history])

  def has(self, key: str) -> bool:
    return bool(self.history) and all(key in row for row in self.history)

  @property
  def epochs(self) -> np.ndarray:
    return self.column('epoch').astype(int)

  def best_epoch(self) -> 'BestEpoch':
    """The first epoch of highest val_accuracy (accuracy without validation), as results.json
    counts it."""
    monitor = 'val_accuracy' if self.has('val_accuracy') else 'accuracy'
    values = self.column(monitor)
    index = int(np.nanargmax(values))
    return BestEpoch(int(self.epochs[index]), monitor, float(values[index]))

  @property
  def stopped_epoch(self) -> int | None:
    """The last epoch when an EarlyStopping ended the run, else None."""
    if self.results.get('stopped_by') is None:
      return None
    return int(self.results.get('epochs_run') or self.epochs[-1])

  @property
  def test_accuracy_percent(self) -> float:
    return 100.0 * float(self.results['test_accuracy'])

  def predictions(self) -> Predictions:
    """The test predictions; only confusion matrices and sample grids need them."""
    probabilities, labels, class_names = _read(
        self.workdir, 'predictions.npz', lambda: outputs.read_predictions(self.workdir))
    return Predictions(probabilities, labels, class_names)


def load_run(workdir: str, label: str = '') -> Run:
  """Reads a finished run's config, history and results (predictions are read on demand).

  Raises:
    RunFilesError: a file is missing or unreadable, naming it.
  """
  try:
    paths.check_usable(workdir)
  except ImportError as e:
    raise RunFilesError(str(e)) from e
  if not paths.isdir(workdir):
    raise RunFilesError(f'{workdir}: no such run folder (expected a workdir holding '
                        f'{", ".join(RUN_FILES)})')
  return Run(workdir=workdir, label=label or paths.name(workdir),
             config=_read_json(workdir, 'config.json'),
             history=_read(workdir, 'history.json', lambda: outputs.read_history(workdir)),
             results=_read_json(workdir, 'results.json'))


def load_test_images(run: Run, num_images: int, data_dir: str = '') -> np.ndarray:
  """The run's first `num_images` test images (uint8 [N, 32, 32, 3]), which it does not save.

  Reads the data the run used (config.json data.dir, else $CIFAR10_DIR and the caches; never a
  download), or `data_dir` when given, and checks its test labels against predictions.npz.

  Raises:
    cifar10.DataError: the data cannot be found, or is not the data the run was tested on.
  """
  dataset = _dataset(data_dir or run.config.get('data', {}).get('dir', ''))
  expected = run.predictions().labels[:num_images]
  found = dataset.test_labels[:len(expected)]
  if len(found) != len(expected) or not np.array_equal(found, expected):
    raise cifar10.DataError(
        f'the test labels of {dataset.source} differ from {run.workdir}/predictions.npz, so it '
        f'is not the data the run was tested on ({run.results.get("data_source")})')
  return dataset.test_images[:len(expected)]


@functools.lru_cache(maxsize=2)
def _dataset(place: str) -> cifar10.Cifar10:
  """Runs of one data set (most of a results table) read it once."""
  return sources.load_cifar10(place, download=False)


def _read_json(workdir: str, filename: str) -> dict[str, Any]:
  path = paths.join(workdir, filename)
  return _read(workdir, filename, lambda: json.loads(paths.read_text(path)))


def _read(workdir: str, filename: str, read: Callable[[], _T]) -> _T:
  """`read()`, with a missing or broken `filename` reported by its path."""
  path = paths.join(workdir, filename)
  if not paths.exists(path):
    raise RunFilesError(f'{path} is missing: {workdir} is not a finished cifar_jax run (a run '
                        f'writes {", ".join(RUN_FILES)} when it ends)')
  try:
    return read()
  except (OSError, ValueError, KeyError) as e:
    raise RunFilesError(f'{path} is unreadable: {type(e).__name__}: {e}') from e
