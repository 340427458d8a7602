"""CIFAR_JAX_CONV_GRAD=tuned: the CPU weight gradient measured per problem, once per machine.

The tuned gradient must be the chosen form's, bit for bit (and so XLA's to float32 rounding);
a problem is measured at most once per process, and a process that finds the choice in the
cache file of its machine (CPU, jax and jaxlib versions, XLA flags) does not measure it again;
a cache file of another machine, or a corrupt one, is not used and never fails the run.
"""

import json
import logging
import os
import subprocess
import sys

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import host_cpu
from cifar_jax.models import conv
from cifar_jax.models import conv_tuning

CHANNELS_LAST = ('NHWC', 'HWIO', 'NHWC')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tuned(tmp_path, monkeypatch):
  """'tuned' mode with an empty process memo and a fresh cache file; yields the file's path."""
  path = str(tmp_path / 'conv_grad.json')
  monkeypatch.setenv(conv.ENV_VAR, 'tuned')
  monkeypatch.setenv(conv_tuning.CACHE_ENV_VAR, path)
  monkeypatch.setattr(conv_tuning, '_choices', {})
  monkeypatch.setattr(conv_tuning, 'measured', [])
  return path


def _operands(x_shape, w_shape, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
  return x, w


def _grads(conv_fn, x, w, strides=(1, 1), padding='SAME'):
  """jit of (dx, dw) of sum(conv * a fixed cotangent); traced anew on every call."""
  def loss(x, w):
    y = conv_fn(x, w, strides, padding, dimension_numbers=CHANNELS_LAST)
    return (y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))).sum()
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


def _key(x, w, strides=(1, 1), padding='SAME'):
  """The problem key conv's backward pass asks conv_tuning about."""
  padding = conv.explicit_padding(x.shape, w.shape, strides, padding)
  dy = jax.eval_shape(lambda: lax.conv_general_dilated(x, w, strides, padding,
                                                       dimension_numbers=CHANNELS_LAST))
  return conv_tuning.problem_key(x, dy, w.shape[:-2], strides, padding, None)


@pytest.mark.parametrize('x_shape, w_shape, strides', [
    ((2, 8, 8, 4), (1, 1, 4, 5), (1, 1)),
    ((2, 11, 9, 4), (3, 3, 4, 5), (2, 2)),
])
def test_tuned_gradients_are_the_chosen_forms(x_shape, w_shape, strides, tuned, monkeypatch,
                                              caplog):
  x, w = _operands(x_shape, w_shape)
  with caplog.at_level(logging.INFO, logger=conv_tuning.__name__):
    dx, dw = _grads(conv.conv_general_dilated, x, w, strides)
  key = _key(x, w, strides)
  assert conv_tuning.measured == [key]
  choice = conv_tuning.choices()[key]
  assert choice in ('conv', 'matmul')
  assert any(key in r.getMessage() and r.getMessage().endswith(f'-> {choice}')
             for r in caplog.records)  # One line per measurement: problem, times, choice.
  monkeypatch.setenv(conv.ENV_VAR, choice)
  dx_chosen, dw_chosen = _grads(conv.conv_general_dilated, x, w, strides)
  np.testing.assert_array_equal(dw, dw_chosen)
  np.testing.assert_array_equal(dx, dx_chosen)
  dx_xla, dw_xla = _grads(lax.conv_general_dilated, x, w, strides)
  np.testing.assert_allclose(dw, dw_xla, rtol=1e-5, atol=1e-5 * np.abs(dw_xla).max())
  np.testing.assert_allclose(dx, dx_xla, rtol=1e-5, atol=1e-5 * np.abs(dx_xla).max())


def test_each_problem_is_measured_once_per_process_and_cached(tuned):
  x, w = _operands((2, 8, 8, 4), (3, 3, 4, 5))
  _grads(conv.conv_general_dilated, x, w)
  _grads(conv.conv_general_dilated, x, w)  # Traced again (a new jit): the memo answers.
  _grads(conv.conv_general_dilated, x, w, padding='VALID')  # Another problem.
  keys = [_key(x, w), _key(x, w, padding='VALID')]
  assert conv_tuning.measured == keys
  with open(tuned) as f:
    cached = json.load(f)
  assert list(cached) == [conv_tuning.machine_key()]
  assert {k: e['form'] for k, e in cached[conv_tuning.machine_key()].items()} == (
      conv_tuning.choices())
  assert set(cached[conv_tuning.machine_key()][keys[0]]['seconds']) == {'conv', 'matmul'}


