"""cifar_jax.data.keras_layers (config.augment.layers) against the real Keras 3 layers (jax
backend), and the two-stage InputPipeline."""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from cifar_jax.data import augment
from cifar_jax.data import keras_layers
from cifar_jax.data import layer_spec
from cifar_jax.data import pipeline

KERAS_CLASSES = {
    'random_flip': keras.layers.RandomFlip,
    'random_rotation': keras.layers.RandomRotation,
    'random_translation': keras.layers.RandomTranslation,
    'random_zoom': keras.layers.RandomZoom,
    'random_contrast': keras.layers.RandomContrast,
    'random_brightness': keras.layers.RandomBrightness,
}
SHAPE = (20, 28, 3)  # Not square, so that swapped axes cannot pass.


def build(entry):
  return layer_spec.build_layer(augment.LAYER_TYPES, 0, entry)


def keras_layer(entry, seed=3):
  kwargs = dict(entry)
  return KERAS_CLASSES[kwargs.pop('type')](seed=seed, **kwargs)


def our_params(kind, transformation):
  """Keras's transformation dict -> our params, the same draws."""
  t = {k: np.asarray(v) for k, v in transformation.items() if k != 'input_shape'}
  per_image = lambda v: jnp.asarray(v.reshape(v.shape[0], -1)[:, 0])
  return {
      'random_flip': lambda: {'flips': per_image(t['flips'])},
      'random_rotation': lambda: {'angle': per_image(t['angle'])},
      'random_translation': lambda: {'dx': per_image(t['translations'][:, :1]),
                                     'dy': per_image(t['translations'][:, 1:])},
      'random_zoom': lambda: {'width_zoom': per_image(t['width_zoom']),
                              'height_zoom': per_image(t['height_zoom'])},
      'random_contrast': lambda: {'contrast_factor': per_image(t['contrast_factor'])},
      'random_brightness': lambda: {'rgb_delta': per_image(t['rgb_delta'])},
  }[kind]()


def geometric_cases():
  """Every fill mode with bilinear interpolation for the three layers; 'nearest' interpolation
  (rounding half away from zero) through the rotation, whose points fall anywhere."""
  for fill_mode in keras_layers.KERAS_FILL_MODES:
    common = dict(fill_mode=fill_mode, fill_value=7.0)
    yield dict(type='random_rotation', factor=0.5, **common)
    yield dict(type='random_rotation', factor=0.5, interpolation='nearest', **common)
    yield dict(type='random_translation', height_factor=0.9, width_factor=(-0.5, 0.7), **common)
    yield dict(type='random_zoom', height_factor=(-0.5, 0.9), width_factor=0.6, **common)


PARITY_CASES = [
    *geometric_cases(),
    dict(type='random_rotation', factor=(-0.02, 0.1)),  # Keras defaults: reflect, bilinear.
    dict(type='random_zoom', height_factor=0.4),  # One zoom for both axes.
    *(dict(type='random_flip', mode=mode) for mode in keras_layers.FLIP_MODES),
    dict(type='random_contrast', factor=0.9),
    dict(type='random_contrast', factor=(0.5, 0.3)),
    dict(type='random_brightness', factor=0.5),
    dict(type='random_brightness', factor=(-0.3, 0.1), value_range=(255, 0)),
]


@pytest.mark.parametrize('entry', PARITY_CASES, ids=str)
def test_transform_matches_keras_layer(entry):
  """The layer's own draws (get_random_transformation) through its transform_images, and ours."""
  images = np.random.RandomState(0).randint(0, 256, (48, *SHAPE)).astype(np.float32)
  layer = keras_layer(entry)
  transformation = layer.get_random_transformation(images, training=True)
  want = np.asarray(layer.transform_images(images, transformation, training=True))
  ours = build(entry)
  got = np.asarray(jax.jit(ours.apply)(jnp.asarray(images),
                                       our_params(entry['type'], transformation)))
  diff = np.abs(got - want)  # Grey levels.
  assert (diff <= 1).mean() >= 0.999
  assert np.percentile(diff, 99.9) < 0.01  # In fact ~1e-3 at most: float32 rounding.
  assert np.abs(got - images).max() > 1 or entry['type'] == 'random_flip'


