"""model.conv_backend='onednn': oneDNN's convolutions (cifar_jax/models/onednn_conv.py) compute
what XLA's do to float32 rounding, forward and both gradients, wherever a train step runs them
(one step, a loop of steps, stacked seeds); programs for other platforms keep XLA's; a run
records the backend; a bad value or a machine without oneDNN is refused before any work.
model.conv_backend='tuned': each part runs on the kernel it measured faster with, measured once
per problem and machine; any mix of the two computes the same to float32 rounding.

The library is compiled from onednn_conv.cc against requirements-onednn.txt's oneDNN on first
use (requirements-test.txt installs it; g++ is needed), cached per machine.
"""

import json
import os
import subprocess
import sys

import jax
from jax import export
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.models import conv
from cifar_jax.models import conv_tuning
from cifar_jax.models import onednn_conv
from cifar_jax.train import train_step
from tests.conftest import REPO, tiny_config, tiny_state
from tests.test_conv_grad import CASES, CHANNELS_LAST, _assert_close, _forward_and_grads, _operands


@pytest.fixture(scope='module', autouse=True)
def library():
  return onednn_conv.load()


def _custom_calls(text: str) -> int:
  return text.count('onednn_conv_')


def _onednn(fn, backend='onednn'):
  """fn traced with the oneDNN backend (jit traces lazily: the scope must cover the trace)."""
  def traced(*args):
    with conv.backend(backend):
      return fn(*args)
  return traced


@pytest.fixture
def tuned(tmp_path, monkeypatch):
  """An empty process memo of tuned choices and a fresh cache file; yields the file's path."""
  path = str(tmp_path / 'conv_grad.json')
  monkeypatch.setenv(conv_tuning.CACHE_ENV_VAR, path)
  monkeypatch.setattr(conv_tuning, '_choices', {})
  monkeypatch.setattr(conv_tuning, 'measured', [])
  return path


@pytest.mark.parametrize('case', CASES.values(), ids=CASES.keys())
def test_forward_and_gradients_match_xla(case):
  x, w, dy, strides, padding = _operands(case)

  def both(x, w, dy):
    return _forward_and_grads(conv.conv_general_dilated, x, w, dy, strides, padding)

  expected = jax.jit(lambda x, w, dy: _forward_and_grads(lax.conv_general_dilated, x, w, dy,
                                                         strides, padding))(x, w, dy)
  onednn = jax.jit(_onednn(both))
  for actual, wanted in zip(onednn(x, w, dy), expected):
    _assert_close(actual, wanted, 1e-5)
  # Forward, input and weight gradients, each one oneDNN call; XLA's where a padding crops.
  cropping = any(side < 0 for pair in conv.explicit_padding(x.shape, w.shape, strides, padding)
                 for side in pair)
  assert _custom_calls(onednn.lower(x, w, dy).compile().as_text()) == (0 if cropping else 3)


PARTS = ('forward', 'input gradient', 'weight gradient')


@pytest.mark.parametrize('kernels', [('onednn', 'xla', 'onednn'), ('xla', 'onednn', 'xla'),
                                     ('xla',) * 3, ('onednn',) * 3], ids='-'.join)
