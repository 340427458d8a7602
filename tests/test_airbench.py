"""airbench94 (configs/fast/airbench94.py) piece by piece, against the original's definitions:
the network and its parameter count, the patch whitening, PyTorch SGD with param groups, the
triangular schedule, the lookahead, the alternating flip, and a tiny run through launch.py.

The references below are airbench94.py's formulas (legacy/airbench94.py of
KellerJordan/cifar10-airbench) written out in NumPy, step by step.
"""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_jax.data import research_augment
from cifar_jax.models import airbench, create_model
from cifar_jax.models.summary import format_summary, summarize
from cifar_jax.train import fast_optim
from cifar_jax.train import optimizers
from cifar_jax.train.config_checks import check_config
from configs.fast import airbench94
from tests.conftest import REPO


def torch_param_count(widths=(64, 256, 256), channels=3, classes=10):
  """make_net()'s parameters in PyTorch: whitening conv (weight + bias), per ConvGroup two 3x3
  convs without bias and two BatchNorms (weight + bias), Linear without bias."""
  whiten = 2 * channels * 4
  count = whiten * channels * 4 + whiten
  bn_weights, c_in = 0, whiten
  for w in widths:
    count += c_in * w * 9 + w * w * 9 + 2 * (w + w)
    bn_weights += 2 * w
    c_in = w
  return count + widths[-1] * classes, bn_weights


def init_params(model=None, batch=2):
  model = model or airbench.Airbench()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((batch, 32, 32, 3)), train=False)
  return model, variables['params'], variables['batch_stats']


def test_parameter_count_is_the_originals():
  model = airbench.Airbench()
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3))))
  params, batch_stats = variables['params'], variables['batch_stats']
  total = sum(x.size for x in jax.tree.leaves(params))
  torch_total, bn_weights = torch_param_count()
  assert torch_total == 1_972_792 and bn_weights == 1_152
  # PyTorch's BatchNorm weights are frozen at 1: here BatchNorm has no scale at all.
  assert total == torch_total - bn_weights == 1_971_640
  trainable = sum(x.size for x, t in zip(jax.tree.leaves(params),
                                         jax.tree.leaves(model.trainable_mask(params))) if t)
  # requires_grad in airbench: everything but the whitening weight and the BN weights.
  assert trainable == torch_total - bn_weights - 288 == 1_971_352
  assert set(jax.tree.leaves(jax.tree.map(lambda x: x.shape, batch_stats['block3']['norm2']))
             ) == {256}


def test_summary_counts():
  config = airbench94.get_config()
  printed = format_summary(summarize(create_model(config.model), config.model.input_shape))
  # Params plus BatchNorm's 2 x 1,152 moving statistics; the frozen whitening kernel and the
  # statistics are the non-trainable ones.
  assert 'Total params: 1,973,944 (' in printed
  assert 'Trainable params: 1,971,352 (' in printed
  assert 'Non-trainable params: 2,592 (' in printed


def test_network_init_shapes_and_logits():
  model, params, _ = init_params()
  # dirac_: a block's second conv starts as the identity; the first conv's first filters too.
  identity = np.zeros((3, 3, 64, 64), np.float32)
  identity[1, 1, np.arange(64), np.arange(64)] = 1
  np.testing.assert_array_equal(params['block1']['conv2']['kernel'], identity)
  first = np.asarray(params['block2']['conv1']['kernel'])
  np.testing.assert_array_equal(first[:, :, :, :64], identity)
  assert np.abs(first[:, :, :, 64:]).max() <= 1 / math.sqrt(9 * 64)  # torch's default bound.
  assert 'scale' not in params['block1']['norm1']
  logits = model.apply({'params': params, 'batch_stats': init_params()[2]},
                       jnp.ones((2, 32, 32, 3)), train=False)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert create_model(airbench94.get_config().model).widths == (64, 256, 256)


