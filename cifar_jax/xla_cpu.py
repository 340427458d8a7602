"""XLA:CPU compiler flags cifar_jax runs with, set before jax creates its CPU backend.

jax 0.10's XLA:CPU hands convolutions, dots, elementwise ops and reductions to YNNPACK fusions
(xla_cpu_experimental_ynn_fusion_type). cifar_jax keeps only its reductions:

- **Convolutions stay XLA's own (Eigen).** On every benchmarked config they ran train steps
  1.5-1.9x faster than YNNPACK's (2-core AVX-512 Xeon, `python benchmarks/xla_cpu_flags.py`):
  exp0 250 -> 138 ms, redes/m1 690 -> 342 ms, p2cnn/exp1 63 -> 35 ms, exp11 18.0 -> 12.3 s.
- **Reductions go to YNNPACK.** Without it, XLA's own emitter runs BatchNorm's statistics (a
  sum over batch x height x width per channel) as reduce-window loops (its tree-reduction
  rewrite), far below memory speed: 1.86 s of exp11's 8.5 s step with oneDNN convolutions.
  With YNNPACK's reductions exp11's step (oneDNN convolutions) took 1.40x less time on a 2-core
  AMD EPYC Zen 4 and 1.93x less on a 2-core Xeon (AVX-512/AMX); arquitecturas/a2's 1.31-1.86x,
  the small models 0.96-1.65x (`benchmarks/xla_cpu_flags.py --settings=no_ynn,ynn_reduce`;
  the table in benchmarks/README.md).

`import cifar_jax` (any module) adds these flags to XLA_FLAGS, each only where XLA_FLAGS does
not set it already; XLA reads XLA_FLAGS once, when the first computation creates a backend, so a
script that ran jax computations before importing cifar_jax keeps XLA's defaults (with a
warning). They are XLA:CPU options: GPU and TPU programs do not read them.
CIFAR_JAX_XLA_CPU_DEFAULTS=0 leaves XLA_FLAGS alone.
"""

import os
import sys
import warnings

ENV_VAR = 'CIFAR_JAX_XLA_CPU_DEFAULTS'
CPU_FLAG_DEFAULTS = {
    # YNNPACK's reductions only: no YNNPACK convolutions, dots or elementwise fusions (see the
    # module docstring for the measurements).
    'xla_cpu_experimental_ynn_fusion_type': 'reduce',
}


def with_cpu_defaults(xla_flags: str) -> str:
  """`xla_flags` plus every default flag it does not set itself."""
  flags = xla_flags.split()
  set_names = {flag.lstrip('-').split('=', 1)[0] for flag in flags}
  flags += [f'--{name}={value}' for name, value in CPU_FLAG_DEFAULTS.items()
            if name not in set_names]
  return ' '.join(flags)


def apply_cpu_defaults(environ=os.environ) -> None:
  """Adds the defaults to environ['XLA_FLAGS'] unless CIFAR_JAX_XLA_CPU_DEFAULTS=0; warns when
  jax already made its backends (too late for XLA_FLAGS to count)."""
  if environ.get(ENV_VAR, '1') == '0':
    return
  before = environ.get('XLA_FLAGS', '')
  environ['XLA_FLAGS'] = with_cpu_defaults(before)
  if environ['XLA_FLAGS'] != before and _jax_backends_exist():
    warnings.warn('jax ran computations before cifar_jax was imported, so XLA:CPU keeps its '
                  'default flags (slower convolutions on CPU). Import cifar_jax first, or set '
                  f'XLA_FLAGS="{environ["XLA_FLAGS"]}" before starting Python.', stacklevel=3)


def _jax_backends_exist() -> bool:
  if 'jax' not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return bool(getattr(xla_bridge, '_backends', None))
