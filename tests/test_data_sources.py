"""Tests for the CIFAR-10 readers (cifar10.py) and the choice of source (sources.py)."""

import codecs
import logging
import os
import pickle
import pickletools
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from cifar_jax.data import cifar10
from cifar_jax.data import sources
from cifar_jax.data.cifar10 import DataError
from tests import synthetic_cifar

SHARED_BINARY_DIR = (Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10-jpeg' /
                     'cifar-10-batches-bin')
NUM_TRAIN, NUM_TEST = 23, 11  # Uneven on purpose: the 5 train files get different sizes.
_RECORD_BYTES = 3073


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
  """Points every cache location at an empty temp HOME so no real cache is ever used."""
  home = tmp_path / 'home'
  home.mkdir()
  monkeypatch.setenv('HOME', str(home))
  for name in ('KERAS_HOME', 'TFDS_DATA_DIR', sources.ENV_VAR):
    monkeypatch.delenv(name, raising=False)
  return home


def _write(kind, root, seed=0, num_train=NUM_TRAIN, num_test=NUM_TEST) -> Path:
  writers = {'bin': synthetic_cifar.write_binary_dataset,
             'py': synthetic_cifar.write_python_dataset}
  return writers[kind](root, num_train=num_train, num_test=num_test, seed=seed)


def _assert_matches(ds, seed=0, num_train=NUM_TRAIN, num_test=NUM_TEST):
  train_images, train_labels, test_images, test_labels = synthetic_cifar.make_arrays(
      num_train, num_test, seed)
  # Full-size official files: the synthetic images first, then filler (tests/synthetic_cifar.py).
  assert (len(ds.train_labels), len(ds.test_labels)) == (50_000, 10_000)
  np.testing.assert_array_equal(ds.train_images[:num_train], train_images)
  np.testing.assert_array_equal(ds.train_labels[:num_train], train_labels)
  np.testing.assert_array_equal(ds.test_images[:num_test], test_images)
  np.testing.assert_array_equal(ds.test_labels[:num_test], test_labels)
  assert ds.class_names == synthetic_cifar.CLASS_NAMES
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert ds.train_images.flags['C_CONTIGUOUS'] and ds.test_images.flags['C_CONTIGUOUS']


# ---------------------------------------------------------------------------------------------
# Round trips and pixel order.


@pytest.mark.parametrize('kind, read', [('bin', cifar10.read_binary_dir),
                                        ('py', cifar10.read_python_dir)])
def test_folder_round_trip(tmp_path, kind, read):
  _assert_matches(read(_write(kind, tmp_path)))


@pytest.mark.parametrize('kind', ['bin', 'py'])
def test_tarball_round_trip(tmp_path, kind):
  root = tmp_path / 'downloads'
  tarball = synthetic_cifar.write_tarball(root, kind, NUM_TRAIN, NUM_TEST, seed=3)
  ds = cifar10.read_tarball(tarball)
  _assert_matches(ds, seed=3)
  assert str(tarball) in ds.source
  assert list(root.iterdir()) == [tarball]  # Read in memory: nothing was extracted.


@pytest.mark.parametrize('kind, read', [('bin', cifar10.read_binary_dir),
                                        ('tarball', cifar10.read_tarball)])
