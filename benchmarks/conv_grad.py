"""Convolution gradients on CPU: XLA's against cifar_jax.models.conv's, alone and in a loop.

    python benchmarks/conv_grad.py --out=/tmp/conv_grad.json

Per layer shape of the configs (exp11's VGG-like 3x3 convs, redes/m1's 6x6 convs, DenseNet121's
stem, 1x1 and 3x3 convs): GFLOP/s (median wall time of --reps interleaved runs after a warm-up)
of the forward convolution (for scale), of XLA's input + weight gradients, of conv's CPU
gradients (`_cpu_grads` in the default 'auto' mode: explicit-layout convolutions, a matmul
weight gradient for 1x1 kernels) and of the matmul-per-tap weight gradient; then the same
gradients inside a 2-step `lax.fori_loop`, where XLA:CPU leaves its own gradient convolutions
in a slow layout (XLA's in a loop only with --xla_in_loop: minutes per shape).

Then the train step of configs/exp11.py and configs/exp0.py traced with CIFAR_JAX_CONV_GRAD=xla
(plain convolutions) and =auto (the default), both compiled in one process and run interleaved.
Other processes on the machine skew wall times (CPU time less so): the load average is recorded.
"""

import argparse
import functools
import os
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# (name, batch, image size, in channels, out channels, kernel, stride, padding).
SHAPES = (
    ('issue 3x3 128->128', 256, 16, 128, 128, 3, 1, 'SAME'),
    ('exp11 conv 3->64', 128, 32, 3, 64, 3, 1, 'SAME'),
    ('exp11 conv 64->64', 128, 32, 64, 64, 3, 1, 'SAME'),
    ('exp11 conv 64->128', 128, 16, 64, 128, 3, 1, 'SAME'),
    ('exp11 conv 128->128', 128, 16, 128, 128, 3, 1, 'SAME'),
    ('exp11 conv 128->256', 128, 8, 128, 256, 3, 1, 'SAME'),
    ('exp11 conv 256->256', 128, 8, 256, 256, 3, 1, 'SAME'),
    ('exp11 conv 256->512', 128, 4, 256, 512, 3, 1, 'SAME'),
    ('exp11 conv 512->512', 128, 4, 512, 512, 3, 1, 'SAME'),
    ('m1 conv 6x6 3->16', 128, 32, 3, 16, 6, 1, 'SAME'),
    ('m1 conv 6x6 16->32', 128, 16, 16, 32, 6, 1, 'SAME'),
    ('m1 conv 6x6 32->64', 128, 8, 32, 64, 6, 1, 'SAME'),
    ('densenet stem 7x7/2', 8, 230, 3, 64, 7, 2, 'VALID'),
    ('densenet 1x1 128->128', 8, 56, 128, 128, 1, 1, 'VALID'),
    ('densenet 3x3 128->32', 8, 56, 128, 32, 3, 1, 'SAME'),
    ('densenet 1x1 512->128', 8, 14, 512, 128, 1, 1, 'VALID'),
)
TRAIN_CONFIGS = ('configs/exp11.py', 'configs/exp0.py')