def test_layers_on_rescaled_inputs_match_keras():
  """As p2cnn exp8 uses them: after Rescaling(1/255), with contrast and brightness told so."""
  images = np.random.RandomState(1).rand(32, *SHAPE).astype(np.float32)
  for entry in (dict(type='random_rotation', factor=0.1),
                dict(type='random_contrast', factor=0.5, value_range=(0, 1)),
                dict(type='random_brightness', factor=0.2, value_range=(0, 1))):
    layer = keras_layer(entry)
    transformation = layer.get_random_transformation(images, training=True)
    want = np.asarray(layer.transform_images(images, transformation, training=True))
    got = jax.jit(build(entry).apply)(jnp.asarray(images),
                                      our_params(entry['type'], transformation))
    assert (np.abs(np.asarray(got) - want) * 255 <= 1).mean() >= 0.999, entry
    assert want.min() >= 0 and want.max() <= 1


# Each case: an entry, and {param: (lo, hi) bounds, or None for a 50% flip}.
DISTRIBUTIONS = [
    (dict(type='random_flip', mode='horizontal'), {'flips': None}),
    (dict(type='random_rotation', factor=0.1), {'angle': (-36, 36)}),
    (dict(type='random_rotation', factor=(-0.05, 0.2)), {'angle': (-18, 72)}),
    (dict(type='random_translation', height_factor=0.2, width_factor=(-0.1, 0.3)),
     {'dy': (-0.2 * 20, 0.2 * 20), 'dx': (-0.1 * 28, 0.3 * 28)}),
    (dict(type='random_zoom', height_factor=(-0.3, 0.2), width_factor=0.1),
     {'height_zoom': (0.7, 1.2), 'width_zoom': (0.9, 1.1)}),
    (dict(type='random_contrast', factor=0.2), {'contrast_factor': (1.0, 1.2)}),  # Keras quirk.
    (dict(type='random_contrast', factor=(0.4, 0.3)), {'contrast_factor': (0.7, 1.4)}),  # Sorted.
    (dict(type='random_brightness', factor=0.2), {'rgb_delta': (-51, 51)}),
]


@pytest.mark.parametrize('entry,bounds', DISTRIBUTIONS, ids=str)
def test_sampled_params_match_keras_distribution(entry, bounds):
  n_keras, n_ours = 20000, 20000
  layer = keras_layer(entry, seed=0)
  keras_draws = our_params(entry['type'], layer.get_random_transformation(
      np.zeros((n_keras, *SHAPE[:2], 1), np.float32), training=True))
  ours = build(entry).sample(jax.random.PRNGKey(0), n_ours, *SHAPE[:2])
  for k, limits in bounds.items():
    keras_sample, our_sample = (np.asarray(d[k], np.float64) for d in (keras_draws, ours))
    if limits is None:  # A flip with probability 1/2.
      for sample, n in ((keras_sample, n_keras), (our_sample, n_ours)):
        assert abs(sample.mean() - 0.5) < 4 * 0.5 / np.sqrt(n), k
      continue
    lo, hi = limits
    for sample in (keras_sample, our_sample):  # Both fill [lo, hi] and no more.
      assert lo - 1e-4 <= sample.min() < lo + 0.01 * (hi - lo), k
      assert hi - 0.01 * (hi - lo) < sample.max() <= hi + 1e-4, k
    std = keras_sample.std()
    assert abs(our_sample.mean() - keras_sample.mean()) < 5 * std * np.sqrt(2 / n_keras), k
    assert abs(our_sample.std() / std - 1) < 0.03, k
    # Uniform: a quarter of the range holds a quarter of the draws.
    assert abs(np.mean(our_sample < lo + (hi - lo) / 4) - 0.25) < 0.015, k


def test_zoom_without_width_factor_shares_the_draw_like_keras():
  entry = dict(type='random_zoom', height_factor=0.3)
  keras_draws = keras_layer(entry).get_random_transformation(np.zeros((100, 8, 8, 1)),
                                                             training=True)
  np.testing.assert_array_equal(keras_draws['width_zoom'], keras_draws['height_zoom'])
  ours = build(entry).sample(jax.random.PRNGKey(0), 100, 8, 8)
  np.testing.assert_array_equal(ours['width_zoom'], ours['height_zoom'])


def test_horizontal_and_vertical_flip_flips_both_axes_or_none_like_keras():
  image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 3, 4, 2)
  images = np.repeat(image, 64, axis=0)
  for out in (keras.layers.RandomFlip(seed=1)(images, training=True),
              build(dict(type='random_flip'))(jax.random.PRNGKey(1), jnp.asarray(images))):
    out = np.asarray(out)
    rotated = (out == image[:, ::-1, ::-1]).all(axis=(1, 2, 3))
    unchanged = (out == image).all(axis=(1, 2, 3))
    assert (rotated | unchanged).all() and 10 < rotated.sum() < 54


