"""Many seeds at once: train-step time of N vmapped replicas (config.num_seeds) against one.

    python benchmarks/seeds.py --config=configs/exp0.py --seeds=4 --steps=20 --out=seeds.json

Times the device loop a run dispatches (`steps.train_steps_on_device` for one seed,
`seeds.train_steps_on_device` for N, one compiled program each) on random uint8 data of the
config's batch size, with the data order shared by the replicas (the default) and, with
--own_order, a per-replica order too. `--unrolled` also times the N replicas as N unbatched
copies of the step in one program (no vmap), to tell what batching the convolutions costs or
saves on this backend (CIFAR_JAX_SEEDS=unrolled trains that way). Each timing is the median of
--repeats dispatches of --steps steps after a compiling one, the variants taking turns. The
machine's load average is printed and saved: on a shared machine the numbers are "loaded" ones.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cifar_jax.train import seeds, setup, steps  # pylint: disable=g-import-not-at-top


def uptime() -> str:
  try:
    return subprocess.run(['uptime'], capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'load average: %.2f, %.2f, %.2f' % os.getloadavg()


def time_variants(variants, num_steps: int, repeats: int) -> dict:
  """Compiles every variant (one dispatch of 1 step), then times them in interleaved rounds, so
  that a change in the machine's load hits them alike: {name: (first seconds, [s/step, ...])}."""
  timings = {}
  for name, run in variants.items():
    start = time.perf_counter()
    jax.block_until_ready(run(1))
    timings[name] = (time.perf_counter() - start, [])
  for _ in range(repeats):
    for name, run in variants.items():
      start = time.perf_counter()
      jax.block_until_ready(run(num_steps))
      timings[name][1].append((time.perf_counter() - start) / num_steps)
  return timings


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/exp0.py')
  parser.add_argument('--seeds', type=int, default=4)
  parser.add_argument('--steps', type=int, default=20, help='train steps per timed dispatch')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--batch_size', type=int, default=0, help="0: the config's")
  parser.add_argument('--own_order', action='store_true', help='also time per-replica orders')
  parser.add_argument('--unrolled', action='store_true', help='also time N unbatched copies')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  json_out.check(args.out)

  config = load_config(args.config)
  batch_size = args.batch_size or config.train.batch_size
  steps_per_epoch = 8
  n = batch_size * steps_per_epoch
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 10, (n,), dtype=np.int32))
  config.train.batch_size = batch_size
  # The run's own recipe (seeds config.seed + i, as --config.num_seeds builds them).
  run_setup = setup.RunSetup.create(config, setup.array_splits(images, labels))
  states = run_setup.train_states(configs=[seeds.seed_config(config, i)
                                           for i in range(args.seeds)])
  stacked = seeds.stack(states)
  single = states[0]
  statics = dict(batch_size=batch_size, full_batch_size=batch_size,
                 steps_per_epoch=steps_per_epoch)
  order = steps.epoch_order(single, n, steps_per_epoch)
  before = uptime()
  print(f'{args.config}: batch {batch_size}, {args.steps} steps per dispatch, '
        f'{jax.devices()[0].platform}\n{before}', flush=True)
  rows = {}
  holder = {'1 seed': single}
  variants, replicas = {}, {}

  def single_run(num_steps):
    holder['1 seed'], sums, _ = steps.train_steps_on_device(
        holder['1 seed'], images, labels, order, steps.zero_sums(holder['1 seed'].step),
        jax.device_put(np.int32(num_steps)), **statics)
    return sums
  variants['1 seed'], replicas['1 seed'] = single_run, 1

  active = jax.device_put(np.ones(args.seeds, bool))
  setups = [(f'{args.seeds} seeds, vmap, shared order', order, True, True)]
  if args.own_order:
    own = seeds.epoch_orders(stacked, jnp.stack([jax.random.PRNGKey(s)
                                                 for s in range(args.seeds)]),
                             n, steps_per_epoch, False)
    setups.append((f'{args.seeds} seeds, vmap, own orders', own, False, True))
  if args.unrolled:  # CIFAR_JAX_SEEDS=unrolled (the default on CPU): no vmap.
    setups.append((f'{args.seeds} seeds, unrolled, shared', order, True, False))
  for name, seed_order, shared, vmap in setups:
    holder[name] = jax.tree.map(jnp.copy, stacked)

    def seeds_run(num_steps, name=name, seed_order=seed_order, shared=shared, vmap=vmap):
      holder[name], sums, _ = seeds.train_steps_on_device(
          holder[name], images, labels, seed_order, steps.zero_sums(holder[name].step),
          jax.device_put(np.int32(num_steps)), active, shared_order=shared, vmap=vmap,
          **statics)
      return sums
    variants[name], replicas[name] = seeds_run, args.seeds

  timings = time_variants(variants, args.steps, args.repeats)
  one = statistics.median(timings['1 seed'][1])
  for name, (first, times) in timings.items():
    per_step = statistics.median(times)
    ratio = per_step / one
    rows[name] = {'replicas': replicas[name], 'seconds_per_step': per_step,
                  'all_seconds_per_step': times, 'first_dispatch': first,
                  'ratio_to_one_seed': ratio}
    print(f'{name:32s} {1000 * per_step:8.1f} ms/step  {ratio:5.2f}x one seed  '
          f'({ratio / replicas[name]:.2f}x per replica; first dispatch {first:.1f} s)',
          flush=True)

  after = uptime()
  print(after, flush=True)
  json_out.write(args.out, {'config': args.config, 'batch_size': batch_size,
                           'steps': args.steps, 'seeds': args.seeds,
                           'device': jax.devices()[0].platform, 'uptime_before': before,
                           'uptime_after': after, 'rows': rows})


if __name__ == '__main__':
  main()
