"""Timing for this folder's micro-benchmarks: several jitted functions on the same arguments."""

import time


def median_seconds(fns: dict, args, reps: int) -> tuple[dict, dict]:
  """Median wall and CPU (this process, all threads) seconds of each fn over `reps` calls,
  after one warm-up call each; the calls interleaved, so load changes hit every fn alike."""
  import jax  # pylint: disable=g-import-not-at-top
  for fn in fns.values():
    jax.block_until_ready(fn(*args))
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


def micro_benchmark_args(doc: str, default_reps: int):
  """A micro-benchmark's --reps and --out (checked), with cifar_jax importable and its XLA:CPU
  flags set, as a train run has them: call before the first jax computation."""
  import argparse  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  import json_out  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  parser.add_argument('--reps', type=int, default=default_reps)
  parser.add_argument('--out', default='', help='where the JSON goes (local or gs://)')
  args = parser.parse_args()
  json_out.check(args.out)
  json_out.use_cifar_jax_xla_flags()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return args
