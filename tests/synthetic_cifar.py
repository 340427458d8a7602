"""Synthetic CIFAR-10 copies, written in the official on-disk formats, for tests.

Images are weakly class dependent (a fixed per-class colour plus strong noise), so a tiny model
can learn them above chance while no test needs the real data. Every writer is deterministic
in (num_train, num_test, seed).

The readers accept only the official layout (10,000 records per batch file), so the files are
full size: the train split starts with `make_arrays`' `num_train` images (data_batch_1 first)
and the test split with its `num_test` images, and black label-0 filler records complete each
file. Runs take the synthetic part with data.num_train_examples / num_test_examples (tests'
`tiny_config` sets them). The filler is written as holes in sparse files, so a copy costs a
few hundred KB of disk however large it reads.
"""

import io
import os
import pickle
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np

CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck')
NUM_TRAIN_FILES = 5
RECORDS_PER_FILE = 10_000  # The official layout (cifar_jax.data.cifar10.RECORDS_PER_BATCH).
_NOISE_STD = 48.0
# Independent of `seed`, so train and test (and every seed) share the same class signal.
_CLASS_COLOURS = np.random.default_rng(20240601).uniform(48.0, 208.0, size=(10, 3))


def make_arrays(num_train=100, num_test=50, seed=0):
  """Returns (train_images, train_labels, test_images, test_labels): uint8 HWC, int32 labels."""
  rng = np.random.default_rng(seed)
  train_images, train_labels = _make_split(rng, num_train)
  test_images, test_labels = _make_split(rng, num_test)
  return train_images, train_labels, test_images, test_labels


def write_binary_dataset(root, num_train=100, num_test=50, seed=0) -> Path:
  """Writes `root/cifar-10-batches-bin` (5 train files, test_batch.bin, batches.meta.txt)."""
  folder = Path(root) / 'cifar-10-batches-bin'
  folder.mkdir(parents=True, exist_ok=True)
  for name, images, labels in _batches(num_train, num_test, seed, suffix='.bin'):
    with open(folder / name, 'wb') as f:  # The filler (all zero bytes) as a hole.
      f.write(binary_records(images, labels))
      f.truncate(RECORDS_PER_FILE * (1 + 32 * 32 * 3))
  # The official file ends with an empty line; keep it so readers are tested against that.
  (folder / 'batches.meta.txt').write_text('\n'.join(CLASS_NAMES) + '\n\n')
  return folder


def write_python_dataset(root, num_train=100, num_test=50, seed=0) -> Path:
  """Writes `root/cifar-10-batches-py`, pickled like the official files (protocol 2)."""
  folder = Path(root) / 'cifar-10-batches-py'
  return _copy_of_written(('py', num_train, num_test, seed), folder,
                          lambda: _write_python_dataset(folder, num_train, num_test, seed))


def _write_python_dataset(folder, num_train, num_test, seed) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for name, images, labels in _batches(num_train, num_test, seed, suffix=''):
    data = np.zeros((RECORDS_PER_FILE, 32 * 32 * 3), np.uint8)
    data[:len(images)] = images.transpose(0, 3, 1, 2).reshape(len(images), 32 * 32 * 3)
    batch = {
        b'batch_label': name.encode(),
        b'labels': [int(label) for label in labels] + [0] * (RECORDS_PER_FILE - len(labels)),
        b'data': data,
        b'filenames': [f'{name}_{i}.png'.encode() for i in range(RECORDS_PER_FILE)],
    }
    write_sparse(folder / name, official_pickle(batch))
  meta = {b'label_names': [n.encode() for n in CLASS_NAMES], b'num_cases_per_batch': 10000,
          b'num_vis': 3072}
  (folder / 'batches.meta').write_bytes(official_pickle(meta))


def write_tarball(root, kind='bin', num_train=100, num_test=50, seed=0, filename=None) -> Path:
  """Writes `root/cifar-10-binary.tar.gz` (kind 'bin') or `cifar-10-python.tar.gz` ('py').

  Args:
    root: folder to write into; only the tarball is left there.
    kind: 'bin' or 'py', the layout inside.
    num_train: training images.
    num_test: test images.
    seed: as for `make_arrays`.
    filename: the tarball's name, e.g. Keras' 'cifar-10-batches-py.tar.gz'; default official.

  Returns:
    The tarball's path.
  """
  writers = {'bin': (write_binary_dataset, 'cifar-10-binary.tar.gz'),
             'py': (write_python_dataset, 'cifar-10-python.tar.gz')}
  write_dataset, default_name = writers[kind]
  tarball = Path(root) / (filename or default_name)

  def write():
    with tempfile.TemporaryDirectory() as staging:
      folder = write_dataset(staging, num_train, num_test, seed)
      with tarfile.open(tarball, 'w:gz', compresslevel=1) as tar:
        tar.add(folder, arcname=folder.name)

  tarball.parent.mkdir(parents=True, exist_ok=True)
  return _copy_of_written(('tar', kind, num_train, num_test, seed, tarball.name), tarball, write)