def test_tuned_runs_each_part_on_the_kernel_chosen_for_it(kernels, tuned):
  x, w, dy, strides, padding = _operands(CASES['6x6_same_32px'])

  def both(x, w, dy):
    return _forward_and_grads(conv.conv_general_dilated, x, w, dy, strides, padding)

  # The first trace measures the three parts, once each, and caches what it chose.
  jax.jit(_onednn(both, 'tuned')).lower(x, w, dy)
  assert [key.split(':')[0] for key in conv_tuning.measured] == list(PARTS)
  assert all(set(conv_tuning.entries()[key]['seconds']) == {'xla', 'onednn'}
             for key in conv_tuning.measured)
  with open(tuned) as f:
    assert set(next(iter(json.load(f).values()))) == set(conv_tuning.measured)
  # Set the choices to this case's (the memo is what the next trace reads).
  for key, kernel in zip(conv_tuning.measured, kernels):
    conv_tuning._choices[key] = {'form': kernel}  # pylint: disable=protected-access
  compiled = jax.jit(_onednn(both, 'tuned')).lower(x, w, dy).compile()
  assert len(conv_tuning.measured) == 3  # Not measured again.
  assert _custom_calls(compiled.as_text()) == kernels.count('onednn')
  expected = jax.jit(lambda x, w, dy: _forward_and_grads(lax.conv_general_dilated, x, w, dy,
                                                         strides, padding))(x, w, dy)
  for actual, wanted in zip(compiled(x, w, dy), expected):
    _assert_close(actual, wanted, 1e-5)


def test_the_default_backend_is_xla_and_a_scope_ends_with_its_block():
  x, w, dy, strides, padding = _operands(CASES['3x3_same'])

  def calls():  # A new function each time: jit keeps one trace per function, whatever the scope.
    return _custom_calls(jax.jit(lambda x, w, dy: _forward_and_grads(
        conv.conv_general_dilated, x, w, dy, strides, padding)).lower(x, w, dy).as_text())

  assert conv.current_backend() == 'xla' and calls() == 0
  with conv.backend('onednn'):
    assert calls() == 3
  assert conv.current_backend() == 'xla' and calls() == 0
  with pytest.raises(ValueError, match="conv_backend='mkl'.*'onednn'"):
    with conv.backend('mkl'):
      pass


@pytest.mark.parametrize('dtype, dilation', [(jnp.bfloat16, 1), (jnp.float32, 2)],
                         ids=['bfloat16', 'dilated'])
def test_what_onednn_does_not_cover_stays_xla(dtype, dilation):
  x, w, dy, strides, padding = _operands(CASES['3x3_same'], dtype)

  def f(x, w):
    return conv.conv_general_dilated(x, w, strides, padding, rhs_dilation=(dilation, dilation),
                                     dimension_numbers=CHANNELS_LAST)

  grads = jax.jit(_onednn(lambda x, w: jax.grad(lambda x, w: f(x, w).astype(jnp.float32).sum(),
                                                (0, 1))(x, w)))
  assert _custom_calls(grads.lower(x, w).as_text()) == 0


def test_programs_for_other_platforms_keep_xla_convolutions():
  x, w, dy, strides, padding = _operands(CASES['3x3_stride2_same_odd'])
  grads = jax.jit(_onednn(
      lambda x, w, dy: _forward_and_grads(conv.conv_general_dilated, x, w, dy, strides, padding)))
  with conv.backend('onednn'):  # export traces here, so the scope must be open.
    cuda = export.export(grads, platforms=['cuda'])(x, w, dy).mlir_module()
    cpu = export.export(grads, platforms=['cpu'], disabled_checks=[
        export.DisabledSafetyCheck.custom_call(target) for target in onednn_conv.TARGETS
    ])(x, w, dy).mlir_module()
  assert _custom_calls(cuda) == 0 and cuda.count('stablehlo.convolution') == 3
  assert _custom_calls(cpu) == 3


