"""Predict from a tiny finished run: the restored model reproduces the run's own test predictions,
image files go in as training fed them, and bad inputs fail naming the file or the folder."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cifar_jax import predict
from cifar_jax.report.run_files import RunFilesError
from cifar_jax.train import checkpointing
from cifar_jax.train import outputs
from cifar_jax.train import train_and_evaluate
from tests import synthetic_cifar
from tests.conftest import REPO, tiny_config

# The conftest synthetic_dir's sizes, so make_arrays returns its test images.
NUM_TRAIN, NUM_TEST = 300, 70
CLEAR_MARGIN = 1e-3  # Images whose top two classes are this far apart: no argmax ties.


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, synthetic_dir):
  workdir = str(tmp_path_factory.mktemp('predict') / 'tiny')
  train_and_evaluate(tiny_config(synthetic_dir), workdir)
  return workdir


@pytest.fixture(scope='module')
def test_images():
  return synthetic_cifar.make_arrays(NUM_TRAIN, NUM_TEST)[2]


@pytest.fixture(scope='module')
def run_predictions(finished_run):
  probabilities, labels, class_names = outputs.read_predictions(finished_run)
  return probabilities, labels, class_names


@pytest.fixture(scope='module')
def clear_indices(run_predictions):
  """Test images whose predicted class in predictions.npz is clear of the runner-up."""
  probabilities = np.sort(run_predictions[0], axis=1)
  clear = np.flatnonzero(probabilities[:, -1] - probabilities[:, -2] > CLEAR_MARGIN)[:3]
  assert len(clear) == 3, "the tiny run predicts no test image clearly"
  return clear


@pytest.fixture(scope='module')
def image_files(tmp_path_factory, test_images, clear_indices):
  """Clear test images as PNG (lossless), one as JPEG and one PNG enlarged to 64x48."""
  folder = tmp_path_factory.mktemp('images')
  pngs = []
  for i in clear_indices:
    pngs.append(str(folder / f'test_{i}.png'))
    Image.fromarray(test_images[i]).save(pngs[-1])
  jpeg, enlarged = str(folder / 'test.jpg'), str(folder / 'enlarged.png')
  Image.fromarray(test_images[0]).save(jpeg, quality=95)
  Image.fromarray(test_images[0]).resize((64, 48), Image.Resampling.BILINEAR).save(enlarged)
  return pngs, jpeg, enlarged


def test_latest_checkpoint_reproduces_the_runs_test_predictions(finished_run, test_images,
                                                                  run_predictions):
  predictor = predict.load_predictor(finished_run, 'latest')
  probabilities = predictor.predict(test_images)

  # The tiny run has no EarlyStopping, so its test predictions come from the last state.
  np.testing.assert_allclose(probabilities, run_predictions[0], atol=1e-5)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
  assert predictor.class_names == synthetic_cifar.CLASS_NAMES
  assert predictor.step == json.load(open(os.path.join(finished_run, 'results.json')))[
      'steps_run']


def test_best_checkpoint_is_the_best_epochs_state(finished_run):
  predictor = predict.load_predictor(finished_run)  # 'best' by default.

  results = json.load(open(os.path.join(finished_run, 'results.json')))
  steps_per_epoch = results['steps_run'] // results['epochs_run']
  assert predictor.checkpoint == 'best'
  assert predictor.step == results['best_epoch'] * steps_per_epoch


def test_png_files_get_the_runs_predicted_class(finished_run, image_files, clear_indices,
                                                run_predictions):
  pngs, jpeg, enlarged = image_files
  predictor = predict.load_predictor(finished_run, 'latest')
  probabilities = predictor.predict(predict.read_images([*pngs, jpeg, enlarged],
                                                        predictor.image_shape))

  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
  tops = predict.top_classes(probabilities, predictor.class_names, 3)
  class_names = run_predictions[2]
  for i, top in zip(clear_indices, tops):
    assert top[0][0] == class_names[run_predictions[0][i].argmax()]
  for top in tops:
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)


def test_cli_prints_json_with_the_top_classes(finished_run, image_files, clear_indices,
                                              run_predictions):
  pngs, jpeg, enlarged = image_files
  folder = os.path.dirname(pngs[0])
  result = subprocess.run(
      [sys.executable, '-m', 'cifar_jax.predict', f'--workdir={finished_run}', folder,
       '--checkpoint=latest', '--top=10', '--json'],
      cwd=REPO, capture_output=True, text=True, timeout=300)

  assert result.returncode == 0, result.stderr[-3000:]
  output = json.loads(result.stdout)
  assert output['checkpoint'] == 'latest'
  assert 'bilinear' in output['resize']
  by_path = {image['path']: image['top'] for image in output['images']}
  assert sorted(by_path) == sorted([*pngs, jpeg, enlarged])  # The folder's PNG/JPEG files.
  for top in by_path.values():
    assert len(top) == 10
    assert sum(entry['probability'] for entry in top) == pytest.approx(1.0, abs=1e-5)
  class_names = run_predictions[2]
  for i, png in zip(clear_indices, pngs):
    assert by_path[png][0]['class'] == class_names[run_predictions[0][i].argmax()]


def test_cli_prints_the_top_three_per_image(finished_run, image_files, capsys):
  pngs, _, _ = image_files

  assert predict.main([f'--workdir={finished_run}', pngs[0]]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert 'best checkpoint' in lines[0]
  assert lines[1] == pngs[0]
  assert [line.split('.')[0].strip() for line in lines[2:]] == ['1', '2', '3']
  assert all(line.endswith('%') for line in lines[2:])


def _truncated_png(path, test_images):
  Image.fromarray(test_images[0]).save(path)
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


@pytest.mark.parametrize('kind, message, exit_code', [
    ('text', 'not a readable image', 1),  # Images that fail to decode: listed, exit code 1.
    ('truncated', 'not a readable image', 1),
    ('missing', 'no such file or folder', 2),  # Command-line mistakes: nothing runs.
    ('empty folder', 'holds no .png/.jpg/.jpeg file', 2),
])
def test_bad_image_files_are_errors_naming_the_file(kind, message, exit_code, tmp_path,
                                                    test_images, finished_run, capsys):
  path = str(tmp_path / 'image.png')
  if kind == 'text':
    open(path, 'w').write('not an image\n')
  elif kind == 'truncated':
    _truncated_png(path, test_images)
  elif kind == 'empty folder':
    path = str(tmp_path / 'empty')
    os.mkdir(path)

  with pytest.raises(predict.ImageError, match=message) as error:
    predict.read_images(predict.image_paths([path]), (32, 32, 3))
  assert path in str(error.value)
  assert predict.main([f'--workdir={finished_run}', path]) == exit_code
  assert f'error: {path}' in capsys.readouterr().err


def test_an_unreadable_image_does_not_stop_the_others(finished_run, image_files, clear_indices,
                                                      run_predictions, tmp_path, capsys):
  pngs, _, _ = image_files
  bad = str(tmp_path / 'broken.png')
  open(bad, 'w').write('not an image\n')

  assert predict.main([f'--workdir={finished_run}', '--json', pngs[0], bad, pngs[1]]) == 1
  captured = capsys.readouterr()
  output = json.loads(captured.out)
  assert [image['path'] for image in output['images']] == pngs[:2]
  class_names = run_predictions[2]
  for i, image in zip(clear_indices, output['images']):
    assert image['top'][0]['class'] == class_names[run_predictions[0][i].argmax()]
  assert len(output['unreadable']) == 1 and bad in output['unreadable'][0]
  errors = captured.err.strip().splitlines()
  assert errors[0].startswith(f'error: {bad}: not a readable image')
  assert errors[-1] == 'error: 1 of 3 images could not be read'


def test_a_huge_jpeg_is_decoded_reduced_in_bounded_memory(tmp_path):
  path = tmp_path / 'huge.jpg'
  Image.new('L', (10_000, 10_000), 90).save(path, quality=75)  # 100 M pixels, ~1 MB.
  code = ('import resource, sys; from cifar_jax import predict; '
          'before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; '
          'pixels = predict.read_image(sys.argv[1], (32, 32, 3)); '
          'grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before; '
          'print(pixels[0, 0].tolist(), grown // 1024)')
  result = subprocess.run([sys.executable, '-c', code, str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr == ''  # No DecompressionBombWarning.
  pixel, grown_mib = result.stdout.split(']')
  assert pixel.strip() == '[90, 90, 90'
  assert int(grown_mib) < 64  # A full decode takes 100 MiB, RGB conversion 300 MiB more.


def test_a_workdir_without_checkpoints_is_an_error(finished_run, tmp_path):
  workdir = tmp_path / 'no_checkpoints'
  shutil.copytree(finished_run, workdir, ignore=shutil.ignore_patterns('checkpoints'))

  with pytest.raises(checkpointing.CheckpointError, match='no checkpoint in'):
    predict.load_predictor(str(workdir))
  assert not (workdir / 'checkpoints').exists()  # Predicting created nothing.


def test_a_folder_that_is_not_a_run_is_an_error_naming_the_file(tmp_path, capsys):
  with pytest.raises(RunFilesError, match='config.json is missing'):
    predict.load_predictor(str(tmp_path))
  assert predict.main([f'--workdir={tmp_path}', 'image.png']) == 2
  assert 'config.json is missing' in capsys.readouterr().err