def correlated_images(n=200, seed=0):
  """Images whose neighbouring pixels and channels are strongly correlated, like photos."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 33, 33, 1)) + 0.3 * rng.normal(size=(n, 33, 33, 3))
  x = x[:, 1:] + x[:, :-1]
  return (x[:, :, 1:] + x[:, :, :-1]).astype(np.float32)  # [n, 32, 32, 3]


def whitened_covariance(images, kernel):
  out = jax.lax.conv_general_dilated(jnp.asarray(images), jnp.asarray(kernel), (1, 1), 'VALID',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  flat = np.asarray(out, np.float64).reshape(-1, kernel.shape[-1])
  return flat.T @ flat / len(flat)


def test_whitening_makes_the_patch_covariance_the_identity():
  images = correlated_images()
  raw = airbench.patch_covariance(images)
  assert raw.shape == (12, 12) and np.abs(raw - np.diag(np.diag(raw))).max() > 0.5
  kernel = airbench.whitening_kernel(images, eps=0.0)
  assert kernel.shape == (2, 2, 3, 24)
  np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])  # The negated copies.
  cov = whitened_covariance(images, kernel)
  np.testing.assert_allclose(cov[:12, :12], np.eye(12), atol=2e-4)
  # airbench's eps 5e-4: covariance diag(l / (l + eps)), the filters in decreasing l.
  eigenvalues = np.sort(np.linalg.eigvalsh(raw))[::-1]
  cov = whitened_covariance(images, airbench.whitening_kernel(images))
  np.testing.assert_allclose(cov[:12, :12], np.diag(eigenvalues / (eigenvalues + 5e-4)),
                             atol=2e-4)


def test_data_dependent_init_sets_only_the_whitening_kernel():
  config = airbench94.get_config()
  _, params, batch_stats = init_params()
  uint8 = np.clip(correlated_images(60) * 30 + 128, 0, 255).astype(np.uint8)
  mean, std = uint8.reshape(-1, 3).mean(0), uint8.reshape(-1, 3).std(0)  # 'standardize'.
  normalise = lambda images: (images - mean) / std
  new, new_stats = airbench.apply_data_dependent_init(config, params, batch_stats, uint8,
                                                      normalise)
  expected = airbench.whitening_kernel((uint8 - mean) / std).reshape(12, 24)[:, :12]
  got = np.asarray(new['whiten']['kernel']).reshape(12, 24)[:, :12]
  # F F^T = (C + eps)^-1: the same whitening, whatever basis eigh picks in near-equal eigenvalues.
  np.testing.assert_allclose(got @ got.T, expected @ expected.T, rtol=1e-3, atol=1e-3)
  assert new_stats is batch_stats
  same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, new)
  assert not same['whiten']['kernel'] and all(
      v for k, v in jax.tree_util.tree_leaves_with_path(same) if 'whiten/kernel' not in
      fast_optim.path_name(k))
  # Other models are not touched.
  config.model.name = 'layer_stack'
  assert airbench.apply_data_dependent_init(config, params, batch_stats, uint8,
                                            normalise)[0] is params


def test_a_run_starts_from_the_whitened_kernel():
  """The setup a run (and the research API) starts from applies the data-dependent init, with
  the run's own normalisation, before the optimizer state (the lookahead's copy) is made."""
  from cifar_jax.train import create_train_state_from_config, setup  # pylint: disable=g-import-not-at-top
  config = airbench94.get_config()
  config.model.widths = (8, 16, 16)
  config.train.batch_size, config.train.steps_per_epoch = 16, 0
  uint8 = np.clip(correlated_images(64) * 30 + 128, 0, 255).astype(np.uint8)
  labels = np.arange(64, dtype=np.int32) % 10
  state, splits = create_train_state_from_config(config, setup.array_splits(uint8, labels))
  normalised = state.input_pipeline(None, jnp.asarray(splits.train.images), train=False)
  expected = airbench.whitening_kernel(np.asarray(normalised)).reshape(12, 24)[:, :12]
  got = np.asarray(state.params['whiten']['kernel']).reshape(12, 24)[:, :12]
  np.testing.assert_allclose(got @ got.T, expected @ expected.T, rtol=1e-3, atol=1e-3)
  # Every copy of the weights in the optimizer state is the whitened kernel, not the random one.
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
             if 'whiten' in fast_optim.path_name(path) and 'kernel' in fast_optim.path_name(path)
             and leaf.shape == state.params['whiten']['kernel'].shape]
  for kernel in kernels:
    if not np.allclose(kernel, 0):  # Momentum buffers start at zero.
      np.testing.assert_array_equal(kernel, state.params['whiten']['kernel'])


def test_the_whitening_kernel_is_not_trained():
  model, params, batch_stats = init_params()

  def loss(p):
    return model.apply({'params': p, 'batch_stats': batch_stats}, jnp.ones((2, 32, 32, 3)),
                       train=True, mutable=['batch_stats'])[0].sum()

  grads = jax.grad(loss)(params)
  assert not np.any(grads['whiten']['kernel']) and np.any(grads['whiten']['bias'])
  mask = model.trainable_mask(params)
  assert mask['whiten'] == {'kernel': False, 'bias': True} and mask['head']['kernel']


# --- Optimizer: PyTorch SGD with airbench's param groups, schedule and lookahead. ----------------

def airbench_get_lr(step, total):
  """airbench94.py's get_lr (the LambdaLR factor)."""
  warmup_steps = int(total * 0.23)
  warmdown_steps = total - warmup_steps
  if step < warmup_steps:
    frac = step / warmup_steps
    return 0.2 * (1 - frac) + 1.0 * frac
  frac = (step - warmup_steps) / warmdown_steps
  return 1.0 * (1 - frac) + 0.07 * frac


