"""TensorFlow's convolutions (Keras/TF's: oneDNN inside TensorFlow) per layer shape, to set
beside bench.py's oneDNN and XLA times of the same shapes on the same machine.

    .venv-bench/tf/bin/python benchmarks/onednn/tf_convs.py --shapes=m2_3-32@32_k6 \
        --batches=512 --out=tf_convs.json

Per shape (shapes.py) and batch, three tf.functions, as Keras's train step runs them: fwd
(tf.nn.conv2d), dx (Conv2DBackpropInput) and dw (Conv2DBackpropFilter), on random NHWC float32
operands. Timing as bench.py's: two warm-up calls each, then --reps rounds, each one call of
every program in turn; the median and fastest seconds per call. Run it right after bench.py
(or before), on a quiet machine: only times taken side by side compare.
"""

import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from cifar_jax import host_cpu  # pylint: disable=g-import-not-at-top  (pure Python; sets only env)
from shapes import SHAPES, parse_args  # pylint: disable=g-import-not-at-top


def bench_shape(tf, name: str, batch: int, reps: int) -> dict:
  size, cin, cout, k, padding = SHAPES[name]
  rng = np.random.default_rng(0)
  out = size if padding == 'SAME' else size - k + 1
  x = tf.constant(rng.standard_normal((batch, size, size, cin), np.float32))
  w = tf.constant((rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32))
  dy = tf.constant(rng.standard_normal((batch, out, out, cout), np.float32))
  strides = [1, 1, 1, 1]
  programs = {
      'fwd': (tf.function(lambda x, w: tf.nn.conv2d(x, w, strides, padding)), (x, w)),
      'dx': (tf.function(lambda w, dy: tf.raw_ops.Conv2DBackpropInput(
          input_sizes=[batch, size, size, cin], filter=w, out_backprop=dy, strides=strides,
          padding=padding)), (w, dy)),
      'dw': (tf.function(lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
          input=x, filter_sizes=[k, k, cin, cout], out_backprop=dy, strides=strides,
          padding=padding)), (x, dy)),
  }
  for fn, args in programs.values():
    fn(*args).numpy()
    fn(*args).numpy()
  seconds = {p: [] for p in programs}
  for _ in range(reps):
    for p, (fn, args) in programs.items():
      start = time.perf_counter()
      fn(*args).numpy()
      seconds[p].append(time.perf_counter() - start)
  return {'shape': name, 'batch': batch,
          'gflop_per_conv': 2 * batch * out * out * cout * k * k * cin / 1e9,
          'programs': {p: {'median_s': statistics.median(s), 'min_s': min(s)}
                       for p, s in seconds.items()}}


def main():
  args, shapes = parse_args(__doc__.split('\n')[0])
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after the checks: seconds)
  header = {'cpu': host_cpu.describe(), 'cores': os.cpu_count(),
            'tensorflow': tf.__version__, 'reps': args.reps, 'load_average_start': os.getloadavg()}
  print(f"TensorFlow {header['tensorflow']}, load {header['load_average_start'][0]:.1f}")
  print(f"{'shape':22} {'N':>4} {'fwd ms':>8} {'dx ms':>8} {'dw ms':>8}")
  rows = []
  for batch in (int(b) for b in args.batches.split(',')):
    for name in shapes:
      row = bench_shape(tf, name, batch, args.reps)
      rows.append(row)
      ms = {p: f"{1000 * e['median_s']:8.2f}" for p, e in row['programs'].items()}
      print(f"{name:22} {batch:4} {ms['fwd']} {ms['dx']} {ms['dw']}", flush=True)
      if args.out:
        with open(args.out, 'w') as f:
          json.dump({**header, 'load_average_end': os.getloadavg(), 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
