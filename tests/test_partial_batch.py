"""Any device count: an epoch's last batch that does not divide over the devices trains as on
one device (it is computed whole on every device, so BatchNorm statistics and Keras's per-batch
mean see exactly its real examples)."""

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_scaling import assert_close_runs, finish, launch, with_env

SIXTEEN = {'XLA_FLAGS': '--xla_force_host_platform_device_count=16'}
EIGHT = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}

# For each (config module, mode) pair of argv[2:] (p2cnn/exp1: batch 64, its real epoch of
# 45,000 images ending on a batch of 8; the tiny net: BatchNorm and dropout), a batch + 8 random
# images, trained from the epoch's last step only (a full batch split over 16 devices would
# differ by the rounding of its sums); one process for all pairs, so it imports once. Writes
# the params, the step's metric sums and the number of devices to argv[1]/<i>.npz.
LAST_STEP = '''
import sys
import jax, jax.numpy as jnp, numpy as np
import importlib
from cifar_jax.train import loop, programs, setup, sharding
for i, (module, mode) in enumerate(zip(sys.argv[2::2], sys.argv[3::2])):
  config = importlib.import_module(module).get_config()
  config.train.device_loop = mode == 'loop'
  n = config.train.batch_size + 8
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
  labels = rng.integers(0, 10, n).astype(np.int32)
  run_setup = setup.RunSetup.create(config, setup.array_splits(images, labels))
  assert run_setup.plan.last_batch_size == 8
  mesh = sharding.make_mesh()
  program = programs.for_run(config, run_setup.input_pipeline, mesh)
  state = run_setup.train_state()
  state = sharding.replicate(state.replace(step=jnp.asarray(1, jnp.int32)), mesh)
  train = sharding.replicate((images, labels), mesh)
  data = program.epoch_data(state, *train, run_setup.plan, [0])
  result = loop.run_epoch(program, state, data)
  assert result.complete and int(result.sums['count']) == 8
  leaves = jax.tree.leaves(jax.device_get((result.state.params, result.sums)))
  np.savez(f'{sys.argv[1]}/{i}.npz', devices=mesh.size, *leaves)
'''

CASES = [('configs.p2cnn.exp1', 'per_step'), ('configs.p2cnn.exp1', 'loop'),
         ('tests.tiny_config', 'per_step')]


def last_steps(folder, env=None):
  """LAST_STEP of every case in one process: [(number of devices, arrays)] in CASES order."""
  folder.mkdir()
  process = subprocess.run(
      [sys.executable, '-c', LAST_STEP, str(folder), *[a for case in CASES for a in case]],
      cwd=REPO, capture_output=True, text=True, timeout=600, env=with_env(env))
  assert process.returncode == 0, process.stderr[-3000:]
  results = []
  for i in range(len(CASES)):
    with np.load(folder / f'{i}.npz') as saved:
      results.append((int(saved['devices']),
                      [saved[f'arr_{j}'] for j in range(len(saved.files) - 1)]))
  return results


@pytest.fixture(scope='module')
def one_and_sixteen(tmp_path_factory):
  """Every case's last step on one device and on 16: case -> (one, sixteen)."""
  folder = tmp_path_factory.mktemp('last_step')
  return dict(zip(CASES, zip(last_steps(folder / 'one'), last_steps(folder / 'sixteen', SIXTEEN))))


@pytest.mark.parametrize('config, mode', CASES)
def test_a_last_batch_of_8_on_16_devices_trains_like_one_device(one_and_sixteen, config, mode):
  (devices, one), (sixteen_devices, sixteen) = one_and_sixteen[config, mode]
  assert devices == 1
  assert sixteen_devices == 16
  for a, b in zip(one, sixteen, strict=True):
    # Within 1e-5; 1e-6 absolute for the odd weight whose first Adam step divides two tiny
    # moments (every device computes the batch whole, with its own thread split of the sums).
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_a_run_whose_last_batch_does_not_divide_trains_like_one_device(synthetic_dir, tmp_path):
  # 250 training images in batches of 32: the epoch ends on a batch of 26 (BatchNorm, dropout),
  # which the run refused on 8 devices before.
  extra = ('--config.data.num_validation=50',)
  finish(launch(str(tmp_path / 'one'), synthetic_dir, *extra))
  finish(launch(str(tmp_path / 'eight'), synthetic_dir, *extra, env=EIGHT))
  # Its val_loss moves by ~1.5e-4 of itself on 8 devices, as it does with 256 images (every
  # batch divides): the split full batches' rounding; the last batch adds none (tests above).
  _, results = assert_close_runs(str(tmp_path / 'one'), str(tmp_path / 'eight'), rtol=1e-3)
  assert results['device'] == 'cpu x8' and results['num_train'] == 250
