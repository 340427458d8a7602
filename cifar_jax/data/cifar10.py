"""Readers for the official CIFAR-10 distributions, validated and returned as numpy arrays.

Three on-disk forms are understood, all from https://www.cs.toronto.edu/~kriz/cifar.html:

- `cifar-10-batches-bin/`: data_batch_1..5.bin and test_batch.bin hold records of one label byte
  plus 3072 pixel bytes (1024 R, 1024 G, 1024 B, each row-major 32x32); batches.meta.txt holds
  the class names, one a line.
- `cifar-10-batches-py/`: the same batches as Python-2 pickles (as Keras and torchvision cache
  them), read through an unpickler that admits only numpy array reconstruction.
- `cifar-10-binary.tar.gz` / `cifar-10-python.tar.gz`: either folder, read from the archive in
  memory without extracting it.

Each may be local or on an object store (`gs://bucket/cifar-10-batches-bin`): paths are read
through cifar_jax.paths, which gives pathlib and etils.epath paths the same methods.

Every problem raises `DataError`, naming the file (and record) at fault and what to do about it.
The layout is checked exactly: each batch file holds 10,000 records (50,000 train and 10,000
test in all), so a truncated or shortened file is an error, not a smaller dataset. (Past the
usual ~400 lines: the three forms share one validation path, and every check stays beside the
parser it guards, so that no reader can skip one.)
"""

import codecs
import collections
import dataclasses
import io
import logging
import pickle
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from cifar_jax import paths

logger = logging.getLogger(__name__)

DOWNLOAD_URL = 'https://www.cs.toronto.edu/~kriz/cifar.html'
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
# Label order of the official batches.meta files, used when a copy lacks its meta file.
DEFAULT_CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                       'ship', 'truck')

BINARY_DIR_NAME = 'cifar-10-batches-bin'
PYTHON_DIR_NAME = 'cifar-10-batches-py'
BINARY_TARBALL_NAME = 'cifar-10-binary.tar.gz'
PYTHON_TARBALL_NAME = 'cifar-10-python.tar.gz'

# The official layout, exactly: five train batches and one test batch of 10,000 records each.
# A copy holding anything else is damaged (or not CIFAR-10); subsets are data.num_train_examples.
RECORDS_PER_BATCH = 10_000
NUM_TRAIN_EXAMPLES = 50_000
NUM_TEST_EXAMPLES = 10_000

_PIXELS_PER_IMAGE = 32 * 32 * 3
_BINARY_RECORD_BYTES = 1 + _PIXELS_PER_IMAGE
_FRESH_COPY_HINT = f'Replace it with a fresh copy of CIFAR-10 from {DOWNLOAD_URL}.'


