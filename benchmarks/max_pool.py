"""Max pooling's forward + backward: flax's (reduce_window / select-and-scatter) against
cifar_jax.models.pooling's, per layer shape of the configs.

    python benchmarks/max_pool.py --out=/tmp/max_pool.json

Each shape (NHWC, a 2x2 'valid' pool unless it says otherwise) is a ReLU'd random input pooled
and pulled back through the pool's vjp, jitted; median wall seconds of --reps interleaved rounds
after a warm-up. Whole train steps barely move with the pool (it is a few percent of them):
benchmarks/onednn/step_bench.py and exp11_vs_keras.py time those.
"""

import os

import json_out  # This folder's --out writer (local or gs://).
import timing

SHAPES = {  # name: (NHWC input, window)
    'exp0 conv1 (batch 512)': ((512, 32, 32, 32), 2),
    'redes/m1, p2cnn (batch 512, 64 channels at 16x16)': ((512, 16, 16, 64), 2),
    'exp11 block1 (batch 128)': ((128, 32, 32, 64), 2),
    'airbench94 block1 (batch 1024)': ((1024, 32, 32, 64), 2),
    'airbench94 last pool (batch 1024, 3x3 on 4x4)': ((1024, 4, 4, 256), 3),
}


def main():
  args = timing.micro_benchmark_args(__doc__, default_reps=15)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import pooling  # pylint: disable=g-import-not-at-top

  pools = {'flax': nn.max_pool, 'cifar_jax': pooling.max_pool}
  rows = []
  for name, (shape, k) in SHAPES.items():
    x = jax.numpy.asarray(np.random.default_rng(0).normal(size=shape), jax.numpy.float32)
    steps = {}
    for pool_name, pool in pools.items():
      def forward_backward(x, pool=pool):
        y, pull_back = jax.vjp(lambda x: pool(x, (k, k), (k, k), 'VALID'), jax.nn.relu(x))
        return pull_back(y)[0]
      steps[pool_name] = jax.jit(forward_backward)
    seconds, _ = timing.median_seconds(steps, (x,), args.reps)
    row = {'shape': name, 'input': list(shape), 'window': k,
           **{f'{p}_ms': 1000 * s for p, s in seconds.items()}}
    row['speedup'] = row['flax_ms'] / row['cifar_jax_ms']
    rows.append(row)
    print(f"{name:50} flax {row['flax_ms']:8.1f} ms  cifar_jax {row['cifar_jax_ms']:8.1f} ms  "
          f"x{row['speedup']:.2f}", flush=True)
  json_out.write(args.out, {'cpu': json_out.cpu(), 'jax': jax.__version__, 'reps': args.reps,
                            'load_average_end': os.getloadavg(), 'rows': rows})


if __name__ == '__main__':
  main()
