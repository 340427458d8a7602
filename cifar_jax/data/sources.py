"""Finds CIFAR-10 on this machine, or downloads it, and reads it with `cifar10`.

Order: (1) an explicit place, `data_dir` (--config.data.dir) or else $CIFAR10_DIR, which must
hold the data (no fallback, so a typo is not hidden by a cache); (2) the Keras caches under
$KERAS_HOME or ~/.keras, which also hold our own downloads; (3) a prepared TFDS `cifar10` under
$TFDS_DATA_DIR or ~/tensorflow_datasets (reading it needs TensorFlow, which is optional); (4) if
allowed, the official tarball downloaded into the Keras cache (download.py: no TensorFlow). The
explicit place and $TFDS_DATA_DIR may be gs:// URLs (read through cifar_jax.paths). A failed
place is recorded, and if nothing works one `DataError` lists every place tried and why it
failed. (A TFDS download is not tried: it fetches the same official file, and needs
TensorFlow to read it.)
"""

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar_jax import paths
from cifar_jax.data import cifar10
from cifar_jax.data import download as downloads
from cifar_jax.data.cifar10 import Cifar10, DataError

logger = logging.getLogger(__name__)

ENV_VAR = 'CIFAR10_DIR'
_TFDS_NAME = 'cifar10'
_HOW_TO_PROVIDE = (
    f'To provide CIFAR-10, set --config.data.dir or the {ENV_VAR} environment variable to a '
    f'folder holding {cifar10.BINARY_DIR_NAME} or {cifar10.PYTHON_DIR_NAME}, or to the '
    f'{cifar10.BINARY_TARBALL_NAME} / {cifar10.PYTHON_TARBALL_NAME} tarball, from '
    f'{cifar10.DOWNLOAD_URL}.')


@dataclasses.dataclass(frozen=True)
class _Candidate:
  """A place CIFAR-10 may be, and the reader for what would be there."""
  path: Path
  read: Callable[[Path], Cifar10]


def load_cifar10(data_dir: str = '', download: bool = True,
                 limits: cifar10.Limits = None) -> Cifar10:
  """Reads CIFAR-10 from the first place that has it (see the module docstring).

  Args:
    data_dir: a folder holding cifar-10-batches-{bin,py} or a tarball, such a folder itself,
      or a tarball. Empty: $CIFAR10_DIR, then the caches.
    download: whether the official tarball may be downloaded (into the Keras cache) when no
      local copy is found.
    limits: (train, test) images to keep, the first of each split (cifar10.Limits); every
      file is still read and checked whole.

  Returns:
    The dataset, with `source` saying where it came from.

  Raises:
    DataError: the explicit place has no readable CIFAR-10, or no place has.
  """
  explicit_path, origin = _explicit_location(data_dir)
  if explicit_path:
    ds = _load_explicit(explicit_path, origin, limits)
  else:
    ds = _search_caches(download, limits)
  logger.info('CIFAR-10 from %s: %d train and %d test images, %d classes.', ds.source,
              len(ds.train_labels), len(ds.test_labels), len(ds.class_names))
  return ds


def _explicit_location(data_dir: str) -> tuple[str, str]:
  """The place the user named, and how they named it (for messages); ('', '') if none."""
  if data_dir:
    return data_dir, 'data_dir (--config.data.dir)'
  env_value = os.environ.get(ENV_VAR, '')
  if env_value:
    return env_value, f'${ENV_VAR}'
  return '', ''


def _load_explicit(path_text: str, origin: str, limits: cifar10.Limits = None) -> Cifar10:
  path = paths.as_path(path_text).expanduser()  # gs:// URLs too (cifar_jax.paths).
  if path.is_file():
    return cifar10.read_tarball(path, limits)
  if not path.is_dir():
    raise DataError(f'{origin} is {path_text!r}, which does not exist. {_HOW_TO_PROVIDE}')
  candidates = _candidates_in(path)
  for candidate in candidates:
    if candidate.path.exists():
      # Read errors propagate: the user pointed here, so a broken copy must not be skipped.
      return candidate.read(candidate.path, limits)
  looked_for = ', '.join(str(c.path) for c in candidates)
  raise DataError(
      f'{origin} is {path_text!r}, which holds no CIFAR-10: neither the batch files themselves '
      f'({cifar10.BINARY_DIR_NAME} or {cifar10.PYTHON_DIR_NAME} contents) nor any of '
      f'{looked_for}. {_HOW_TO_PROVIDE}')


