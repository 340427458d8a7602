"""Train-step time under XLA:CPU flag sets and malloc choices: why cifar_jax sets what it sets.

    python benchmarks/xla_cpu_flags.py --configs=configs/exp0.py,configs/redes/m1.py --out=f.json

Per config (its train.batch_size, random uint8 images), per setting, in a fresh process (XLA
reads XLA_FLAGS once; LD_PRELOAD applies at process start): the jitted train_step on one fixed
batch, median wall time of --reps steps after two warm-ups, with minor page faults and system
CPU time per step (getrusage). Settings:

  xla_defaults   CIFAR_JAX_XLA_CPU_DEFAULTS=0: XLA's own defaults (YNNPACK convolution fusions)
  cifar_jax      cifar_jax.xla_cpu's defaults (YNNPACK reductions only: XLA's Eigen convolutions)
  ynn_reduce     YNNPACK reductions only, spelled out (what cifar_jax sets)
  no_ynn         no YNNPACK fusions at all (cifar_jax's default before 2026-12-03)
  ynn_dots       YNNPACK dots only
  no_xnnpack     cifar_jax's plus --xla_cpu_use_xnnpack=false
  ...            and XLA's oneDNN options and LLVM levels (SETTINGS below)

each with glibc malloc, glibc malloc on transparent huge pages (GLIBC_TUNABLES=
glibc.malloc.hugetlb=1, what launch.py restarts itself with: cifar_jax/huge_pages.py) and, where
installed, tcmalloc (LD_PRELOAD; run.sh preloads it). --conv_backend=onednn runs the configs
with model.conv_backend='onednn' (oneDNN's convolutions, requirements-onednn.txt).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config, random_step_inputs, use_conv_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    'xla_defaults': {'CIFAR_JAX_XLA_CPU_DEFAULTS': '0'},
    'cifar_jax': {},
    'ynn_dots': {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=individual_dot'},
    'ynn_reduce': {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=reduce'},
    'no_ynn': {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type='},
    'no_xnnpack': {'XLA_FLAGS': '--xla_cpu_use_xnnpack=false'},
    'onednn': {'XLA_FLAGS': '--xla_cpu_use_onednn=true'},
    'onednn_custom_call': {'XLA_FLAGS': '--xla_cpu_experimental_onednn_custom_call=true'},
    'onednn_both': {'XLA_FLAGS': '--xla_cpu_use_onednn=true '
                                 '--xla_cpu_experimental_onednn_custom_call=true'},
    'llvm_o1': {'XLA_FLAGS': '--xla_backend_optimization_level=1'},
    'llvm_o0': {'XLA_FLAGS': '--xla_backend_optimization_level=0'},
    'onednn_dot_fusion': {'XLA_FLAGS': '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise'},
}


def find_tcmalloc() -> str:
  out = subprocess.run(['/sbin/ldconfig', '-p'], capture_output=True, text=True, check=False)
  for line in out.stdout.splitlines():
    if 'libtcmalloc_minimal.so.4 ' in line:
      return line.split('=>')[-1].strip()
  return ''


def child(config_path: str, reps: int, conv_backend: str) -> dict:
  """One setting: this process's environment is the setting."""
  sys.path.insert(0, REPO)
  from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  config = load_config(config_path)
  backend_fields = use_conv_backend(config, conv_backend)
  batch_size = config.train.batch_size
  state, batch = random_step_inputs(config)
  start = time.perf_counter()
  step = jax.jit(steps.train_step, donate_argnums=0).lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  for _ in range(2):
    state, sums = step(state, batch)
    jax.block_until_ready(sums)
  seconds = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(reps):
    start = time.perf_counter()
    state, sums = step(state, batch)
    jax.block_until_ready(sums)
    seconds.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {**backend_fields, 'batch_size': batch_size,
          'step_seconds': sorted(seconds)[len(seconds) // 2],
          'compile_seconds': compile_seconds,
          'page_faults_per_step': (after.ru_minflt - before.ru_minflt) / reps,
          'system_seconds_per_step': (after.ru_stime - before.ru_stime) / reps,
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'ld_preload': os.environ.get('LD_PRELOAD', ''),
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', '')}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='configs/exp0.py,configs/redes/m1.py,configs/p2cnn/exp1.py')
  parser.add_argument('--settings', default=','.join(SETTINGS))
  parser.add_argument('--reps', type=int, default=8)
  parser.add_argument('--mallocs', default='glibc,glibc_hugepages,tcmalloc')
  # cifar_jax.models.conv.BACKENDS, spelled out: importing cifar_jax here would put its XLA
  # flags in this process's environment, which every setting's child inherits.
  parser.add_argument('--conv_backend', default='xla', choices=('xla', 'onednn', 'tuned'),
                      help='model.conv_backend of every config')
  parser.add_argument('--out', default='')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.reps, args.conv_backend)))
    return
  json_out.check(args.out)

  tcmalloc = find_tcmalloc()
  mallocs = {'glibc': {}, 'glibc_hugepages': {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'},
             **({'tcmalloc': {'LD_PRELOAD': tcmalloc}} if tcmalloc else {})}
  mallocs = {k: v for k, v in mallocs.items() if k in args.mallocs.split(',')}
  rows = []
  print(f'load average {os.getloadavg()[0]:.2f}; tcmalloc: {tcmalloc or "not installed"}')
  print(f"{'config':24} {'setting':14} {'malloc':9} {'step ms':>8} {'img/s':>7} "
        f"{'faults/step':>11} {'sys ms':>7}")
  for config_path in args.configs.split(','):
    for setting in args.settings.split(','):
      for malloc, malloc_env in mallocs.items():
        env = {k: v for k, v in os.environ.items()
               if k not in ('XLA_FLAGS', 'LD_PRELOAD', 'GLIBC_TUNABLES')}
        env.update(SETTINGS[setting])
        env.update(malloc_env)
        out = subprocess.run([sys.executable, __file__, f'--child={config_path}',
                              f'--reps={args.reps}', f'--conv_backend={args.conv_backend}'],
                             env=env, capture_output=True, text=True, check=True)
        row = {'config': config_path, 'setting': setting, 'malloc': malloc,
               'load_average': os.getloadavg(), **json.loads(out.stdout.splitlines()[-1])}
        rows.append(row)
        print(f"{config_path:24} {setting:14} {malloc:9} {1000 * row['step_seconds']:8.1f} "
              f"{row['batch_size'] / row['step_seconds']:7.0f} {row['page_faults_per_step']:11.0f} "
              f"{1000 * row['system_seconds_per_step']:7.1f}", flush=True)
  json_out.write(args.out, rows)


if __name__ == '__main__':
  main()
