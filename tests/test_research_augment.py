"""Pad-and-crop, cutout and test-time augmentation (cifar_jax.data.research_augment)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.data import augment
from cifar_jax.data import layer_spec
from cifar_jax.data import research_augment as ra
from cifar_jax.models import create_model
from tests.conftest import tiny_config


def build(entry):
  return layer_spec.build_layer(augment.LAYER_TYPES, 0, entry)


def random_images(seed, n=16, shape=(12, 10, 3)):
  return jnp.asarray(np.random.RandomState(seed).rand(n, *shape), jnp.float32)


# A row [1, 2, 3, 4] moved by 2, as jnp.pad (and torch's F.pad for 'reflect') fills it.
MOVED_RIGHT_BY_2 = {'reflect': [3, 2, 1, 2], 'symmetric': [2, 1, 1, 2], 'edge': [1, 1, 1, 2],
                    'constant': [0, 0, 1, 2]}
MOVED_LEFT_BY_2 = {'reflect': [3, 4, 3, 2], 'symmetric': [3, 4, 4, 3], 'edge': [3, 4, 4, 4],
                   'constant': [3, 4, 0, 0]}


@pytest.mark.parametrize('mode', ra.PAD_MODES)
def test_translate_fills_the_border_as_its_pad_mode(mode):
  row = jnp.asarray([1.0, 2, 3, 4]).reshape(1, 1, 4, 1)
  for dx, want in ((2, MOVED_RIGHT_BY_2[mode]), (-2, MOVED_LEFT_BY_2[mode])):
    out = ra.translate(row, jnp.asarray([0]), jnp.asarray([dx]), pad=2, mode=mode)
    np.testing.assert_array_equal(out[0, 0, :, 0], want)
  down = ra.translate(row.reshape(1, 4, 1, 1), jnp.asarray([2]), jnp.asarray([0]), 2, mode)
  np.testing.assert_array_equal(down[0, :, 0, 0], MOVED_RIGHT_BY_2[mode])


@pytest.mark.parametrize('mode', ra.PAD_MODES)
def test_pad_and_crop_is_a_crop_of_the_padded_image(mode):
  """airbench's batch_crop: a window of the padded batch at offset (pad - dy, pad - dx)."""
  images = random_images(0)
  layer = build(dict(type='pad_and_crop', pad=3, mode=mode))
  params = layer.sample(jax.random.PRNGKey(0), 16, 12, 10)
  out = np.asarray(jax.jit(layer.apply)(images, params))
  padded = np.pad(np.asarray(images), ((0, 0), (3, 3), (3, 3), (0, 0)), mode=mode)
  for b, (dy, dx) in enumerate(zip(np.asarray(params['dy']), np.asarray(params['dx']))):
    np.testing.assert_array_equal(out[b], padded[b, 3 - dy:3 - dy + 12, 3 - dx:3 - dx + 10])


def test_pad_and_crop_shifts_are_uniform_and_independent():
  n, pad = 20000, 4
  params = build(dict(type='pad_and_crop', pad=pad)).sample(jax.random.PRNGKey(1), n, 32, 32)
  dy, dx = np.asarray(params['dy']), np.asarray(params['dx'])
  for shifts in (dy, dx):
    values, counts = np.unique(shifts, return_counts=True)
    np.testing.assert_array_equal(values, np.arange(-pad, pad + 1))
    expected = n / (2 * pad + 1)
    assert (np.abs(counts - expected) < 5 * np.sqrt(expected)).all()
  assert abs(np.corrcoef(dy, dx)[0, 1]) < 0.03


