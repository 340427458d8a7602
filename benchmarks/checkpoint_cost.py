"""What a latest-checkpoint save takes off training: its blocking part against a train step.

    python benchmarks/checkpoint_cost.py --data_dir=../shared/data/cifar10-jpeg \
        --out=benchmarks/results/checkpoint_cost_cpu.json

A real `loop.Run` of --config (default exp11: 185 MB of params, BatchNorm statistics and Adam
moments) on the real data trains --warmup steps (the first compiles) and saves once (compiling
the finite check), then --rounds times: one train step, `Run._save_latest` as the loop calls it
(the finite check, the host state, orbax's asynchronous save: blocking until the arrays are
copied off the device), one train step while orbax's thread writes the checkpoint, and the
wait for the rest of that write. Reported, medians over the rounds: the
blocking seconds of a save and of its finite check, the write in the background, a train step
alone and during the write (a CPU's write competes with the step for its cores), and from
them a save's share of an epoch at this machine's epoch time (steps per epoch x step), and what
the default cadence (config checkpoint.every_minutes, at most one save per that many minutes
at epoch ends) makes of it. On a shared machine the numbers are loaded ones: the JSON says so,
with the load average.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top

from cifar_jax import host_cpu  # pylint: disable=g-import-not-at-top
from cifar_jax.train import dispatch, loop, sharding  # pylint: disable=g-import-not-at-top



def state_bytes(state) -> int:
  return sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, 'nbytes'))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/exp11.py')
  parser.add_argument('--data_dir', default=os.environ.get('CIFAR10_DIR', ''))
  parser.add_argument('--warmup', type=int, default=2, help='train steps before measuring')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  if args.out:
    json_out.check(args.out)
  config = load_config(args.config)
  config.log.verbosity = 0
  if args.data_dir:
    config.data.dir = args.data_dir
  workdir = tempfile.mkdtemp(prefix='checkpoint_cost_')
  started = time.perf_counter()
  run = loop.Run(config, workdir)
  try:
    train_data = sharding.replicate((run.splits.train.images, run.splits.train.labels), run.mesh)
    data = run.program.epoch_data(run.state, *train_data, run.plan, [0])
    sums = None

    def train(num_steps: int) -> float:
      """Seconds per step of `num_steps` steps (one chunk), waited for."""
      nonlocal sums
      step = max(run.program.steps(run.state))
      start = time.perf_counter()
      result = loop.run_epoch(run.program, run.state, data, sums=sums, until=step + num_steps,
                              sizer=dispatch.DispatchSizer(num_steps))
      jax.block_until_ready(result.state)
      run.state, sums = result.state, result.sums
      return (time.perf_counter() - start) / num_steps

    train(args.warmup)  # Compiles.
    run._save_latest(partial_sums=sums)  # pylint: disable=protected-access  (compiles its check)
    run.checkpointer.latest.wait_until_finished()
    rounds = []
    for _ in range(args.rounds):
      alone = train(1)
      start = time.perf_counter()
      run.checkpointer._check_finite(0, run.state, None, run.snapshots)  # pylint: disable=protected-access
      check = time.perf_counter() - start
      start = time.perf_counter()
      run._save_latest(partial_sums=sums)  # pylint: disable=protected-access
      blocking = time.perf_counter() - start
      during = train(1)  # While orbax's thread writes.
      start = time.perf_counter()
      run.checkpointer.latest.wait_until_finished()
      rest_of_write = time.perf_counter() - start
      rounds.append({'step_alone_s': alone, 'finite_check_s': check, 'save_blocking_s': blocking,
                     'step_during_write_s': during,
                     'write_after_step_s': rest_of_write})
      print({k: round(v, 3) for k, v in rounds[-1].items()}, flush=True)
  finally:
    run.close()
    shutil.rmtree(workdir, ignore_errors=True)

  median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
  steps_per_epoch = run.plan.steps_per_epoch
  epoch_s = median['step_alone_s'] * steps_per_epoch
  # The write overlaps training; what it adds is the step's slowdown while it runs.
  slowdown = max(0.0, median['step_during_write_s'] - median['step_alone_s'])
  every_minutes = config.checkpoint.every_minutes
  every_epochs = config.checkpoint.every_epochs
  saves_per_epoch = max(1.0 / every_epochs if every_epochs else 0.0,
                        min(1.0, epoch_s / (60 * every_minutes)) if every_minutes else 0.0)
  result = {
      'config': args.config,
      'state_mb': round(state_bytes(run.state) / 1e6, 1),
      'device': f'{jax.devices()[0].platform} x{jax.device_count()}',
      'cpu': host_cpu.describe(),
      'load_average_at_end': os.getloadavg(),
      'machine_note': ('2-core VM shared with other jobs (other test runs and a nice\'d '
                       'training run): times are loaded ones'),
      'rounds': rounds,
      'median': median,
      'steps_per_epoch': steps_per_epoch,
      'epoch_s_estimate': epoch_s,
      'save_blocking_share_of_epoch': median['save_blocking_s'] / epoch_s,
      'write_slowdown_share_of_epoch': slowdown / epoch_s,
      'default_cadence': {
          'every_epochs': every_epochs, 'every_minutes': every_minutes,
          'saves_per_epoch_here': saves_per_epoch,
          'share_of_training_here': saves_per_epoch * (median['save_blocking_s'] + slowdown)
                                    / epoch_s,
          # A fast device's epochs are shorter than the cadence: one save per every_minutes.
          'share_of_training_if_epochs_shorter_than_cadence':
              (median['save_blocking_s'] + slowdown) / (60 * every_minutes)
              if every_minutes else None,
      },
      'seconds': round(time.perf_counter() - started, 1),
      'command': 'python benchmarks/checkpoint_cost.py ' + ' '.join(argv or sys.argv[1:]),
  }
  if args.out:
    json_out.write(args.out, result)
  print({k: v for k, v in result.items() if k != 'rounds'}, flush=True)
  return result


if __name__ == '__main__':
  main()