class DataError(Exception):
  """CIFAR-10 is missing, unreadable or malformed; the message names the place and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays has no single truth.
class Cifar10:
  """The dataset in memory (all of it, or the first images of each split that a reader's
  `limits` kept), images HWC uint8 and labels int32 in 0..9."""
  train_images: np.ndarray  # uint8 [N, 32, 32, 3]
  train_labels: np.ndarray  # int32 [N]
  test_images: np.ndarray   # uint8 [M, 32, 32, 3]
  test_labels: np.ndarray   # int32 [M]
  class_names: tuple[str, ...]  # The 10 names, in label order.
  source: str  # Where it was read from, human readable.

  def __post_init__(self):
    # Every reader funnels through here, so downstream code can rely on these invariants.
    for split in ('train', 'test'):
      images = getattr(self, f'{split}_images')
      labels = getattr(self, f'{split}_labels')
      if (not isinstance(images, np.ndarray) or images.dtype != np.uint8 or
          images.shape[1:] != IMAGE_SHAPE):
        raise DataError(f'Cifar10.{split}_images from {self.source} must be uint8 '
                        f'[N, 32, 32, 3], not {_describe_array(images)}.')
      if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
        raise DataError(f'Cifar10.{split}_labels from {self.source} must be int32 [N], '
                        f'not {_describe_array(labels)}.')
      if len(labels) != len(images):
        raise DataError(f'Cifar10 from {self.source} has {len(images)} {split} images but '
                        f'{len(labels)} {split} labels.')
      _check_label_range(labels, f'Cifar10.{split}_labels from {self.source}')
    if len(self.class_names) != NUM_CLASSES:
      raise DataError(f'Cifar10 from {self.source} has {len(self.class_names)} class names, '
                      f'not {NUM_CLASSES}: {self.class_names}.')


# `limits` of the readers: (train, test) image counts to keep, the first of each split (None or
# 0: all). Every record of every file is still read and checked; only the images kept are
# converted to [N, 32, 32, 3] (a run of data.num_train_examples=300 copies 300 images, not 60,000).
Limits = tuple[int | None, int | None] | None


def read_binary_dir(path, limits: Limits = None) -> Cifar10:
  """Reads a `cifar-10-batches-bin` folder."""
  return _read_folder(paths.as_path(path), _BINARY_LAYOUT, limits)


def read_python_dir(path, limits: Limits = None) -> Cifar10:
  """Reads a `cifar-10-batches-py` folder of pickles, refusing anything but numpy arrays."""
  return _read_folder(paths.as_path(path), _PYTHON_LAYOUT, limits)


def read_tarball(path, limits: Limits = None) -> Cifar10:
  """Reads `cifar-10-binary.tar.gz` or `cifar-10-python.tar.gz` in memory; layout from contents."""
  path = paths.as_path(path)
  if not path.is_file():
    raise DataError(f'CIFAR-10 tarball {path} does not exist or is not a file. '
                    f'Download one from {DOWNLOAD_URL}.')
  members = _read_cifar_members(path)
  found = _find_layout(members.keys())
  if found is None:
    raise DataError(
        f'Tarball {path} holds no CIFAR-10 batches (looked for {_BINARY_LAYOUT.describe()} or '
        f'{_PYTHON_LAYOUT.describe()}); it is not a CIFAR-10 archive. '
        f'Use cifar-10-binary.tar.gz or cifar-10-python.tar.gz from {DOWNLOAD_URL}.')
  layout, folder = found
  return _read_layout(
      layout,
      read_member=lambda name: members.get(posixpath.join(folder, name)),
      describe=lambda name: f'{path}:{posixpath.join(folder, name)}',
      source=f'{layout.name} tarball {path}', limits=limits)


def folder_layout(path) -> str | None:
  """'binary' or 'python' when the folder itself holds CIFAR-10 batch files, else None."""
  path = paths.as_path(path)
  if not path.is_dir():
    return None
  found = _find_layout([child.name for child in path.iterdir()])
  return found[0].name if found else None


def class_balance_summary(ds: Cifar10) -> str:
  """A short table of images per class and split, with totals and the label range."""
  train_counts = np.bincount(ds.train_labels, minlength=NUM_CLASSES)
  test_counts = np.bincount(ds.test_labels, minlength=NUM_CLASSES)
  lines = [f'CIFAR-10 from {ds.source}', f'{"class":<16}{"train":>7}{"test":>7}']
  for label, name in enumerate(ds.class_names):
    lines.append(f'{label} {name:<14}{train_counts[label]:>7}{test_counts[label]:>7}')
  lines.append(f'{"total":<16}{len(ds.train_labels):>7}{len(ds.test_labels):>7}')
  lines.append(f'label range: train {_label_range(ds.train_labels)}, '
               f'test {_label_range(ds.test_labels)}')
  return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------
# Batch files: bytes -> (images [n, 3, 32, 32] uint8, labels [n] int32).


def _parse_binary_batch(buffer: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
  size = len(buffer)
  if size == 0 or size % _BINARY_RECORD_BYTES:
    raise DataError(f'truncated or corrupt: {name} has {size} bytes, not a multiple of '
                    f'{_BINARY_RECORD_BYTES} (a label byte plus 3072 pixel bytes per record), '
                    f'or no record at all. {_FRESH_COPY_HINT}')
  records = np.frombuffer(buffer, dtype=np.uint8).reshape(-1, _BINARY_RECORD_BYTES)
  labels = records[:, 0].astype(np.int32)
  _check_label_range(labels, name)
  return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _parse_binary_meta(buffer: bytes, name: str) -> tuple[str, ...]:
  try:
    text = buffer.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(f'{name} is not text ({e}). {_FRESH_COPY_HINT}') from e
  return _check_class_names([line.strip() for line in text.splitlines() if line.strip()], name)


def _parse_python_batch(buffer: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
  batch = _unpickle_dict(buffer, name)
  data = batch.get('data')
  labels = batch.get('labels', batch.get('fine_labels'))
  if data is None or labels is None:
    raise DataError(f"{name} lacks 'data' or 'labels' (it has keys {sorted(batch)}); it is not "
                    f'a CIFAR-10 batch. {_FRESH_COPY_HINT}')
  if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or
      data.shape[1] != _PIXELS_PER_IMAGE):
    raise DataError(f"{name}: 'data' must be uint8 [n, {_PIXELS_PER_IMAGE}], not "
                    f'{_describe_array(data)}. {_FRESH_COPY_HINT}')
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{name}: 'labels' must be a list of ints, not {_describe_array(labels)}. "
                    f'{_FRESH_COPY_HINT}')
  if len(labels) != len(data):
    raise DataError(f"{name} has {len(data)} images but {len(labels)} labels. "
                    f'{_FRESH_COPY_HINT}')
  if not len(data):
    raise DataError(f'{name} holds no images. {_FRESH_COPY_HINT}')
  _check_label_range(labels, name)
  return data.reshape(-1, 3, 32, 32), labels.astype(np.int32)


def _parse_python_meta(buffer: bytes, name: str) -> tuple[str, ...]:
  names = _unpickle_dict(buffer, name).get('label_names')
  if not isinstance(names, (list, tuple)):
    raise DataError(f"{name} has no 'label_names' list. {_FRESH_COPY_HINT}")
  return _check_class_names(
      [n.decode('utf-8') if isinstance(n, bytes) else str(n) for n in names], name)


# ---------------------------------------------------------------------------------------------
# Restricted unpickling.

# Everything the official pickles (Python 2) and Keras/torchvision-style re-pickles (Python 3,
# protocol 2) reference; numpy 1 names map to their numpy 2 home.
_ALLOWED_NUMPY_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): np._core.multiarray._reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): np._core.multiarray._reconstruct,
    ('numpy.core.multiarray', 'scalar'): np._core.multiarray.scalar,
    ('numpy._core.multiarray', 'scalar'): np._core.multiarray.scalar,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only numpy array globals and latin-1 `_codecs.encode`; refuses the rest."""

  def __init__(self, file, name: str):
    super().__init__(file, encoding='bytes')  # Python 2 str -> bytes, as numpy's arrays need.
    self._name = name

  def find_class(self, module, name):
    if (module, name) == ('_codecs', 'encode'):
      return self._latin1_encode
    allowed = _ALLOWED_NUMPY_GLOBALS.get((module, name))
    if allowed is None:
      self._refuse(f'`{module}.{name}`')
    return allowed

  def _latin1_encode(self, text, encoding='utf-8', errors='strict'):
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(str, 'latin1'); only that is let in.
    if not isinstance(text, str) or not _is_latin1(encoding) or errors != 'strict':
      self._refuse(f'`_codecs.encode` with encoding {encoding!r}')
    return text.encode('latin-1')

  def _refuse(self, what: str):
    raise DataError(f'{self._name} asks for {what}, which official CIFAR-10 files never do, so '
                    f'it was refused and nothing from it ran. The file is corrupt or malicious: '
                    f'delete it. {_FRESH_COPY_HINT}')


