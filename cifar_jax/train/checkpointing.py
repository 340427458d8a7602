"""Checkpoints of a run, with orbax, in <workdir>/checkpoints/:

  latest/  the last two saves (at epoch ends by checkpoint.every_epochs / every_minutes, at
           the run's end, on a stop request, and every `checkpoint.every_steps` steps), each
           holding the TrainState, the host-side run state (epoch, history, callback
           states, metric sums of an unfinished epoch) as JSON, and the EarlyStopping weight
           snapshots. Two are kept so that a corrupt newest one falls back to the one before.
  best/    the TrainState of the best epoch by `checkpoint.monitor` (Keras ModelCheckpoint
           save_best_only semantics).

orbax writes each checkpoint into a temporary folder and renames it when complete (on gs://,
where rename is not atomic, it writes a commit marker object last instead), so a run killed
mid-save leaves the previous checkpoint as the newest valid one. The workdir may be a gs:// URL
(cifar_jax.paths): orbax reaches it through etils.epath and TensorStore's gcs driver.

A checkpoint is only written from a finite state: every float in the params, BatchNorm
statistics, optimizer state, EarlyStopping snapshots and the metric sums of an unfinished epoch.
Arrays this process holds whole are checked on the host with NumPy (no program to compile: a
run's first save, and each launch of a short run, would otherwise compile one); arrays sharded
across processes, of which no process holds all, by one jitted reduction where they live (a
bool per array back to the host). Both give the same answer. A state that is not is
refused with `NonFiniteStateError`, naming the array and the last checkpoint kept, so a later run
never resumes from (or evaluates) a diverged state; a restored checkpoint is checked the same
way and skipped like an unreadable one.
"""

import gc
import logging
import math
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from cifar_jax import paths as fs  # (`paths` is a local name below)

log = logging.getLogger(__name__)

# Config values that may change between a run and its resumption.
RESUMABLE_CHANGES = ('log.', 'data.dir', 'data.download', 'train.epochs', 'checkpoint.every_',
                     'train.steps_per_dispatch', 'train.device_loop', 'model.conv_grad',
                     'model.conv_backend')
# Config values that only change how a checkpoint is evaluated, so `--evaluate` may change them
# (resuming may not: the callbacks would see other validation metrics than the run's).
EVALUATION_SETTINGS = ('augment.tta', 'train.eval_batch_size')
# Keys added to the config after runs were saved, with the value those runs implicitly had, so
# that a workdir from an earlier version still resumes.
# model.matmul_precision: runs before it were CPU runs, whose float32 arithmetic is 'highest'.
# checkpoint.every_epochs/every_minutes: runs before them saved the latest every epoch.
ADDED_KEYS = {'num_seeds': 1, 'seeds_share_data_order': True, 'data_seed': None,
              'model.matmul_precision': 'highest', 'checkpoint.every_epochs': 1,
              'checkpoint.every_minutes': 0.0, 'data.validation_source': 'train',
              'model.conv_grad': '', 'model.conv_backend': 'xla'}


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; the message says what is intact and what to do."""


class ConfigMismatchError(ValueError):
  """The workdir holds a run of a different config."""


class NonFiniteStateError(FloatingPointError):
  """A state to be checkpointed holds NaN or Inf; the message names the last finite checkpoint."""


@jax.jit
def _finite_flags_on_device(leaves):
  # One program per state structure: a bool per float array, computed where the arrays live.
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def _finite_flags(leaves) -> np.ndarray:
  """A bool per array of `leaves`: all its values finite. On the host when this process holds
  every array whole, else on the devices."""
  if all(getattr(x, 'is_fully_addressable', True) for x in leaves):
    return np.array([bool(np.isfinite(x).all()) for x in jax.device_get(leaves)])
  flags = _finite_flags_on_device(leaves)
  # Replicated result: any local copy holds all of it.
  return np.asarray(flags.addressable_shards[0].data)


def first_nonfinite(tree) -> str | None:
  """The path of the first float array of `tree` holding NaN or Inf, e.g. "params['Dense_0']
  ['kernel']"; None if every one is finite. Integer and key arrays are not looked at."""
  paths, leaves = [], []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, (float, np.floating)):
      if not math.isfinite(leaf):
        return jax.tree_util.keystr(path)
    elif hasattr(leaf, 'dtype') and jnp.issubdtype(leaf.dtype, jnp.inexact):
      paths.append(path)
      leaves.append(leaf)
  if not leaves:
    return None
  flags = _finite_flags(leaves)
  bad = np.flatnonzero(~flags)
  return jax.tree_util.keystr(paths[bad[0]]) if bad.size else None


