"""Data parallelism over a 1-D ('data',) device mesh, on one host or many.

Params, optimizer state and the (small) CIFAR-10 splits are replicated on every device; each
step's batch is gathered on the device and constrained to be split along 'data', so every
device works on its slice of the global batch and XLA inserts the all-reduces (gradients, and
BatchNorm statistics, which are therefore those of the global batch, as Keras on one device
computes them). The same jitted step serves 1 device or a TPU pod. The global batch must divide
over the devices (`check_divisible`); an epoch's smaller last batch that does not is computed
whole on every device instead (programs.Single.train), which is one device's step exactly.
"""

import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cifar_jax.train.config_checks import ConfigError

log = logging.getLogger(__name__)

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           auto: bool = False) -> None:
  """jax.distributed.initialize for multi-process runs (explicit flags, or auto-detected on
  Cloud TPU / SLURM). CPU processes talk through gloo collectives."""
  if not (auto or coordinator_address):
    return
  # Only the CPU backend reads this; without it CPU processes cannot all-reduce.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  log.info('jax.distributed: process %d of %d, %d local / %d global devices',
           jax.process_index(), jax.process_count(), jax.local_device_count(),
           jax.device_count())


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_split(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree, mesh: Mesh):
  """Places a pytree of host or single-device arrays on every device of every process (each
  process holds the same values, e.g. the same seed's init or the same data files)."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def check_divisible(batch_size: int, what: str, mesh: Mesh) -> None:
  devices = mesh.devices.size
  if batch_size % devices:
    raise ConfigError(
        f'{what}={batch_size} does not divide over {devices} devices; use a multiple of '
        f'{devices} (the global batch stays as the config says whatever the device count)')


def to_host(array) -> np.ndarray:
  """A global array's value on every process (gathers shards held by other processes)."""
  if jax.process_count() > 1 and not array.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
  return np.asarray(jax.device_get(array))