def _is_latin1(encoding) -> bool:
  try:
    return codecs.lookup(encoding).name == 'iso8859-1'
  except (TypeError, LookupError):
    return False


def _unpickle_dict(buffer: bytes, name: str) -> dict[str, object]:
  """Loads a pickled dict through the restricted unpickler; keys decoded to str."""
  try:
    loaded = _RestrictedUnpickler(io.BytesIO(buffer), name).load()
  except DataError:
    raise
  except Exception as e:  # Malformed pickles fail in many ways (EOFError, struct.error, ...).
    raise DataError(f'{name} is not a readable pickle ({type(e).__name__}: {e}). '
                    f'{_FRESH_COPY_HINT}') from e
  if not isinstance(loaded, dict):
    raise DataError(f'{name} holds a {type(loaded).__name__}, not the dict of a CIFAR-10 pickle. '
                    f'{_FRESH_COPY_HINT}')
  return {k.decode('utf-8') if isinstance(k, bytes) else str(k): v for k, v in loaded.items()}


# ---------------------------------------------------------------------------------------------
# Layouts: which files make up a copy, and how to assemble them.


@dataclasses.dataclass(frozen=True)
class _Layout:
  name: str
  train_files: tuple[str, ...]
  test_file: str
  meta_file: str
  parse_batch: Callable[[bytes, str], tuple[np.ndarray, np.ndarray]]
  parse_meta: Callable[[bytes, str], tuple[str, ...]]

  @property
  def batch_files(self) -> tuple[str, ...]:
    return self.train_files + (self.test_file,)

  @property
  def all_files(self) -> tuple[str, ...]:
    return self.batch_files + (self.meta_file,)

  def describe(self) -> str:
    return ', '.join(self.batch_files)


