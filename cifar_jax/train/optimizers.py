"""Optimizers with Keras 3 update rules, step-based LR schedules and a host-settable LR.

optax's built-in optimizers do not reproduce Keras 3 exactly:

* Adam: Keras folds the bias corrections into the step size and adds epsilon to the
  *uncorrected* sqrt(v):  p -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps).
  optax.adam adds eps to sqrt(v/(1-b2^t)), i.e. an effective epsilon of
  eps*sqrt(1-b2^t) in Keras terms (31x smaller at t=1 for b2=0.999). AMSGrad: Keras
  keeps max(v) of the uncorrected v; optax the max of the bias-corrected v.
* SGD with momentum: Keras stores the velocity with the LR inside,
  m = mu*m - lr*g; p += m (nesterov: p += mu*m - lr*g). optax.sgd stores m = g + mu*m
  and applies -lr*m, so an LR change (ReduceLROnPlateau) rescales the whole velocity
  at once in optax, but only the new gradients in Keras.
* AdamW: Keras first decays every variable in place, p -= p*wd*lr, and then takes
  the Keras Adam step above (default wd=0.004, eps=1e-7).
* RMSprop: Keras uses p -= lr*g/sqrt(v + eps), with momentum buffer
  b = mu*b + lr*g/sqrt(v + eps). optax.rmsprop (eps_in_sqrt=True) has the same
  formula up to float rounding; only its default eps (1e-8) differs. We still use
  our own transform so that all four share the op order Keras uses.

The transforms below reproduce the Keras float32 op order, so parameters match
Keras to a few ulps (tests/test_optimizers_keras_parity.py).

The LR lives in an `optax.inject_hyperparams` state with two float32 scalars:
  'learning_rate': the schedule's value at the state's step count, i.e. the LR
                   (before scaling) that the next update will use. With the constant
                   schedule it is Keras' float32 `learning_rate` variable itself;
  'lr_scale':      a multiplier set from the host when a non-constant schedule runs
                   (ReduceLROnPlateau on top of a schedule, which Keras does not allow).
An update uses learning_rate * lr_scale. Both are plain arrays in the state, so
changing them needs no retrace and the state checkpoints as a plain pytree.

Beyond Keras, for the fast-CIFAR recipes (configs/fast/airbench94.py), with PyTorch's semantics:
'sgd_torch', `optim.param_groups`, `optim.lookahead` (fast_optim.py), and the 'triangular'
schedule and `optim.total_epochs` here.
"""

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cifar_jax.train import fast_optim

OPTIMIZERS = ('adam', 'sgd', 'rmsprop', 'adamw', 'sgd_torch')
SCHEDULES = ('constant', 'exponential_decay', 'step_decay', 'cosine', 'warmup_cosine',
             'one_cycle', 'triangular')


# ----------------------------------------------------------------------------------
# Keras 3 update rules as optax transforms. `lr` is a float32 scalar (may be traced).
# Each returns the update to *add* to the params (optax convention), computed with the
# exact expressions of keras/src/optimizers/*.py.
# ----------------------------------------------------------------------------------


class KerasSgdState(NamedTuple):
  momentum: optax.Params  # Keras velocity m = mu*m - lr*g (the LR is inside).


def keras_sgd(lr, momentum: float = 0.0, nesterov: bool = False
             ) -> optax.GradientTransformation:
  """keras.optimizers.SGD."""

  def init_fn(params):
    if momentum == 0:
      return optax.EmptyState()  # Keras creates no momentum variables either.
    return KerasSgdState(momentum=optax.tree.zeros_like(params))

  def update_fn(grads, state, params=None):
    del params
    if momentum == 0:
      return jax.tree.map(lambda g: -(g * lr), grads), state
    mu = jnp.float32(momentum)
    m = jax.tree.map(lambda m, g: m * mu - g * lr, state.momentum, grads)
    if nesterov:
      updates = jax.tree.map(lambda m, g: m * mu - g * lr, m, grads)
    else:
      updates = m
    return updates, KerasSgdState(momentum=m)

  return optax.GradientTransformation(init_fn, update_fn)


class KerasAdamState(NamedTuple):
  count: jax.Array      # Keras `iterations` (updates done), int32.
  m: optax.Params
  v: optax.Params
  v_hat: Any            # max of the uncorrected v (amsgrad), else None.