def _candidates_in(folder: Path) -> list[_Candidate]:
  """What a user-named folder may hold, in order of preference."""
  readers_by_layout = {'binary': cifar10.read_binary_dir, 'python': cifar10.read_python_dir}
  layout = cifar10.folder_layout(folder)
  itself = [_Candidate(folder, readers_by_layout[layout])] if layout else []
  return itself + [
      _Candidate(folder / cifar10.BINARY_DIR_NAME, cifar10.read_binary_dir),
      _Candidate(folder / cifar10.PYTHON_DIR_NAME, cifar10.read_python_dir),
      _Candidate(folder / cifar10.BINARY_TARBALL_NAME, cifar10.read_tarball),
      _Candidate(folder / cifar10.PYTHON_TARBALL_NAME, cifar10.read_tarball),
  ]


def _keras_cache_candidates() -> list[_Candidate]:
  """Where `keras.datasets.cifar10.load_data()` leaves the python batches (Keras 2 and 3), and
  where download.py keeps its tarball (Keras 3's name for it)."""
  datasets = downloads.keras_datasets_dir()
  return [
      _Candidate(datasets / cifar10.PYTHON_DIR_NAME, cifar10.read_python_dir),  # Keras 2.
      _Candidate(datasets / 'cifar-10-batches-py-target' / cifar10.PYTHON_DIR_NAME,
                 cifar10.read_python_dir),  # Keras 3.
      _Candidate(datasets / 'cifar-10-batches-py.tar.gz', cifar10.read_tarball),  # Keras 2.
      _Candidate(datasets / downloads.CACHE_NAME, cifar10.read_tarball),  # Keras 3, and ours.
  ]


def _search_caches(download: bool, limits: cifar10.Limits = None) -> Cifar10:
  failures = [f'data_dir (--config.data.dir) and ${ENV_VAR}: not set']
  unreadable = {}  # Path -> identity of the unreadable file there, which a download may replace.
  for candidate in _keras_cache_candidates():
    if not candidate.path.exists():
      failures.append(f'{candidate.path}: not found')
      continue
    try:
      return candidate.read(candidate.path, limits)
    except DataError as e:
      # A broken cache is worth a warning, not a stop: a later place may still have the data.
      logger.warning('Skipping the Keras cache at %s: %s', candidate.path, e)
      failures.append(f'{candidate.path}: unreadable: {e}')
      unreadable[candidate.path] = downloads.file_identity(candidate.path)

  tfds_dir = _tfds_data_dir()
  tfds_place = f'prepared TFDS {_TFDS_NAME} in {tfds_dir}'
  if not list(tfds_dir.glob(f'{_TFDS_NAME}/*/dataset_info.json')):
    failures.append(f'{tfds_place}: not found (no {_TFDS_NAME}/<version>/dataset_info.json)')
  else:
    ds, reason = _attempt(_read_tfds, tfds_dir)
    if ds is not None:
      return ds
    failures.append(f'{tfds_place}: {reason}')

  url, _ = downloads.url_and_md5()
  dest = downloads.cache_path()
  download_place = f'download of {url} into {dest}'
  if not download:
    failures.append(f'{download_place}: skipped (download=False)')
  else:
    logger.info('No local CIFAR-10 found; trying a %s.', download_place)
    try:
      return cifar10.read_tarball(downloads.fetch(dest, stale=unreadable.get(dest)), limits)
    except DataError as e:
      failures.append(f'{download_place}: failed: {e}')

  places = '\n'.join(f'  - {failure}' for failure in failures)
  raise DataError(f'CIFAR-10 not found. Looked in:\n{places}\n{_HOW_TO_PROVIDE}')


def _attempt(load: Callable[[Path], Cifar10], tfds_dir: Path) -> tuple[Cifar10 | None, str]:
  """Reads TFDS; its failure is one recorded reason, not the end of the search."""
  try:
    return load(tfds_dir), ''
  except Exception as e:  # TFDS fails in many ways: no TensorFlow, no network, version skew.
    logger.warning('TFDS %s failed: %s: %s', load.__name__, type(e).__name__, e)
    return None, f'failed: {type(e).__name__}: {e}'


def _tfds_data_dir() -> Path:
  # A gs:// TFDS_DATA_DIR stays a URL (pathlib would fold it into a local 'gs:/...').
  return paths.as_path(os.environ.get('TFDS_DATA_DIR') or
                       Path.home() / 'tensorflow_datasets').expanduser()


def _read_tfds(tfds_dir: Path) -> Cifar10:
  # Imported here: it is slow to import, and reading its files needs TensorFlow (optional).
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(_TFDS_NAME, data_dir=str(tfds_dir))
  train_images, train_labels = _tfds_split_arrays(tfds, builder, 'train')
  test_images, test_labels = _tfds_split_arrays(tfds, builder, 'test')
  return Cifar10(train_images=train_images, train_labels=train_labels,
                 test_images=test_images, test_labels=test_labels,
                 class_names=tuple(builder.info.features['label'].names),
                 source=f'TFDS {_TFDS_NAME} in {tfds_dir}')


def _tfds_split_arrays(tfds, builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return (np.ascontiguousarray(arrays['image'], dtype=np.uint8),
          np.asarray(arrays['label'], dtype=np.int32))
