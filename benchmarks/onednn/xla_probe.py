"""Does XLA:CPU's own oneDNN code take cifar_jax's convolutions? Optimised HLO, times per flag set.

    python benchmarks/onednn/xla_probe.py --out=/tmp/xla_probe.json --hlo_dir=/tmp/xla_probe_hlo

Per setting, in a fresh process (XLA reads XLA_FLAGS once), three programs:

  conv3x3   a 3x3 SAME conv 64->64 on 128x16x16x64 float32 (NHWC, HWIO), its loss's gradients
            with respect to input and kernel (forward + both backward convolutions)
  dense     a 4096->1024 matmul on 512 rows plus bias and relu, forward + gradients
  m1        configs/redes/m1.py's jitted train step (batch 512), built as
            benchmarks/xla_cpu_flags.py builds it

XLA's optimised HLO goes to --hlo_dir/<setting>/ (xla_dump_to); from it this counts the
`convolution` instructions left and every custom-call target (`__onednn$convolution`,
`__onednn$matmul`, ...) and oneDNN fusion kind. Times: --rounds rounds over all settings
(interleaved, so that a changing machine load hits every setting alike), each the median of
--reps calls after two warm-ups; reported: the median over rounds.
jaxlib's CPU wheel has oneDNN compiled in (`strings libjax_common.so | grep __onednn`), so what
the flags do is XLA's choice, not a missing library.
"""

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)

SETTINGS = {
    'cifar_jax': '',
    'xla_defaults': None,  # CIFAR_JAX_XLA_CPU_DEFAULTS=0: YNNPACK fusions on.
    'use_onednn': '--xla_cpu_use_onednn=true',
    'onednn_custom_call': '--xla_cpu_experimental_onednn_custom_call=true',
    'onednn_both': '--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true',
    'onednn_fusion_dot_eltwise': '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise',
    'onednn_all': '--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true '
                  '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise',
}


def programs():
  """name -> (jitted function, args): built after jax is imported in the child."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)

  def conv_loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(y * y)
  x = jnp.asarray(rng.standard_normal((128, 16, 16, 64), np.float32))
  w = jnp.asarray(rng.standard_normal((3, 3, 64, 64), np.float32) * 0.05)
  out = {'conv3x3': (jax.jit(jax.value_and_grad(conv_loss, argnums=(0, 1))), (x, w))}

  def dense_loss(a, b, bias):
    return jnp.sum(jax.nn.relu(a @ b + bias) ** 2)
  a = jnp.asarray(rng.standard_normal((512, 4096), np.float32))
  b = jnp.asarray(rng.standard_normal((4096, 1024), np.float32) * 0.02)
  bias = jnp.zeros((1024,), jnp.float32)
  out['dense'] = (jax.jit(jax.value_and_grad(dense_loss, argnums=(0, 1, 2))), (a, b, bias))

  sys.path.insert(0, BENCH)
  from config_file import load_config, random_step_inputs  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
  out['m1'] = (jax.jit(steps.train_step), random_step_inputs(load_config('configs/redes/m1.py')))
  return out


def child(reps: int) -> dict:
  sys.path.insert(0, REPO)
  import cifar_jax  # pylint: disable=g-import-not-at-top,unused-import  (its XLA:CPU defaults)
  import jax  # pylint: disable=g-import-not-at-top
  rows = {}
  for name, (fn, args) in programs().items():
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    for _ in range(2):
      jax.block_until_ready(compiled(*args))
    seconds = []
    for _ in range(reps):
      start = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      seconds.append(time.perf_counter() - start)
    rows[name] = {'median_s': statistics.median(seconds), 'min_s': min(seconds),
                  'compile_s': compile_s, 'hlo': hlo_summary(compiled.as_text())}
  return rows


def hlo_summary(text: str) -> dict:
  """Convolutions, dots and custom calls (by target) and fusion kinds in optimised HLO text."""
  targets = re.findall(r'custom_call_target="([^"]+)"', text)
  kinds = re.findall(r'kind=(k\w+)', text)
  library = re.findall(r'"fusion_config":\{"kind":"([^"]+)"', text)  # __ynn_fusion, __onednn_fusion
  count = lambda op: len(re.findall(rf'= \S+ {op}\(', text))
  return {'convolution': count('convolution'), 'dot': count('dot'),
          'custom_calls': {t: targets.count(t) for t in sorted(set(targets))},
          'fusion_kinds': {k: kinds.count(k) for k in sorted(set(kinds))},
          'library_fusions': {k: library.count(k) for k in sorted(set(library))}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--settings', default=','.join(SETTINGS))
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--hlo_dir', default='')
  parser.add_argument('--out', default='')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.reps)))
    return
  results = {}
  for round_index in range(args.rounds):
    for setting in args.settings.split(','):
      env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
      flags = SETTINGS[setting]
      if flags is None:
        env['CIFAR_JAX_XLA_CPU_DEFAULTS'] = '0'
        flags = ''
      if args.hlo_dir and round_index == 0:
        flags += f' --xla_dump_to={os.path.join(args.hlo_dir, setting)} --xla_dump_hlo_as_text'
      env['XLA_FLAGS'] = flags.strip()
      out = subprocess.run([sys.executable, __file__, '--child', f'--reps={args.reps}'], env=env,
                           capture_output=True, text=True, check=False)
      if out.returncode:
        print(setting, 'failed:', out.stderr[-2000:])
        continue
      rows = json.loads(out.stdout.splitlines()[-1])
      for name, row in rows.items():
        kept = results.setdefault(setting, {}).setdefault(name, {**row, 'round_medians_s': []})
        kept['round_medians_s'].append(row['median_s'])
        kept['median_s'] = statistics.median(kept['round_medians_s'])
        h = row['hlo']
        print(f"round {round_index} {setting:26} {name:8} {1000 * row['median_s']:8.1f} ms  "
              f"conv={h['convolution']} dot={h['dot']} custom_calls={h['custom_calls']} "
              f"fusions={h['fusion_kinds']} library={h['library_fusions']}", flush=True)
  print('median over rounds (ms):')
  for setting, rows in results.items():
    print(f'{setting:26} ' + '  '.join(f"{name} {1000 * row['median_s']:7.1f}"
                                      for name, row in rows.items()))
  if args.out:
    sys.path.insert(0, BENCH)
    import json_out  # pylint: disable=g-import-not-at-top  (names the CPU, XLA_FLAGS untouched)
    with open(args.out, 'w') as f:
      json.dump({'cpu': json_out.cpu(), 'load_average_end': os.getloadavg(), 'results': results},
                f, indent=1)


if __name__ == '__main__':
  main()