# What the slow writers (the pure-Python pickler: seconds a python copy; gzip) wrote, by their
# arguments, in a folder of this process's: a later call with the same arguments copies it,
# byte for byte and as sparse (tests/test_data_sources.py writes a few dozen copies, most
# alike). Tests may change their copy; the kept one is never handed out.
_WRITTEN: dict[tuple, Path] = {}
_WRITTEN_DIR: list[tempfile.TemporaryDirectory] = []


def _copy_of_written(key, path: Path, write) -> Path:
  """Writes `path` (a file or folder) with `write()` the first time for `key`, later by copying
  what it wrote."""
  kept = _WRITTEN.get(key)
  if kept is None:
    write()
    if not _WRITTEN_DIR:
      _WRITTEN_DIR.append(tempfile.TemporaryDirectory(prefix='synthetic_cifar_'))
    kept = Path(_WRITTEN_DIR[0].name) / str(len(_WRITTEN)) / path.name
    _copy(path, kept)
    _WRITTEN[key] = kept
  else:
    _copy(kept, path)
  return path


def _copy(source: Path, target: Path) -> None:
  if source.is_dir():
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
      _copy(child, target / child.name)
  else:
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy_sparse_file(source, target)


def _copy_sparse_file(source: Path, target: Path) -> None:
  """Copies the data of `source` to `target`, its holes as holes (SEEK_DATA/SEEK_HOLE)."""
  if not hasattr(os, 'SEEK_DATA'):  # Not on this OS: find the zero blocks instead.
    write_sparse(target, source.read_bytes())
    return
  size = source.stat().st_size
  with open(source, 'rb') as src, open(target, 'wb') as dst:
    offset = 0
    while offset < size:
      try:
        start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
      except OSError:  # No data after `offset` (ENXIO): the rest is a hole.
        break
      end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
      src.seek(start)
      dst.seek(start)
      dst.write(src.read(end - start))
      offset = end
    dst.truncate(size)


def binary_records(images, labels) -> bytes:
  """Official binary records: per image, a label byte then the R, G and B planes."""
  planes = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), 32 * 32 * 3)
  return np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tobytes()


def write_sparse(path, data: bytes, block: int = 1 << 16) -> None:
  """Writes `data` to `path`, leaving its all-zero blocks as holes (no disk space)."""
  view, zero = memoryview(data), bytes(block)
  with open(path, 'wb') as f:
    for start in range(0, len(data), block):
      chunk = view[start:start + block]
      if chunk == zero[:len(chunk)]:
        f.seek(len(chunk), 1)
      else:
        f.write(chunk)
    f.truncate(len(data))


def official_pickle(obj) -> bytes:
  """Pickles like Python 2's cPickle wrote the official files (Keras' own loader reads them)."""
  buffer = io.BytesIO()
  _Python2StylePickler(buffer).dump(obj)
  return buffer.getvalue()


def _make_split(rng, num_images):
  labels = rng.permutation(np.arange(num_images) % 10).astype(np.int32)  # Balanced within 1.
  noise = rng.normal(0.0, _NOISE_STD, size=(num_images, 32, 32, 3))
  images = _CLASS_COLOURS[labels][:, None, None, :] + noise
  return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


def _batches(num_train, num_test, seed, suffix):
  """(file name, images, labels) of the synthetic records at the start of the 5 train batches
  (in order) and the test batch; the writers fill each file up to RECORDS_PER_FILE."""
  if not (0 <= num_train <= NUM_TRAIN_FILES * RECORDS_PER_FILE and
          0 <= num_test <= RECORDS_PER_FILE):
    raise ValueError(f'need num_train <= {NUM_TRAIN_FILES * RECORDS_PER_FILE} and num_test <= '
                     f'{RECORDS_PER_FILE}; got {num_train}, {num_test}')
  train_images, train_labels, test_images, test_labels = make_arrays(num_train, num_test, seed)
  for number in range(NUM_TRAIN_FILES):
    part = slice(number * RECORDS_PER_FILE, (number + 1) * RECORDS_PER_FILE)
    yield f'data_batch_{number + 1}{suffix}', train_images[part], train_labels[part]
  yield f'test_batch{suffix}', test_images, test_labels


# numpy 2 functions that numpy 1, which wrote the official files, kept in numpy.core.
_NUMPY1_MODULES = {np._core.multiarray._reconstruct: 'numpy.core.multiarray',
                   np._core.multiarray.scalar: 'numpy.core.multiarray'}


class _Python2StylePickler(pickle._Pickler):  # The pure-Python pickler: its dispatch is open.
  """Protocol 2 with Python 2 `str` opcodes for all text and bytes, numpy 1 module names.

  Python 3's own protocol 2 spells bytes as `_codecs.encode(text, 'latin1')` calls, which the
  official files never contain (and Keras' restricted loader refuses).
  """
  dispatch = dict(pickle._Pickler.dispatch)

  def __init__(self, file):
    super().__init__(file, protocol=2)

  def save_python2_str(self, obj):
    data = obj.encode('latin-1') if isinstance(obj, str) else obj
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
    self.memoize(obj)

  dispatch[str] = save_python2_str
  dispatch[bytes] = save_python2_str

  def save_global(self, obj, name=None):
    module = _NUMPY1_MODULES.get(obj)
    if module is None:
      super().save_global(obj, name)
      return
    self.write(pickle.GLOBAL + f'{module}\n{obj.__name__}\n'.encode())
    self.memoize(obj)
