"""cifar_jax.models.conv computes what lax.conv_general_dilated computes, gradients included.

The forward pass must be identical (it is XLA's convolution); the input gradient is XLA's too;
the weight gradient (a convolution with explicit transposes, or matmuls, on CPU) must match XLA's to float32 rounding, for every kind of
convolution the configs build: kernels 1, 3, 4, 5, 6, 7; strides 1 and 2; 'SAME' (asymmetric
for even kernels), 'VALID' and explicit padding; odd sizes; batch 1. Programs lowered for other
platforms must keep XLA's gradient, op for op.
"""

import os
import re

import jax
from jax import export
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_jax.models import conv
import cifar_jax.models
from configs.redes import m1
from tests import tiny_config

CHANNELS_LAST = ('NHWC', 'HWIO', 'NHWC')

# (batch, height, width, in channels, out channels, kernel, strides, padding).
CASES = {
    '1x1': (2, 9, 9, 3, 5, 1, 1, 'VALID'),  # DenseNet's bottlenecks: a single matmul.
    '1x1_stride2_same': (2, 8, 8, 4, 5, 1, 2, 'SAME'),
    '3x3_same': (2, 10, 10, 3, 5, 3, 1, 'SAME'),
    '3x3_stride2_same_odd': (2, 11, 9, 4, 5, 3, 2, 'SAME'),
    '3x3_valid_batch1': (1, 9, 9, 4, 6, 3, 1, 'VALID'),
    '3x3_batch_chunks': (8, 32, 32, 4, 8, 3, 1, 'SAME'),  # 8192 rows: two 4096-row chunks.
    '4x4_valid': (2, 8, 8, 6, 4, 4, 1, 'VALID'),
    '5x5_same': (2, 9, 9, 3, 4, 5, 1, 'SAME'),
    '6x6_same_32px': (2, 32, 32, 3, 4, 6, 1, 'SAME'),  # Pads (2, 3): redes' convs.
    '6x6_stride2_same_odd': (1, 13, 13, 3, 4, 6, 2, 'SAME'),
    '7x7_stride2_valid': (2, 22, 22, 3, 8, 7, 2, 'VALID'),  # DenseNet's stem (after padding).
    '7x7_stride2_explicit': (2, 10, 10, 4, 5, 7, 2, ((3, 3), (3, 3))),
    'asymmetric': (2, 9, 10, 4, 5, (3, 2), (2, 1), ((2, 0), (1, -1))),
}


def _pair(value):
  return (value, value) if isinstance(value, int) else tuple(value)


def _operands(case, dtype=jnp.float32, seed=0):
  """(x, w, dy, strides, padding) for a case, dy shaped like the convolution's output."""
  n, h, w, cin, cout, kernel, strides, padding = case
  strides = _pair(strides)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((n, h, w, cin)), dtype)
  kernel = jnp.asarray(rng.standard_normal((*_pair(kernel), cin, cout)), dtype)
  out = jax.eval_shape(lambda: lax.conv_general_dilated(x, kernel, strides, padding,
                                                        dimension_numbers=CHANNELS_LAST))
  dy = jnp.asarray(rng.standard_normal(out.shape), dtype)
  return x, kernel, dy, strides, padding


def _forward_and_grads(conv_fn, x, w, dy, strides, padding):
  def f(x, w):
    return conv_fn(x, w, strides, padding, dimension_numbers=CHANNELS_LAST)
  y, vjp = jax.vjp(f, x, w)
  return (y, *vjp(dy))


@pytest.fixture(params=['conv', 'matmul'])
def custom_mode(request, monkeypatch):
  """Each CPU weight-gradient form wherever it applies, whatever 'auto' would pick."""
  monkeypatch.setenv(conv.ENV_VAR, request.param)
  return request.param


@pytest.fixture
def matmul_mode(monkeypatch):
  monkeypatch.setenv(conv.ENV_VAR, 'matmul')


def _assert_close(actual, expected, rtol):
  expected = np.asarray(expected, np.float32)
  np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=rtol,
                             atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize('case', CASES.values(), ids=CASES.keys())