def test_another_process_reads_the_cache_instead_of_measuring(tuned):
  x, w = _operands((2, 8, 8, 4), (3, 3, 4, 5))
  _grads(conv.conv_general_dilated, x, w)
  assert len(conv_tuning.measured) == 1
  script = (
      'import json, jax, jax.numpy as jnp\n'
      'from cifar_jax.models import conv, conv_tuning\n'
      'x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 5))\n'
      'jax.jit(jax.grad(lambda w: conv.conv_general_dilated(\n'
      "    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()))(w)\n"
      'print(json.dumps([conv_tuning.measured, conv_tuning.choices()]))\n')
  out = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=os.environ.copy(),
                       capture_output=True, text=True, check=True).stdout
  measured, choices = json.loads(out.strip().splitlines()[-1])
  assert measured == []
  assert choices == conv_tuning.choices()


def test_a_cached_choice_is_used_as_is(tuned):
  # A 3x3 kernel whose cache entry says 'matmul' ('auto' would take the convolution): the
  # backward pass has the matmul's dot_general, and nothing was measured.
  x, w = _operands((2, 8, 8, 4), (3, 3, 4, 5))
  with open(tuned, 'w') as f:
    json.dump({conv_tuning.machine_key(): {_key(x, w): {'form': 'matmul'}}}, f)
  text = jax.jit(jax.grad(lambda w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=CHANNELS_LAST).sum())).lower(w).as_text()
  assert 'dot_general' in text
  assert conv_tuning.measured == []
  assert conv_tuning.choices() == {_key(x, w): 'matmul'}


def test_the_cache_of_another_machine_is_not_used(tuned, monkeypatch):
  x, w = _operands((2, 8, 8, 4), (3, 3, 4, 5))
  key = conv_tuning.machine_key()
  assert host_cpu.describe() in key and f'jax {jax.__version__}' in key and 'jaxlib' in key
  other = key.replace(host_cpu.describe(), 'Other CPU (AVX2)')
  with open(tuned, 'w') as f:
    json.dump({other: {_key(x, w): {'form': 'matmul'}}}, f)
  _grads(conv.conv_general_dilated, x, w)
  assert conv_tuning.measured == [_key(x, w)]
  with open(tuned) as f:
    assert set(json.load(f)) == {other, key}  # Kept: a file may serve several machines.
  # The default file is per machine key: another CPU reads another file.
  monkeypatch.delenv(conv_tuning.CACHE_ENV_VAR)
  monkeypatch.setenv('XDG_CACHE_HOME', os.path.dirname(tuned))
  here = conv_tuning.cache_path()
  assert here.startswith(os.path.join(os.path.dirname(tuned), 'cifar_jax', 'conv_grad_'))
  monkeypatch.setattr(host_cpu, 'describe', lambda: 'Other CPU (AVX2)')
  assert conv_tuning.machine_key() == other and conv_tuning.cache_path() != here


@pytest.mark.parametrize('content', ['{"truncated', '[1, 2]', '{"machine": 3}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(content, tuned, caplog):
  with open(tuned, 'w') as f:
    f.write(content)
  x, w = _operands((2, 8, 8, 4), (3, 3, 4, 5))
  with caplog.at_level(logging.WARNING, logger=conv_tuning.__name__):
    _grads(conv.conv_general_dilated, x, w)
  assert conv_tuning.measured == [_key(x, w)]
  if content != '{"machine": 3}':  # A valid object with an unusable entry is skipped silently.
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert tuned in caplog.records[0].getMessage()
  with open(tuned) as f:
    assert _key(x, w) in json.load(f)[conv_tuning.machine_key()]


def test_an_empty_cache_path_keeps_choices_in_memory(tuned, monkeypatch, tmp_path):
  monkeypatch.setenv(conv_tuning.CACHE_ENV_VAR, '')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  x, w = _operands((2, 8, 8, 4), (1, 1, 4, 5))
  _grads(conv.conv_general_dilated, x, w)
  assert conv_tuning.measured == [_key(x, w)]
  assert not os.path.exists(tuned) and not os.path.exists(tmp_path / 'xdg')
