"""Train-step throughput of a config over 1, 2, 4, 8 devices (forced host devices on a CPU).

    python benchmarks/scaling.py --config=configs/exp0.py --devices=1,2,4,8 --out=scaling.json

On a CPU the forced devices share the same cores, so this measures the overhead of the data-
parallel program (partitioning, all-reduces), not a speed-up. On an accelerator host, run it with
--devices=N for the real device counts. Each count runs in its own process (XLA_FLAGS must be set
before JAX starts). The batch is the config's global batch whatever the device count.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(config_path: str, steps: int, batch_size: int) -> dict:
  """Runs in the child process: images/s of the jitted, on-device-data train step."""
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import create_train_state_from_config, setup, sharding  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top

  config = load_config(config_path)
  batch_size = batch_size or config.train.batch_size
  rng = np.random.default_rng(0)
  n = batch_size * 4
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (n,), dtype=np.int32)
  mesh = sharding.make_mesh()
  data_sharding = sharding.batch_split(mesh) if mesh.size > 1 else None
  config.train.batch_size = batch_size
  state, _ = create_train_state_from_config(config, setup.array_splits(images, labels))
  state = sharding.replicate(state, mesh)
  data = sharding.replicate((images, labels), mesh)
  order = steps_lib.epoch_order(state, n, 4)

  def run_steps(state, num_steps):  # As run_epoch dispatches them.
    state, sums, _ = steps_lib.train_steps_on_device(
        state, *data, order, steps_lib.zero_sums(state.step), num_steps, batch_size=batch_size,
        full_batch_size=batch_size, steps_per_epoch=4, data_sharding=data_sharding)
    return state, sums

  start = time.perf_counter()
  state, sums = run_steps(state, 1)
  jax.block_until_ready(sums)
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  state, sums = run_steps(state, steps)
  jax.block_until_ready(sums)
  seconds = (time.perf_counter() - start) / steps
  return {'devices': jax.device_count(), 'platform': jax.devices()[0].platform,
          'batch_size': batch_size, 'step_seconds': seconds, 'images_per_second': batch_size / seconds,
          'first_step_seconds': compile_seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/exp0.py')
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--batch_size', type=int, default=0, help='0: the config\'s')
  parser.add_argument('--out', default='')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.config, args.steps, args.batch_size)))
    return
  json_out.check(args.out)
  rows = []
  for count in [int(d) for d in args.devices.split(',')]:
    env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={count}'}
    out = subprocess.run([sys.executable, __file__, '--child', f'--config={args.config}',
                          f'--steps={args.steps}', f'--batch_size={args.batch_size}'],
                         env=env, capture_output=True, text=True, check=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
    row = rows[-1]
    print(f"{row['devices']} x {row['platform']}: {row['images_per_second']:8.1f} img/s "
          f"({1000 * row['step_seconds']:.0f} ms/step, first step {row['first_step_seconds']:.1f} s)",
          flush=True)
  json_out.write(args.out, {'config': args.config, 'rows': rows})


if __name__ == '__main__':
  main()
