"""Parity of cifar_jax.train.optimizers with real Keras 3 (jax backend) optimizers and schedules."""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from cifar_jax.train import optimizers as opt_lib  # noqa: E402
from configs import base  # noqa: E402

NUM_STEPS = 20
# A conv kernel, a bias, a dense kernel and a scalar. The second-to-last gets tiny
# gradients, so that sqrt(v) ~ epsilon and the epsilon placement is tested too.
SHAPES_AND_GRAD_SCALES = [((3, 3, 2, 4), 1.0), ((4,), 0.1), ((5, 3), 1e-6), ((), 3.0)]
RTOL, ATOL = 1e-6, 1e-7


def optim_config(**overrides):
  c = base.get_config().optim
  with c.unlocked():  # `amsgrad` is not a base field.
    for k, v in overrides.items():
      if isinstance(v, dict):
        c.schedule.update(v)
      else:
        c[k] = v
  return c


def keras_optimizer(c, learning_rate=None):
  """The Keras optimizer a config stands for (the mapping the module documents)."""
  lr = c.learning_rate if learning_rate is None else learning_rate
  if c.name == 'sgd':
    return keras.optimizers.SGD(lr, momentum=c.momentum, nesterov=c.nesterov)
  if c.name == 'rmsprop':
    return keras.optimizers.RMSprop(lr, rho=c.rho, momentum=c.momentum, epsilon=c.epsilon)
  kwargs = dict(beta_1=c.beta_1, beta_2=c.beta_2, epsilon=c.epsilon,
                amsgrad=c.get('amsgrad', False))
  if c.name == 'adamw':
    return keras.optimizers.AdamW(lr, weight_decay=c.weight_decay, **kwargs)
  return keras.optimizers.Adam(lr, **kwargs)


def problem(seed=0):
  rng = np.random.default_rng(seed)
  params = [rng.normal(size=s).astype(np.float32) for s, _ in SHAPES_AND_GRAD_SCALES]
  grads = [[(scale * rng.normal(size=s)).astype(np.float32) for s, scale in SHAPES_AND_GRAD_SCALES]
           for _ in range(NUM_STEPS)]
  return params, grads


def keras_lr(opt):
  """float(opt.learning_rate) as ReduceLROnPlateau reads it (a Variable, or a schedule's value)."""
  lr = opt.learning_rate
  return float(np.asarray(getattr(lr, 'value', lr)))


def run_keras(opt, params, grads, new_lr=None, jit=True):
  """Params and `float(opt.learning_rate)` after each step.

  jit=True runs `stateless_apply` under jax.jit, as Keras' jax trainer does in fit();
  jit=False runs `apply_gradients` op by op.
  new_lr: {step: fn(old_lr) -> lr}, applied before that step the way ReduceLROnPlateau does.
  """
  variables = [keras.Variable(p) for p in params]
  opt.build(variables)
  stateless_apply = jax.jit(opt.stateless_apply)
  history, lrs = [], []
  for i, g in enumerate(grads):
    if new_lr and i in new_lr:
      opt.learning_rate = new_lr[i](keras_lr(opt))
    g = [jnp.asarray(x) for x in g]
    if jit:
      new_vars, new_opt_vars = stateless_apply([v.value for v in opt.variables], g,
                                               [v.value for v in variables])
      for v, x in zip(variables + opt.variables, new_vars + new_opt_vars):
        v.assign(x)
    else:
      opt.apply_gradients(zip(g, variables))
    history.append([np.asarray(v.value) for v in variables])
    lrs.append(keras_lr(opt))
  return history, lrs


def optax_step(tx, jit=True):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1)) if jit else step


def run_ours(config, params, grads, new_lr=None, jit=True, total_steps=NUM_STEPS,
             steps_per_epoch=5):
  tx = opt_lib.make_optimizer(config, steps_per_epoch, total_steps)
  step = optax_step(tx, jit)
  params = [jnp.asarray(p) for p in params]
  state = tx.init(params)
  history, lrs = [], []
  for i, g in enumerate(grads):
    if new_lr and i in new_lr:
      state = opt_lib.set_learning_rate(state, new_lr[i](opt_lib.learning_rate(state)), config, i)
    params, state = step(params, state, [jnp.asarray(x) for x in g])
    history.append([np.asarray(p) for p in params])
    lrs.append(opt_lib.learning_rate(state))
  return history, lrs


def assert_same_trajectory(ours, theirs):
  for i, (a, b) in enumerate(zip(ours, theirs)):
    for j, (x, y) in enumerate(zip(a, b)):
      np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=f'step {i}, param {j}')


