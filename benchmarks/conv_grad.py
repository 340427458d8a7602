"""Convolution gradients on CPU: XLA's against cifar_jax.models.conv's, alone and in a loop.

    python benchmarks/conv_grad.py --out=/tmp/conv_grad.json

Per layer shape of the configs (exp11's VGG-like 3x3 convs, redes/m1's 6x6 convs, DenseNet121's
stem, 1x1 and 3x3 convs): GFLOP/s (median wall time of --reps interleaved runs after a warm-up)
of the forward convolution (for scale), of XLA's input + weight gradients, of conv's CPU
gradients (`_cpu_grads` in the default 'auto' mode: explicit-layout convolutions, a matmul
weight gradient for 1x1 kernels) and of the matmul-per-tap weight gradient; then the same
gradients inside a 2-step `lax.fori_loop`, where XLA:CPU leaves its own gradient convolutions
in a slow layout (XLA's in a loop only with --xla_in_loop: minutes per shape).

Then the train step of configs/exp11.py and configs/exp0.py traced with model.conv_grad=xla
(plain convolutions) and =auto (the default), or the --modes given (e.g. auto,tuned: 'tuned'
measures each weight-gradient shape at trace time, or reads conv_tuning's cache), all compiled
in one process and run interleaved; with 'tuned', the choices per shape, their measured times
and 'auto''s choice. Other processes on the machine skew wall times (CPU time less so): the
load average is recorded.
"""

import argparse
import functools
import os
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
import timing
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
  seconds, cpu_seconds = timing.median_seconds(compiled, (x, w, dy), reps)
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


def _steps_in_loop(num_steps: int, sums_shape, state, batch):
  """num_steps train steps on `batch` in a fori_loop: (last state, last step's sums)."""
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top
  sums = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), sums_shape)
  return jax.lax.fori_loop(0, num_steps, lambda _, c: steps_lib.train_step(c[0], batch),
                           (state, sums))


def measure_train_steps(config_path: str, batch_size: int, steps: int,
                        modes=('xla', 'auto'), in_loop: int = 0) -> list[dict]:
  """Median seconds of the jitted train step on one fixed batch, per conv mode (with in_loop,
  per step of a program running that many steps in a `lax.fori_loop`, as training on CPU does).

  Each mode's step is traced with model.conv_grad set to it; the compiled steps then run
  interleaved.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import setup  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top

  config = load_config(config_path)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (batch_size, *config.model.input_shape), dtype=np.uint8)
  labels = rng.integers(0, 10, (batch_size,), dtype=np.int32)
  config.train.batch_size = batch_size
  config.train.steps_per_epoch = 0  # One batch is the whole training split here.
  batch = jax.device_put({'image': images, 'label': labels})

  states, compiled, first_step = {}, {}, {}
  for mode in modes:
    config.model.conv_grad = mode  # A static field of the state: each mode traces its own step.
    splits = setup.array_splits(images, labels)
    states[mode], _ = setup.create_train_state_from_config(config, splits)
    start = time.perf_counter()
    step = steps_lib.train_step
    if in_loop:
      sums_shape = jax.eval_shape(steps_lib.train_step, states[mode], batch)[1]
      step = functools.partial(_steps_in_loop, in_loop, sums_shape)
    compiled[mode] = jax.jit(step, donate_argnums=0).lower(states[mode], batch).compile()
    states[mode], sums = compiled[mode](states[mode], batch)  # Warmup.
    jax.block_until_ready(sums)
    first_step[mode] = time.perf_counter() - start
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
  per = max(1, in_loop)
  return [{'config': config_path, 'mode': mode, 'batch_size': batch_size, 'in_loop': in_loop,
           'step_seconds': median(wall[mode]) / per, 'step_cpu_seconds': median(cpu[mode]) / per,
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
  parser.add_argument('--modes', default='xla,auto',
                      help='model.conv_grad values of the train steps (times: x the first)')
  parser.add_argument('--steps_in_loop', type=int, default=0,
                      help='time train steps as a fori_loop of this many (0: one jitted step)')
  parser.add_argument('--xla_in_loop', action='store_true',
                      help="also XLA's own gradients in a loop (slow: minutes per shape)")
  args = parser.parse_args()
  json_out.check(args.out)
  xla_flags = json_out.use_cifar_jax_xla_flags()  # Training's flags, before jax's first use.

  result = {'load_average_start': os.getloadavg(), 'xla_flags': xla_flags, 'shapes': [],
            'train_steps': []}
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

  modes = tuple(args.modes.split(','))
  for config_path in [c for c in args.train_configs.split(',') if c]:
    rows = measure_train_steps(config_path, args.batch_size, args.steps, modes,
                               args.steps_in_loop)
    result['train_steps'].extend(rows)
    base = rows[0]
    print(f"{config_path} train step, batch {args.batch_size}: " + ', '.join(
        f"{r['mode']} {1000 * r['step_seconds']:.0f} ms ({1000 * r['step_cpu_seconds']:.0f} ms "
        f"CPU, {base['step_seconds'] / r['step_seconds']:.2f}x wall, "
        f"{base['step_cpu_seconds'] / r['step_cpu_seconds']:.2f}x CPU of {base['mode']}; "
        f"first step {r['first_step_seconds']:.1f} s)" for r in rows) +
          f" (load {rows[-1]['load_average'][0]:.1f})", flush=True)
  if 'tuned' in modes:
    from cifar_jax.models import conv_tuning  # pylint: disable=g-import-not-at-top
    result['tuned'] = {'machine': conv_tuning.machine_key(), 'measured': conv_tuning.measured,
                       'choices': conv_tuning.entries()}
    for key, entry in conv_tuning.entries().items():
      auto = 'matmul' if 'kernel (1, 1)' in key else 'conv'  # 'auto''s rule, for 2D kernels.
      times = ', '.join(f'{k} {1e3 * v:.2f} ms' for k, v in entry.get('seconds', {}).items())
      print(f"tuned {entry['form']:6} (auto {auto}{', DIFFERS' if auto != entry['form'] else ''})"
            f" {key}: {times or 'from cache'}")
  result['load_average_end'] = os.getloadavg()
  json_out.write(args.out, result)


if __name__ == '__main__':
  main()