def _make_layout(name, suffix, meta_file, parse_batch, parse_meta) -> _Layout:
  return _Layout(name=name, train_files=tuple(f'data_batch_{i}{suffix}' for i in range(1, 6)),
                 test_file=f'test_batch{suffix}', meta_file=meta_file, parse_batch=parse_batch,
                 parse_meta=parse_meta)


_BINARY_LAYOUT = _make_layout('binary', '.bin', 'batches.meta.txt', _parse_binary_batch,
                              _parse_binary_meta)
_PYTHON_LAYOUT = _make_layout('python', '', 'batches.meta', _parse_python_batch,
                              _parse_python_meta)
_LAYOUTS = (_BINARY_LAYOUT, _PYTHON_LAYOUT)  # Preference order when a place holds both.


def _find_layout(paths: Collection[str]) -> tuple[_Layout, str] | None:
  """The layout, and the folder within `paths`, whose batch files appear there."""
  names_by_folder = collections.defaultdict(set)
  for path in paths:
    names_by_folder[posixpath.dirname(path)].add(posixpath.basename(path))
  for layout in _LAYOUTS:
    for folder, names in sorted(names_by_folder.items()):
      if names.intersection(layout.batch_files):
        return layout, folder
  return None


def _read_folder(path: Path, layout: _Layout, limits: Limits = None) -> Cifar10:
  if not path.is_dir():
    raise DataError(f'CIFAR-10 {layout.name} folder {path} does not exist or is not a folder. '
                    f'Point to a folder holding {layout.describe()} (from {DOWNLOAD_URL}).')
  return _read_layout(layout, read_member=lambda name: _read_bytes_or_none(path / name),
                      describe=lambda name: str(path / name),
                      source=f'{layout.name} folder {path}', limits=limits)


def _read_bytes_or_none(path: Path) -> bytes | None:
  try:
    return path.read_bytes()
  except FileNotFoundError:
    return None
  except OSError as e:
    raise DataError(f'cannot read {path}: {e}. Check its permissions.') from e


def _read_cifar_members(path: Path) -> dict[str, bytes]:
  """Every regular member of the tarball named like a CIFAR-10 file, by path, in one pass."""
  wanted = {name for layout in _LAYOUTS for name in layout.all_files}
  members = {}
  try:
    # Stream mode ('r|*') reads the archive front to back once: members of the official
    # tarballs are not in batch order, and seeking back in a gzip stream re-inflates it.
    with path.open('rb') as f, tarfile.open(fileobj=f, mode='r|*') as tar:
      for member in tar:
        if member.isfile() and posixpath.basename(member.name) in wanted:
          members[posixpath.normpath(member.name)] = tar.extractfile(member).read()
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise DataError(f'cannot read tarball {path} ({type(e).__name__}: {e}); it is truncated or '
                    f'not a tar archive. {_FRESH_COPY_HINT}') from e
  return members


def _read_layout(layout: _Layout, read_member: Callable[[str], bytes | None],
                 describe: Callable[[str], str], source: str, limits: Limits = None) -> Cifar10:
  """Reads, validates and assembles the batches of one copy.

  Args:
    layout: which files make up the copy.
    read_member: file name -> its bytes, or None when it is missing.
    describe: file name -> how error messages name it.
    source: human-readable origin recorded in the result.
    limits: (train, test) images to keep (see `Limits`).
  """
  buffers = {name: read_member(name) for name in layout.batch_files}
  missing = [describe(name) for name, buffer in buffers.items() if buffer is None]
  if missing:
    raise DataError(f'missing CIFAR-10 file(s): {", ".join(missing)}. A {layout.name} copy '
                    f'holds {layout.describe()}; re-extract the complete archive from '
                    f'{DOWNLOAD_URL}.')
  batches = {name: layout.parse_batch(buffer, describe(name))
             for name, buffer in buffers.items()}
  for name, (images, _) in batches.items():
    _check_record_count(len(images), describe(name), layout,
                        len(buffers[name]) if layout is _BINARY_LAYOUT else None)
  train = [batches[name] for name in layout.train_files]
  test_images, test_labels = batches[layout.test_file]
  num_train, num_test = limits or (None, None)
  return Cifar10(
      train_images=_to_hwc([images for images, _ in train], num_train),
      train_labels=np.concatenate([labels for _, labels in train])[:num_train or None],
      test_images=_to_hwc([test_images], num_test),
      test_labels=test_labels[:num_test or None],
      class_names=_read_class_names(layout, read_member, describe),
      source=source)


