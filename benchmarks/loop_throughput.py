"""Train-step throughput of the real loop's programs: host dispatch time against device time.

    python benchmarks/loop_throughput.py --configs=configs/exp0.py,configs/redes/m1.py \
        --steps=20 --repeats=3 --out=throughput.json

For each config (on random uint8 images of its batch size, the split on the device as a run
has it) it times `programs.Single.train` both ways a run can dispatch (config
train.device_loop): one program per step (`per_step`) and each chunk as one on-device loop
(`device_loop`). Per chunk of --steps steps it records the host's time to hand the chunk over
(the dispatch calls returning) and the time until the results are ready; the host's share is
their ratio. The variants take turns, --repeats rounds after a compiling one, so that a change
in the machine's load hits them alike; medians are reported, and the load average with them
(on a shared machine the numbers are "loaded" ones). FLOPs per step come from XLA's cost
analysis of the step, which gives images/s an achieved TFLOP/s beside it. --epoch_steps also
times `loop.run_epoch` (the sizer, the progress arithmetic, the last batch) over that many steps
of an epoch, the second pass (the first compiles), scaled to the config's real epoch, and
--eval_examples one evaluation (validation/test: one program each). benchmarks/gpu_check.sh
runs it on a GPU.
"""

import argparse
import json
import os
import statistics
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
# pylint: disable-next=g-import-not-at-top
from cifar_jax.train import dispatch, loop, programs, setup, steps

MODES = {'per_step': False, 'device_loop': True}


def step_flops(state, images, labels) -> float | None:
  """FLOPs of one train step by XLA's cost analysis (None where the backend gives none)."""
  batch = {'image': images, 'label': labels}
  lowered = jax.jit(steps.train_step).lower(state, batch)
  try:  # The HLO's own count, without compiling; else the compiled program's.
    cost = lowered.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (a backend without cost analysis)
    cost = None
  if not cost:
    try:
      cost = lowered.compile().cost_analysis()
    except Exception:  # pylint: disable=broad-except
      return None
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) if cost and 'flops' in cost else None


class Bench:
  """One config's state, data and programs."""

  def __init__(self, path: str, num_examples: int, dtype: str | None, precision: str | None):
    config = load_config(path)
    config.log.verbosity = 0
    if dtype:
      config.model.dtype = dtype
    if precision:
      config.model.matmul_precision = precision
    batch = config.train.batch_size
    num_examples = max(num_examples, batch + 1)  # At least one full batch and a last one.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_examples, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, num_examples).astype(np.int32)
    self.config = config
    self.setup = setup.RunSetup.create(config, setup.array_splits(images, labels))
    self.plan = self.setup.plan
    self.images, self.labels = jax.device_put((images, labels))
    self.state = jax.device_put(self.setup.train_state())
    self.programs = {name: programs.Single(device_loop=on) for name, on in MODES.items()}
    self.flops = step_flops(self.state, self.images[:batch], self.labels[:batch])

  def chunk(self, name: str, num_steps: int):
    """(host seconds to dispatch, seconds until ready) of `num_steps` full-batch steps."""
    program = self.programs[name]
    data = program.epoch_data(self.state, self.images, self.labels, self.plan, [0])
    sums = steps.zero_sums(self.state.step)
    state = jax.tree.map(lambda x: x.copy(), self.state)  # The programs donate theirs.
    jax.block_until_ready((state, sums))
    start = time.perf_counter()
    out = program.train(state, data, sums, num_steps, self.plan.batch_size)
    dispatched = time.perf_counter()
    jax.block_until_ready(out)
    return dispatched - start, time.perf_counter() - start

  def evaluation(self, num_examples: int) -> float:
    """Seconds of one evaluation (one program) of `num_examples` of the split, after a
    compiling one."""
    split = pipeline.Split(np.asarray(self.images[:num_examples]),
                           np.asarray(self.labels[:num_examples]))
    batches = pipeline.make_eval_batches(split, self.config.train.eval_batch_size)
    program = self.programs['per_step']
    program.evaluate(self.state, batches)
    start = time.perf_counter()
    program.evaluate(self.state, batches)  # Returns host floats: waits for the device.
    return time.perf_counter() - start

  def epoch(self, name: str, num_steps: int) -> float:
    """Seconds of `loop.run_epoch` over the first `num_steps` steps of an epoch."""
    program = self.programs[name]
    state = jax.tree.map(lambda x: x.copy(), self.state)
    data = program.epoch_data(state, self.images, self.labels, self.plan, [0])
    start = time.perf_counter()
    result = loop.run_epoch(program, state, data, until=num_steps,
                            sizer=dispatch.DispatchSizer())
    jax.block_until_ready(result.state)
    return time.perf_counter() - start