def keras_adam(lr, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
               amsgrad: bool = False, weight_decay: float = 0.0
               ) -> optax.GradientTransformation:
  """keras.optimizers.Adam; with weight_decay > 0, keras.optimizers.AdamW."""

  def init_fn(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return KerasAdamState(count=jnp.zeros([], jnp.int32), m=zeros(), v=zeros(),
                          v_hat=zeros() if amsgrad else None)

  def update_fn(grads, state, params=None):
    if weight_decay and params is None:
      raise ValueError('AdamW needs `params` in update().')
    t = (state.count + 1).astype(jnp.float32)
    b1_power = jnp.power(jnp.float32(beta_1), t)
    b2_power = jnp.power(jnp.float32(beta_2), t)
    alpha = lr * jnp.sqrt(1 - b2_power) / (1 - b1_power)
    m = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.m, grads)
    v = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state.v, grads)
    v_hat = jax.tree.map(jnp.maximum, state.v_hat, v) if amsgrad else None
    steps = jax.tree.map(lambda m, v: m * alpha / (jnp.sqrt(v) + epsilon), m,
                         v_hat if amsgrad else v)
    if weight_decay:
      # Keras assigns p - p*wd*lr first, then subtracts the step. Forming the delta
      # from that new value (instead of -(p*wd*lr) - step) keeps the result
      # bit-identical: new - p is exact when new and p are within 2x (Sterbenz).
      def delta(p, s):
        return (p - p * weight_decay * lr - s) - p
      updates = jax.tree.map(delta, params, steps)
    else:
      updates = jax.tree.map(jnp.negative, steps)
    return updates, KerasAdamState(count=optax.safe_increment(state.count), m=m, v=v,
                                   v_hat=v_hat)

  return optax.GradientTransformation(init_fn, update_fn)


class KerasRmspropState(NamedTuple):
  velocity: optax.Params
  momentum: Any  # mu*b + lr*g/sqrt(v+eps) when momentum > 0, else None.


def keras_rmsprop(lr, rho: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-7
                  ) -> optax.GradientTransformation:
  """keras.optimizers.RMSprop (centered=False)."""

  def init_fn(params):
    return KerasRmspropState(
        velocity=optax.tree.zeros_like(params),
        momentum=optax.tree.zeros_like(params) if momentum > 0 else None)

  def update_fn(grads, state, params=None):
    del params
    velocity = jax.tree.map(lambda v, g: rho * v + (1 - rho) * jnp.square(g),
                            state.velocity, grads)
    increment = jax.tree.map(lambda v, g: lr * g / jnp.sqrt(v + epsilon), velocity, grads)
    if momentum > 0:
      buf = jax.tree.map(lambda b, i: momentum * b + i, state.momentum, increment)
      return jax.tree.map(jnp.negative, buf), KerasRmspropState(velocity, buf)
    return jax.tree.map(jnp.negative, increment), KerasRmspropState(velocity, None)

  return optax.GradientTransformation(init_fn, update_fn)


def _update_rule(c) -> Callable[[jax.Array], optax.GradientTransformation]:
  """Maps config.optim to `lr -> Keras-exact transform`."""
  if c.name not in OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {c.name!r}; valid: {", ".join(OPTIMIZERS)}.')
  if c.weight_decay and c.name not in ('adamw', 'sgd_torch'):
    # Keras would apply decoupled decay here too; the configs reserve it for adamw and
    # express l2(λ) as a loss term, so a nonzero value elsewhere is a config mistake.
    raise ValueError(f'optim.weight_decay={c.weight_decay} is only used by adamw and sgd_torch '
                     f'(got {c.name!r}); use the model\'s L2 regularizer instead.')
  groups = fast_optim.check_param_groups(c.get('param_groups', ()))
  if c.name != 'sgd_torch' and any(g['weight_decay_multiplier'] != 1 for g in groups):
    raise ValueError('optim.param_groups: weight_decay_multiplier is only used by sgd_torch '
                     f'(got {c.name!r})')
  amsgrad = c.get('amsgrad', False)
  if c.name in ('adam', 'adamw'):
    wd = c.weight_decay if c.name == 'adamw' else 0.0
    return lambda lr: keras_adam(lr, c.beta_1, c.beta_2, c.epsilon, amsgrad, wd)
  if c.name == 'sgd':
    return lambda lr: keras_sgd(lr, c.momentum, c.nesterov)
  if c.name == 'sgd_torch':
    def decay(name):
      group = fast_optim.group_of(name, groups)
      return c.weight_decay * (group['weight_decay_multiplier'] if group else 1.0)
    return lambda lr: fast_optim.torch_sgd(lr, c.momentum, c.nesterov, decay)
  return lambda lr: keras_rmsprop(lr, c.rho, c.momentum, c.epsilon)