def test_limits_keep_the_first_images_of_each_split(tmp_path, kind, read):
  """What a run of data.num_train_examples reads: the same first images, across a batch file's
  end (10,002 train images: all of data_batch_1 and 2 of data_batch_2). (Every reader shares
  this assembly; the python folder's is the binary one's.)"""
  num_train, num_test = 10_002, 7
  if kind == 'tarball':
    path = synthetic_cifar.write_tarball(tmp_path, 'bin', num_train, num_test)
  else:
    path = _write(kind, tmp_path, num_train=num_train, num_test=num_test)
  full, kept = read(path), read(path, (num_train, num_test))
  assert (len(kept.train_labels), len(kept.test_labels)) == (num_train, num_test)
  for name, n in (('train', num_train), ('test', num_test)):
    np.testing.assert_array_equal(getattr(kept, f'{name}_images'),
                                  getattr(full, f'{name}_images')[:n])
    np.testing.assert_array_equal(getattr(kept, f'{name}_labels'),
                                  getattr(full, f'{name}_labels')[:n])
  assert kept.train_images.flags['C_CONTIGUOUS'] and kept.test_images.flags['C_CONTIGUOUS']
  # Every record is still checked: a bad label past the kept images is an error.
  if kind == 'bin':
    assert read(path, (None, 0)).train_images.shape == full.train_images.shape  # None, 0: all.
    with open(path / 'test_batch.bin', 'r+b') as f:
      f.seek(9_000 * _RECORD_BYTES)
      f.write(bytes([10]))
    with pytest.raises(DataError, match='record 9000 has label 10'):
      read(path, (num_train, num_test))


@pytest.mark.parametrize('kind', ['py', 'tarball'])
def test_a_repeated_synthetic_write_is_a_copy_of_the_first_and_its_own(tmp_path, kind):
  """tests/synthetic_cifar.py writes a python copy or a tarball once per process and copies it
  after (the pure-Python pickler takes seconds a copy): the same bytes, and a test's changes to
  its copy reach no other. (The arguments of this file's other tests: no extra writes.)"""
  def write(root):
    if kind == 'tarball':
      return synthetic_cifar.write_tarball(root, 'bin', NUM_TRAIN, NUM_TEST)
    return _write('py', root)

  def contents(path):
    files = sorted(path.rglob('*')) if path.is_dir() else [path]
    return {f.relative_to(path.parent): f.read_bytes() for f in files if f.is_file()}

  first = write(tmp_path / 'first')
  written = contents(first)
  (next(first.rglob('*test_batch*')) if first.is_dir() else first).write_bytes(b'changed')
  assert contents(write(tmp_path / 'second')) == written


def test_binary_pixel_order_is_hwc(tmp_path):
  # Built from raw bytes, not from the helper, so a shared transposition bug cannot hide.
  row, col = 2, 5
  record = np.zeros(_RECORD_BYTES, np.uint8)
  record[0] = 7
  record[1 + row * 32 + col] = 11                # Red plane.
  record[1 + 1024 + row * 32 + col] = 22         # Green plane.
  record[1 + 2048 + row * 32 + col] = 33         # Blue plane.
  folder = _write('bin', tmp_path)
  # Then zero records, to the official 10,000.
  (folder / 'test_batch.bin').write_bytes(record.tobytes() + bytes(_RECORD_BYTES * 9_999))
  ds = cifar10.read_binary_dir(folder)
  assert ds.test_labels[:2].tolist() == [7, 0]
  assert ds.test_images[0, row, col].tolist() == [11, 22, 33]
  assert ds.test_images[0].sum() == 66


def test_python_pixel_order_is_hwc(tmp_path):
  folder = _write('py', tmp_path)
  data = np.zeros((10_000, 3072), np.uint8)  # The official 10,000 records.
  data[0, [0 * 1024 + 3 * 32 + 4, 1 * 1024 + 3 * 32 + 4, 2 * 1024 + 3 * 32 + 4]] = [1, 2, 3]
  _write_pickle(folder / 'test_batch', {b'data': data, b'labels': [9] + [0] * 9_999})
  ds = cifar10.read_python_dir(folder)
  assert ds.test_images[0, 3, 4].tolist() == [1, 2, 3]
  assert ds.test_labels[:2].tolist() == [9, 0]


def test_synthetic_pickles_hold_only_what_official_files_hold(tmp_path):
  folder = _write('py', tmp_path)
  for name in ('data_batch_1', 'batches.meta'):
    referenced = {arg for opcode, arg, _ in pickletools.genops((folder / name).read_bytes())
                  if opcode.name == 'GLOBAL'}
    assert referenced <= {'numpy.core.multiarray _reconstruct', 'numpy ndarray', 'numpy dtype'}