def _median_seconds(fns: dict, args, reps: int) -> tuple[dict, dict]:
  """Median wall and CPU seconds of each fn, runs interleaved so load changes hit all alike."""
  import jax  # pylint: disable=g-import-not-at-top
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args))
      wall[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  median = lambda t: sorted(t)[len(t) // 2]
  return ({name: median(t) for name, t in wall.items()},
          {name: median(t) for name, t in cpu.items()})


def measure_shape(name, batch, size, cin, cout, kernel, stride, padding, reps: int,
                  xla_in_loop: bool = False) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import conv  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, cin, cout)), jnp.float32)
  strides = (stride, stride)
  spec = conv.ConvSpec(strides, conv.explicit_padding(x.shape, w.shape, strides, padding),
                       None, None)
  y = jax.eval_shape(functools.partial(conv.xla_conv, spec), x, w)
  dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  flops = 2 * np.prod(y.shape) * kernel * kernel * cin

  def in_loop(grads):  # Two iterations: as a fori_loop of train steps runs them.
    return lambda x, w, dy: lax.fori_loop(
        0, 2, lambda i, acc: jax.tree.map(jnp.add, acc, grads(x, w, dy)),
        jax.tree.map(jnp.zeros_like, jax.eval_shape(grads, x, w, dy)))

  grads = {
      'xla_grads': functools.partial(conv.xla_grads, spec),
      'cpu_grads': functools.partial(conv._cpu_grads, spec),  # pylint: disable=protected-access
      'matmul_weight_grad': lambda x, w, dy: conv.matmul_weight_grad(x, dy, w.shape[:2], strides,
                                                                     spec.padding),
  }
  programs = {'forward': lambda x, w, dy: conv.xla_conv(spec, x, w), **grads}
  programs.update({f'{k}_in_loop': in_loop(f) for k, f in grads.items()
                   if k != 'xla_grads' or xla_in_loop})
  compiled = {k: jax.jit(f).lower(x, w, dy).compile() for k, f in programs.items()}
  xla, custom = (compiled[k](x, w, dy) for k in ('xla_grads', 'cpu_grads'))
  difference = max(float(np.abs(np.asarray(c) - np.asarray(e)).max() / np.abs(np.asarray(e)).max())
                   for c, e in zip(custom, xla))
  for fn in compiled.values():  # Warmup.
    jax.block_until_ready(fn(x, w, dy))
  seconds, cpu_seconds = _median_seconds(compiled, (x, w, dy), reps)
  # FLOPs of each program: forward = flops, gradients 2 x flops (a loop runs them twice).
  work = {k: flops * (1 if k == 'forward' else 2 if 'in_loop' not in k else 4) for k in compiled}
  work['matmul_weight_grad'], work['matmul_weight_grad_in_loop'] = flops, 2 * flops
  seconds = {k: s / (2 if 'in_loop' in k else 1) for k, s in seconds.items()}  # Per iteration.
  work = {k: w / (2 if 'in_loop' in k else 1) for k, w in work.items()}
  return {
      'name': name, 'batch': batch, 'size': size, 'cin': cin, 'cout': cout, 'kernel': kernel,
      'stride': stride, 'padding': padding, 'gflop': flops / 1e9,
      **{f'{k}_gflops': work[k] / s / 1e9 for k, s in seconds.items()},
      **{f'{k}_seconds': s for k, s in seconds.items()},
      **{f'{k}_cpu_seconds': s for k, s in cpu_seconds.items()},
      **{f'{k}_temp_mib': c.memory_analysis().temp_size_in_bytes / 2**20
         for k, c in compiled.items()},
      'input_mib': x.nbytes / 2**20, 'max_relative_difference': difference,
  }


