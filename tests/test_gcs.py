"""gs:// workdirs and data, against a real GCS emulator on 127.0.0.1 (tests/gcs_emulator.py): a
run killed with SIGKILL and rerun is bit-identical to an uninterrupted local one, the report and
predict read it, CIFAR-10 reads from a gs:// folder and tarball, and nothing lands in a local
`gs:` folder (what os.makedirs('gs://...') used to make). Skipped, with the reason, only when the
emulator's package is missing (requirements-test.txt installs it)."""
# pylint: disable=redefined-outer-name  (pytest fixtures)

import io
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from cifar_jax import paths
from cifar_jax.data import cifar10
from cifar_jax.data import sources
from cifar_jax.testing import runs
from cifar_jax.train import outputs
from tests import synthetic_cifar
from tests.conftest import REPO
from tests.gcs_emulator import gcs_bucket  # noqa: F401  pylint: disable=unused-import

# 240 training examples in batches of 32: 8 steps per epoch; a checkpoint every 3 steps too.
RUN_ARGS = (f'--config={REPO / "tests" / "tiny_config.py"}', '--config.train.epochs=3',
            '--config.checkpoint.every_steps=3')


def launch(workdir, data_dir, cwd):
  """launch.py in `cwd`, so that a path mistaken for a local one would land there."""
  return subprocess.Popen(
      [sys.executable, str(REPO / 'launch.py'), *RUN_ARGS, f'--config.data.dir={data_dir}',
       f'--workdir={workdir}'], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env={**os.environ, 'PYTHONPATH': str(REPO)})


def finish(process):
  out, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return out


checkpoint_steps = runs.checkpoint_steps


def upload_folder(local, url):
  for name in sorted(os.listdir(local)):
    paths.write_bytes(paths.join(url, name), paths.read_bytes(os.path.join(local, name)))


@pytest.fixture(scope='module')
def gs_data(gcs_bucket, synthetic_dir):
  """The synthetic CIFAR-10 folder, uploaded: gs://<bucket>/data/cifar-10-batches-bin."""
  url = f'{gcs_bucket}/data/{cifar10.BINARY_DIR_NAME}'
  upload_folder(os.path.join(synthetic_dir, cifar10.BINARY_DIR_NAME), url)
  return url