CASES = {
    'sgd': dict(name='sgd', learning_rate=0.01),
    'sgd_momentum': dict(name='sgd', learning_rate=0.01, momentum=0.9),
    'sgd_nesterov': dict(name='sgd', learning_rate=0.05, momentum=0.9, nesterov=True),
    'adam_default': dict(name='adam'),
    'adam_lr0.01': dict(name='adam', learning_rate=0.01, epsilon=1e-7),
    'adam_betas_eps': dict(name='adam', learning_rate=0.003, beta_1=0.8, beta_2=0.99,
                           epsilon=1e-5),
    'adam_amsgrad': dict(name='adam', learning_rate=0.01, amsgrad=True),
    'rmsprop_default': dict(name='rmsprop'),
    'rmsprop_momentum': dict(name='rmsprop', learning_rate=0.01, rho=0.8, momentum=0.9,
                             epsilon=1e-6),
    'adamw_default_wd': dict(name='adamw', weight_decay=0.004),
    'adamw_strong': dict(name='adamw', learning_rate=0.01, weight_decay=0.1, beta_2=0.99),
}


# Like is compared with like: under jit, XLA fuses a*b - c*d into an FMA, so a jitted
# update and an op-by-op one differ by float32 rounding (up to ~1e-6 relative after 20
# steps). Both pairings below agree to the last bit in practice.
@pytest.mark.parametrize('jit', [True, False], ids=['jit', 'eager'])
@pytest.mark.parametrize('case', list(CASES))
def test_matches_keras_every_step(case, jit):
  c = optim_config(**CASES[case])
  params, grads = problem()
  theirs, their_lrs = run_keras(keras_optimizer(c), params, grads, jit=jit)
  ours, our_lrs = run_ours(c, params, grads, jit=jit)
  assert_same_trajectory(ours, theirs)
  assert our_lrs == their_lrs  # Same float32 value, as Keras would log it.


REDUCE = {7: lambda lr: lr * 0.1, 14: lambda lr: max(lr * 0.1, 1e-5)}  # ReduceLROnPlateau.


@pytest.mark.parametrize('case', ['sgd_momentum', 'sgd_nesterov', 'adam_default', 'adamw_strong'])
def test_lr_change_mid_run_matches_keras(case):
  c = optim_config(**CASES[case])
  params, grads = problem(seed=1)
  theirs, their_lrs = run_keras(keras_optimizer(c), params, grads, REDUCE)
  ours, our_lrs = run_ours(c, params, grads, REDUCE)
  assert_same_trajectory(ours, theirs)
  assert our_lrs == their_lrs
  assert their_lrs[-1] < their_lrs[0]  # The change did happen.


def run_optax(tx, params, grads, new_lr=None):
  state = tx.init([jnp.asarray(p) for p in params])
  params, history = [jnp.asarray(p) for p in params], []
  step = optax_step(tx)
  for i, g in enumerate(grads):
    if new_lr and i in new_lr:
      state.hyperparams['learning_rate'] = jnp.float32(
          new_lr[i](float(state.hyperparams['learning_rate'])))
    params, state = step(params, state, [jnp.asarray(x) for x in g])
    history.append([np.asarray(p) for p in params])
  return history


def max_rel_diff(ours, theirs):
  return max(float(np.max(np.abs(x - y) / (np.abs(y) + ATOL / RTOL)))
             for x, y in zip(ours, theirs))


def test_plain_optax_sgd_diverges_from_keras_after_lr_change():
  """Negative control: optax.sgd keeps lr outside its velocity, so the check above can fail."""
  c = optim_config(**CASES['sgd_momentum'])
  params, grads = problem(seed=1)
  theirs, _ = run_keras(keras_optimizer(c), params, grads, REDUCE)
  plain = optax.inject_hyperparams(optax.sgd)(learning_rate=c.learning_rate, momentum=0.9)
  ours = run_optax(plain, params, grads, REDUCE)
  change = min(REDUCE)
  assert_same_trajectory(ours[:change], theirs[:change])  # Equal while the LR is constant,
  assert max_rel_diff(ours[change], theirs[change]) > 1e-3  # not after it changes.


def test_plain_optax_adam_differs_from_keras():
  """Negative control: optax.adam's epsilon (added after bias correction) is not Keras'."""
  c = optim_config(**CASES['adam_default'])
  params, grads = problem()
  theirs, _ = run_keras(keras_optimizer(c), params, grads)
  ours = run_optax(optax.adam(c.learning_rate, eps=c.epsilon), params, grads)
  assert max_rel_diff(ours[0], theirs[0]) > 1e-3  # The tiny-gradient parameter.


