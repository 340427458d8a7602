"""model.matmul_precision: the steps trace every matmul and convolution (gradients included) at
the configured precision, a run records it (with model.conv_grad's form), and a bad value is
refused before any work."""

import json
import os
import re
import subprocess
import sys

import jax
import pytest

from cifar_jax.train import eval_step, train_step
from tests.conftest import REPO, tiny_config, tiny_state


def _state_and_batch(precision):
  config = tiny_config()
  config.model.matmul_precision = precision
  state, images, labels = tiny_state(config, num_images=16)
  return state, {'image': images[:8], 'label': labels[:8]}


def _precisions(hlo: str) -> set[str]:
  """The precision attributes of every dot_general and convolution in StableHLO text."""
  found = set()
  for line in hlo.splitlines():
    if 'stablehlo.dot_general' in line or 'stablehlo.convolution' in line:
      # dot_general: `precision = [P, P]`; convolution: `precision_config = [#stablehlo<precision P>`.
      match = re.search(r'precision = \[(\w+),|precision_config = \[#stablehlo<precision (\w+)>',
                        line)
      found.add((match.group(1) or match.group(2)) if match else 'DEFAULT')
  return found


# jax's names: 'float32' is HIGHEST, 'tensorfloat32' HIGH, 'bfloat16' DEFAULT (one bf16 pass).
@pytest.mark.parametrize('precision, expected', [('highest', {'HIGHEST'}), ('float32', {'HIGHEST'}),
                                                 ('tensorfloat32', {'HIGH'}),
                                                 ('bfloat16', {'DEFAULT'})])
def test_train_and_eval_steps_trace_at_the_configured_precision(precision, expected):
  state, batch = _state_and_batch(precision)
  train_hlo = jax.jit(train_step).lower(state, batch).as_text()
  eval_hlo = jax.jit(eval_step).lower(state, batch).as_text()
  # Forward and backward (the transposed matmuls and the convolution's gradient) alike.
  assert train_hlo.count('stablehlo.convolution') >= 2 and train_hlo.count('dot_general') >= 6
  assert _precisions(train_hlo) == expected
  assert _precisions(eval_hlo) == expected


def test_default_leaves_the_process_setting_in_force():
  # conftest pins JAX_DEFAULT_MATMUL_PRECISION=highest; 'default' must not undo it.
  state, batch = _state_and_batch('default')
  assert _precisions(jax.jit(train_step).lower(state, batch).as_text()) == {'HIGHEST'}
  with jax.default_matmul_precision('tensorfloat32'):
    hlo = jax.jit(train_step).lower(state, batch).as_text()
  assert 'HIGHEST' not in hlo


def test_a_run_records_its_arithmetic_and_device_kind(tmp_path, synthetic_dir):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=tests/tiny_config.py', f'--workdir={workdir}',
       f'--config.data.dir={synthetic_dir}', '--config.train.epochs=1',
       '--config.model.matmul_precision=high', '--config.model.conv_grad=tuned', '--verbosity=2'],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, 'CIFAR_JAX_CONV_GRAD_CACHE': ''})  # Measure, write no cache file.
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['matmul_precision'] == 'high'
  assert results['dtype'] == 'float32'
  assert results['conv_grad'] == 'tuned'
  # tiny_config's one 3x3 convolution and its Dense layers, measured in this run at each batch
  # size it trained on.
  choices = results['conv_grad_choices']
  convs = {problem: form for problem, form in choices.items() if 'kernel (3, 3)' in problem}
  denses = {problem: form for problem, form in choices.items() if problem.startswith('dense x')}
  assert convs and denses and len(convs) + len(denses) == len(choices)
  assert set(convs.values()) <= {'conv', 'matmul'}
  assert set(denses.values()) <= {'xla', 'transposed'}
  assert results['device_kind'] == jax.devices()[0].device_kind
  assert 'matmul precision high, dtype float32' in proc.stdout


def test_an_unknown_precision_is_refused_before_any_work(tmp_path, synthetic_dir):
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=tests/tiny_config.py',
       f'--workdir={tmp_path / "run"}', f'--config.data.dir={synthetic_dir}',
       '--config.model.matmul_precision=tf32'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  assert 'model.matmul_precision' in proc.stderr and 'tensorfloat32' in proc.stderr


@pytest.mark.parametrize('flag, env, named', [
    ('--config.model.conv_grad=fast', None, 'model.conv_grad'),
    (None, 'fast', 'CIFAR_JAX_CONV_GRAD'),  # The environment's, where the config defers to it.
])
def test_an_unknown_conv_grad_is_refused_before_any_work(flag, env, named, tmp_path,
                                                         synthetic_dir):
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=tests/tiny_config.py',
       f'--workdir={tmp_path / "run"}', f'--config.data.dir={synthetic_dir}',
       *([flag] if flag else [])],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, **({'CIFAR_JAX_CONV_GRAD': env} if env else {})})
  assert proc.returncode == 2
  assert named in proc.stderr and "'tuned'" in proc.stderr
  assert not (tmp_path / 'run').exists()