def test_forward_and_gradients_match_xla(case, custom_mode):
  x, w, dy, strides, padding = _operands(case)

  @jax.jit
  def both(x, w, dy):
    return (_forward_and_grads(lax.conv_general_dilated, x, w, dy, strides, padding),
            _forward_and_grads(conv.conv_general_dilated, x, w, dy, strides, padding))

  (y, dx, dw), (y_custom, dx_custom, dw_custom) = both(x, w, dy)
  np.testing.assert_array_equal(y_custom, y)
  _assert_close(dx_custom, dx, 1e-5)
  _assert_close(dw_custom, dw, 1e-5)
  # The custom form ran: XLA's gradient has no dot, and 3 convolutions (forward, dx, dw).
  text = both.lower(x, w, dy).as_text()
  if custom_mode == 'matmul':
    assert 'dot_general' in text
  else:
    assert text.count('stablehlo.convolution') == 6 and 'dot_general' not in text


@pytest.mark.parametrize('name', ['3x3_stride2_same_odd', '6x6_same_32px', '7x7_stride2_valid'])
def test_bfloat16_gradients_match_xla(name, custom_mode):
  # config.model.dtype='bfloat16' runs nn.Conv in bfloat16 (inputs and kernel cast to it).
  x, w, dy, strides, padding = _operands(CASES[name], jnp.bfloat16)
  expected, actual = jax.jit(lambda x, w, dy: [
      _forward_and_grads(conv_fn, x, w, dy, strides, padding)
      for conv_fn in (lax.conv_general_dilated, conv.conv_general_dilated)])(x, w, dy)
  for a, e in zip(actual, expected):
    assert a.dtype == e.dtype == jnp.bfloat16
  np.testing.assert_array_equal(actual[0], expected[0])
  for a, e in zip(actual[1:], expected[1:]):
    _assert_close(a, e, 1e-2)  # Both accumulate in float32; they may round differently.


UNCOVERED = {  # name -> (options, input shape, kernel shape)
    'rhs_dilation': (dict(rhs_dilation=(2, 2)), (2, 8, 8, 4), (3, 3, 4, 4)),
    'lhs_dilation': (dict(lhs_dilation=(2, 1)), (2, 8, 8, 4), (3, 3, 4, 4)),
    'groups': (dict(feature_group_count=2), (2, 8, 8, 4), (3, 3, 2, 4)),
    'nchw': (dict(dimension_numbers=('NCHW', 'OIHW', 'NCHW')), (2, 4, 8, 8), (4, 4, 3, 3)),
    'default_layout': (dict(dimension_numbers=None), (2, 4, 8, 8), (4, 4, 3, 3)),
    'integer': (dict(), (2, 8, 8, 4), (3, 3, 4, 4)),
}


@pytest.mark.parametrize('name', UNCOVERED)
def test_uncovered_convolutions_are_plain_xla(name, matmul_mode):
  options, x_shape, w_shape = UNCOVERED[name]
  dtype = jnp.int32 if name == 'integer' else jnp.float32
  x, w = jnp.ones(x_shape, dtype), jnp.ones(w_shape, dtype)
  options = {'dimension_numbers': CHANNELS_LAST, **options}

  def jaxpr(conv_fn):
    padding = ((1, 1), (1, 1))  # lhs_dilation does not take 'SAME'.
    return str(jax.make_jaxpr(lambda x, w: conv_fn(x, w, (1, 1), padding, **options))(x, w))

  assert conv.fallback_reason(x, w, (1, 1), **options) is not None
  assert jaxpr(conv.conv_general_dilated) == jaxpr(lax.conv_general_dilated)


def test_covered_convolutions_get_the_custom_vjp(matmul_mode):
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  assert conv.fallback_reason(x, w, (1, 1), dimension_numbers=CHANNELS_LAST) is None
  jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=CHANNELS_LAST))(x, w)
  assert 'custom_vjp_call' in str(jaxpr)