def measure_train_steps(config_path: str, batch_size: int, steps: int,
                        modes=('xla', 'auto')) -> list[dict]:
  """Median seconds of the jitted train step on one fixed batch, per conv mode.

  Each mode's step is traced with CIFAR_JAX_CONV_GRAD set to it (after clearing jax's caches,
  which would otherwise reuse the first trace); the compiled steps then run interleaved.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import conv  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import setup  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top

  config = load_config(config_path)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (batch_size, *config.model.input_shape), dtype=np.uint8)
  labels = rng.integers(0, 10, (batch_size,), dtype=np.int32)
  config.train.batch_size = batch_size
  batch = jax.device_put({'image': images, 'label': labels})

  states, compiled, first_step = {}, {}, {}
  previous = os.environ.get(conv.ENV_VAR)
  try:
    for mode in modes:
      os.environ[conv.ENV_VAR] = mode
      jax.clear_caches()
      splits = setup.array_splits(images, labels)
      states[mode], _ = setup.create_train_state_from_config(config, splits)
      start = time.perf_counter()
      compiled[mode] = jax.jit(steps_lib.train_step, donate_argnums=0).lower(
          states[mode], batch).compile()
      states[mode], sums = compiled[mode](states[mode], batch)  # Warmup.
      jax.block_until_ready(sums)
      first_step[mode] = time.perf_counter() - start
  finally:
    if previous is None:
      os.environ.pop(conv.ENV_VAR, None)
    else:
      os.environ[conv.ENV_VAR] = previous
  wall = {mode: [] for mode in modes}
  cpu = {mode: [] for mode in modes}
  for _ in range(steps):
    for mode in modes:
      start, start_cpu = time.perf_counter(), time.process_time()
      states[mode], sums = compiled[mode](states[mode], batch)
      jax.block_until_ready(sums)
      wall[mode].append(time.perf_counter() - start)
      cpu[mode].append(time.process_time() - start_cpu)
  median = lambda t: sorted(t)[len(t) // 2]
  return [{'config': config_path, 'mode': mode, 'batch_size': batch_size,
           'step_seconds': median(wall[mode]), 'step_cpu_seconds': median(cpu[mode]),
           'first_step_seconds': first_step[mode],
           'load_average': os.getloadavg()}
          for mode in modes]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='')
  parser.add_argument('--reps', type=int, default=5, help='timed runs per shape')
  parser.add_argument('--shapes', default='', help='comma-separated indices into SHAPES; all')
  parser.add_argument('--train_configs', default=','.join(TRAIN_CONFIGS),
                      help="comma-separated; '' skips the train steps")
  parser.add_argument('--batch_size', type=int, default=64, help='train-step batch')
  parser.add_argument('--steps', type=int, default=5, help='timed train steps per mode')
  parser.add_argument('--xla_in_loop', action='store_true',
                      help="also XLA's own gradients in a loop (slow: minutes per shape)")
  args = parser.parse_args()
  json_out.check(args.out)

  result = {'load_average_start': os.getloadavg(), 'shapes': [], 'train_steps': []}
  chosen = [SHAPES[int(i)] for i in args.shapes.split(',')] if args.shapes else SHAPES
  columns = ('forward', 'xla_grads', 'cpu_grads', 'matmul_weight_grad', 'xla_grads_in_loop',
             'cpu_grads_in_loop', 'matmul_weight_grad_in_loop')
  print(f"{'shape':24} {'batch':>5} " + ' '.join(f'{c[:17]:>17}' for c in columns) +
        f"  (GFLOP/s, wall; load {os.getloadavg()[0]:.1f})")
  for shape in chosen:
    row = measure_shape(*shape, reps=args.reps, xla_in_loop=args.xla_in_loop)
    result['shapes'].append(row)
    print(f"{row['name']:24} {row['batch']:5d} " + ' '.join(
        f"{row[c + '_gflops']:17.1f}" if c + '_gflops' in row else f"{'-':>17}"
        for c in columns), flush=True)

  for config_path in [c for c in args.train_configs.split(',') if c]:
    plain, custom = measure_train_steps(config_path, args.batch_size, args.steps)
    result['train_steps'].extend([plain, custom])
    print(f"{config_path} train step, batch {args.batch_size}: plain "
          f"{1000 * plain['step_seconds']:.0f} ms ({1000 * plain['step_cpu_seconds']:.0f} ms "
          f"CPU), custom {1000 * custom['step_seconds']:.0f} ms "
          f"({1000 * custom['step_cpu_seconds']:.0f} ms CPU): "
          f"{plain['step_seconds'] / custom['step_seconds']:.2f}x wall, "
          f"{plain['step_cpu_seconds'] / custom['step_cpu_seconds']:.2f}x CPU "
          f"(load {custom['load_average'][0]:.1f})", flush=True)
  result['load_average_end'] = os.getloadavg()
  json_out.write(args.out, result)


if __name__ == '__main__':
  main()