def _read_class_names(layout: _Layout, read_member: Callable[[str], bytes | None],
                      describe: Callable[[str], str]) -> tuple[str, ...]:
  buffer = read_member(layout.meta_file)
  if buffer is None:
    # The names are fixed for CIFAR-10, so a copy that only kept its batches is still usable.
    logger.warning('%s is missing; using the standard CIFAR-10 class names.',
                   describe(layout.meta_file))
    return DEFAULT_CLASS_NAMES
  return layout.parse_meta(buffer, describe(layout.meta_file))


def _to_hwc(chw_batches: Sequence[np.ndarray], limit: int | None = None) -> np.ndarray:
  """Concatenates [n, 3, 32, 32] batches into one C-contiguous [N, 32, 32, 3] array (its first
  `limit` images, if set)."""
  # One copy into a preallocated array (np.concatenate would keep the inputs' channel-first
  # memory order), channel by channel: each inner copy loop then spans a whole 1024-pixel plane,
  # about 3x faster than a single transposed copy whose innermost loop has 3 elements.
  total = sum(len(b) for b in chw_batches)
  out = np.empty((min(limit or total, total),) + IMAGE_SHAPE, dtype=np.uint8)
  start = 0
  for batch in chw_batches:
    batch = batch[:len(out) - start]
    rows = out[start:start + len(batch)]
    for channel in range(IMAGE_SHAPE[-1]):
      rows[..., channel] = batch[:, channel]
    start += len(batch)
  return out


# ---------------------------------------------------------------------------------------------
# Small validation helpers.


def _check_record_count(count: int, name: str, layout: '_Layout', size: int | None) -> None:
  """Every official batch file holds exactly RECORDS_PER_BATCH images (so a copy holds 50,000
  train and 10,000 test); fewer is a truncated or altered file, never a dataset to train on."""
  if count == RECORDS_PER_BATCH:
    return
  size_note = (f' ({size:,} bytes; the official file has '
               f'{RECORDS_PER_BATCH * _BINARY_RECORD_BYTES:,})' if size is not None else '')
  raise DataError(f'{name} holds {count:,} images{size_note}, but every official CIFAR-10 batch '
                  f'file holds exactly {RECORDS_PER_BATCH:,} ({NUM_TRAIN_EXAMPLES:,} train and '
                  f'{NUM_TEST_EXAMPLES:,} test images in all): it is truncated or not the '
                  f'official {layout.name} file. {_FRESH_COPY_HINT} To train on fewer images, '
                  'keep the files whole and set data.num_train_examples.')


def _check_label_range(labels: np.ndarray, name: str):
  bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
  if bad.size:
    first = int(bad[0])
    raise DataError(f'{name}: record {first} has label {labels[first]}, outside '
                    f'0..{NUM_CLASSES - 1} ({bad.size} such records); the file is corrupt or not '
                    f'CIFAR-10. {_FRESH_COPY_HINT}')


def _check_class_names(names: Sequence[str], name: str) -> tuple[str, ...]:
  if len(names) != NUM_CLASSES:
    raise DataError(f'{name} lists {len(names)} class names, not {NUM_CLASSES}: {list(names)}. '
                    f'{_FRESH_COPY_HINT}')
  return tuple(names)


def _describe_array(value) -> str:
  if isinstance(value, np.ndarray):
    return f'{value.dtype} {list(value.shape)}'
  return type(value).__name__


def _label_range(labels: np.ndarray) -> str:
  return f'{labels.min()}..{labels.max()}' if labels.size else 'empty'
