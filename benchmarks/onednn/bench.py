"""oneDNN's convolutions (cifar_jax/models/onednn_conv.py) against XLA:CPU's, per layer shape.

    pip install -r requirements-onednn.txt  # oneDNN's library is compiled on first use
    python benchmarks/onednn/bench.py --out=benchmarks/onednn/results.json

Per layer shape (NHWC float32, the cheap configs' and exp11's convolutions; --shapes=all or a
comma-separated subset of names) and batch (--batches), four jitted programs, each in three
variants:

  programs  fwd  y = conv(x, w)
            dx   dL/dx from dL/dy (XLA: jax.vjp of the convolution, the rest dead-code-eliminated)
            dw   dL/dw from x and dL/dy
            all  y, dL/dx and dL/dw in one program (jax.vjp; oneDNN through the custom_vjp)
  variants  xla       plain lax.conv_general_dilated and its jax.vjp (XLA's Eigen convolutions
                      under cifar_jax's XLA:CPU defaults, imported first)
            cifar_jax cifar_jax.models.conv.conv_general_dilated (what the models run: XLA's
                      forward, its CPU gradients with the transposes written out)
            onednn    cifar_jax.models.conv.conv_general_dilated traced inside
                      conv.backend('onednn'), what model.conv_backend='onednn' runs (oneDNN
                      3.x's forward and gradients; its OpenMP threads per call:
                      CIFAR_JAX_ONEDNN_THREADS, default every core)

Timing: after two warm-up calls of every program, --reps rounds, each one call of every
(program, variant) of the shape in turn (interleaved: a change in machine load hits all
alike); the median and fastest seconds per call. Agreement: the largest absolute difference
from the xla variant, and that divided by the largest |xla| value, per output.
"""

import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

import cifar_jax  # pylint: disable=g-import-not-at-top,unused-import  (XLA:CPU defaults first)
import jax  # pylint: disable=g-import-not-at-top
from jax import lax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cifar_jax import host_cpu  # pylint: disable=g-import-not-at-top
from cifar_jax.models import conv as cifar_conv  # pylint: disable=g-import-not-at-top
from cifar_jax.models import onednn_conv  # pylint: disable=g-import-not-at-top

from shapes import SHAPES, parse_args  # pylint: disable=g-import-not-at-top

PROGRAMS = ('fwd', 'dx', 'dw', 'all')
VARIANTS = ('xla', 'cifar_jax', 'onednn')
DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
ONEDNN_CALL = 'custom_call_target="onednn_conv_'  # In a compiled program's HLO text.


def conv_fn(variant: str, padding):
  if variant == 'xla':
    return lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding,
                                                 dimension_numbers=DIMENSION_NUMBERS)
  backend = 'onednn' if variant == 'onednn' else 'xla'

  def conv(x, w):
    # The backend is read when the convolution is traced, i.e. inside jit's trace of this call.
    with cifar_conv.backend(backend):
      return cifar_conv.conv_general_dilated(x, w, (1, 1), padding,
                                             dimension_numbers=DIMENSION_NUMBERS)
  return conv


def program(name: str, conv):
  """The jitted program `name` of a convolution; every one takes (x, w, dy)."""
  if name == 'fwd':
    return jax.jit(lambda x, w, dy: conv(x, w))
  if name == 'dx':
    return jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
  if name == 'dw':
    return jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
  def everything(x, w, dy):
    y, vjp = jax.vjp(conv, x, w)
    return (y, *vjp(dy))
  return jax.jit(everything)


def agreement(reference, value) -> dict:
  reference, value = np.asarray(reference), np.asarray(value)
  abs_err = float(np.max(np.abs(reference - value)))
  scale = float(np.max(np.abs(reference)))
  return {'max_abs': abs_err, 'max_rel': abs_err / scale if scale else abs_err}


