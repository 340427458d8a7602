"""Optimizer pieces of the fast-CIFAR recipes (configs/fast/airbench94.py), with PyTorch's
semantics where Keras has none; optimizers.py builds them from config.optim.

* 'sgd_torch': torch.optim.SGD. Weight decay is the coupled L2 term added to the gradient
  before the momentum (g + wd*p), and the LR multiplies the whole velocity:
  b = mu*b + g; p -= lr * (g + mu*b) with nesterov, else p -= lr * b.
* `param_groups` (optim.param_groups): PyTorch-style param groups selected by a regular
  expression on the parameter's path ('block1/norm1/bias'), each with an LR multiplier, a weight
  decay multiplier (sgd_torch) and an optional number of epochs after which it stops training
  (airbench's whitening bias, `requires_grad = epoch < 3`).
* `lookahead_ema` (optim.lookahead): every `every` steps the weights move to an EMA of
  themselves, ema <- ema + (1 - d_t)*(p - ema); p <- ema, with d_t = decay**every*(t/T)**power,
  and at step T the EMA is copied into the weights (airbench's LookaheadState), as an optax
  transformation. airbench averages its whole state_dict, BatchNorm's running mean and variance
  too: `init_state` gives the lookahead a copy of the statistics and the train step passes its
  new ones through `average_stats`, which applies the decision the weights just took.

In optimizers.py, with the Keras schedules: the 'triangular' schedule (linear from
initial_fraction*lr up to lr at pct_start of the steps, then down to alpha*lr at the last step:
airbench's get_lr) and optim.total_epochs, a fractional length (airbench's 9.9 epochs) for the
schedule and the lookahead: T = ceil(total_epochs * steps_per_epoch) instead of the run's steps.
"""

import re
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def path_name(path) -> str:
  """'block1/norm1/bias' for a jax.tree_util key path (what param group patterns match)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


class TorchSgdState(NamedTuple):
  momentum: Any  # PyTorch's momentum_buffer b = mu*b + g (the LR is outside), or None.


def torch_sgd(lr, momentum: float = 0.0, nesterov: bool = False,
              weight_decay: float | Callable[[str], float] = 0.0
              ) -> optax.GradientTransformation:
  """torch.optim.SGD (dampening 0): g += wd*p; b = mu*b + g; p -= lr*(g + mu*b) (nesterov) or
  lr*b. `weight_decay`: a float, or a function of the parameter's path name (param groups)."""
  decay_of = weight_decay if callable(weight_decay) else (lambda _: weight_decay)

  def init_fn(params):
    if momentum == 0:
      return TorchSgdState(momentum=None)
    return TorchSgdState(momentum=optax.tree.zeros_like(params))

  def update_fn(grads, state, params=None):
    def with_decay(path, g, p):
      wd = decay_of(path_name(path))
      return g + p * jnp.asarray(wd, g.dtype) if wd else g

    needs_params = any(decay_of(path_name(path)) for path, _ in
                       jax.tree_util.tree_flatten_with_path(grads)[0])
    if needs_params and params is None:
      raise ValueError('sgd_torch with weight decay needs `params` in update().')
    if needs_params:
      grads = jax.tree_util.tree_map_with_path(with_decay, grads, params)
    if momentum == 0:
      return jax.tree.map(lambda g: -lr * g, grads), state
    mu = jnp.float32(momentum)
    buf = jax.tree.map(lambda b, g: mu * b + g, state.momentum, grads)
    step = jax.tree.map(lambda b, g: g + mu * b, buf, grads) if nesterov else buf
    return jax.tree.map(lambda d: -lr * d, step), TorchSgdState(momentum=buf)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Param groups: per-parameter LR / weight decay multipliers and training lengths.
# ----------------------------------------------------------------------------------

GROUP_KEYS = ('match', 'lr_multiplier', 'weight_decay_multiplier', 'train_epochs')


def check_param_groups(groups) -> list[dict]:
  """optim.param_groups as a list of complete dicts; raises ValueError naming a bad entry."""
  out = []
  for i, group in enumerate(groups or ()):
    where = f'optim.param_groups[{i}]'
    if not isinstance(group, (dict, Mapping)):
      raise ValueError(f'{where}={group!r}: must be a dict with a "match" key')
    group = dict(group)
    unknown = set(group) - set(GROUP_KEYS)
    if unknown:
      raise ValueError(f'{where}: unknown key(s) {sorted(unknown)}; known: {list(GROUP_KEYS)}')
    if not isinstance(group.get('match'), str):
      raise ValueError(f'{where}.match must be a regular expression string')
    try:
      re.compile(group['match'])
    except re.error as e:
      raise ValueError(f'{where}.match={group["match"]!r}: {e}') from None
    full = dict(match=group['match'], lr_multiplier=1.0, weight_decay_multiplier=1.0,
                train_epochs=None)
    full.update(group)
    for key in ('lr_multiplier', 'weight_decay_multiplier'):
      if not (isinstance(full[key], (int, float)) and full[key] >= 0):
        raise ValueError(f'{where}.{key}={full[key]!r} must be a number >= 0')
    if full['train_epochs'] is not None and not (
        isinstance(full['train_epochs'], (int, float)) and full['train_epochs'] >= 0):
      raise ValueError(f'{where}.train_epochs={full["train_epochs"]!r} must be None or >= 0')
    out.append(full)
  return out


def group_of(name: str, groups: list[dict]) -> dict | None:
  """The first group whose `match` regular expression is found in the path `name`, else None
  (the optimizer's defaults)."""
  for group in groups:
    if re.search(group['match'], name):
      return group
  return None


