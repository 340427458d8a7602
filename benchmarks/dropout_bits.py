"""Whole train steps with flax's Dropout against cifar_jax's (cifar_jax.models.dropout), which
computes the same random bits once, stored, instead of in every consumer of the mask.

    python benchmarks/dropout_bits.py --configs=configs/redes/m2.py --out=/tmp/dropout.json

Per config (random uint8 images, its train.batch_size), cifar_jax's jitted train_step is
compiled twice in this process from the same state: with flax.linen.Dropout in the model (what
cifar_jax ran before) and with cifar_jax's Dropout. Both steps must return the same state and
metrics bit for bit (else the benchmark stops: the change would not be a pure speed-up); then
they are timed interleaved, --reps rounds after a warm-up, median seconds. --conv_backend sets
model.conv_backend ('onednn', the default, as the suite's fastest cifar_jax runs).
"""

import argparse
import os
import sys
import types

import json_out  # This folder's --out writer (local or gs://).
import timing


def _compiled_steps(state, batch):
  """{'flax': step, 'cifar_jax': step}: train_step compiled with each Dropout in the model."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import dropout, layer_kinds  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
  modules = {'flax': types.SimpleNamespace(Dropout=nn.Dropout), 'cifar_jax': dropout}
  compiled = {}
  try:
    for name, module in modules.items():
      layer_kinds.dropout = module  # Read when the model is traced, below.
      jax.clear_caches()
      compiled[name] = jax.jit(steps.train_step).lower(state, batch).compile()
  finally:
    layer_kinds.dropout = dropout
  return compiled


def bench_config(path: str, conv_backend: str, reps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from config_file import load_config, random_step_inputs, use_conv_backend  # pylint: disable=g-import-not-at-top
  config = load_config(path)
  row = {'config': path, 'batch_size': config.train.batch_size,
         **use_conv_backend(config, conv_backend)}
  state, batch = random_step_inputs(config)
  compiled = _compiled_steps(state, batch)
  outputs = {name: jax.device_get(step(state, batch)) for name, step in compiled.items()}
  for a, b in zip(*(jax.tree.leaves(out) for out in outputs.values())):
    if not np.array_equal(a, b):
      raise SystemExit(f'{path}: the two Dropouts trained to different states')
  seconds, _ = timing.median_seconds(compiled, (state, batch), reps)
  row.update({f'{name}_ms': 1000 * s for name, s in seconds.items()}, identical=True,
             speedup=seconds['flax'] / seconds['cifar_jax'])
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='configs/redes/m2.py,configs/redes/m3.py,'
                      'configs/proyecto4/exp1.py,configs/arquitecturas/a2.py,configs/exp4.py')
  parser.add_argument('--conv_backend', default='onednn', choices=('xla', 'onednn', 'tuned'))
  parser.add_argument('--reps', type=int, default=15)
  parser.add_argument('--out', default='', help='where the JSON goes (local or gs://)')
  args = parser.parse_args()
  json_out.check(args.out)
  xla_flags = json_out.use_cifar_jax_xla_flags()
  sys.path.insert(0, json_out.REPO)
  import jax  # pylint: disable=g-import-not-at-top
  rows = []
  for path in args.configs.split(','):
    row = bench_config(path, args.conv_backend, args.reps)
    rows.append(row)
    print(f"{path:28} batch {row['batch_size']:4}  flax {row['flax_ms']:8.1f} ms  "
          f"cifar_jax {row['cifar_jax_ms']:8.1f} ms  x{row['speedup']:.2f}  (same state: yes)",
          flush=True)
  json_out.write(args.out, {'cpu': json_out.cpu(), 'jax': jax.__version__,
                            'xla_flags': xla_flags, 'conv_backend': args.conv_backend,
                            'reps': args.reps, 'load_average_end': os.getloadavg(),
                            'rows': rows})


if __name__ == '__main__':
  main()
