"""What tests and benchmarks compare between runs: everything a finished run computed, less its
wall-clock times, read from its workdir (local or gs://) and its newest checkpoint."""

import json

import numpy as np

from cifar_jax import paths
from cifar_jax.train import outputs

# results.json's keys that say where or how long, not what was computed.
NOT_COMPUTED = ('train_seconds',)


def checkpoint_steps(workdir) -> list[int]:
  """The committed steps of workdir/checkpoints/latest, oldest first."""
  folder = paths.join(workdir, 'checkpoints', 'latest')
  if not paths.isdir(folder):
    return []
  return sorted(int(name) for name in paths.listdir(folder) if name.isdigit())


def final_state(workdir):
  """The newest latest checkpoint's TrainState, as the nested dict orbax restores, on this
  process's first device (whatever devices or processes wrote it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = checkpoint_steps(workdir)[-1]
  path = paths.join(workdir, 'checkpoints', 'latest', str(step), 'state')
  checkpointer = ocp.StandardCheckpointer()
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  tree = checkpointer.metadata(path).item_metadata.tree
  return checkpointer.restore(path, jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=here), tree))


def run_outcome(workdir, with_state: bool = True) -> dict:
  """history (rows without 'time'), results (without NOT_COMPUTED), the test probabilities and
  labels, and (with_state) the final checkpoint's state."""
  history = [{k: v for k, v in row.items() if k != 'time'} for row in
             outputs.read_history(workdir)]
  results = json.loads(paths.read_text(paths.join(workdir, 'results.json')))
  probabilities, labels, class_names = outputs.read_predictions(workdir)
  outcome = {'history': history,
             'results': {k: v for k, v in results.items() if k not in NOT_COMPUTED},
             'probabilities': probabilities, 'labels': labels, 'class_names': class_names}
  if with_state:
    outcome['final_step'] = checkpoint_steps(workdir)[-1]
    outcome['state'] = final_state(workdir)
  return outcome


def assert_same_outcome(workdir_a, workdir_b, results_keys=None) -> None:
  """The two runs computed the same bits: history, results (all of them, or `results_keys`),
  test probabilities and final state. Two runs of one config from different places (a gs://
  and a local workdir) differ in data_source: pass results_keys=('test_loss', ...)."""
  import jax  # pylint: disable=g-import-not-at-top
  a, b = run_outcome(workdir_a), run_outcome(workdir_b)
  assert a['history'] == b['history']
  pick = (lambda r: r) if results_keys is None else (lambda r: {k: r[k] for k in results_keys})
  assert pick(a['results']) == pick(b['results'])
  np.testing.assert_array_equal(a['probabilities'], b['probabilities'])
  leaves_a, leaves_b = jax.tree.leaves(a['state']), jax.tree.leaves(b['state'])
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)