def test_xla_mode_is_plain_xla(monkeypatch):
  monkeypatch.setenv(conv.ENV_VAR, 'xla')
  x, w, _, strides, padding = _operands(CASES['3x3_same'])
  jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=CHANNELS_LAST))(x, w)
  assert 'custom_vjp_call' not in str(jaxpr)
  monkeypatch.setenv(conv.ENV_VAR, 'fast')
  with pytest.raises(ValueError, match=conv.ENV_VAR):
    conv.mode()


def _op_counts(stablehlo: str):
  return {op: stablehlo.count(f'stablehlo.{op}') for op in ('convolution', 'dot_general')}


@pytest.mark.parametrize('name', ['3x3_stride2_same_odd', '7x7_stride2_valid'])
def test_other_platforms_keep_xla_weight_gradient(name, matmul_mode):
  x, w, dy, strides, padding = _operands(CASES[name])

  def grads(conv_fn):
    return jax.jit(lambda x, w, dy: _forward_and_grads(conv_fn, x, w, dy, strides, padding))

  def exported(conv_fn, platform):
    return export.export(grads(conv_fn), platforms=[platform])(x, w, dy).mlir_module()

  # Lowered for CUDA (no GPU needed): the same convolutions as plain XLA, and no matmul.
  plain = _op_counts(exported(lax.conv_general_dilated, 'cuda'))
  assert plain == {'convolution': 3, 'dot_general': 0}
  assert _op_counts(exported(conv.conv_general_dilated, 'cuda')) == plain
  # Lowered for CPU, the weight gradient is matmuls: the check above can tell them apart.
  assert _op_counts(exported(conv.conv_general_dilated, 'cpu'))['dot_general'] > 0


def _model_loss_and_grads(config, seed=0):
  """value_and_grad of cross-entropy + l2 of config's model, train mode, on random images."""
  model = cifar_jax.models.create_model(config.model)
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(0, 1, (4, *config.model.input_shape)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, (4,)))
  # Random values of init's shapes: compiling init itself would double the test's time.
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(seed), images, train=False))
  variables = jax.tree.map(lambda s: jnp.asarray(rng.uniform(-0.3, 0.3, s.shape), s.dtype), shapes)

  @jax.jit
  def loss_and_grads(params):
    def loss(params):
      logits, state = model.apply({**variables, 'params': params}, images, train=True,
                                  rngs={'dropout': jax.random.key(1)},
                                  mutable=['batch_stats', 'losses'])
      l2 = sum(jax.tree.leaves(state.get('losses', {})))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean() + l2
    return jax.value_and_grad(loss)(params)

  traced = loss_and_grads.trace(variables['params'])
  return traced.lower().compile()(variables['params']), str(traced.jaxpr)


@pytest.mark.parametrize('config', [tiny_config.get_config(), m1.get_config()],
                         ids=['tiny_config', 'redes_m1'])
@pytest.mark.parametrize('mode', ['auto', 'matmul'])
def test_model_gradients_match_plain_conv(config, mode, monkeypatch):
  monkeypatch.setenv(conv.ENV_VAR, 'xla')
  (loss, grads), jaxpr = _model_loss_and_grads(config)
  # (Dropout layers pick their mask's computation by platform too.)
  platform_choices = jaxpr.count('platform_index')
  monkeypatch.setenv(conv.ENV_VAR, mode)
  (loss_custom, grads_custom), jaxpr = _model_loss_and_grads(config)
  # The layer stack's nn.Conv uses conv.conv_general_dilated: its backward picks by platform.
  assert jaxpr.count('platform_index') > platform_choices
  np.testing.assert_allclose(loss_custom, loss, rtol=1e-6)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g_custom = dict(jax.tree_util.tree_leaves_with_path(grads_custom))[path]
    _assert_close(g_custom, g, 1e-5)


def _record_weight_grad_forms(monkeypatch) -> list[str]:
  """A list that each traced weight gradient appends its form ('matmul' or 'conv') to."""
  used = []
  for form in ('matmul', 'conv'):
    original = getattr(conv, f'{form}_weight_grad')
    monkeypatch.setattr(conv, f'{form}_weight_grad',
                        lambda *args, form=form, original=original, **kw: (
                            used.append(form), original(*args, **kw))[1])
  return used