def bench_shape(name: str, batch: int, reps: int) -> dict:
  size, cin, cout, k, padding = SHAPES[name]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, cin), np.float32))
  w = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32) / np.sqrt(k * k * cin))
  out = size if padding == 'SAME' else size - k + 1
  dy = jnp.asarray(rng.standard_normal((batch, out, out, cout), np.float32))
  compiled = {(p, v): program(p, conv_fn(v, padding)).lower(x, w, dy).compile()
              for p in PROGRAMS for v in VARIANTS}
  for p in PROGRAMS:  # A silent fallback to XLA would measure XLA twice.
    if ONEDNN_CALL not in compiled[(p, 'onednn')].as_text():
      raise RuntimeError(f'{name} {p}: the onednn variant compiled without oneDNN calls')
  results = {key: None for key in compiled}
  for key, fn in compiled.items():
    results[key] = jax.block_until_ready(fn(x, w, dy))
    jax.block_until_ready(fn(x, w, dy))
  seconds = {key: [] for key in compiled}
  for _ in range(reps):
    for key, fn in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(x, w, dy))
      seconds[key].append(time.perf_counter() - start)
  flops = 2 * batch * out * out * cout * k * k * cin
  row = {'shape': name, 'batch': batch, 'size': size, 'cin': cin, 'cout': cout, 'kernel': k,
         'padding': padding, 'gflop_per_conv': flops / 1e9, 'programs': {}}
  pads = cifar_conv.explicit_padding(x.shape, w.shape, (1, 1), padding)
  row['onednn_impl'] = {kind: onednn_conv.implementation(kind, x.shape, w.shape, (1, 1), pads)
                        for kind in 'fdw'}
  for p in PROGRAMS:
    entry = {}
    for v in VARIANTS:
      entry[v] = {'median_s': statistics.median(seconds[(p, v)]), 'min_s': min(seconds[(p, v)])}
      if v != 'xla':
        reference = jax.tree.leaves(results[(p, 'xla')])
        entry[v]['agreement'] = [agreement(a, b) for a, b in
                                 zip(reference, jax.tree.leaves(results[(p, v)]))]
    for v in ('cifar_jax', 'onednn'):
      entry[f'speedup_{v}_vs_xla'] = entry['xla']['median_s'] / entry[v]['median_s']
    entry['speedup_onednn_vs_cifar_jax'] = (entry['cifar_jax']['median_s']
                                            / entry['onednn']['median_s'])
    row['programs'][p] = entry
  return row


def load_onednn():
  """Builds (first time) and loads oneDNN's convolutions, or exits 2 saying why not.

  load() sets CIFAR_JAX_ONEDNN_THREADS to its default where the environment leaves it unset."""
  if jax.default_backend() != 'cpu':
    print(f'error: oneDNN convolutions run on CPU only; jax uses {jax.default_backend()} '
          '(JAX_PLATFORMS=cpu)', file=sys.stderr)
    sys.exit(2)
  try:
    onednn_conv.load()
  except onednn_conv.Unavailable as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def main():
  args, shapes = parse_args(__doc__.split('\n')[0])
  load_onednn()
  header = {'cpu': host_cpu.describe(), 'cores': os.cpu_count(), 'onednn': onednn_conv.version(),
            'onednn_threads': int(os.environ[onednn_conv.THREADS_ENV_VAR]),
            'jax': jax.__version__, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'reps': args.reps, 'load_average_start': os.getloadavg()}
  print(f"{header['cpu']}, oneDNN {header['onednn']}, jax {header['jax']}, "
        f"load {header['load_average_start'][0]:.1f}")
  print(f"{'shape':22} {'N':>4} {'prog':4} {'xla ms':>8} {'cj ms':>8} {'dnnl ms':>8} "
        f"{'dnnl/xla':>8} {'dnnl/cj':>8} {'max rel err':>11}")
  rows = []
  for batch in (int(b) for b in args.batches.split(',')):
    for name in shapes:
      row = bench_shape(name, batch, args.reps)
      rows.append(row)
      for p, e in row['programs'].items():
        err = max(a['max_rel'] for a in e['onednn']['agreement'])
        print(f"{name:22} {batch:4} {p:4} {1000 * e['xla']['median_s']:8.2f} "
              f"{1000 * e['cifar_jax']['median_s']:8.2f} {1000 * e['onednn']['median_s']:8.2f} "
              f"{e['speedup_onednn_vs_xla']:8.2f} {e['speedup_onednn_vs_cifar_jax']:8.2f} "
              f"{err:11.1e}", flush=True)
      if args.out:  # After every shape: a stopped run keeps what it measured.
        header['load_average_end'] = os.getloadavg()
        with open(args.out, 'w') as f:
          json.dump({**header, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
