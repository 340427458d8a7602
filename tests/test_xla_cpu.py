"""cifar_jax.xla_cpu: the XLA:CPU flags `import cifar_jax` sets, without overriding the user's."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax import lax

from cifar_jax import xla_cpu

FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def test_defaults_are_added_once_and_never_override_a_user_flag():
  assert xla_cpu.with_cpu_defaults('') == f'--{FLAG}='
  assert xla_cpu.with_cpu_defaults('--xla_dump_to=/tmp/d') == f'--xla_dump_to=/tmp/d --{FLAG}='
  assert xla_cpu.with_cpu_defaults(f'--{FLAG}=dot') == f'--{FLAG}=dot'
  assert xla_cpu.with_cpu_defaults(xla_cpu.with_cpu_defaults('')) == f'--{FLAG}='


def test_opt_out_leaves_xla_flags_alone():
  environ = {xla_cpu.ENV_VAR: '0', 'XLA_FLAGS': '--xla_dump_to=/tmp/d'}
  xla_cpu.apply_cpu_defaults(environ)
  assert environ['XLA_FLAGS'] == '--xla_dump_to=/tmp/d'
  environ = {}
  xla_cpu.apply_cpu_defaults(environ)
  assert environ['XLA_FLAGS'] == f'--{FLAG}='


def _conv_grad_hlo():
  x, w = jnp.ones((8, 16, 16, 16)), jnp.ones((3, 3, 16, 32))  # Big enough for YNNPACK.
  loss = lambda w: lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()
  return jax.jit(jax.grad(loss)).lower(w).compile().as_text()


def test_this_process_compiles_without_ynn_fusions():
  # The tests import cifar_jax before jax makes its backend, as launch.py does.
  assert f'--{FLAG}=' in os.environ['XLA_FLAGS']
  assert '__ynn_fusion' not in _conv_grad_hlo()


def test_jax_used_before_cifar_jax_keeps_xla_defaults_with_a_warning():
  code = ('import warnings, jax, jax.numpy as jnp; jnp.ones(1).block_until_ready()\n'
          'with warnings.catch_warnings(record=True) as caught:\n'
          '  warnings.simplefilter("always"); import cifar_jax\n'
          'print([str(w.message) for w in caught])')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert 'Import cifar_jax first' in out.stdout


def test_xla_defaults_alone_would_use_ynn_fusions():
  # The control for the test above: what CIFAR_JAX_XLA_CPU_DEFAULTS=0 compiles.
  code = ('import sys; sys.path.insert(0, "tests"); import test_xla_cpu\n'
          'print("__ynn_fusion" in test_xla_cpu._conv_grad_hlo())')
  env = {**{k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}, xla_cpu.ENV_VAR: '0'}
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.split()[-1] == 'True'
