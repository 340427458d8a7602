"""BatchNorm's forward + backward in training mode: flax's nn.BatchNorm (what the models run)
against the same statistics written as a custom_vjp, on exp11's four BatchNorm shapes.

    python benchmarks/batch_norm.py --out=/tmp/bn_ynn.json
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/batch_norm.py  # no YNNPACK

Both forms compute Keras's statistics (mean, then the mean of the squared deviations) and
differ only in how XLA sees them: flax's is autodiff through jnp.mean, the custom_vjp has the
textbook backward (two sums over batch x height x width, then one elementwise pass). Each is
jitted as the gradient of <relu(bn(relu(x))), g>, the way a Conv-ReLU-BN-ReLU block uses it; the
median wall seconds of --reps interleaved rounds. The largest difference of the custom_vjp's
input gradient from flax's, relative to flax's largest, says they compute the same thing.
XLA_FLAGS decides which emitter runs the sums: cifar_jax's default hands them to YNNPACK
(cifar_jax/xla_cpu.py); the second command above gives XLA's own reduce-windows.
"""

import os

import json_out  # This folder's --out writer (local or gs://).
import timing

SHAPES = {  # exp11's BatchNorm inputs at its batch of 512 (blocks 64, 128, 256, 512).
    'exp11 block1 (512, 32, 32, 64)': (512, 32, 32, 64),
    'exp11 block2 (512, 16, 16, 128)': (512, 16, 16, 128),
    'exp11 block3 (512, 8, 8, 256)': (512, 8, 8, 256),
    'exp11 block4 (512, 4, 4, 512)': (512, 4, 4, 512),
}
EPSILON = 1e-3  # Keras's.


def main():
  args = timing.micro_benchmark_args(__doc__, default_reps=10)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  def flax_bn(x, scale, bias):
    variables = {'params': {'scale': scale, 'bias': bias},
                 'batch_stats': {'mean': jnp.zeros_like(scale), 'var': jnp.ones_like(scale)}}
    module = nn.BatchNorm(use_running_average=False, epsilon=EPSILON, use_fast_variance=False)
    return module.apply(variables, x, mutable=['batch_stats'])[0]

  def channel_sums(a):
    return jnp.sum(a.reshape(-1, a.shape[-1]), axis=0)

  def statistics(x, scale, bias):
    n = x.size // x.shape[-1]
    centred = x - channel_sums(x) / n
    inverse = jax.lax.rsqrt(channel_sums(centred * centred) / n + EPSILON)
    normalised = centred * inverse
    return normalised * scale + bias, (normalised, inverse, scale)

  def statistics_backward(saved, dy):
    normalised, inverse, scale = saved
    n = normalised.size // normalised.shape[-1]
    dbias, dscale = channel_sums(dy), channel_sums(dy * normalised)
    return (scale * inverse) * (dy - (dbias + normalised * dscale) / n), dscale, dbias

  custom_vjp_bn = jax.custom_vjp(lambda x, scale, bias: statistics(x, scale, bias)[0])
  custom_vjp_bn.defvjp(statistics, statistics_backward)

  rows = []
  rng = np.random.default_rng(0)
  for name, shape in SHAPES.items():
    x = jnp.asarray(rng.standard_normal(shape, np.float32) * 2 + 1)
    g = jnp.asarray(rng.standard_normal(shape, np.float32))
    scale = jnp.asarray(rng.standard_normal(shape[-1:], np.float32))
    bias = jnp.zeros(shape[-1:], jnp.float32)
    steps = {}
    for form, bn in {'flax': flax_bn, 'custom_vjp': custom_vjp_bn}.items():
      def block(x, scale, bias, bn=bn):
        return jnp.vdot(jax.nn.relu(bn(jax.nn.relu(x), scale, bias)), g)
      steps[form] = jax.jit(jax.grad(block, argnums=(0, 1, 2)))
    seconds, _ = timing.median_seconds(steps, (x, scale, bias), args.reps)
    reference, other = (np.asarray(steps[form](x, scale, bias)[0]) for form in steps)
    error = np.max(np.abs(other - reference))
    row = {'shape': name, 'input': list(shape), **{f'{f}_ms': 1000 * s for f, s in seconds.items()},
           'custom_vjp_input_grad_relative_error': float(error / np.max(np.abs(reference)))}
    rows.append(row)
    print(f"{name:34} flax {row['flax_ms']:7.1f} ms  custom_vjp {row['custom_vjp_ms']:7.1f} ms  "
          f"(input gradient within {row['custom_vjp_input_grad_relative_error']:.1e})", flush=True)
  json_out.write(args.out, {'cpu': json_out.cpu(), 'jax': jax.__version__, 'reps': args.reps,
                            'xla_flags': os.environ.get('XLA_FLAGS', ''),
                            'load_average_end': os.getloadavg(), 'rows': rows})


if __name__ == '__main__':
  main()
