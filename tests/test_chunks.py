"""Steps as one on-device loop (train.device_loop): the same results however the host groups
them into dispatches (one step each, a few, or a whole epoch), for one replica and for stacked
seeds; the per-step program agrees to rounding; 'auto' is the loop."""

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.testing import runs
from cifar_jax.train import dispatch
from cifar_jax.train import loop
from cifar_jax.train import programs
from cifar_jax.train import setup
from cifar_jax.train import steps
from cifar_jax.train import train_and_evaluate
from cifar_jax.train.config_checks import ConfigError
from tests import synthetic_cifar
from tests import test_resume
from tests.conftest import tiny_config


def augmented_config():
  """The tiny net (BatchNorm, dropout, l2) with both augmentation stages."""
  config = tiny_config()
  config.augment.horizontal_flip = True
  config.augment.width_shift_range = 0.1
  config.augment.layers = (dict(type='random_flip', mode='horizontal'),)
  return config


@pytest.fixture(scope='module')
def split():
  images, labels, _, _ = synthetic_cifar.make_arrays(200, 10)  # 6 batches of 32, then 8.
  return images, labels


@pytest.fixture(scope='module')
def augmented_setup(split):
  """augmented_config's RunSetup on `split` and its fresh state, shared: every run below starts
  from a copy of that state, so all of them call the same programs and only the dispatching
  differs."""
  run_setup = setup.RunSetup.create(augmented_config(), setup.array_splits(*split))
  return run_setup, run_setup.train_state()


def train_two_epochs(augmented_setup, split, device_loop: bool, steps_per_dispatch: int):
  images, labels = split
  run_setup, initial_state = augmented_setup
  plan = run_setup.plan
  assert plan.last_batch_size == 8
  state = jax.tree.map(jnp.copy, initial_state)  # The steps donate their state's buffers.
  program = programs.Single(device_loop=device_loop)
  sizer = dispatch.DispatchSizer(steps_per_dispatch)
  for _ in range(2):
    data = program.epoch_data(state, jnp.asarray(images), jnp.asarray(labels), plan, [0])
    result = loop.run_epoch(program, state, data, sizer=sizer)
    assert result.complete
    state = result.state
  return jax.device_get((state.params, state.batch_stats, state.opt_state, result.sums))


def test_a_device_loop_gives_the_same_bits_however_the_steps_are_dispatched(augmented_setup,
                                                                            split):
  one_each = train_two_epochs(augmented_setup, split, True, 1)
  for steps_per_dispatch in (4, 1000):  # Chunks that straddle nothing / a whole epoch's.
    chunked = train_two_epochs(augmented_setup, split, True, steps_per_dispatch)
    for a, b in zip(jax.tree.leaves(one_each), jax.tree.leaves(chunked), strict=True):
      np.testing.assert_array_equal(a, b)


def test_a_device_loop_agrees_with_one_program_per_step_to_rounding(augmented_setup, split):
  looped = train_two_epochs(augmented_setup, split, True, 0)
  per_step = train_two_epochs(augmented_setup, split, False, 0)
  # The convolution feeds BatchNorm, which cancels its bias: the bias's exact gradient is 0 and
  # what it gets is rounding, which Adam turns into steps of up to the learning rate either way
  # (on a Zen 4 EPYC one element ended 5.6e-4 apart). So the bias is held to that bound only.
  run_setup = augmented_setup[0]
  adam_bound = run_setup.config.optim.learning_rate * 2 * run_setup.plan.steps_per_epoch
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(looped[0]),
                          jax.tree.leaves(per_step[0]), strict=True):
    name = jax.tree_util.keystr(path)
    np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=name,
                               atol=adam_bound if name == "['conv2d']['bias']" else 1e-6)
  # BatchNorm's running mean averages the convolution's output, bias included, so it inherits the
  # bias's bound (on the Zen 4, after the max pool's gradient moved to broadcasts, one channel's
  # mean ended 7.7e-5 apart).
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(looped[1:]),
                          jax.tree.leaves(per_step[1:]), strict=True):
    name = jax.tree_util.keystr(path)
    np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=name,
                               atol=adam_bound if name.endswith("['mean']") else 1e-6)


def run_files(workdir):
  outcome = runs.run_outcome(workdir, with_state=False)
  return outcome['history'], outcome['results']['test_loss'], outcome['results']['test_accuracy']


def test_stacked_seeds_in_a_device_loop_do_not_depend_on_the_chunking(synthetic_dir, tmp_path,
                                                                      monkeypatch):
  loops = []
  loop_steps = steps.loop_steps
  monkeypatch.setattr(steps, 'loop_steps', lambda *a, **k: loops.append(1) or loop_steps(*a, **k))
  runs = []
  for steps_per_dispatch in (1, 5):
    config = tiny_config(synthetic_dir, epochs=2, device_loop=True,
                         steps_per_dispatch=steps_per_dispatch)
    config.num_seeds = 2
    config.checkpoint.enabled = False
    workdir = str(tmp_path / str(steps_per_dispatch))
    train_and_evaluate(config, workdir)
    runs.append([run_files(os.path.join(workdir, f'seed_{i}')) for i in range(2)])
  assert loops, 'no device loop ran'
  assert runs[0] == runs[1]


def test_auto_loops_on_the_device():
  config = tiny_config()
  assert programs.device_loop_of(config)
  config.train.device_loop = False
  assert not programs.device_loop_of(config)
  config.train.device_loop = 'yes'
  with pytest.raises(ConfigError, match="train.device_loop='yes' must be 'auto', True"):
    programs.device_loop_of(config)


def test_a_device_loop_epoch_sends_no_data_from_the_host(augmented_setup, split):
  """The trip count is the only thing sent (an explicit transfer, once per count)."""
  images, labels = split
  run_setup, initial_state = augmented_setup
  state = jax.device_put(jax.tree.map(jnp.copy, initial_state))
  program = programs.Single(device_loop=True)
  train = jax.device_put((images, labels))

  def epoch(state):
    data = program.epoch_data(state, *train, run_setup.plan, [0])
    return loop.run_epoch(program, state, data, sizer=dispatch.DispatchSizer(3))

  state = epoch(state).state
  with jax.transfer_guard_host_to_device('disallow'):
    result = epoch(state)
  assert result.complete and float(result.sums['count']) == len(images)


def test_sigterm_mid_device_loop_saves_and_the_resumed_run_is_identical(synthetic_dir,
                                                                          tmp_path):
  """Stops, every_steps saves and the progress bar come at chunk boundaries: a chunk is never
  cut, and a run that resumes from a mid-epoch save gives the uninterrupted run's bits."""
  loop_flag = '--config.train.device_loop=True'
  reference = str(tmp_path / 'uninterrupted')
  test_resume.finish(test_resume.launch(reference, synthetic_dir, loop_flag))
  workdir = str(tmp_path / 'terminated')
  process = test_resume.launch(workdir, synthetic_dir, loop_flag)
  deadline = time.time() + 300
  while not test_resume.checkpoint_steps(workdir) and time.time() < deadline:
    time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=300)
  if process.returncode == 0:
    pytest.skip('the run finished before the signal arrived')
  assert process.returncode == 130 and 'SIGTERM' in err, err[-2000:]
  test_resume.finish(test_resume.launch(workdir, synthetic_dir, loop_flag))
  test_resume.assert_same_run(reference, workdir)