def real_steps_per_epoch(config) -> int:
  """Steps of an epoch of the config's real training split (CIFAR-10's 50,000 images less its
  validation split)."""
  data = config.data
  validation = data.num_validation or int(round(50000 * data.get('validation_split', 0.0)))
  return setup.EpochPlan.create(50000 - validation, config.train.batch_size,
                                config.train.steps_per_epoch).steps_per_epoch


def measure(bench: Bench, num_steps: int, repeats: int, epoch_steps: int) -> dict:
  for name in MODES:  # Compile both, and warm the caches.
    bench.chunk(name, 1)
    bench.chunk(name, min(num_steps, 2))
  rounds = {name: [] for name in MODES}
  for _ in range(repeats):
    for name in MODES:
      rounds[name].append(bench.chunk(name, num_steps))
  batch = bench.plan.batch_size
  out = {'config': bench.config.name, 'batch_size': batch, 'steps': num_steps,
         'repeats': repeats, 'flops_per_step': bench.flops,
         'dtype': bench.config.model.dtype,
         'matmul_precision': bench.config.model.matmul_precision}
  for name, times in rounds.items():
    host = statistics.median(t[0] for t in times) / num_steps
    total = statistics.median(t[1] for t in times) / num_steps
    out[name] = {
        'host_dispatch_ms_per_step': 1e3 * host, 'ms_per_step': 1e3 * total,
        'host_share': host / total, 'images_per_s': batch / total,
        'tflops': bench.flops / total / 1e12 if bench.flops else None,
        'ms_per_step_rounds': [1e3 * t[1] / num_steps for t in times]}
  out['per_step_over_device_loop'] = (out['per_step']['ms_per_step'] /
                                      out['device_loop']['ms_per_step'])
  if epoch_steps:
    epoch_steps = min(epoch_steps, bench.plan.steps_per_epoch)
    for name in MODES:
      bench.epoch(name, epoch_steps)  # Compiles the sizer's chunk lengths' programs.
    epochs = {name: [] for name in MODES}
    for _ in range(repeats):
      for name in MODES:
        epochs[name].append(bench.epoch(name, epoch_steps))
    real = real_steps_per_epoch(bench.config)
    for name in MODES:
      out[name]['epoch_steps_timed'] = epoch_steps
      # Scaled to the config's real split (the timed stretch is a cap for slow machines).
      out[name]['epoch_seconds'] = statistics.median(epochs[name]) / epoch_steps * real
    out['steps_per_epoch'] = real
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', default='configs/exp0.py,configs/redes/m1.py')
  parser.add_argument('--steps', type=int, default=20, help='steps per timed chunk')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--num_examples', type=int, default=0,
                      help='random training examples (0: 10 batches)')
  parser.add_argument('--epoch_steps', type=int, default=0,
                      help='also time run_epoch over this many steps (0: no)')
  parser.add_argument('--eval_examples', type=int, default=0,
                      help='also time one evaluation of this many examples (0: no)')
  parser.add_argument('--dtype', default=None, help='model.dtype override (e.g. bfloat16)')
  parser.add_argument('--precision', default=None, help='model.matmul_precision override')
  parser.add_argument('--out', default=None, help='JSON file to write')
  args = parser.parse_args()
  json_out.check(args.out)
  if args.steps < 1 or args.repeats < 1:
    print('--steps and --repeats must be >= 1', file=sys.stderr)
    sys.exit(2)
  start = time.perf_counter()
  device = jax.devices()[0]
  results = {'device': f'{device.platform} x{jax.device_count()} ({device.device_kind})',
             'jax_version': jax.__version__, 'load_before': os.getloadavg(), 'configs': []}
  for path in args.configs.split(','):
    config = load_config(path)
    num_examples = args.num_examples or 10 * config.train.batch_size
    bench = Bench(path, num_examples, args.dtype, args.precision)
    row = measure(bench, args.steps, args.repeats, args.epoch_steps)
    if args.eval_examples:
      row['eval_examples'] = min(args.eval_examples, num_examples)
      row['eval_seconds'] = bench.evaluation(row['eval_examples'])
    row['config_path'] = path
    results['configs'].append(row)
    print(json.dumps({k: row[k] for k in ('config', 'per_step_over_device_loop')}
                     | {m: {k: v for k, v in row[m].items() if k != 'ms_per_step_rounds'}
                        for m in MODES}), flush=True)
    del bench
    results['load_after'] = os.getloadavg()
    results['seconds'] = time.perf_counter() - start
    # After each config: a run stopped by a time limit keeps what it measured.
    json_out.write(args.out, results)


if __name__ == '__main__':
  main()
