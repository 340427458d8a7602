"""Checkpoints of a run, with orbax, in <workdir>/checkpoints/:

  latest/  the last two saves (end of every epoch, and every `checkpoint.every_steps` steps),
           each holding the TrainState, the host-side run state (epoch, history, callback
           states, metric sums of an unfinished epoch) as JSON, and the EarlyStopping weight
           snapshots. Two are kept so that a corrupt newest one falls back to the one before.
  best/    the TrainState of the best epoch by `checkpoint.monitor` (Keras ModelCheckpoint
           save_best_only semantics).

orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the newest valid one.
"""

import logging
import os
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

# Config values that may change between a run and its resumption.
RESUMABLE_CHANGES = ('log.', 'data.dir', 'data.download', 'train.epochs', 'checkpoint.every_steps',
                     'train.steps_per_dispatch')
# Keys added to the config after runs were saved, with the value those runs implicitly had, so
# that a workdir from an earlier version still resumes.
ADDED_KEYS = {'num_seeds': 1, 'seeds_share_data_order': True, 'data_seed': None}


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; the message says what is intact and what to do."""


class ConfigMismatchError(ValueError):
  """The workdir holds a run of a different config."""


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """'key: saved -> current' for every difference that changes what the run computes."""
  saved, current = {**ADDED_KEYS, **_flatten(saved)}, _flatten(current)
  lines = []
  for key in sorted(set(saved) | set(current)):
    if key.startswith(RESUMABLE_CHANGES) or saved.get(key) == current.get(key):
      continue
    lines.append(f'  {key}: {saved.get(key, "<absent>")!r} -> {current.get(key, "<absent>")!r}')
  return lines


def _to_json_compatible(tree):
  """Lists and tuples compare equal after a JSON round trip."""
  if isinstance(tree, Mapping):
    return {k: _to_json_compatible(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_to_json_compatible(v) for v in tree]
  return tree


def check_same_config(saved: Mapping[str, Any], current: Mapping[str, Any], workdir: str) -> None:
  differences = config_differences(_to_json_compatible(saved), _to_json_compatible(current))
  if differences:
    raise ConfigMismatchError(
        f'{workdir} holds a run of a different config, so it cannot be resumed:\n'
        + '\n'.join(differences)
        + '\nUse another --workdir, or pass --fresh to set the old run aside and start over.')


class Checkpointer:
  """Saves and restores a run's checkpoints; errors name the problem and the way out."""

  def __init__(self, workdir: str):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    # Asynchronous saves on one process; synchronous across processes, where an async save's
    # commit barrier was seen to hang at exit (one process closing while another still waited).
    asynchronous = jax.process_count() == 1
    options = lambda keep: ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous)
    try:
      self.latest = ocp.CheckpointManager(os.path.join(self.directory, 'latest'),
                                          options=options(2))
      self.best = ocp.CheckpointManager(os.path.join(self.directory, 'best'), options=options(1))
    except OSError as e:
      raise CheckpointError(f'cannot create checkpoint folders in {self.directory}: {e}. '
                            'Choose a writable --workdir.') from e

  def has_checkpoint(self) -> bool:
    return bool(self.latest.all_steps())

  def _save(self, manager, step: int, args) -> None:
    previous = manager.latest_step()
    try:
      manager.wait_until_finished()  # Surfaces an error of the previous asynchronous save.
      if step in manager.all_steps():
        return
      manager.save(step, args=args, force=True)
    except OSError as e:
      kept = f'the checkpoint of step {previous} is intact' if previous is not None else (
          'no earlier checkpoint exists')
      raise CheckpointError(
          f'could not write the checkpoint of step {step} to {manager.directory}: {e}. '
          f'Nothing was overwritten: {kept}. Free disk space (or fix permissions), then rerun '
          'the same command to resume.') from e

  def save_latest(self, step: int, state, host: Mapping[str, Any],
                  snapshots: Mapping[str, Any]) -> None:
    items = {'state': ocp.args.StandardSave(state), 'host': ocp.args.JsonSave(dict(host))}
    if snapshots:
      items['snapshots'] = ocp.args.StandardSave(dict(snapshots))
    self._save(self.latest, step, ocp.args.Composite(**items))

  def save_best(self, step: int, state) -> None:
    self._save(self.best, step, ocp.args.Composite(state=ocp.args.StandardSave(state)))

  def restore_latest(self, state_template: Callable[[dict], Any], snapshot_template):
    """(state, host, snapshots) of the newest readable checkpoint, or None if there is none.

    `state_template(host)` gives a state shaped like the saved one, from the checkpoint's host
    state; `snapshot_template` is shaped like one EarlyStopping snapshot. A checkpoint that
    cannot be read is reported and skipped in favour of the one before it.
    """
    failures = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        host = self.latest.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))
        host = host['host']
        items = {'state': ocp.args.StandardRestore(_abstract(state_template(host)))}
        names = host.get('snapshot_names', [])
        if names:
          items['snapshots'] = ocp.args.StandardRestore(
              {name: _abstract(snapshot_template) for name in names})
        restored = self.latest.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
        path = os.path.join(self.latest.directory, str(step))
        log.warning('checkpoint %s is unreadable (%s: %s); trying an older one', path,
                    type(e).__name__, e)
        failures.append(f'{path}: {type(e).__name__}: {e}')
        continue
      if failures:
        log.warning('resuming from the older checkpoint of step %d', step)
      return restored['state'], host, dict(restored.get('snapshots') or {})
    if failures:
      raise CheckpointError(
          'no readable checkpoint; each one failed:\n  ' + '\n  '.join(failures)
          + '\nPass --fresh to set the run aside and start over.')
    return None

  def restore_best(self, state_template):
    step = self.best.latest_step()
    if step is None:
      raise CheckpointError(f'no best checkpoint in {self.best.directory}: the run has not '
                            'finished an epoch with the monitored metric yet.')
    restored = self.best.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(state_template))))
    return restored['state']

  def close(self) -> None:
    for manager in (self.latest, self.best):
      try:
        manager.wait_until_finished()
      finally:
        manager.close()


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