def _nonfinite_in_checkpoint(state, host: Mapping[str, Any] | None, snapshots) -> str | None:
  """What of a checkpoint's contents is non-finite, as a phrase; None if nothing is."""
  for name, tree in (('state', state), ('snapshots', dict(snapshots or {}))):
    path = first_nonfinite(tree)
    if path is not None:
      return f'{name}{path} holds NaN or Inf'
  partial = (host or {}).get('partial_sums') or {}
  for key, value in partial.items():
    if isinstance(value, (int, float)) and not math.isfinite(value):
      return f"the unfinished epoch's {key} sum is {value}"
  return None


def _short(error: BaseException, limit: int = 160) -> str:
  """'Type: first line of the message', cut to `limit` characters (orbax's errors can carry
  dozens of lines of TensorStore detail; those go to the debug log)."""
  text = str(error).strip().splitlines()
  text = text[0].strip() if text else ''
  if len(text) > limit:
    text = text[:limit - 3] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       allowed: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
  """'key: saved -> current' for every difference that changes what the run computes, leaving
  out the keys that start with one of `allowed`."""
  saved, current = {**ADDED_KEYS, **_flatten(saved)}, _flatten(current)
  lines = []
  for key in sorted(set(saved) | set(current)):
    if key.startswith(allowed) or saved.get(key) == current.get(key):
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


def check_same_config(saved: Mapping[str, Any], current: Mapping[str, Any], workdir: str, *,
                      evaluating: bool = False) -> None:
  """Raises unless `current` may resume (or, `evaluating`, evaluate) the run saved with `saved`."""
  allowed = RESUMABLE_CHANGES + (EVALUATION_SETTINGS if evaluating else ())
  differences = config_differences(_to_json_compatible(saved), _to_json_compatible(current),
                                   allowed)
  if differences:
    action = 'evaluated with this config' if evaluating else 'resumed'
    evaluation_hint = ('' if evaluating else ' (--evaluate may change '
                       + ', '.join(EVALUATION_SETTINGS) + ')')
    raise ConfigMismatchError(
        f'{workdir} holds a run of a different config, so it cannot be {action}:\n'
        + '\n'.join(differences)
        + f'\nUse another --workdir, or pass --fresh to set the old run aside and start over'
        + evaluation_hint + '.')


def evaluation_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
  """The evaluation settings `current` changes from the run's `saved` config: key -> value."""
  saved, current = _flatten(_to_json_compatible(saved)), _flatten(_to_json_compatible(current))
  return {key: current[key] for key in sorted(current)
          if key.startswith(EVALUATION_SETTINGS) and key in saved and saved[key] != current[key]}


