"""Data parallelism: 8 devices, 2 processes (gloo) and bf16 give the 1-device fp32 results."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from cifar_jax.train import outputs
from tests.conftest import REPO

ARGS = ('--config=tests/tiny_config.py', '--config.train.epochs=1')


def with_env(env=None) -> dict:
  """os.environ plus `env`, whose XLA_FLAGS add to the suite's (conftest's compile flags), so
  that a run on forced devices compiles as the one-device run it is compared with."""
  env = dict(env or {})
  if 'XLA_FLAGS' in env:
    env['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {env['XLA_FLAGS']}".strip()
  return {**os.environ, **env}


def launch(workdir, data_dir, *extra, env=None):
  return subprocess.Popen(
      [sys.executable, 'launch.py', *ARGS, f'--config.data.dir={data_dir}', f'--workdir={workdir}',
       *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=with_env(env))


def finish(process):
  _, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]


def record(workdir):
  history = outputs.read_history(workdir)[0]
  history.pop('time')
  results = json.loads(open(os.path.join(workdir, 'results.json')).read())
  return history, results, outputs.read_predictions(workdir)[0]


def assert_close_runs(workdir_a, workdir_b, rtol):
  history_a, results_a, probs_a = record(workdir_a)
  history_b, results_b, probs_b = record(workdir_b)
  assert history_a.keys() == history_b.keys()
  for key in history_a:
    assert history_a[key] == pytest.approx(history_b[key], rel=rtol), key
  assert results_a['test_loss'] == pytest.approx(results_b['test_loss'], rel=rtol)
  np.testing.assert_allclose(probs_a, probs_b, atol=10 * rtol)
  return results_a, results_b


@pytest.fixture(scope='module')
def single_device_run(synthetic_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('one_device'))
  finish(launch(workdir, synthetic_dir))
  return workdir


def test_eight_devices_train_like_one(synthetic_dir, single_device_run, tmp_path):
  workdir = str(tmp_path)
  finish(launch(workdir, synthetic_dir,
                env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}))
  _, results = assert_close_runs(single_device_run, workdir, rtol=1e-4)
  assert results['device'] == 'cpu x8'


def test_two_processes_train_like_one_and_their_checkpoint_loads_in_one(
    synthetic_dir, single_device_run, tmp_path):
  workdir = str(tmp_path / 'two_processes')
  with socket.socket() as s:  # A free port for the coordinator.
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  processes = [launch(workdir, synthetic_dir, f'--coordinator_address=127.0.0.1:{port}',
                      '--num_processes=2', f'--process_id={i}') for i in range(2)]
  errors = [process.communicate(timeout=600)[1] for process in processes]
  for i, (process, err) in enumerate(zip(processes, errors)):  # Both logs, to see which hung.
    assert process.returncode == 0, f'process {i} failed:\n' + '\n---\n'.join(
        e[-2500:] for e in errors)
  _, results = assert_close_runs(single_device_run, workdir, rtol=1e-4)
  assert results['device'] == 'cpu x2'
  evaluation = subprocess.run(
      [sys.executable, 'launch.py', *ARGS, f'--config.data.dir={synthetic_dir}',
       f'--workdir={workdir}', '--evaluate=latest'], cwd=REPO, capture_output=True, text=True,
      timeout=600)
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  metrics = json.loads((tmp_path / 'two_processes' / 'evaluation_latest.json').read_text())
  assert metrics['test_loss'] == pytest.approx(results['test_loss'], rel=1e-5)


def test_batch_not_divisible_by_devices_is_a_clear_error(synthetic_dir, tmp_path):
  process = launch(str(tmp_path), synthetic_dir, '--config.train.batch_size=30',
                   env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  _, err = process.communicate(timeout=600)
  assert process.returncode != 0
  assert 'train.batch_size=30 does not divide over 8 devices' in err


def test_bfloat16_trains_close_to_float32(synthetic_dir, single_device_run, tmp_path):
  finish(launch(str(tmp_path), synthetic_dir, '--config.model.dtype=bfloat16'))
  history_32, _, _ = record(single_device_run)
  history_16, _, _ = record(str(tmp_path))
  assert history_16['loss'] == pytest.approx(history_32['loss'], rel=0.03)
  assert history_16['val_loss'] == pytest.approx(history_32['val_loss'], rel=0.05)