def test_python3_protocol2_pickles_are_read(tmp_path):
  # As a Python 3 tool re-pickling the batches writes them: bytes via _codecs.encode(latin1).
  folder = _write('py', tmp_path)
  for path in folder.iterdir():
    batch = pickle.loads(path.read_bytes(), encoding='bytes')
    path.write_bytes(pickle.dumps(batch, protocol=2))
  assert b'_codecs' in (folder / 'test_batch').read_bytes()
  _assert_matches(cifar10.read_python_dir(folder))


def test_missing_meta_falls_back_to_standard_names(tmp_path):
  folder = _write('bin', tmp_path)
  (folder / 'batches.meta.txt').unlink()
  assert cifar10.read_binary_dir(folder).class_names == cifar10.DEFAULT_CLASS_NAMES


def test_class_balance_summary(tmp_path):
  summary = cifar10.class_balance_summary(cifar10.read_binary_dir(_write('bin', tmp_path)))
  _, train_labels, _, test_labels = synthetic_cifar.make_arrays(NUM_TRAIN, NUM_TEST)
  rows = [line.split() for line in summary.splitlines()]
  assert 'cifar-10-batches-bin' in rows[0][-1]
  # The synthetic files' filler records (to the official 50,000 + 10,000) have label 0.
  assert rows[2] == ['0', 'airplane', str(np.sum(train_labels == 0) + 50_000 - NUM_TRAIN),
                     str(np.sum(test_labels == 0) + 10_000 - NUM_TEST)]
  assert rows[11] == ['9', 'truck', str(np.sum(train_labels == 9)), str(np.sum(test_labels == 9))]
  assert rows[12] == ['total', '50000', '10000']
  assert summary.splitlines()[-1] == 'label range: train 0..9, test 0..9'


def test_synthetic_images_depend_on_class():
  images, labels, _, _ = synthetic_cifar.make_arrays(num_train=1000, num_test=1)
  class_means = np.stack([images[labels == c].mean(axis=(0, 1, 2)) for c in range(10)])
  assert np.ptp(class_means, axis=0).max() > 40  # Far above the noise in a 100-image mean.
  assert np.bincount(labels, minlength=10).tolist() == [100] * 10


# ---------------------------------------------------------------------------------------------
# Broken files: each error names the file at fault.


def test_truncated_binary_file(tmp_path):
  folder = _write('bin', tmp_path)
  path = folder / 'data_batch_2.bin'
  size = path.stat().st_size - 10
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(DataError, match='truncated or corrupt') as error:
    cifar10.read_binary_dir(folder)
  assert f'{path} has {size} bytes, not a multiple of 3073' in str(error.value)


def test_empty_binary_file(tmp_path):
  folder = _write('bin', tmp_path)
  (folder / 'data_batch_5.bin').write_bytes(b'')
  with pytest.raises(DataError, match='data_batch_5.bin has 0 bytes'):
    cifar10.read_binary_dir(folder)


def test_binary_label_out_of_range(tmp_path):
  folder = _write('bin', tmp_path)
  path = folder / 'test_batch.bin'
  data = bytearray(path.read_bytes())
  data[3 * _RECORD_BYTES] = 10
  path.write_bytes(bytes(data))
  with pytest.raises(DataError, match=r'test_batch\.bin: record 3 has label 10, outside 0\.\.9'):
    cifar10.read_binary_dir(folder)


@pytest.mark.parametrize('kind, missing, read', [
    ('bin', 'data_batch_4.bin', cifar10.read_binary_dir),
    ('py', 'test_batch', cifar10.read_python_dir),
])
def test_missing_batch_file(tmp_path, kind, missing, read):
  folder = _write(kind, tmp_path)
  (folder / missing).unlink()
  with pytest.raises(DataError, match='missing CIFAR-10 file') as error:
    read(folder)
  assert str(folder / missing) in str(error.value)


