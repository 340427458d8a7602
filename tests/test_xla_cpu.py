"""cifar_jax.xla_cpu: the XLA:CPU flags `import cifar_jax` sets, without overriding the user's."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax import lax

from cifar_jax import xla_cpu

FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def test_defaults_are_added_once_and_never_override_a_user_flag():
  assert xla_cpu.with_cpu_defaults('') == f'--{FLAG}=reduce'
  assert (xla_cpu.with_cpu_defaults('--xla_dump_to=/tmp/d')
          == f'--xla_dump_to=/tmp/d --{FLAG}=reduce')
  assert xla_cpu.with_cpu_defaults(f'--{FLAG}=') == f'--{FLAG}='
  assert xla_cpu.with_cpu_defaults(xla_cpu.with_cpu_defaults('')) == f'--{FLAG}=reduce'


def test_opt_out_leaves_xla_flags_alone():
  environ = {xla_cpu.ENV_VAR: '0', 'XLA_FLAGS': '--xla_dump_to=/tmp/d'}
  xla_cpu.apply_cpu_defaults(environ)
  assert environ['XLA_FLAGS'] == '--xla_dump_to=/tmp/d'
  environ = {}
  xla_cpu.apply_cpu_defaults(environ)
  assert environ['XLA_FLAGS'] == f'--{FLAG}=reduce'


def _ynn_fused_ops():
  """Which of 'convolution' and 'reduce' the compiled program puts inside YNNPACK fusions: a
  convolution's weight gradient, then a BatchNorm-like per-channel sum of its input."""
  x, w = jnp.ones((8, 16, 16, 16)), jnp.ones((3, 3, 16, 32))  # Big enough for YNNPACK.
  def loss(w, x):
    y = lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return (y * y).sum() + (jnp.sum(x, axis=(0, 1, 2)) ** 2).sum()
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w, x).compile().as_text()
  bodies = dict(re.findall(r"^%?(\S+) [^\n]*\{\n(.*?)\n\}", hlo, re.M | re.S))
  called = re.findall(r'calls=%?([\w.-]+).*__ynn_fusion', hlo)
  return {op for name in called for op in ('convolution', 'reduce')
          if f' {op}(' in bodies.get(name, '')}


def test_this_process_compiles_reductions_but_not_convolutions_on_ynnpack():
  # The tests import cifar_jax before jax makes its backend, as launch.py does.
  assert f'--{FLAG}=reduce' in os.environ['XLA_FLAGS']
  assert _ynn_fused_ops() == {'reduce'}


def test_jax_used_before_cifar_jax_keeps_xla_defaults_with_a_warning():
  code = ('import warnings, jax, jax.numpy as jnp; jnp.ones(1).block_until_ready()\n'
          'with warnings.catch_warnings(record=True) as caught:\n'
          '  warnings.simplefilter("always"); import cifar_jax\n'
          'print([str(w.message) for w in caught])')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert 'Import cifar_jax first' in out.stdout


def test_xla_defaults_alone_would_put_convolutions_on_ynnpack():
  # The control for the test above: what CIFAR_JAX_XLA_CPU_DEFAULTS=0 compiles.
  code = ('import sys; sys.path.insert(0, "tests"); import test_xla_cpu\n'
          'print(sorted(test_xla_cpu._ynn_fused_ops()))')
  env = {**{k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}, xla_cpu.ENV_VAR: '0'}
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.splitlines()[-1] == "['convolution', 'reduce']"