# ----------------------------------------------------------------------------------
# Schedules: functions of the number of updates done, like Keras schedules evaluated
# at `optimizer.iterations`.
# ----------------------------------------------------------------------------------


def _steps(epochs: float, steps_per_epoch: int) -> int:
  return int(round(epochs * steps_per_epoch))


def make_schedule(optim_config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """The config's LR schedule, in steps (epochs are converted with steps_per_epoch)."""
  s, lr = optim_config.schedule, optim_config.learning_rate
  if s.name not in SCHEDULES:
    raise ValueError(f'Unknown schedule {s.name!r}; valid: {", ".join(SCHEDULES)}.')
  if s.name == 'constant':
    return optax.constant_schedule(lr)
  if s.name in ('exponential_decay', 'step_decay'):
    # keras.optimizers.schedules.ExponentialDecay; step_decay is its staircase form.
    return optax.exponential_decay(
        lr, transition_steps=max(1, _steps(s.decay_epochs, steps_per_epoch)),
        decay_rate=s.decay_rate, staircase=s.staircase or s.name == 'step_decay')
  if total_steps <= 0:
    raise ValueError(f'Schedule {s.name!r} needs total_steps > 0, got {total_steps}.')
  if s.name == 'cosine':
    # keras CosineDecay(lr, decay_steps=total_steps, alpha).
    return optax.cosine_decay_schedule(lr, decay_steps=total_steps, alpha=s.alpha)
  if s.name == 'warmup_cosine':
    # keras CosineDecay(0.0, total_steps - warmup, alpha, warmup_target=lr, warmup).
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=_steps(s.warmup_epochs, steps_per_epoch),
        decay_steps=total_steps, end_value=s.alpha * lr)
  if s.name == 'triangular':
    # airbench94's get_lr: warmup = int(T * pct_start) steps from initial_fraction*lr to lr,
    # then linear to alpha*lr at step T (LambdaLR evaluates it at the updates done).
    warmup = int(total_steps * s.pct_start)
    start = s.get('initial_fraction', 0.0)

    def triangular(step):
      step = jnp.asarray(step, jnp.float32)
      up = start + (1.0 - start) * step / max(warmup, 1)
      down = 1.0 + (s.alpha - 1.0) * (step - warmup) / max(total_steps - warmup, 1)
      return lr * jnp.where(step < warmup, up, down)
    return triangular
  # one_cycle: no Keras equivalent; optax's (and PyTorch OneCycleLR's) cosine shape:
  # lr/25 -> lr at pct_start, then -> lr/(25*1e4) at total_steps.
  return optax.cosine_onecycle_schedule(total_steps, lr, pct_start=s.pct_start)


# ----------------------------------------------------------------------------------
# The optimizer and host-side LR access.
# ----------------------------------------------------------------------------------


def make_optimizer(optim_config, steps_per_epoch: int, total_steps: int
                   ) -> optax.GradientTransformation:
  """The config's optimizer with Keras 3 update rules and an injected, scalable LR, then the
  param groups' scaling and the lookahead where the config has them."""
  total_epochs = optim_config.get('total_epochs', 0.0) or 0.0
  if total_epochs:  # A fractional run length (airbench's 9.9 epochs): its ceil in steps.
    total_steps = math.ceil(total_epochs * steps_per_epoch)
  tx = _scheduled_rule(optim_config, steps_per_epoch, total_steps)
  extra = []
  groups = fast_optim.check_param_groups(optim_config.get('param_groups', ()))
  if groups:
    extra.append(fast_optim.param_group_scaling(groups, steps_per_epoch))
  lookahead = optim_config.get('lookahead', None)
  if lookahead is not None and lookahead.get('every', 0):
    extra.append(fast_optim.lookahead_ema(lookahead.every, lookahead.decay, lookahead.power,
                                          total_steps))
  # Without the extras the optimizer is the plain transform (same state, same checkpoints).
  return optax.chain(tx, *extra) if extra else tx