def test_triangular_schedule_is_airbenchs_get_lr():
  config = airbench94.get_config()
  schedule = optimizers.make_schedule(config.optim, 48, 476)
  got = np.asarray(jax.vmap(schedule)(jnp.arange(477)))
  want = 1.5 * np.asarray([airbench_get_lr(s, 476) for s in range(477)])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert int(476 * 0.23) == 109 and got[109] == pytest.approx(1.5)


def small_params():
  rng = np.random.default_rng(0)
  shapes = {'block1': {'conv1': {'kernel': (3, 3, 2, 4)}, 'norm1': {'bias': (4,)}},
            'head': {'kernel': (4, 10)}, 'whiten': {'bias': (3,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def grad_at(params, step):
  """A deterministic gradient that depends on the weights and the step (mild enough for the BN
  biases' 96 LR to stay stable, so float32 and float64 stay close)."""
  def grad(p):
    position = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)
    return 0.003 * p + 0.002 * jnp.sin(position + step)
  return jax.tree.map(grad, params)


def small_stats():
  """BatchNorm running statistics of the net of small_params."""
  return {'block1': {'norm1': {'mean': jnp.zeros(4), 'var': jnp.ones(4)}}}


def stats_update(stats, step):
  """A BatchNorm forward pass in train mode: running = 0.6 running + 0.4 batch's (airbench's
  momentum), the batch's moments a deterministic function of the step."""
  batch = lambda x: jnp.cos(jnp.arange(x.size, dtype=jnp.float32) + 3.0 * step) + 1.5
  return jax.tree.map(lambda x: 0.6 * x + 0.4 * batch(x), stats)


def torch_reference(params, total, steps_per_epoch, lookahead=True, stats=None):
  """airbench94.py's main() loop on `params` with `grad_at` as the (mean-loss) gradient:
  torch.optim.SGD with the two param groups, LambdaLR(get_lr), the whitening bias frozen from
  epoch 3, LookaheadState every 5 steps and at the end. float64. With `stats` (BatchNorm
  buffers, moved by `stats_update` each step), LookaheadState averages them as part of the
  state_dict too; returns (weights, statistics)."""
  lr, wd, mu, bias_scaler = 1.5, 0.0153 / 11.5, 0.85, 64.0
  named = lambda tree: {fast_optim.path_name(k): np.asarray(v, np.float64)
                        for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  p = named(params)
  s = named(stats) if stats is not None else {}
  ema = {k: v.copy() for k, v in {**p, **s}.items()}
  buf = {}
  alpha = 0.95 ** 5 * (np.arange(total + 1) / total) ** 3
  for step in range(total):
    as_tree = jax.tree_util.tree_unflatten(jax.tree.structure(params),
                                           [jnp.asarray(v, jnp.float32) for v in p.values()])
    grads = {fast_optim.path_name(k): np.asarray(g, np.float64) for k, g in
             jax.tree_util.tree_leaves_with_path(grad_at(as_tree, step))}
    for name in p:
      if name == 'whiten/bias' and step // steps_per_epoch >= 3:
        continue  # requires_grad = epoch < whiten_bias_epochs: no grad, SGD skips it.
      group_lr, group_wd = (lr * bias_scaler, wd / bias_scaler) if 'norm' in name else (lr, wd)
      g = grads[name] + group_wd * p[name]
      buf[name] = g if name not in buf else mu * buf[name] + g
      p[name] = p[name] - group_lr * airbench_get_lr(step, total) * (g + mu * buf[name])
    if stats is not None:
      as_stats = jax.tree_util.tree_unflatten(jax.tree.structure(stats),
                                              [jnp.asarray(v, jnp.float32) for v in s.values()])
      s = named(stats_update(as_stats, step))
    state_dict = {**p, **s}
    current = step + 1
    if lookahead and current % 5 == 0:
      for name in state_dict:
        ema[name] += (1 - alpha[current]) * (state_dict[name] - ema[name])
        state_dict[name] = ema[name].copy()
    if lookahead and current >= total:
      for name in state_dict:
        state_dict[name] = ema[name].copy()
    p, s = {k: state_dict[k] for k in p}, {k: state_dict[k] for k in s}
  return (p, s) if stats is not None else p


def airbench_optimizer(steps_per_epoch, total_epochs, lookahead=True):
  config = airbench94.get_config()
  config.optim.total_epochs = total_epochs
  if not lookahead:
    config.optim.lookahead.every = 0
  total = math.ceil(total_epochs * steps_per_epoch)
  return optimizers.make_optimizer(config.optim, steps_per_epoch, 10 * total), total


@pytest.mark.parametrize('lookahead', [True, False])
def test_optimizer_matches_airbench_step_by_step(lookahead):
  steps_per_epoch = 4
  tx, total = airbench_optimizer(steps_per_epoch, 5.9, lookahead)  # ceil(23.6) = 24 steps.
  assert total == 24
  params = small_params()
  state = tx.init(params)

  @jax.jit
  def step(params, state, i):
    updates, state = tx.update(grad_at(params, i), state, params)
    return optax.apply_updates(params, updates), state

  for i in range(total):
    params, state = step(params, state, i)
  want = torch_reference(small_params(), total, steps_per_epoch, lookahead)
  for path, got in jax.tree_util.tree_leaves_with_path(params):
    np.testing.assert_allclose(got, want[fast_optim.path_name(path)], rtol=2e-5, atol=2e-6,
                               err_msg=fast_optim.path_name(path))
  assert optimizers.learning_rate(state) == pytest.approx(1.5 * airbench_get_lr(total, total))


def test_lookahead_averages_batchnorm_statistics_as_airbench():
  """airbench's LookaheadState averages the whole state_dict: BatchNorm's running mean and
  variance follow the weights' EMA rule (every 5 steps, and taken at the end)."""
  steps_per_epoch = 4
  tx, total = airbench_optimizer(steps_per_epoch, 5.9)
  params, stats = small_params(), small_stats()
  opt_state = fast_optim.init_state(tx, params, stats)

  @jax.jit
  def step(params, stats, opt_state, i):  # What steps.train_step does after the gradient.
    updates, opt_state = tx.update(grad_at(params, i), opt_state, params)
    return (optax.apply_updates(params, updates),
            *fast_optim.average_stats(opt_state, stats_update(stats, i))[::-1])

  for i in range(total):
    params, stats, opt_state = step(params, stats, opt_state, i)
  want_params, want_stats = torch_reference(small_params(), total, steps_per_epoch,
                                            stats=small_stats())
  for tree, want in ((params, want_params), (stats, want_stats)):
    for path, got in jax.tree_util.tree_leaves_with_path(tree):
      np.testing.assert_allclose(got, want[fast_optim.path_name(path)], rtol=2e-5, atol=2e-6,
                                 err_msg=fast_optim.path_name(path))
  # The statistics differ from a run that leaves them out (they are what the test is about).
  plain = small_stats()
  for i in range(total):
    plain = stats_update(plain, i)
  assert not np.allclose(plain['block1']['norm1']['mean'], stats['block1']['norm1']['mean'])


def test_the_train_step_averages_batchnorm_statistics_with_the_weights():
  """Through steps.train_step (the tiny BatchNorm net with a lookahead every 5 steps): at a
  lookahead step the statistics become the lookahead's EMA of them, between two they move by
  BatchNorm's own update only."""
  from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config, tiny_state  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.optim.lookahead.every = 5
  config.train.epochs = 50  # The lookahead's last step (T, where it is taken too) far away.
  state, images, labels = tiny_state(config)
  batch = {'image': jnp.asarray(images[:8]), 'label': jnp.asarray(labels[:8]),
           'index': jnp.arange(8), 'epoch': jnp.zeros(8, jnp.int32)}
  train_step = jax.jit(steps.train_step)
  is_lookahead = lambda x: isinstance(x, fast_optim.LookaheadState)
  lookahead = lambda s: [x for x in jax.tree.leaves(s.opt_state, is_leaf=is_lookahead)
                         if is_lookahead(x)][0]
  ema = lambda s: jax.tree.leaves(lookahead(s).stats_ema)
  for count in range(1, 6):
    before = state
    state, _ = train_step(state, batch)
    assert int(lookahead(state).count) == count and bool(lookahead(state).took_ema) == (count == 5)
    for got, saved, old in zip(jax.tree.leaves(state.batch_stats), ema(state), ema(before)):
      if count < 5:  # The EMA waits; the statistics are BatchNorm's.
        np.testing.assert_array_equal(saved, old)
        assert not np.allclose(got, saved)
      else:  # Averaged, then taken: the weights' rule.
        np.testing.assert_array_equal(got, saved)
        assert not np.allclose(saved, old)


def test_param_groups_scale_lr_and_decay_per_group():
  config = airbench94.get_config().optim
  groups = fast_optim.check_param_groups(config.param_groups)
  assert fast_optim.group_of('block2/norm1/bias', groups)['lr_multiplier'] == 64
  assert fast_optim.group_of('whiten/bias', groups)['train_epochs'] == 3
  assert fast_optim.group_of('block2/conv1/kernel', groups) is None
  assert fast_optim.group_of('head/kernel', groups) is None
  # One plain SGD step from zero momentum: update = -lr * mult * (1 + mu) * (g + wd * mult_wd * p).
  tx = optimizers.make_optimizer(config, 48, 476)
  params = small_params()
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr0, wd = 1.5 * 0.2, 0.0153 / 11.5
  for name, mult, wd_mult in (('block1/norm1/bias', 64, 1 / 64), ('head/kernel', 1, 1),
                              ('whiten/bias', 1, 1)):
    path = name.split('/')
    p, u = params, updates
    for key in path:
      p, u = p[key], u[key]
    np.testing.assert_allclose(u, -lr0 * mult * 1.85 * (1 + wd * wd_mult * p), rtol=1e-5)
  with pytest.raises(ValueError, match=r'param_groups\[0\].*unknown'):
    fast_optim.check_param_groups([dict(match='x', lr=2)])
  with pytest.raises(ValueError, match='weight_decay_multiplier is only used by sgd_torch'):
    config2 = airbench94.get_config().optim
    config2.name, config2.weight_decay = 'sgd', 0.0
    optimizers.make_optimizer(config2, 48, 476)


def test_lookahead_decay_is_airbenchs_alpha_schedule():
  total = 476
  alpha = 0.95 ** 5 * (np.arange(total + 1) / total) ** 3
  for t in (5, 10, 235, 475):
    assert float(fast_optim.lookahead_decay(t, 5, 0.95, 3.0, total)) == pytest.approx(
        alpha[t], rel=1e-6)
  assert float(fast_optim.lookahead_decay(7, 5, 0.95, 3.0, total)) == 0.0


# --- Augmentation. -------------------------------------------------------------------------------

def test_alternating_flip_flips_each_example_on_alternate_epochs():
  key = jax.random.PRNGKey(3)
  index = jnp.arange(2000)
  masks = np.stack([np.asarray(research_augment.alternating_flip_mask(key, index, e))
                    for e in range(4)])
  assert np.all(masks[1] == ~masks[0]) and np.all(masks[2] == masks[0])
  assert np.all(masks[3] == masks[1])
  assert 0.45 < masks[0].mean() < 0.55  # airbench's random pre-flip, p = 1/2.
  # An example's orientation depends on its index only, not on its place in the batch.
  shuffled = np.asarray(research_augment.alternating_flip_mask(key, index[::-1], 0))
  np.testing.assert_array_equal(shuffled, masks[0][::-1])
  images = jax.random.normal(key, (4, 8, 8, 3))
  out = research_augment.alternating_flip(images, key, jnp.arange(4), 1)
  flipped = np.asarray(research_augment.alternating_flip_mask(key, jnp.arange(4), 1))
  for i in range(4):
    want = images[i, :, ::-1] if flipped[i] else images[i]
    np.testing.assert_array_equal(out[i], want)


def test_tta_is_airbenchs_level_2():
  """infer_mirror_translate: 0.5 * mirror(x) + 0.5 * mean(mirror(pad[0:32]), mirror(pad[2:34]))
  with pad = reflect-padding by 1."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 1))
  net = lambda v: v.reshape(v.shape[0], -1)[:, :5] * jnp.arange(1.0, 6.0)  # Position-aware.
  mirror = lambda v: 0.5 * net(v) + 0.5 * net(v[:, :, ::-1])
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  want = 0.5 * mirror(x) + 0.5 * (mirror(padded[:, 0:6, 0:6]) + mirror(padded[:, 2:8, 2:8])) / 2
  got = research_augment.tta_logits(net, x, airbench94.get_config().augment.tta)
  np.testing.assert_allclose(got, want, rtol=1e-6)


# --- The config, and a tiny run. ------------------------------------------------------------------

def test_config_is_airbench94():
  c = airbench94.get_config()
  check_config(c)
  assert c.train.max_steps == 476 == math.ceil(48 * 9.9)
  assert c.train.epochs == 10 and c.train.steps_per_epoch == 48 and c.train.batch_size == 1024
  assert c.optim.learning_rate == pytest.approx(11.5 * 1024 / (1024 * (1 + 1 / 0.15)))
  assert c.loss.label_smoothing == 0.2 and c.augment.tta == 'flip_translate'
  assert 'python launch.py --config=configs/fast/airbench94.py' in airbench94.__doc__
  assert '94.01' in airbench94.__doc__


def test_tiny_run_through_launch(synthetic_dir, tmp_path):
  workdir = tmp_path / 'run'
  batch = 32
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/fast/airbench94.py',
       f'--workdir={workdir}', f'--config.data.dir={synthetic_dir}',
       '--config.data.num_train_examples=256', '--config.data.num_test_examples=64',
       f'--config.train.batch_size={batch}', '--config.train.steps_per_epoch=4',
       '--config.train.epochs=2', '--config.train.max_steps=7', '--config.optim.total_epochs=1.9',
       f'--config.optim.learning_rate={1.5 * batch / 1024}',  # airbench's LR for this batch.
       '--config.train.eval_batch_size=32', '--config.model.widths=(8, 16, 16)',
       '--config.log.verbosity=2'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['num_test'] == 64 and 0.0 <= results['test_accuracy'] <= 1.0
  history = json.loads((workdir / 'history.json').read_text())
  # 7 steps of 4 per epoch: one whole epoch in the history, then max_steps ends the run (as
  # airbench's 476 steps end in the 10th epoch) and the test split is evaluated, with TTA.
  assert len(history) == 1 and np.isfinite(history[0]['loss'])
  assert history[0]['learning_rate'] == pytest.approx(
      1.5 * batch / 1024 * airbench_get_lr(4, math.ceil(1.9 * 4)), rel=1e-5)


def test_the_train_step_applies_the_alternating_flip_of_each_examples_index_and_epoch():
  """With augment.alternating_flip the step mirrors exactly the examples the per-run draw and
  the epoch say, before the rest of the pipeline, and `epoch_batch` gives it what it needs."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
  from cifar_jax.train.state import FLIP_STREAM  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config, tiny_state  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.augment.alternating_flip = True
  state, images, labels = tiny_state(config)
  assert state.input_pipeline.alternating_flip
  order = jnp.arange(32)[::-1]
  for step in (0, 4):  # Epochs 0 and 1 (4 steps of 8 an epoch).
    batch = steps.epoch_batch(jnp.int32(step), jnp.asarray(images), jnp.asarray(labels), order,
                              batch_size=8, full_batch_size=8, steps_per_epoch=4)
    np.testing.assert_array_equal(batch['index'], np.arange(32)[::-1][:8])
    np.testing.assert_array_equal(batch['epoch'], np.full(8, step // 4))
    mask = research_augment.alternating_flip_mask(
        jax.random.fold_in(state.rng, FLIP_STREAM), batch['index'], batch['epoch'])
    if step == 0:
      first = np.asarray(mask)
      assert 0 < first.sum() < 8
    else:
      np.testing.assert_array_equal(np.asarray(mask), ~first)  # Every example turns over.
    flipped = jnp.where(mask[:, None, None, None], batch['image'][:, :, ::-1], batch['image'])
    plain = state.replace(input_pipeline=dataclasses.replace(state.input_pipeline,
                                                            alternating_flip=False))
    got, _ = jax.jit(steps.train_step)(state, batch)
    want, _ = jax.jit(steps.train_step)(plain, {'image': flipped, 'label': batch['label']})
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
      np.testing.assert_array_equal(a, b)