def test_every_example_draws_its_own_transform():
  image = np.random.RandomState(2).randint(0, 256, (1, *SHAPE)).astype(np.float32)
  images = jnp.asarray(np.repeat(image, 8, axis=0))
  for kind in ('random_rotation', 'random_translation', 'random_zoom', 'random_contrast',
               'random_brightness'):
    entry = next(e for e in PARITY_CASES if e['type'] == kind)
    flat = np.asarray(jax.jit(build(entry))(jax.random.PRNGKey(0), images)).reshape(8, -1)
    assert all(np.abs(flat[i] - flat[j]).max() > 0.5 for i in range(8) for j in range(i)), kind


def test_pipeline_applies_layers_after_normalisation_and_only_in_training():
  augment_config = dict(rotation_range=10.0, layers=(
      dict(type='random_flip', mode='horizontal'), dict(type='random_rotation', factor=0.1)))
  stage1 = augment.make_augment_fn(augment_config)
  stage2 = augment.make_layers_fn(augment_config)
  pipe = pipeline.InputPipeline(mean=(0.0,) * 3, std=(255.0,) * 3, augment=stage1, layers=stage2)
  pipe = jax.jit(pipe, static_argnames='train')
  images = jnp.asarray(np.random.RandomState(3).randint(0, 256, (4, 32, 32, 3)), jnp.uint8)
  rng = jax.random.PRNGKey(5)
  np.testing.assert_allclose(pipe(rng, images, train=False), images / 255.0, rtol=1e-6)

  @jax.jit
  def by_hand(rng, images):
    return stage2(jax.random.fold_in(rng, 1), stage1(rng, images.astype(jnp.float32)) / 255.0)

  out = np.asarray(pipe(rng, images, train=True))
  np.testing.assert_allclose(out, by_hand(rng, images), atol=1e-5)
  # The layers see 0..1: a rotation with the default 'reflect' fill keeps the range.
  assert 0 <= out.min() and out.max() <= 1 and np.abs(out - images / 255.0).max() > 0.1
  assert augment.make_layers_fn(dict(rotation_range=10.0)) is None


# (entry, the key the error must name, whether Keras refuses it too).
BAD_ENTRIES = [
    (dict(type='random_flip', mode='diagonal'), 'mode', False),  # Keras accepts, then no-ops.
    (dict(type='random_rotation', factor=1.5), 'factor', True),
    (dict(type='random_rotation', factor='0.1'), 'factor', True),
    (dict(type='random_rotation', factor=(0.1,)), 'factor', True),
    (dict(type='random_rotation', factor=0.1, fill_mode='mirror'), 'fill_mode', True),
    (dict(type='random_rotation', factor=0.1, interpolation='bicubic'), 'interpolation', True),
    (dict(type='random_rotation', factor=0.1, fill_value=None), 'fill_value', False),
    (dict(type='random_translation', height_factor=0.1, width_factor=1.5), 'width_factor', True),
    (dict(type='random_zoom', height_factor=-1.0), 'height_factor', True),
    (dict(type='random_zoom', height_factor=0.1, width_factor=(0.1, 2.0)), 'width_factor', True),
    (dict(type='random_contrast', factor=-0.1), 'factor', True),
    (dict(type='random_contrast', factor=0.1, value_range=(0, 1, 2)), 'value_range', False),
    (dict(type='random_brightness', factor=1.2), 'factor', True),
    (dict(type='random_brightness', factor=0.1, value_range=1.0), 'value_range', True),
    (dict(type='random_rotation'), 'factor', True),  # Missing.
    (dict(type='random_translation', height_factor=0.1), 'width_factor', True),
    (dict(type='random_flip', seed=3), 'seed', False),  # Seeds come from the run's key.
    (dict(type='random_crop', height=28, width=28), 'type', False),  # Not supported.
]


@pytest.mark.parametrize('entry,key,keras_refuses', BAD_ENTRIES, ids=str)
def test_bad_layer_entries_fail_naming_the_key(entry, key, keras_refuses):
  config = dict(layers=(dict(type='random_flip'), entry))
  with pytest.raises(ValueError, match=rf'augment\.layers\[1\].*{key}'):
    augment.validate_augment_config(config)
  if keras_refuses:
    kwargs = dict(entry)
    with pytest.raises((ValueError, TypeError, NotImplementedError)):
      KERAS_CLASSES[kwargs.pop('type')](**kwargs)


def test_layers_must_be_a_sequence_of_dicts():
  with pytest.raises(ValueError, match=r'augment\.layers\[0\]'):
    augment.validate_augment_config(dict(layers=('random_flip',)))
  with pytest.raises(ValueError, match=r'augment\.layers\[0\]\.type'):
    augment.validate_augment_config(dict(layers=(dict(mode='horizontal'),)))
