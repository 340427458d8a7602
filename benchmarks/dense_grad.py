"""A Dense layer's weight gradient on CPU: XLA's x^T @ dy against cifar_jax.models.dense's
transposed form, per layer shape of the configs.

    python benchmarks/dense_grad.py --out=/tmp/dense_grad.json

Per (batch, in_features, out_features): median wall seconds of --reps interleaved runs, after a
warm-up, of each of `dense.FORMS`: 'xla' (what jax.grad of the forward computes) and
'transposed' (what the default mode takes when in >= NARROWING * out; timed here for every shape,
so the table shows where the threshold falls), with GFLOP/s; and the ratio.
"""

import functools
import os

import json_out  # This folder's --out writer (local or gs://).
import timing

SHAPES = (  # (name, batch, in, out)
    ('exp0 Flatten->32', 512, 8192, 32),
    ('exp1-7, a2 Flatten->256', 512, 2048, 256),
    ('4096->512', 512, 4096, 512),
    ('256->10', 512, 256, 10),
    ('exp11 Flatten->512 (batch 128)', 128, 2048, 512),
    ('airbench94 head 256->10 (batch 1024)', 1024, 256, 10),
    ('1152->256', 512, 1152, 256),
    ('p2cnn-like 4096->10 (batch 64)', 64, 4096, 10),
)


def main():
  args = timing.micro_benchmark_args(__doc__, default_reps=21)
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import dense  # pylint: disable=g-import-not-at-top

  highest = lax.Precision.HIGHEST
  forms = {name: jax.jit(functools.partial(form, highest)) for name, form in dense.FORMS.items()}
  rng = np.random.default_rng(0)
  rows = []
  for name, batch, n_in, n_out in SHAPES:
    x = jax.numpy.asarray(rng.normal(size=(batch, n_in)), jax.numpy.float32)
    dy = jax.numpy.asarray(rng.normal(size=(batch, n_out)), jax.numpy.float32)
    seconds, _ = timing.median_seconds(forms, (x, dy), args.reps)
    flop = 2 * batch * n_in * n_out
    row = {'shape': name, 'batch': batch, 'in': n_in, 'out': n_out}
    for form_name, value in seconds.items():
      row[f'{form_name}_ms'] = 1000 * value
      row[f'{form_name}_gflops'] = flop / value / 1e9
    row['speedup'] = row['xla_ms'] / row['transposed_ms']
    rows.append(row)
    print(f"{name:38} in/out {n_in / n_out:6.1f}  xla {row['xla_ms']:7.2f} ms "
          f"({row['xla_gflops']:5.0f} GFLOP/s)  transposed {row['transposed_ms']:7.2f} ms "
          f"({row['transposed_gflops']:5.0f})  x{row['speedup']:.2f}", flush=True)
  json_out.write(args.out, {'cpu': json_out.cpu(), 'jax': jax.__version__, 'reps': args.reps,
                            'load_average_end': os.getloadavg(), 'rows': rows})


if __name__ == '__main__':
  main()