class Checkpointer:
  """Saves and restores a run's checkpoints; errors name the problem and the way out."""

  def __init__(self, workdir: str):
    self.directory = fs.join(fs.absolute(workdir), 'checkpoints')
    # Saves are asynchronous on any number of processes: a save blocks the loop only while it
    # copies the arrays off the device; a thread writes them. Across processes each save ends
    # in barriers of the jax coordination service whose names orbax fixes per manager (plus the
    # step), and the service refuses a second wait on a barrier that one process is already
    # waiting at ("Barrier _async_commit_complete.8 is already ongoing"): latest's and best's
    # background commits of one step collided, one process failed its save while the others
    # waited for it, and the run hung at exit. So each manager's barriers get their own prefix,
    # the same on every process (the folder's name: its absolute path may differ by host).
    name = os.path.basename(fs.absolute(workdir).rstrip('/')) or 'run'
    options = lambda keep, kind: ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=f'cifar_jax.{name}.{kind}'))
    try:
      self.latest = ocp.CheckpointManager(os.path.join(self.directory, 'latest'),
                                          options=options(2, 'latest'))
      self.best = ocp.CheckpointManager(os.path.join(self.directory, 'best'),
                                        options=options(1, 'best'))
    except OSError as e:
      raise CheckpointError(f'cannot create checkpoint folders in {self.directory}: {e}. '
                            'Choose a writable --workdir.') from e

  def has_checkpoint(self) -> bool:
    return bool(self.latest.all_steps())

  def _kept(self) -> str:
    """Which checkpoint a failed save leaves as the one to resume from (all are finite)."""
    step = self.latest.latest_step()
    if step is None:
      return 'no checkpoint was written yet'
    return f'the last finite checkpoint (step {step}) is kept in {self.latest.directory}'

  def _check_finite(self, step: int, state, host=None, snapshots=None) -> None:
    what = _nonfinite_in_checkpoint(state, host, snapshots)
    if what is not None:
      raise NonFiniteStateError(
          f'training diverged: at step {step} {what}, so that state was not checkpointed; '
          f'{self._kept()}. Lower optim.learning_rate or check '
          'data.normalization, then rerun with --fresh.')

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
    self._check_finite(step, state, host, snapshots)
    items = {'state': ocp.args.StandardSave(state), 'host': ocp.args.JsonSave(dict(host))}
    if snapshots:
      items['snapshots'] = ocp.args.StandardSave(dict(snapshots))
    self._save(self.latest, step, ocp.args.Composite(**items))

  def save_best(self, step: int, state) -> None:
    self._check_finite(step, state)
    self._save(self.best, step, ocp.args.Composite(state=ocp.args.StandardSave(state)))

  def restore_latest(self, state_template: Callable[[dict], Any], snapshot_template,
                     set_aside_unusable: bool = True):
    """(state, host, snapshots) of the newest readable checkpoint, or None if there is none.

    `state_template(host)` gives a state shaped like the saved one, from the checkpoint's host
    state; `snapshot_template` is shaped like one EarlyStopping snapshot. A checkpoint that
    cannot be read (or is not finite) is reported in one line and skipped in favour of the one
    before it; with `set_aside_unusable`, once one restores, the skipped ones are renamed
    `<step>.unusable` (kept for inspection, never read again) so the resumed run saves those
    steps anew instead of keeping a broken newest checkpoint.
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
        snapshots = dict(restored.get('snapshots') or {})
        bad = _nonfinite_in_checkpoint(restored['state'], host, snapshots)
        if bad is not None:  # Written by an older cifar_jax, or changed on disk.
          raise NonFiniteStateError(bad)
      except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
        path = os.path.join(self.latest.directory, str(step))
        log.debug('checkpoint %s could not be restored', path, exc_info=True)
        log.warning('checkpoint %s is unusable (%s); trying the one before it', path, _short(e))
        failures.append(f'{path}: {_short(e)}')
        continue
      if failures:
        _collect_failed_reads()
        log.warning('resuming from the older checkpoint of step %d', step)
        if set_aside_unusable:
          self._set_aside(step)
      return restored['state'], host, snapshots
    if failures:
      _collect_failed_reads()
      raise CheckpointError(
          'no readable checkpoint; each one failed:\n  ' + '\n  '.join(failures)
          + '\nPass --fresh to set the run aside and start over.')
    return None

  def _set_aside(self, restored_step: int) -> None:
    """Renames the checkpoints newer than `restored_step` (all found unusable) out of orbax's
    sight, so that the resumed run writes those steps again."""
    if jax.process_index() == 0:
      for step in self.latest.all_steps():
        if step > restored_step:
          path = os.path.join(self.latest.directory, str(step))
          aside, n = f'{path}.unusable', 1
          while fs.exists(aside):
            aside, n = f'{path}.unusable{n}', n + 1
          fs.rename(path, aside)
          log.warning('moved the unusable checkpoint %s aside to %s', path, aside)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('cifar_jax checkpoint set aside')
    self.latest.reload()

  def restore_best(self, state_template):
    step = self.best.latest_step()
    if step is None:
      raise CheckpointError(f'no best checkpoint in {self.best.directory}: the run has not '
                            'finished an epoch with the monitored metric yet.')
    restored = self.best.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(state_template))))
    bad = _nonfinite_in_checkpoint(restored['state'], None, None)
    if bad is not None:
      raise CheckpointError(f'the best checkpoint {os.path.join(self.best.directory, str(step))} '
                            f'is not finite ({bad}); it cannot be evaluated or used.')
    return restored['state']

  def close(self) -> None:
    for manager in (self.latest, self.best):
      try:
        manager.wait_until_finished()
      finally:
        manager.close()


def _collect_failed_reads() -> None:
  """A failed orbax read leaves asyncio tasks whose exceptions nobody retrieves, and asyncio
  logs each one (a many-line traceback) whenever the garbage collector gets to it. They are the
  failure already reported in one line, so they are collected here with asyncio's logger muted
  (the detail is in the debug log)."""
  logger = logging.getLogger('asyncio')
  level = logger.level
  logger.setLevel(logging.CRITICAL + 1)
  try:
    gc.collect()
  finally:
    logger.setLevel(level)


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
