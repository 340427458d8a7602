"""The device side of a run, picked by run type: `Single` (one replica: steps.py's jitted
programs, over every device of the mesh) or `Stacked` (config.num_seeds replicas on a leading
seed axis, vmapped or unrolled in one program each: seeds.py's).

The loop calls the same methods for both and never asks which it has. Per-replica values come
back as lists (metric means, predictions, step counts); `replica(tree, i)` is replica i's part of
a state-shaped tree and `with_replica(tree, i, part)` puts it back (for one replica, the tree
itself).

Both run each dispatch's train steps as one on-device loop when config.train.device_loop says
so (`device_loop_of`: by default, on every platform), else one program per step.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.data import pipeline
from cifar_jax.train import seeds
from cifar_jax.train import sharding
from cifar_jax.train import steps
from cifar_jax.train.config_checks import ConfigError


@dataclasses.dataclass(frozen=True)
class EpochData:
  """What an epoch's train steps read on the device: the training split, the epoch's order and
  (stacked replicas) which replicas still train."""
  images: jax.Array
  labels: jax.Array
  order: jax.Array
  active: Any  # [N] bool on the device (Stacked), None (Single).
  plan: Any  # setup.EpochPlan


def device_loop_of(config) -> bool:
  """config.train.device_loop as a bool: 'auto' is on, on every platform. On GPU and TPU one
  dispatch per step would leave the device waiting on the host; on CPU a chunk's steps share
  one allocation of the program's temporaries (glibc maps them afresh at every call): quiet
  2-core Zen 4, `benchmarks/loop_throughput.py`, exp0 1.34x, redes/m1 1.06x, p2cnn/exp1 1.02x,
  exp3 1.03x per step with huge pages (cifar_jax/huge_pages.py), 1.05-1.55x without."""
  value = config.train.get('device_loop', 'auto')
  if value == 'auto':
    return True
  if not isinstance(value, bool):
    raise ConfigError(f"train.device_loop={value!r} must be 'auto', True (each dispatch's "
                      'steps as one on-device loop) or False (one program per step)')
  return value


def means(sums) -> dict[str, float]:
  """Per-example means of metric sums, in float64 on the host (NaN with no examples); for a
  training epoch's sums (steps.zero_sums) also what Keras 3's progress bar printed as the
  epoch's loss and accuracy (steps.PROGBAR_SUMS): the mean of the N running means and of the
  final mean once more, (sum of running means + final mean) / (N + 1)."""
  count = float(sums['count']) or float('nan')
  logs = {'loss': float(sums['loss']) / count, 'accuracy': float(sums['correct']) / count}
  if 'steps' in sums:
    n = float(sums['steps'])
    for key in ('loss', 'accuracy'):
      logs[f'progbar_{key}'] = (float(sums[f'running_{key}']) + logs[key]) / (n + 1)
  return logs


class Single:
  """One replica; with several devices, each step's batch is split over the mesh."""
  num_replicas = 1

  def __init__(self, data_rng=None, data_sharding=None, device_loop: bool = False):
    self.data_rng = data_rng  # config.data_seed's key, else None (the run's state.rng).
    self.data_sharding = data_sharding
    self.device_loop = device_loop  # See steps.train_steps_on_device.

  def stack(self, states):
    (state,) = states
    return state

  def replica(self, tree, i: int):
    del i
    return tree

  def with_replica(self, tree, i: int, part):
    del tree, i
    return part

  def snapshot(self, previous, weights, i: int):
    """A copy of `weights` to keep as an EarlyStopping snapshot of replica i."""
    del previous, i
    return jax.tree.map(jnp.copy, weights)

  def steps(self, state) -> list[int]:
    return [int(state.step)]

  def epoch_data(self, state, images, labels, plan, trained: list[int]) -> EpochData:
    del trained  # A single run stops when its replica does.
    order = steps.epoch_order(state, plan.num_examples, plan.steps_per_epoch, self.data_rng)
    return EpochData(images, labels, order, None, plan)

  def train(self, state, data: EpochData, sums, num_steps: int, batch_size: int):
    # A batch that does not split over the devices (an epoch's last) is computed whole on every
    # device: exactly one device's step, BatchNorm statistics included, at one step an epoch.
    split = self.data_sharding
    if split is not None and batch_size % split.mesh.size:
      split = None
    return steps.train_steps_on_device(
        state, data.images, data.labels, data.order, sums, num_steps, batch_size=batch_size,
        full_batch_size=data.plan.batch_size, steps_per_epoch=data.plan.steps_per_epoch,
        data_sharding=split, device_loop=self.device_loop)

  def means(self, sums) -> list[dict[str, float]]:
    return [means(jax.device_get(sums))]

  def evaluate(self, state, batches: pipeline.EvalBatches) -> list[dict[str, float]]:
    return self.means(steps.evaluate(state, batches.images, batches.labels, batches.mask,
                                     data_sharding=self.data_sharding))

  def predict(self, state, images) -> list[np.ndarray]:
    """Class probabilities [num_batches, batch, classes] per replica (every process takes part
    in gathering them)."""
    return [sharding.to_host(steps.predict_batches(state, images, self.data_sharding))]