@pytest.mark.parametrize('w_shape, expected', [((1, 1, 8, 4), 'matmul'), ((3, 3, 8, 4), 'conv'),
                                               ((6, 6, 8, 4), 'conv')])
def test_auto_mode_uses_a_matmul_for_1x1_kernels_and_a_conv_otherwise(w_shape, expected,
                                                                       monkeypatch):
  used = _record_weight_grad_forms(monkeypatch)
  x = jnp.ones((2, 8, 8, 8))
  jax.jit(jax.grad(lambda w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=CHANNELS_LAST).sum())).lower(jnp.ones(w_shape))
  assert used == [expected]


def test_gradients_in_a_loop_are_canonical_cpu_convolutions():
  # XLA:CPU transposes gradient convolutions into its Eigen layout outside loops only; in a
  # while body it ran a naive loop nest 8-300x slower. conv's gradient convolutions are already
  # in that layout (channels-last input and output, HWIO kernel): no other remains.
  x, w, dy, strides, padding = _operands(CASES['3x3_stride2_same_odd'])

  def looped(conv_fn):
    def grads(x, w, dy):
      return jax.vjp(lambda x, w: conv_fn(x, w, strides, padding,
                                          dimension_numbers=CHANNELS_LAST), x, w)[1](dy)
    return jax.jit(lambda x, w, dy: lax.fori_loop(
        0, 2, lambda i, g: jax.tree.map(jnp.add, g, grads(x, w, dy)),
        (jnp.zeros_like(x), jnp.zeros_like(w))))

  labels = lambda conv_fn: set(re.findall(r'dim_labels=(\S+?),', looped(conv_fn).lower(
      x, w, dy).compile().as_text()))
  assert labels(lax.conv_general_dilated) == {'b01f_01oi->b01f', 'f01b_i01o->01bf'}
  assert labels(conv.conv_general_dilated) == {'b01f_01io->b01f'}
  for custom, plain in zip(looped(conv.conv_general_dilated)(x, w, dy),
                           looped(lax.conv_general_dilated)(x, w, dy)):
    _assert_close(custom, plain, 1e-5)


def test_batch_chunks_divide_the_batch():
  assert conv.batch_chunks(256, 16 * 16) == 16  # 16 images of 256 pixels per 4096-row chunk.
  assert conv.batch_chunks(2, 36) == 1
  assert conv.batch_chunks(12, 1024) == 3
  assert conv.batch_chunks(10, 1024) == 2  # 4 images would not divide 10: rounded up to 5.
  assert conv.batch_chunks(7, 100) == 1


@pytest.mark.parametrize('conv_grad, env, expected', [
    ('matmul', 'conv', 'matmul'),  # The config wins over the environment...
    ('conv', 'matmul', 'conv'),
    ('', 'matmul', 'matmul'),      # ...and '' defers to it,
    ('', None, 'conv'),            # else 'auto' (tiny_config's kernels are 3x3).
])
def test_a_states_conv_grad_decides_its_train_steps_weight_gradients(conv_grad, env, expected,
                                                                     monkeypatch):
  from cifar_jax.train import steps  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config as make_tiny_config, tiny_state  # pylint: disable=g-import-not-at-top
  if env is None:
    monkeypatch.delenv(conv.ENV_VAR, raising=False)
  else:
    monkeypatch.setenv(conv.ENV_VAR, env)
  config = make_tiny_config()
  config.model.conv_grad = conv_grad
  state, images, labels = tiny_state(config, num_images=8)
  assert state.conv_grad == conv_grad
  used = _record_weight_grad_forms(monkeypatch)
  # A fresh function each time: jit's trace cache must not hand back another case's program.
  jax.jit(lambda s, b: steps.train_step(s, b)).trace(state, {'image': images, 'label': labels})
  assert used and set(used) == {expected}
  monkeypatch.undo()
  assert conv.mode() == (os.environ.get(conv.ENV_VAR) or 'auto')  # Nothing leaks out of the step.