def devries_cutout_mask(height, width, length, centers):
  """DeVries & Taylor's Cutout.__call__ (uoguelph-mlrg/Cutout), with given hole centres."""
  mask = np.ones((height, width), np.float32)
  for y, x in centers:
    y1, y2 = np.clip(y - length // 2, 0, height), np.clip(y + length // 2, 0, height)
    x1, x2 = np.clip(x - length // 2, 0, width), np.clip(x + length // 2, 0, width)
    mask[y1:y2, x1:x2] = 0.0
  return mask


@pytest.mark.parametrize('size,count', [(16, 1), (8, 2), (4, 3)])
def test_cutout_matches_devries_for_even_sizes(size, count):
  images = random_images(2, n=64, shape=(32, 32, 3)) + 1  # No pixel is 0 before the cut.
  layer = build(dict(type='cutout', size=size, count=count))
  params = layer.sample(jax.random.PRNGKey(2), 64, 32, 32)
  out = np.asarray(jax.jit(layer.apply)(images, params))
  rows, cols = np.asarray(params['center_row']), np.asarray(params['center_col'])
  for b in range(64):
    mask = devries_cutout_mask(32, 32, size, zip(rows[b], cols[b]))
    np.testing.assert_array_equal(out[b], np.asarray(images[b]) * mask[..., None])


def test_cutout_odd_size_and_fill_value():
  images = jnp.ones((1, 9, 9, 2))
  layer = build(dict(type='cutout', size=3, fill_value=-2.0))
  out = layer.apply(images, {'center_row': jnp.asarray([[4]]), 'center_col': jnp.asarray([[0]])})
  holes = np.argwhere(np.asarray(out[0, ..., 0]) == -2.0)
  assert sorted(map(tuple, holes)) == [(r, c) for r in (3, 4, 5) for c in (0, 1)]  # Clipped.
  assert (np.asarray(out[0, ..., 1]) == np.asarray(out[0, ..., 0])).all()


def test_cutout_centres_are_uniform_over_the_image():
  params = build(dict(type='cutout', count=2)).sample(jax.random.PRNGKey(3), 20000, 8, 6)
  for key, size in (('center_row', 8), ('center_col', 6)):
    counts = np.bincount(np.asarray(params[key]).ravel(), minlength=size)
    assert len(counts) == size
    assert (np.abs(counts / counts.sum() - 1 / size) < 0.01).all()


@pytest.mark.parametrize('entry,key', [
    (dict(type='pad_and_crop', pad=-1), 'pad'),
    (dict(type='pad_and_crop', pad=2.5), 'pad'),
    (dict(type='pad_and_crop', mode='wrap'), 'mode'),
    (dict(type='cutout', size=0), 'size'),
    (dict(type='cutout', count=0), 'count'),
    (dict(type='cutout', fill_value='black'), 'fill_value'),
    (dict(type='cutout', length=8), 'length'),
])
def test_bad_entries_fail_naming_the_key(entry, key):
  with pytest.raises(ValueError, match=rf'augment\.layers\[0\].*{key}'):
    augment.validate_augment_config(dict(layers=(entry,)))


def test_layers_stage_runs_research_augmentations_in_order():
  config = dict(layers=(dict(type='pad_and_crop', pad=2), dict(type='cutout', size=4)))
  fn = jax.jit(augment.make_layers_fn(config))
  images = random_images(4, shape=(16, 16, 3)) + 1
  out = np.asarray(fn(jax.random.PRNGKey(0), images))
  assert ((out == 0).all(-1).reshape(16, -1).sum(1) >= 4).all()  # Every image has a hole,
  assert ((out == 0).all(-1).reshape(16, -1).sum(1) <= 16).all()  # of at most 4x4 pixels.


# --- Test-time augmentation ------------------------------------------------------------------

@jax.jit
def linear_logits(images):
  """A linear 'model' whose logits see where each pixel is, so any view changes them."""
  weights = jax.random.normal(jax.random.PRNGKey(9), (np.prod(images.shape[1:]), 5))
  return images.reshape(images.shape[0], -1) @ weights


def airbench_tta(net, inputs):
  """airbench's infer(..., tta_level=2), in numpy with NHWC images."""
  mirror = lambda x: 0.5 * net(x) + 0.5 * net(x[:, :, ::-1])
  padded = np.pad(inputs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  height, width = inputs.shape[1:3]
  translated = [padded[:, 0:height, 0:width], padded[:, 2:height + 2, 2:width + 2]]
  return 0.5 * mirror(inputs) + 0.5 * np.mean([mirror(x) for x in translated], axis=0)


def test_tta_modes_average_the_views_airbench_does():
  images = random_images(5)
  net = lambda x: np.asarray(linear_logits(jnp.asarray(x)))
  np.testing.assert_array_equal(ra.tta_logits(linear_logits, images, 'none'),
                                linear_logits(images))
  flip = ra.tta_logits(linear_logits, images, 'flip')
  np.testing.assert_allclose(flip, 0.5 * net(images) + 0.5 * net(images[:, :, ::-1]), atol=1e-5)
  tta = jax.jit(functools.partial(ra.tta_logits, linear_logits, mode='flip_translate'))(images)
  np.testing.assert_allclose(tta, airbench_tta(net, np.asarray(images)), atol=1e-5)
  assert np.abs(np.asarray(tta) - np.asarray(flip)).max() > 1e-2


def test_tta_weights_sum_to_one_and_reject_unknown_modes():
  images = random_images(6)
  for mode in ra.TTA_MODES:
    views, weights = ra.tta_views(images, mode)
    assert views.shape[1:] == images.shape and float(weights.sum()) == 1.0
    np.testing.assert_array_equal(views[0], images)  # The plain batch comes first.
  constant = lambda x: jnp.ones((x.shape[0], 3))
  np.testing.assert_allclose(ra.tta_logits(constant, images, 'flip_translate'), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match='augment.tta'):
    ra.tta_logits(linear_logits, images, 'mirror')


def test_tta_with_a_flax_model_and_its_regularisation_losses():
  """How eval_step uses it: apply_fn returns (logits, mutated 'losses'); has_aux=True."""
  model = create_model(tiny_config().model)
  images = random_images(7, n=4, shape=(32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)

  @jax.jit
  def apply_fn(x):
    return model.apply(variables, x, train=False, mutable=['losses'])

  plain_logits, plain_mutated = apply_fn(images)
  for mode in ra.TTA_MODES:
    logits, mutated = ra.tta_logits(apply_fn, images, mode, has_aux=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), mutated, plain_mutated)
    views, weights = ra.tta_views(images, mode)
    want = sum(w * apply_fn(v)[0] for v, w in zip(views, weights))
    np.testing.assert_allclose(logits, want, atol=1e-5)
    assert logits.shape == plain_logits.shape