@pytest.mark.parametrize('case, schedule, keras_schedule', [
    ('sgd_momentum', dict(name='exponential_decay', decay_rate=0.5, decay_epochs=1.0),
     lambda lr: keras.optimizers.schedules.ExponentialDecay(lr, 5, 0.5)),
    ('adam_default', dict(name='warmup_cosine', warmup_epochs=1.0, alpha=0.1),
     lambda lr: keras.optimizers.schedules.CosineDecay(0.0, NUM_STEPS - 5, 0.1,
                                                       warmup_target=lr, warmup_steps=5)),
])
def test_scheduled_training_matches_keras(case, schedule, keras_schedule):
  """Keras evaluates the schedule at `iterations` (updates done); so do we."""
  c = optim_config(**CASES[case], schedule=schedule)
  params, grads = problem()
  theirs, their_lrs = run_keras(keras_optimizer(c, keras_schedule(c.learning_rate)), params,
                                grads)
  ours, our_lrs = run_ours(c, params, grads, total_steps=NUM_STEPS, steps_per_epoch=5)
  assert_same_trajectory(ours, theirs)
  np.testing.assert_allclose(our_lrs, their_lrs, rtol=RTOL)


@pytest.mark.parametrize('schedule', ['constant', 'exponential_decay'])
def test_lr_change_does_not_retrace_and_state_is_float32(schedule):
  c = optim_config(**CASES['adam_default'], schedule=dict(name=schedule))
  tx = opt_lib.make_optimizer(c, steps_per_epoch=5, total_steps=NUM_STEPS)
  traces = []

  def step(params, state, grads):
    traces.append(None)  # Runs only while tracing.
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step, donate_argnums=(0, 1))
  params, grads = problem()
  params = [jnp.asarray(p) for p in params]
  state = tx.init(params)
  for i, g in enumerate(grads[:6]):
    state = opt_lib.set_learning_rate(state, 1e-3 / (i + 1), c, i)
    # Exact for the constant schedule; within 1 ulp when scaling a schedule.
    assert opt_lib.learning_rate(state) == pytest.approx(1e-3 / (i + 1), rel=2e-7)
    params, state = step(params, state, [jnp.asarray(x) for x in g])
  assert len(traces) == 1
  for name in ('learning_rate', 'lr_scale'):
    assert state.hyperparams[name].dtype == jnp.float32
  assert set(state.hyperparams) == {'learning_rate', 'lr_scale'}