def _scheduled_rule(optim_config, steps_per_epoch: int, total_steps: int
                    ) -> optax.GradientTransformation:
  rule = _update_rule(optim_config)
  schedule = make_schedule(optim_config, steps_per_epoch, total_steps)

  # Exactly two parameters, so these are the only hyperparameters in the state.
  def scaled(learning_rate, lr_scale):
    return rule(learning_rate * lr_scale)

  inject = optax.inject_hyperparams(scaled, hyperparam_dtype=jnp.float32)  # Keras' dtype.
  if optim_config.schedule.name == 'constant':
    # Keras' own settable case: the LR is a plain float32 variable in the state, which
    # set_learning_rate assigns like `optimizer.learning_rate = lr`.
    return inject(learning_rate=optim_config.learning_rate, lr_scale=1.0)
  inner = inject(learning_rate=schedule, lr_scale=1.0)

  def update_fn(updates, state, params=None, **extra_args):
    updates, state = inner.update(updates, state, params, **extra_args)
    # inject_hyperparams records the value it just used; record the next one instead,
    # like Keras' `optimizer.learning_rate` (the schedule at `iterations`). Then the
    # state alone answers "what LR comes next", which is what Keras logs per epoch.
    hyperparams = dict(state.hyperparams,
                       learning_rate=jnp.asarray(schedule(state.count), jnp.float32))
    return updates, state._replace(hyperparams=hyperparams)

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


_InjectState = optax.InjectStatefulHyperparamsState


def _is_inject(x) -> bool:
  return isinstance(x, _InjectState)


def _inject_state(opt_state) -> _InjectState:
  """The state of make_optimizer's transform, also when nested (chain, multi_transform)."""
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_inject) if _is_inject(x)]
  if len(found) != 1:
    raise ValueError(f'Expected one make_optimizer state in opt_state, found {len(found)}.')
  return found[0]


def learning_rate(opt_state) -> float:
  """The LR the next update will use: schedule(step) * lr_scale, in float32.

  This is Keras' `float(optimizer.learning_rate)`, hence what ReduceLROnPlateau and
  TensorBoard log as `learning_rate` at the end of an epoch.
  """
  hp = _inject_state(opt_state).hyperparams
  return float(np.float32(hp['learning_rate']) * np.float32(hp['lr_scale']))


def _scale_for(lr: np.float32, base: np.float32) -> np.float32:
  """The float32 s for which float32(base * s) is closest to lr (usually equal).

  lr/base rounded to float32 can miss by an ulp after the multiply, so its neighbours
  are tried too. When s has the coarser relative spacing, some lr are out of reach and
  the result is 1 ulp off.
  """
  s = np.float32(float(lr) / float(base))
  candidates, up, down = [s], s, s
  for _ in range(2):
    up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
    candidates += [up, down]
  return min(candidates, key=lambda c: abs(float(base * c) - float(lr)))


def set_learning_rate(opt_state, lr: float, optim_config, step: int):
  """Makes the next update use float32(lr); returns the new state.

  With a constant schedule this assigns the float32 'learning_rate' exactly like Keras'
  `optimizer.learning_rate = lr`. With a schedule (where Keras refuses to set the LR) it
  sets 'lr_scale' so that schedule(step) * lr_scale == lr (to within 1 ulp) and the
  schedule keeps running, scaled. Only scalar arrays change, so a jitted step taking the
  state does not retrace.

  Args:
    opt_state: a state of make_optimizer's transform (possibly nested).
    lr: the new learning rate.
    optim_config: config.optim. Unused: the state itself records whether the LR is
      scheduled and the schedule's value at its step.
    step: the number of updates done, which must be the state's own count.
  """
  del optim_config
  state = _inject_state(opt_state)
  if int(state.count) != int(step):
    raise ValueError(f'step={step} but the optimizer state has done {int(state.count)} '
                     'updates; the LR can only be set for the next update.')
  target = np.float32(lr)
  if 'learning_rate' in state.hyperparams_states:  # Scheduled.
    base = np.float32(state.hyperparams['learning_rate'])
    if base == 0:
      raise ValueError(f'The schedule is 0 at step {step}; cannot scale it to {lr}.')
    changes = dict(lr_scale=_scale_for(target, base))
  else:
    changes = dict(learning_rate=target, lr_scale=np.float32(1))
  # Placed like the values they replace: a jitted step would recompile for a scalar that
  # lives elsewhere (an uncommitted array where the state's are committed to the device).
  changes = {k: jax.device_put(np.float32(v), getattr(state.hyperparams[k], 'sharding', None))
             for k, v in changes.items()}
  new = state._replace(hyperparams=dict(state.hyperparams, **changes))
  return jax.tree.map(lambda x: new if x is state else x, opt_state, is_leaf=_is_inject)