class ParamGroupState(NamedTuple):
  count: jax.Array  # Updates done, int32.


def param_group_scaling(groups: list[dict], steps_per_epoch: int
                        ) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its group's lr_multiplier, and zeroes it from the
  step its group's train_epochs end (epoch-granular, as `requires_grad = epoch < N` is). For
  the update rules here, which are linear in the LR for a fixed parameter, that is the update
  of a param group with lr * lr_multiplier."""

  def init_fn(params):
    del params
    return ParamGroupState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params

    def scale(path, u):
      group = group_of(path_name(path), groups)
      if group is None:
        return u
      u = u * jnp.asarray(group['lr_multiplier'], u.dtype)
      if group['train_epochs'] is not None:
        last = int(round(group['train_epochs'] * steps_per_epoch))  # As the schedules round.
        u = jnp.where(state.count < last, u, jnp.zeros_like(u))
      return u

    updates = jax.tree_util.tree_map_with_path(scale, updates)
    return updates, ParamGroupState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Lookahead: airbench's EMA of the weights, copied into them every few steps.
# ----------------------------------------------------------------------------------


class LookaheadState(NamedTuple):
  count: jax.Array  # Updates done, int32.
  ema: optax.Params
  # The last update's decision, for the BatchNorm statistics (average_stats): the EMA's weight
  # 1 - d_t where it averaged, else 0, and whether the weights then took the EMA.
  weight: jax.Array
  took_ema: jax.Array
  stats_ema: Any = None  # The statistics' EMA (init_state), or None: the weights' only.


def lookahead_decay(step, every: int, decay: float, power: float, total_steps: int):
  """The EMA decay d_t at update `step` (1-based): decay**every * (t/T)**power, float32 (0 at
  steps that are not multiples of `every`: no averaging there)."""
  t = jnp.asarray(step, jnp.float32)
  d = jnp.float32(decay ** every) * (t / jnp.float32(total_steps)) ** jnp.float32(power)
  return jnp.where(jnp.asarray(step) % every == 0, d, 0.0)


def lookahead_ema(every: int, decay: float, power: float, total_steps: int
                  ) -> optax.GradientTransformation:
  """airbench's LookaheadState as an optax transformation, after the optimizer's own.

  After update t (1-based), with p the weights the inner update gives: if t % every == 0,
  ema <- ema + (1 - d_t) * (p - ema) and p <- ema, d_t = decay**every * (t/T)**power; at t == T
  (the run's last step), p <- ema (airbench's final update with decay 1). The EMA starts as the
  initial weights. Returns the update that takes the current weights to p.
  """
  if every < 1 or total_steps < 1:
    raise ValueError(f'lookahead needs every >= 1 and total_steps >= 1, got {every}, '
                     f'{total_steps}')

  def init_fn(params):
    return LookaheadState(count=jnp.zeros([], jnp.int32), ema=jax.tree.map(jnp.array, params),
                          weight=jnp.zeros([], jnp.float32), took_ema=jnp.zeros([], bool))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('lookahead_ema needs `params` in update().')
    count = optax.safe_increment(state.count)
    average = count % every == 0
    weight = jnp.where(average, 1 - lookahead_decay(count, every, decay, power, total_steps), 0.0)
    take_ema = average | (count == total_steps)

    def average_into(p, u, e):
      return jnp.where(average, e + weight.astype(e.dtype) * (p + u - e), e)

    ema = jax.tree.map(average_into, params, updates, state.ema)
    # Steps that do not take the EMA keep the inner update as it is, bit for bit.
    updates = jax.tree.map(lambda p, u, e: jnp.where(take_ema, e - p, u), params, updates, ema)
    return updates, state._replace(count=count, ema=ema, weight=weight, took_ema=take_ema)

  return optax.GradientTransformation(init_fn, update_fn)


def _is_lookahead(x) -> bool:
  return isinstance(x, LookaheadState)


def init_state(tx: optax.GradientTransformation, params, batch_stats):
  """tx.init(params), its lookahead (if any) also holding a copy of BatchNorm's statistics to
  average as airbench's LookaheadState does. Every optimizer state of a run is made so."""
  return with_stats(tx.init(params), batch_stats)


def with_stats(opt_state, batch_stats):
  """`opt_state` whose lookahead (if any) holds a copy of `batch_stats` to average."""
  if not jax.tree.leaves(batch_stats):
    return opt_state
  return jax.tree.map(
      lambda x: x._replace(stats_ema=jax.tree.map(jnp.array, batch_stats))
      if _is_lookahead(x) else x, opt_state, is_leaf=_is_lookahead)


def average_stats(opt_state, batch_stats):
  """(opt_state, batch_stats) after the lookahead's last decision applied to the statistics:
  the EMA moves toward the new statistics where the weights' did, and the statistics take the
  EMA where the weights did. Unchanged (the same objects) without a lookahead holding them."""
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_lookahead)
           if _is_lookahead(x) and x.stats_ema is not None]
  if not found:
    return opt_state, batch_stats
  (state,) = found
  ema = jax.tree.map(lambda s, e: e + state.weight.astype(e.dtype) * (s - e),
                     batch_stats, state.stats_ema)
  stats = jax.tree.map(lambda s, e: jnp.where(state.took_ema, e, s), batch_stats, ema)
  new = state._replace(stats_ema=ema)
  return jax.tree.map(lambda x: new if x is state else x, opt_state, is_leaf=_is_lookahead), stats