def test_state_is_a_plain_pytree_that_checkpoints(tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  c = optim_config(name='adam')
  tx = opt_lib.make_optimizer(c, steps_per_epoch=5, total_steps=NUM_STEPS)
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
  state = tx.init(params)
  _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  state = opt_lib.set_learning_rate(state, 1e-4, c, 1)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / 'ckpt', state)
    ckptr.wait_until_finished()
    restored = ckptr.restore(tmp_path / 'ckpt',
                             jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  assert opt_lib.learning_rate(restored) == float(np.float32(1e-4))


def test_lr_scale_for_a_schedule_is_within_one_ulp():
  """schedule * lr_scale lands on float32(lr), or 1 ulp off where that is out of reach."""
  rng = np.random.default_rng(0)
  exact = 0
  for base_lr, lr in zip(10 ** rng.uniform(-5, -1, 300), 10 ** rng.uniform(-7, -1, 300)):
    base_lr, lr = np.float32(base_lr), np.float32(lr)
    got = base_lr * opt_lib._scale_for(lr, base_lr)
    assert abs(got - lr) <= np.spacing(lr)
    exact += bool(got == lr)
  assert exact >= 240


def test_set_learning_rate_scales_a_schedule():
  c = optim_config(name='sgd', learning_rate=0.1,
                   schedule=dict(name='exponential_decay', decay_rate=0.5, decay_epochs=1.0))
  tx = opt_lib.make_optimizer(c, steps_per_epoch=4, total_steps=40)
  schedule = opt_lib.make_schedule(c, steps_per_epoch=4, total_steps=40)
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  for _ in range(3):
    _, state = tx.update({'w': jnp.ones(3)}, state, params)
  assert opt_lib.learning_rate(state) == pytest.approx(float(schedule(3)), rel=1e-6)
  state = opt_lib.set_learning_rate(state, 0.01, c, 3)
  assert opt_lib.learning_rate(state) == float(np.float32(0.01))
  for _ in range(5):
    _, state = tx.update({'w': jnp.ones(3)}, state, params)
  # The schedule keeps decaying, scaled.
  expected = 0.01 * float(schedule(8)) / float(schedule(3))
  assert opt_lib.learning_rate(state) == pytest.approx(expected, rel=1e-6)
  with pytest.raises(ValueError, match='updates'):
    opt_lib.set_learning_rate(state, 0.01, c, 3)


def test_nested_state_is_found():
  c = optim_config(name='adam')
  tx = optax.chain(optax.clip(1.0), opt_lib.make_optimizer(c, 5, NUM_STEPS))
  state = tx.init({'w': jnp.ones(3)})
  state = opt_lib.set_learning_rate(state, 5e-4, c, 0)
  assert opt_lib.learning_rate(state) == float(np.float32(5e-4))


# ----------------------------------------------------------------------------------
# Schedule values.
# ----------------------------------------------------------------------------------

STEPS_PER_EPOCH, TOTAL = 10, 100
PROBE = [0, 1, 9, 10, 11, 29, 30, 50, 77, 99, 100, 130]


def schedule_values(**schedule):
  c = optim_config(learning_rate=0.1, schedule=schedule)
  fn = opt_lib.make_schedule(c, STEPS_PER_EPOCH, TOTAL)
  return np.array([fn(s) for s in PROBE], np.float64)


def keras_values(keras_schedule):
  return np.array([float(keras_schedule(s)) for s in PROBE])


@pytest.mark.parametrize('staircase', [False, True])
def test_exponential_decay_matches_keras(staircase):
  ours = schedule_values(name='exponential_decay', decay_rate=0.7, decay_epochs=2.0,
                         staircase=staircase)
  theirs = keras_values(keras.optimizers.schedules.ExponentialDecay(
      0.1, decay_steps=2 * STEPS_PER_EPOCH, decay_rate=0.7, staircase=staircase))
  np.testing.assert_allclose(ours, theirs, rtol=RTOL)


def test_step_decay_is_staircase_exponential_decay():
  ours = schedule_values(name='step_decay', decay_rate=0.1, decay_epochs=3.0)
  theirs = keras_values(keras.optimizers.schedules.ExponentialDecay(
      0.1, decay_steps=3 * STEPS_PER_EPOCH, decay_rate=0.1, staircase=True))
  np.testing.assert_allclose(ours, theirs, rtol=RTOL)
  np.testing.assert_allclose(ours[:7], [0.1] * 6 + [0.01], rtol=RTOL)  # Steps 0..29, 30.


def test_cosine_matches_keras():
  ours = schedule_values(name='cosine', alpha=0.05)
  theirs = keras_values(keras.optimizers.schedules.CosineDecay(0.1, TOTAL, alpha=0.05))
  np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-9)


def test_warmup_cosine_matches_keras():
  ours = schedule_values(name='warmup_cosine', warmup_epochs=3.0, alpha=0.0)
  warmup = 3 * STEPS_PER_EPOCH
  theirs = keras_values(keras.optimizers.schedules.CosineDecay(
      0.0, TOTAL - warmup, alpha=0.0, warmup_target=0.1, warmup_steps=warmup))
  np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-9)


def test_one_cycle_formula():
  ours = dict(zip(PROBE, schedule_values(name='one_cycle', pct_start=0.3)))
  start, peak, end = 0.1 / 25, 0.1, 0.1 / 25 / 1e4
  cos_interp = lambda a, b, frac: b + (a - b) * (1 + np.cos(np.pi * frac)) / 2
  np.testing.assert_allclose(ours[0], start, rtol=RTOL)
  np.testing.assert_allclose(ours[11], cos_interp(start, peak, 11 / 30), rtol=RTOL)
  np.testing.assert_allclose(ours[30], peak, rtol=RTOL)
  np.testing.assert_allclose(ours[77], cos_interp(peak, end, 47 / 70), rtol=RTOL)
  np.testing.assert_allclose(ours[100], end, rtol=RTOL)


def test_constant_schedule():
  np.testing.assert_allclose(schedule_values(name='constant'), 0.1, rtol=RTOL)


@pytest.mark.parametrize('overrides, match', [
    (dict(name='adagrad'), 'adam, sgd, rmsprop, adamw'),
    (dict(schedule=dict(name='linear')), 'constant, exponential_decay, step_decay'),
    (dict(name='adam', weight_decay=1e-4), 'adamw'),
])
def test_bad_config_raises(overrides, match):
  with pytest.raises(ValueError, match=match):
    opt_lib.make_optimizer(optim_config(**overrides), 10, 100)