def test_tarball_without_cifar_files(tmp_path):
  tarball = tmp_path / 'other.tar.gz'
  (tmp_path / 'readme.html').write_text('not cifar')
  with tarfile.open(tarball, 'w:gz') as tar:
    tar.add(tmp_path / 'readme.html', arcname='readme.html')
  with pytest.raises(DataError, match='holds no CIFAR-10 batches'):
    cifar10.read_tarball(tarball)


def test_corrupt_tarball(tmp_path):
  tarball = synthetic_cifar.write_tarball(tmp_path, 'bin', NUM_TRAIN, NUM_TEST)
  tarball.write_bytes(tarball.read_bytes()[:2000])
  with pytest.raises(DataError, match='cannot read tarball') as error:
    cifar10.read_tarball(tarball)
  assert str(tarball) in str(error.value)


def test_tarball_member_error_names_member(tmp_path):
  staging = _write('bin', tmp_path / 'staging')
  (staging / 'data_batch_3.bin').write_bytes(b'\x00' * 100)
  tarball = tmp_path / 'cifar-10-binary.tar.gz'
  with tarfile.open(tarball, 'w:gz') as tar:
    tar.add(staging, arcname=staging.name)
  with pytest.raises(DataError, match='cifar-10-batches-bin/data_batch_3.bin has 100 bytes'):
    cifar10.read_tarball(tarball)


