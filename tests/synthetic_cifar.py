"""Small synthetic CIFAR-10 copies, written in the official on-disk formats, for tests.

Images are weakly class dependent (a fixed per-class colour plus strong noise), so a tiny model
can learn them above chance while no test needs the real data. Every writer is deterministic
in (num_train, num_test, seed) and stores exactly what `make_arrays` returns for those.
"""

import io
import pickle
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np

CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck')
NUM_TRAIN_FILES = 5
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
    (folder / name).write_bytes(binary_records(images, labels))
  # The official file ends with an empty line; keep it so readers are tested against that.
  (folder / 'batches.meta.txt').write_text('\n'.join(CLASS_NAMES) + '\n\n')
  return folder


def write_python_dataset(root, num_train=100, num_test=50, seed=0) -> Path:
  """Writes `root/cifar-10-batches-py`, pickled like the official files (protocol 2)."""
  folder = Path(root) / 'cifar-10-batches-py'
  folder.mkdir(parents=True, exist_ok=True)
  for name, images, labels in _batches(num_train, num_test, seed, suffix=''):
    batch = {
        b'batch_label': name.encode(),
        b'labels': [int(label) for label in labels],
        b'data': images.transpose(0, 3, 1, 2).reshape(len(images), -1),
        b'filenames': [f'{name}_{i}.png'.encode() for i in range(len(images))],
    }
    (folder / name).write_bytes(official_pickle(batch))
  meta = {b'label_names': [n.encode() for n in CLASS_NAMES], b'num_cases_per_batch': 10000,
          b'num_vis': 3072}
  (folder / 'batches.meta').write_bytes(official_pickle(meta))
  return folder


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
  tarball.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as staging:
    folder = write_dataset(staging, num_train, num_test, seed)
    with tarfile.open(tarball, 'w:gz') as tar:
      tar.add(folder, arcname=folder.name)
  return tarball


def binary_records(images, labels) -> bytes:
  """Official binary records: per image, a label byte then the R, G and B planes."""
  planes = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
  return np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tobytes()


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
  """(file name, images, labels) for the 5 train batches and the test batch."""
  if num_train < NUM_TRAIN_FILES or num_test < 1:
    raise ValueError(f'need num_train >= {NUM_TRAIN_FILES} and num_test >= 1 so that every '
                     f'batch file has a record; got {num_train}, {num_test}')
  train_images, train_labels, test_images, test_labels = make_arrays(num_train, num_test, seed)
  splits = np.array_split(np.arange(num_train), NUM_TRAIN_FILES)
  for number, indices in enumerate(splits, start=1):
    yield f'data_batch_{number}{suffix}', train_images[indices], train_labels[indices]
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