@pytest.fixture(scope='module')
def local_run(synthetic_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted') / 'run')
  finish(launch(workdir, synthetic_dir, REPO))
  return workdir


@pytest.fixture(scope='module')
def gs_run(gcs_bucket, gs_data, tmp_path_factory):
  """A gs:// run of gs:// data, SIGKILLed once it has a checkpoint, then run to the end; the
  local folder it ran in, to check that nothing was written there."""
  workdir = f'{gcs_bucket}/runs/killed'
  cwd = tmp_path_factory.mktemp('cwd')
  process = launch(workdir, gs_data, cwd)
  deadline = time.time() + 300
  while process.poll() is None and not checkpoint_steps(workdir) and time.time() < deadline:
    time.sleep(0.2)
  killed = process.poll() is None
  if killed:
    process.send_signal(signal.SIGKILL)
  _, err = process.communicate()
  assert killed, f'the run ended before it could be killed: {err[-3000:]}'
  assert not paths.exists(paths.join(workdir, 'results.json'))  # Killed mid-run: unfinished.
  finish(launch(workdir, gs_data, cwd))
  return workdir, cwd


def test_a_killed_gs_run_resumes_to_the_same_result_as_an_uninterrupted_local_run(
    gs_run, local_run):
  workdir, cwd = gs_run
  assert len(runs.run_outcome(workdir, with_state=False)['history']) == 3
  # The data came from gs:// on one side: compare what was computed, not where from.
  runs.assert_same_outcome(workdir, local_run, results_keys=('test_loss', 'test_accuracy'))
  names = paths.listdir(workdir)
  assert {'config.json', 'history.csv', 'history.json', 'results.json', 'predictions.npz',
          'tensorboard', 'checkpoints'} <= set(names)
  assert paths.listdir(paths.join(workdir, 'tensorboard'))  # The event file.
  assert 'gs://' in json.loads(paths.read_text(paths.join(workdir, 'results.json')))[
      'data_source']
  assert os.listdir(cwd) == []  # No local ./gs:/... copy.


def test_report_writes_a_gs_runs_report_next_to_it(gs_run, tmp_path):
  workdir, _ = gs_run
  result = subprocess.run([sys.executable, '-m', 'cifar_jax.report', workdir], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == 0, result.stderr[-3000:]
  report = paths.join(workdir, 'report')
  # samples.png too: the test images come from the run's gs:// data.dir.
  assert {'curves.png', 'confusion.png', 'per_class.md', 'samples.png', 'index.html'} <= set(
      paths.listdir(report)), result.stderr
  assert '<img src="data:image/png;base64,' in paths.read_text(paths.join(report, 'index.html'))
  assert os.listdir(tmp_path) == []


def test_predict_classifies_a_gs_image_with_a_gs_run(gs_run, synthetic_dir, tmp_path):
  workdir, _ = gs_run
  probabilities, _, class_names = outputs.read_predictions(workdir)
  index = int(np.argmax(probabilities.max(axis=1)))  # The run's clearest test prediction.
  png = io.BytesIO()
  Image.fromarray(sources.load_cifar10(synthetic_dir).test_images[index]).save(png, format='PNG')
  image = f'{workdir}/images/test_{index}.png'
  paths.write_bytes(image, png.getvalue())
  result = subprocess.run(
      [sys.executable, '-m', 'cifar_jax.predict', f'--workdir={workdir}', '--checkpoint=latest',
       '--json', image], cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == 0, result.stderr[-3000:]
  output = json.loads(result.stdout)
  assert output['images'][0]['path'] == image
  assert output['images'][0]['top'][0]['class'] == class_names[int(probabilities[index].argmax())]
  assert os.listdir(tmp_path) == []


def test_cifar10_reads_from_a_gs_folder_and_a_gs_tarball(gcs_bucket, gs_data, synthetic_dir,
                                                          tmp_path):
  local = sources.load_cifar10(synthetic_dir, download=False)
  tarball = synthetic_cifar.write_tarball(tmp_path, kind='bin', num_train=300, num_test=70)
  gs_tarball = f'{gcs_bucket}/tarballs/{tarball.name}'
  paths.write_bytes(gs_tarball, tarball.read_bytes())
  for place in (gs_data, paths.parent(gs_data), gs_tarball):
    ds = sources.load_cifar10(place, download=False)
    assert 'gs://' in ds.source, ds.source
    for name in ('train_images', 'train_labels', 'test_images', 'test_labels'):
      # (np.testing.assert_array_equal spends seconds of CPU on 150 MB of images.)
      assert np.array_equal(getattr(ds, name), getattr(local, name)), (place, name)
    assert ds.class_names == local.class_names
  with pytest.raises(cifar10.DataError, match=f"'{gcs_bucket}/nothing', which does not exist"):
    sources.load_cifar10(f'{gcs_bucket}/nothing', download=False)


def test_a_gs_workdir_without_gcsfs_is_one_error_naming_the_install(tmp_path):
  """Without the optional extra: exit 2 before any work, and no local `gs:` folder. (gcsfs made
  unimportable in the child, as on a machine without it.)"""
  code = ('import runpy, sys; sys.modules["gcsfs"] = None; sys.modules["tensorflow"] = None; '
          f'sys.argv = ["launch.py", "--config={REPO / "tests" / "tiny_config.py"}", '
          '"--workdir=gs://bucket/run"]; '
          f'runpy.run_path("{REPO / "launch.py"}", run_name="__main__")')
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      'error: gs://bucket/run: gs:// paths need gcsfs, which is not installed; install it with '
      '`pip install -r requirements-gcs.txt`')
  assert os.listdir(tmp_path) == []


def test_fresh_sets_a_gs_workdir_aside(gcs_bucket, tmp_path):
  workdir = f'{gcs_bucket}/runs/to_replace'
  paths.write_text(f'{workdir}/config.json', '{}')
  paths.write_text(f'{workdir}/checkpoints/latest/3/state', 'x')
  code = f'import launch; launch.set_aside({workdir!r})'
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == 0, result.stderr[-3000:]
  assert not paths.exists(workdir)
  aside = [n for n in paths.listdir(f'{gcs_bucket}/runs') if n.startswith('to_replace.replaced-')]
  assert len(aside) == 1, paths.listdir(f'{gcs_bucket}/runs')
  moved = f'{gcs_bucket}/runs/{aside[0]}'
  assert paths.read_text(f'{moved}/config.json') == '{}'
  assert paths.read_text(f'{moved}/checkpoints/latest/3/state') == 'x'
  assert f'moved the previous run to {moved}' in result.stderr
  assert os.listdir(tmp_path) == []


def test_a_gs_tfds_data_dir_is_looked_up_as_a_url(gcs_bucket, tmp_path, monkeypatch):
  """$TFDS_DATA_DIR=gs://... is searched there (pathlib used to fold it into a local 'gs:/')."""
  paths.write_text(f'{gcs_bucket}/tfds/README', 'no cifar10 here')
  monkeypatch.delenv('CIFAR10_DIR', raising=False)
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))  # Empty caches.
  monkeypatch.setenv('TFDS_DATA_DIR', f'{gcs_bucket}/tfds')
  with pytest.raises(cifar10.DataError) as error:
    sources.load_cifar10('', download=False)
  assert f'prepared TFDS cifar10 in {gcs_bucket}/tfds: not found' in str(error.value)
