"""run.sh, the README's two commands: an interpreter too old for the pins is refused up front."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_an_old_python_is_one_error_line_and_exit_2_before_any_install(tmp_path):
  # A stand-in for python3.10: answers the version probe the way an old interpreter does.
  old_python = tmp_path / 'python3.10'
  old_python.write_text('#!/bin/sh\nexec python3 -c "import sys; sys.exit(1)"\n')
  old_python.chmod(0o755)
  venv = tmp_path / 'venv'
  env = {**os.environ, 'PYTHON': str(old_python), 'CIFAR_JAX_VENV': str(venv)}
  result = subprocess.run(['bash', str(ROOT / 'run.sh'), '--config=configs/exp0.py'], env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert result.stdout == ''
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'not Python 3.11+' in lines[0] and 'PYTHON=python3.11' in lines[0]
  assert not venv.exists()  # nothing installed, nothing half-made


def _logging_venv(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
  """A venv whose python only logs how it is called (pip installs and the launch alike)."""
  venv, log = tmp_path / 'venv', tmp_path / 'calls.log'
  (venv / 'bin').mkdir(parents=True)
  python = venv / 'bin' / 'python'
  python.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
  python.chmod(0o755)
  return venv, log


@pytest.mark.parametrize('backend', ['onednn', 'tuned'])
def test_the_run_command_installs_onednn_only_for_a_run_that_asks_for_it(backend, tmp_path):
  venv, log = _logging_venv(tmp_path)
  env = {**os.environ, 'CIFAR_JAX_VENV': str(venv)}
  for args in (['--config=configs/exp0.py'],
               ['--config=configs/exp0.py', f'--config.model.conv_backend={backend}']):
    result = subprocess.run(['bash', str(ROOT / 'run.sh'), *args], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
  calls = log.read_text().splitlines()
  installs = [line.split('-r ')[-1] for line in calls if 'pip install' in line]
  assert [os.path.basename(path) for path in installs] == ['requirements.txt',
                                                           'requirements-onednn.txt']
  assert calls[-1] == f'launch.py --config=configs/exp0.py --config.model.conv_backend={backend}'
