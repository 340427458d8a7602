"""Whole train steps with oneDNN's convolutions, and with 'tuned' ones, against XLA's
(model.conv_backend).

    pip install -r requirements-onednn.txt  # oneDNN's library is compiled on first use
    python benchmarks/onednn/step_bench.py --configs=configs/exp0.py,configs/redes/m1.py \
        --out=benchmarks/onednn/steps.json

Per config (random uint8 images, its train.batch_size or --batch_size), cifar_jax's jitted
train_step (built as benchmarks/xla_cpu_flags.py builds it) is lowered three times in this
process, from the config's state with conv_backend 'xla' (the default), 'onednn' (what
model.conv_backend='onednn' runs: every channels-last float32 convolution then runs forward
and both gradients in oneDNN, on CIFAR_JAX_ONEDNN_THREADS OpenMP threads per call (default every
core)) and 'tuned' (each part on the kernel that measured faster on this machine: its first
lowering measures, or reads the choices cached by an earlier process; the JSON lists them). All
run from the same state values on the same batch;
timed interleaved, --reps rounds after two warm-ups, median seconds per step. Agreement: per
parameter, the largest difference of the loss's gradient (the model on the batch, no
augmentation, train mode) divided by the gradient's largest magnitude, the worst parameter
reported; and the loss. (Parameters after one Adam step are no measure: its first update is
about lr * sign(gradient), so a gradient within rounding of 0 moves its weight by 2 lr.)
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)
sys.path[:0] = [REPO, BENCH, HERE]

import cifar_jax  # pylint: disable=g-import-not-at-top,unused-import  (XLA:CPU defaults first)
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cifar_jax import host_cpu  # pylint: disable=g-import-not-at-top
from bench import ONEDNN_CALL, load_onednn  # pylint: disable=g-import-not-at-top
from cifar_jax.models import conv_tuning  # pylint: disable=g-import-not-at-top
from cifar_jax.models import onednn_conv  # pylint: disable=g-import-not-at-top
from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
from config_file import load_config, random_step_inputs  # pylint: disable=g-import-not-at-top

# Name -> the state's conv_backend.
VARIANTS = {'cifar_jax': 'xla', 'onednn': 'onednn', 'tuned': 'tuned'}


def loss_and_grads(state, batch):
  """The data loss and its gradient on the batch as the model sees it without augmentation."""
  images = state.input_pipeline(jax.random.key(0), batch['image'], train=False)

  def loss_fn(params):
    logits, _ = state.apply_fn({'params': params, 'batch_stats': state.batch_stats}, images,
                               train=True, rngs={'dropout': jax.random.key(1)},
                               mutable=['batch_stats', 'losses'])
    return jnp.mean(steps.cross_entropy(logits, batch['label']))

  with state.arithmetic():
    return jax.value_and_grad(loss_fn)(state.params)


def lower(fn, state, batch):
  """fn(state, batch) compiled; the state's static conv_backend picks its convolutions."""
  return jax.jit(fn).lower(state, batch).compile()


def bench_config(path: str, batch_size: int, reps: int) -> dict:
  config = load_config(path)
  if batch_size:
    config.train.batch_size = batch_size
  n = config.train.batch_size
  state, batch = random_step_inputs(config)
  states = {name: state.replace(conv_backend=backend) for name, backend in VARIANTS.items()}
  compiled = {name: lower(steps.train_step, states[name], batch) for name in VARIANTS}
  calls = {name: c.as_text().count(ONEDNN_CALL) for name, c in compiled.items()}
  if not calls['onednn']:  # A silent fallback to XLA would measure XLA twice.
    raise RuntimeError(f'{path}: the onednn step compiled without oneDNN calls')
  outputs = {}
  for name, step in compiled.items():
    outputs[name] = jax.block_until_ready(step(states[name], batch))
    jax.block_until_ready(step(states[name], batch))
  seconds = {name: [] for name in compiled}
  for _ in range(reps):
    for name, step in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(step(states[name], batch))
      seconds[name].append(time.perf_counter() - start)
  del outputs
  (ref_loss, ref_grads), *others = (
      lower(loss_and_grads, states[name], batch)(states[name], batch) for name in VARIANTS)
  row = {'config': path, 'batch_size': n, 'custom_calls': calls,
         'onednn_threads': int(os.environ[onednn_conv.THREADS_ENV_VAR]),
         'loss': float(ref_loss)}
  for name, (loss, grads) in zip(list(VARIANTS)[1:], others):
    # (A parameter whose gradient is exactly 0 on this batch, as one of airbench94's is, would
    # divide 0 by 0: left out.)
    row[f'{name}_grad_max_rel_diff'] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(a)))
        for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(grads))
        if np.max(np.abs(a)) > 0)
    row[f'{name}_loss_diff'] = abs(float(ref_loss) - float(loss))
  for name in compiled:
    row[name] = {'median_s': statistics.median(seconds[name]), 'min_s': min(seconds[name])}
    row[f'speedup_{name}'] = row['cifar_jax']['median_s'] / row[name]['median_s']
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='configs/exp0.py,configs/p2cnn/exp1.py,'
                      'configs/redes/m1.py,configs/exp11.py')
  parser.add_argument('--batch_size', type=int, default=0,
                      help='0: each config\'s own; else this for every config')
  parser.add_argument('--reps', type=int, default=7)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  load_onednn()
  rows = []
  print(f"{'config':24} {'N':>4} {'calls':>5} {'cifar_jax ms':>12} {'onednn ms':>10} "
        f"{'tuned ms':>9} {'onednn x':>8} {'tuned x':>7} {'grad rel diff':>13}")
  for path in args.configs.split(','):
    row = bench_config(path, args.batch_size, args.reps)
    rows.append(row)
    ms = {name: f"{1000 * row[name]['median_s']:.1f}" for name in VARIANTS}
    print(f"{path:24} {row['batch_size']:4} {row['custom_calls']['onednn']:5} "
          f"{ms['cifar_jax']:>12} {ms['onednn']:>10} {ms['tuned']:>9} "
          f"{row['speedup_onednn']:8.2f} {row['speedup_tuned']:7.2f} "
          f"{max(row['onednn_grad_max_rel_diff'], row['tuned_grad_max_rel_diff']):13.1e}",
          flush=True)
    if args.out:
      with open(args.out, 'w') as f:
        # Every choice of the tuned steps (and of their weight gradients' forms) so far.
        json.dump({'cpu': host_cpu.describe(), 'onednn': onednn_conv.version(),
                   'jax': jax.__version__, 'load_average_end': os.getloadavg(), 'rows': rows,
                   'tuned_choices': conv_tuning.entries()}, f, indent=1)


if __name__ == '__main__':
  main()