class Stacked:
  """N replicas on a leading seed axis, one device (see seeds.py)."""

  def __init__(self, num_replicas: int, data_rngs, shared_order: bool, vmap: bool,
               device_loop: bool = False):
    self.num_replicas = num_replicas
    self.data_rngs = data_rngs  # One key (shared order) or [N] keys.
    self.shared_order = shared_order
    self.vmap = vmap
    self.device_loop = device_loop

  def stack(self, states):
    return seeds.stack(states)

  def replica(self, tree, i: int):
    return seeds.unstack(tree, i)

  def with_replica(self, tree, i: int, part):
    return seeds.put(tree, i, part)

  def snapshot(self, previous, weights, i: int):
    if previous is None:  # The first snapshot of this callback: every replica's slot filled.
      return jax.tree.map(jnp.copy, weights)
    return seeds.put(previous, i, seeds.unstack(weights, i))

  def steps(self, state) -> list[int]:
    # Replicas that stopped keep their step; the training ones are at the largest.
    return [int(n) for n in np.asarray(jax.device_get(state.step))]

  def epoch_data(self, state, images, labels, plan, trained: list[int]) -> EpochData:
    order = seeds.epoch_orders(state, self.data_rngs, plan.num_examples, plan.steps_per_epoch,
                               self.shared_order)
    active = np.zeros(self.num_replicas, bool)
    active[trained] = True
    return EpochData(images, labels, order, jax.device_put(active), plan)

  def train(self, state, data: EpochData, sums, num_steps: int, batch_size: int):
    statics = dict(shared_order=self.shared_order, batch_size=batch_size,
                   full_batch_size=data.plan.batch_size,
                   steps_per_epoch=data.plan.steps_per_epoch, vmap=self.vmap)
    carry = (state, sums, steps.no_nonfinite_step(state.step))
    state, sums, first_nonfinite = steps.dispatch_steps(
        _one_seeds_step, _seeds_step_carry, carry, (data.images, data.labels, data.order,
                                                    data.active),
        statics, num_steps, self.device_loop)
    return state, sums, seeds._first_of_any(first_nonfinite)  # pylint: disable=protected-access

  def means(self, sums) -> list[dict[str, float]]:
    sums = jax.device_get(sums)
    return [means({k: v[i] for k, v in sums.items()}) for i in range(self.num_replicas)]

  def evaluate(self, state, batches: pipeline.EvalBatches) -> list[dict[str, float]]:
    return self.means(seeds.evaluate(state, batches.images, batches.labels, batches.mask,
                                     vmap=self.vmap))

  def predict(self, state, images) -> list[np.ndarray]:
    return list(np.asarray(jax.device_get(seeds.predict_batches(state, images, vmap=self.vmap))))


def _seeds_step_carry(carry, operands, **statics):
  """seeds' one step of every replica as a loop body (see steps.loop_steps)."""
  states, sums, first_nonfinite = carry
  images, labels, orders, active = operands
  return seeds._accumulate_seeds_step(  # pylint: disable=protected-access
      states, images, labels, orders, sums, first_nonfinite, active, **statics)


def _one_seeds_step(carry, operands, statics):
  return _seeds_step_carry(carry, operands, **statics)


def for_run(config, input_pipeline: pipeline.InputPipeline, mesh):
  """The program of a run of `config`: Single, or Stacked for config.num_seeds > 1."""
  data_sharding = sharding.batch_split(mesh) if mesh.size > 1 else None
  device_loop = device_loop_of(config)
  if config.num_seeds == 1:
    data_rng = (None if config.data_seed is None else
                sharding.replicate(jax.random.PRNGKey(config.data_seed), mesh))
    return Single(data_rng, data_sharding, device_loop)
  n = config.num_seeds
  if mesh.size > 1:
    raise ConfigError(
        f'num_seeds={n} trains its replicas on one device, but this run sees {mesh.size} '
        'devices; run with one device (e.g. CUDA_VISIBLE_DEVICES=0) or num_seeds=1')
  shared = bool(config.seeds_share_data_order)
  # Every replica's first layer reads the same input only without random augmentation (the
  # alternating flip's draw is each replica's own too).
  shared_input = (shared and input_pipeline.augment is None and input_pipeline.layers is None
                  and not input_pipeline.alternating_flip)
  vmap = seeds.vmapped(seeds.grouped_convolutions(config.model, shared_input))
  configs = [seeds.seed_config(config, i) for i in range(n)]
  keys = [jax.random.PRNGKey(c.seed if c.data_seed is None else c.data_seed) for c in configs]
  return Stacked(n, jax.device_put(keys[0] if shared else jnp.stack(keys)), shared, vmap,
                 device_loop)