class _RunsCommand:
  """Unpickling this would run `command` through os.system."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


class _Evaluates:
  """Unpickling this would evaluate `expression` with builtins.eval."""

  def __init__(self, expression):
    self.expression = expression

  def __reduce__(self):
    return eval, (self.expression,)


@pytest.mark.parametrize('make_payload, refused', [
    # Protocol 2 writes Python 2 module names: posix.system, __builtin__.eval.
    (lambda marker: _RunsCommand(f'touch {marker}'), '.system`'),
    (lambda marker: _Evaluates(f'open({str(marker)!r}, "w")'), '__builtin__.eval`'),
])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, make_payload, refused):
  folder = _write('py', tmp_path / 'data')
  marker = tmp_path / 'marker'
  payload = {b'data': make_payload(marker), b'labels': [0]}
  (folder / 'data_batch_1').write_bytes(pickle.dumps(payload, protocol=2))
  with pytest.raises(DataError, match='official CIFAR-10 files never do') as error:
    cifar10.read_python_dir(folder)
  assert refused in str(error.value)
  assert str(folder / 'data_batch_1') in str(error.value)
  assert not marker.exists()


def test_codecs_encode_other_than_latin1_is_refused(tmp_path):
  folder = _write('py', tmp_path)

  class EncodesUtf8:

    def __reduce__(self):
      return codecs.encode, ('text', 'utf-8')

  (folder / 'batches.meta').write_bytes(
      pickle.dumps({b'label_names': EncodesUtf8()}, protocol=2))
  with pytest.raises(DataError, match="`_codecs.encode` with encoding 'utf-8'"):
    cifar10.read_python_dir(folder)


@pytest.mark.parametrize('batch, expected', [
    ({b'data': np.zeros((4, 3000), np.uint8), b'labels': [0] * 4}, r'uint8 \[4, 3000\]'),
    ({b'data': np.zeros((4, 3072), np.float32), b'labels': [0] * 4}, r'float32 \[4, 3072\]'),
    ({b'data': np.zeros((4, 3072), np.uint8), b'labels': [0] * 3}, '4 images but 3 labels'),
    ({b'data': np.zeros((4, 3072), np.uint8), b'labels': [0, 1, 2, 12]}, 'record 3 has label 12'),
    ({b'data': np.zeros((4, 3072), np.uint8)}, "lacks 'data' or 'labels'"),
])
def test_malformed_python_batch(tmp_path, batch, expected):
  folder = _write('py', tmp_path)
  _write_pickle(folder / 'data_batch_2', batch)
  with pytest.raises(DataError, match=expected) as error:
    cifar10.read_python_dir(folder)
  assert str(folder / 'data_batch_2') in str(error.value)


def test_garbage_pickle(tmp_path):
  folder = _write('py', tmp_path)
  (folder / 'data_batch_1').write_bytes(b'\x80\x02this is not a pickle')
  with pytest.raises(DataError, match='data_batch_1 is not a readable pickle'):
    cifar10.read_python_dir(folder)


def test_cifar10_rejects_wrong_arrays():
  train_images, train_labels, test_images, test_labels = synthetic_cifar.make_arrays(10, 5)
  with pytest.raises(DataError, match='train_images .* must be uint8'):
    cifar10.Cifar10(train_images.transpose(0, 3, 1, 2), train_labels, test_images, test_labels,
                    synthetic_cifar.CLASS_NAMES, 'test')
  with pytest.raises(DataError, match='test_labels .* must be int32'):
    cifar10.Cifar10(train_images, train_labels, test_images, test_labels.astype(np.int64),
                    synthetic_cifar.CLASS_NAMES, 'test')


def _write_pickle(path, obj):
  path.write_bytes(synthetic_cifar.official_pickle(obj))


# ---------------------------------------------------------------------------------------------
# Choice of source.


def test_explicit_dir_wins_over_env_var(tmp_path, monkeypatch):
  _write('bin', tmp_path / 'from_env', seed=1)
  _write('bin', tmp_path / 'explicit', seed=2)
  monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / 'from_env'))
  ds = sources.load_cifar10(str(tmp_path / 'explicit'), download=False)
  _assert_matches(ds, seed=2)
  assert 'explicit' in ds.source


def test_env_var_is_used_without_explicit_dir(tmp_path, monkeypatch):
  _write('py', tmp_path / 'from_env', seed=1)
  monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / 'from_env'))
  _assert_matches(sources.load_cifar10(download=False), seed=1)


@pytest.mark.parametrize('form', ['parent', 'folder itself', 'tarball', 'parent of tarball'])
def test_explicit_dir_forms(tmp_path, form):
  if form in ('parent', 'folder itself'):
    folder = _write('bin', tmp_path, seed=4)
    path = tmp_path if form == 'parent' else folder
  else:
    tarball = synthetic_cifar.write_tarball(tmp_path, 'py', NUM_TRAIN, NUM_TEST, seed=4)
    path = tarball if form == 'tarball' else tmp_path
  _assert_matches(sources.load_cifar10(str(path), download=False), seed=4)


@pytest.mark.parametrize('use_keras_home', [False, True])
@pytest.mark.parametrize('layout', ['keras2 folder', 'keras3 folder', 'keras2 tarball',
                                    'keras3 archive'])
def test_keras_cache(tmp_path, isolated_environment, monkeypatch, use_keras_home, layout):
  if use_keras_home:
    keras_home = tmp_path / 'keras_home'
    monkeypatch.setenv('KERAS_HOME', str(keras_home))
  else:
    keras_home = isolated_environment / '.keras'
  datasets = keras_home / 'datasets'
  if layout == 'keras2 folder':
    _write('py', datasets, seed=5)
  elif layout == 'keras3 folder':
    _write('py', datasets / 'cifar-10-batches-py-target', seed=5)
  else:
    filename = ('cifar-10-batches-py.tar.gz' if layout == 'keras2 tarball' else
                'cifar-10-batches-py-target_archive')
    synthetic_cifar.write_tarball(datasets, 'py', NUM_TRAIN, NUM_TEST, seed=5, filename=filename)
  ds = sources.load_cifar10(download=False)
  _assert_matches(ds, seed=5)
  assert str(datasets) in ds.source


def test_logs_source_and_counts(tmp_path, caplog):
  _write('bin', tmp_path)
  with caplog.at_level(logging.INFO, logger=sources.__name__):
    sources.load_cifar10(str(tmp_path), download=False)
  assert '50000 train and 10000 test images' in caplog.text
  assert 'cifar-10-batches-bin' in caplog.text


def test_nothing_found_lists_every_place(isolated_environment):
  with pytest.raises(DataError) as error:
    sources.load_cifar10(download=False)
  message = str(error.value)
  datasets = isolated_environment / '.keras' / 'datasets'
  for place in (datasets / 'cifar-10-batches-py',
                datasets / 'cifar-10-batches-py-target' / 'cifar-10-batches-py',
                datasets / 'cifar-10-batches-py.tar.gz',
                isolated_environment / 'tensorflow_datasets'):
    assert str(place) in message
  assert 'download=False' in message
  assert sources.ENV_VAR in message and '--config.data.dir' in message
  assert 'https://www.cs.toronto.edu/~kriz/cifar.html' in message


def test_broken_tfds_copy_is_recorded(tmp_path, monkeypatch):
  tfds_dir = tmp_path / 'tfds'
  (tfds_dir / 'cifar10' / '3.0.2').mkdir(parents=True)
  (tfds_dir / 'cifar10' / '3.0.2' / 'dataset_info.json').write_text('{}')
  monkeypatch.setenv('TFDS_DATA_DIR', str(tfds_dir))
  with pytest.raises(DataError) as error:
    sources.load_cifar10(download=False)
  assert f'prepared TFDS cifar10 in {tfds_dir}: failed:' in str(error.value)


def test_broken_keras_cache_is_skipped_and_reported(isolated_environment):
  folder = _write('py', isolated_environment / '.keras' / 'datasets')
  (folder / 'data_batch_1').write_bytes(b'junk')
  with pytest.raises(DataError) as error:
    sources.load_cifar10(download=False)
  assert f'{folder}: unreadable:' in str(error.value)


@pytest.mark.parametrize('make_explicit', [
    lambda tmp_path: tmp_path / 'empty',
    lambda tmp_path: tmp_path / 'does-not-exist',
])
def test_explicit_dir_without_data_does_not_fall_back(tmp_path, isolated_environment,
                                                      make_explicit):
  _write('py', isolated_environment / '.keras' / 'datasets')  # A valid cache it must not use.
  (tmp_path / 'empty').mkdir()
  explicit = make_explicit(tmp_path)
  with pytest.raises(DataError, match='--config.data.dir') as error:
    sources.load_cifar10(str(explicit), download=False)
  assert str(explicit) in str(error.value)
  assert 'CIFAR10_DIR' in str(error.value)


def test_explicit_broken_copy_raises_its_own_error(tmp_path, isolated_environment):
  _write('py', isolated_environment / '.keras' / 'datasets')
  folder = _write('bin', tmp_path)
  (folder / 'test_batch.bin').unlink()
  with pytest.raises(DataError, match='test_batch.bin'):
    sources.load_cifar10(str(tmp_path), download=False)


def test_env_var_without_data_does_not_fall_back(tmp_path, isolated_environment, monkeypatch):
  _write('py', isolated_environment / '.keras' / 'datasets')
  monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / 'nowhere'))
  with pytest.raises(DataError, match=r'\$CIFAR10_DIR'):
    sources.load_cifar10(download=False)


# ---------------------------------------------------------------------------------------------
# The real shared copy.


@pytest.mark.skipif(not SHARED_BINARY_DIR.is_dir(),
                    reason=f'shared CIFAR-10 copy not present at {SHARED_BINARY_DIR}')
def test_reads_shared_copy():
  start = time.perf_counter()
  ds = sources.load_cifar10(str(SHARED_BINARY_DIR), download=False)
  seconds = time.perf_counter() - start
  assert ds.train_images.shape == (50_000, 32, 32, 3)
  assert ds.test_images.shape == (10_000, 32, 32, 3)
  assert np.bincount(ds.train_labels, minlength=10).tolist() == [5_000] * 10
  assert np.bincount(ds.test_labels, minlength=10).tolist() == [1_000] * 10
  assert ds.class_names == cifar10.DEFAULT_CLASS_NAMES
  assert seconds < 10, f'reading 60,000 images took {seconds:.1f}s'  # Typically well under 1s.