def test_stacked_seeds_and_loops_run_it_per_entry():
  """vmap (num_seeds in one program) and a fori_loop of steps (the device loop) compute what one
  call per entry does."""
  x, w, dy, strides, padding = _operands(CASES['3x3_stride2_same_odd'])
  kernels = jnp.stack([w, -0.5 * w, 2 * w])

  def grads(x, w, dy):
    return _forward_and_grads(conv.conv_general_dilated, x, w, dy, strides, padding)

  one_by_one = [jax.jit(_onednn(grads))(x, k, dy) for k in kernels]
  stacked = jax.jit(_onednn(jax.vmap(grads, (None, 0, None))))(x, kernels, dy)
  for i in range(len(kernels)):
    for got, wanted in zip(stacked, one_by_one[i]):
      np.testing.assert_array_equal(got[i], wanted)

  def looped(x, w, dy):  # Three steps of w -= 0.01 dw.
    return lax.fori_loop(0, 3, lambda _, w: w - 0.01 * grads(x, w, dy)[2], w)

  in_loop = jax.jit(_onednn(looped))
  assert _custom_calls(in_loop.lower(x, w, dy).compile().as_text()) >= 1
  step = jax.jit(_onednn(lambda x, w, dy: w - 0.01 * grads(x, w, dy)[2]))
  unrolled = w
  for _ in range(3):
    unrolled = step(x, unrolled, dy)
  np.testing.assert_array_equal(in_loop(x, w, dy), unrolled)


def test_a_states_conv_backend_decides_its_train_step():
  config = tiny_config()
  state, images, labels = tiny_state(config, num_images=16)
  batch = {'image': images[:8], 'label': labels[:8]}
  onednn_state = state.replace(conv_backend='onednn')
  assert _custom_calls(jax.jit(train_step).lower(state, batch).as_text()) == 0
  # tiny_config's one convolution: forward and weight gradient (its input is the images, whose
  # gradient nothing uses).
  assert _custom_calls(jax.jit(train_step).lower(onednn_state, batch).as_text()) == 2
  # One step from the same state: the same loss and parameters to float32 rounding.
  (new, metrics), (new_onednn, metrics_onednn) = (jax.jit(train_step)(s, batch)
                                                  for s in (state, onednn_state))
  np.testing.assert_allclose(metrics_onednn['loss'], metrics['loss'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(new_onednn.params)):
    # Adam's first step is lr * sign(gradient): a gradient within rounding of 0 may flip sign.
    np.testing.assert_allclose(b, a, atol=2.1 * config.optim.learning_rate)


def _launch(tmp_path, synthetic_dir, *flags, env=None):
  return subprocess.run(
      [sys.executable, 'launch.py', '--config=tests/tiny_config.py',
       f'--workdir={tmp_path / "run"}', f'--config.data.dir={synthetic_dir}', *flags],
      cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.parametrize('backend', ['onednn', 'tuned'])
def test_a_run_records_its_conv_backend(backend, tmp_path, synthetic_dir):
  proc = _launch(tmp_path, synthetic_dir, '--config.train.epochs=1',
                 f'--config.model.conv_backend={backend}',
                 env={conv_tuning.CACHE_ENV_VAR: str(tmp_path / 'choices.json')})
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert results['conv_backend'] == backend
  assert results['onednn_version'] == onednn_conv.version() != ''
  # 'tuned' records what each part of tiny_config's convolution ran on.
  parts = {key.split(':')[0]: kernel for key, kernel in results['conv_grad_choices'].items()
           if key.split(':')[0] in PARTS}
  if backend == 'onednn':
    assert not parts
  else:
    assert set(parts) == set(PARTS) and set(parts.values()) <= {'xla', 'onednn'}


@pytest.mark.parametrize('flag, env, named', [
    ('--config.model.conv_backend=mkl', None, "'onednn'"),
    # No oneDNN under the prefix given (a machine without requirements-onednn.txt).
    ('--config.model.conv_backend=onednn', 'empty', 'requirements-onednn.txt'),
    ('--config.model.conv_backend=tuned', 'empty', 'requirements-onednn.txt'),
])
def test_a_bad_conv_backend_is_refused_before_any_work(flag, env, named, tmp_path,
                                                       synthetic_dir):
  extra = {onednn_conv.ROOT_ENV_VAR: str(tmp_path)} if env else None
  proc = _launch(tmp_path, synthetic_dir, flag, env=extra)
  assert proc.returncode == 2
  assert 'model.conv_backend' in proc.stderr and named in proc.stderr
  assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
  assert not (tmp_path / 'run').exists()
