"""cifar_jax.data.augment (and resample) against the real Keras 3 legacy ImageDataGenerator,
scipy and jax.scipy."""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

from absl import flags
import jax
import jax.numpy as jnp
from keras.src.legacy.preprocessing import image as keras_image
from ml_collections import config_flags
import numpy as np
import pytest
import scipy.ndimage

from cifar_jax.data import augment
from cifar_jax.data import resample
from configs import base
from tests.conftest import REPO

SHAPES = [(32, 32, 3), (20, 28, 3)]  # CIFAR, and a non-square one to pin down the axes.
CVAL = 7.0  # Not 0, so a wrong fill cannot hide among black pixels.
# Our source coordinates are float32 where scipy's are float64: ~1e-5 px apart, which moves an
# interpolated value by up to 255 * 1e-5 per px of slope (seen: max 2.3e-3). 0.02 is under 1e-4 of
# the 0..255 range, far below any convention error (those move values by tens).
ATOL = 0.02
# 'constant' and 'wrap' jump where a source coordinate crosses a multiple of size-1 (the edges,
# and wrap's seams): there float32 rounding may pick the other side, so the random-parameter
# parity test skips pixels this close to one. test_sample_bilinear_matches_scipy and the exact
# integer-shift test check those points themselves.
SEAM_PX = 1e-3

# Keras's legacy code imports affine_transform from a namespace scipy deprecates.
pytestmark = [
    pytest.mark.filterwarnings('ignore:Please import `affine_transform`:DeprecationWarning'),
    # ml_collections's config file loader, in parse_flags.
    pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning'),
]

apply_jit = jax.jit(augment.apply_transform, static_argnames='fill_mode')
KERAS_NAMES = {'flip_h': 'flip_horizontal', 'flip_v': 'flip_vertical'}  # Ours -> Keras's.


def keras_apply(images, params, fill_mode, cval):
  """Keras's apply_transform, one image at a time, with our parameter names."""
  gen = keras_image.ImageDataGenerator(fill_mode=fill_mode, cval=cval)
  return np.stack([
      gen.apply_transform(x, {KERAS_NAMES.get(k, k): np.asarray(v)[i].item()
                              for k, v in params.items()})
      for i, x in enumerate(images)])


def random_images(rs, n, shape):
  return rs.randint(0, 256, (n,) + shape).astype(np.float32)


def random_params(rs, n):
  return dict(theta=rs.uniform(-180, 180, n), tx=rs.uniform(-12, 12, n), ty=rs.uniform(-12, 12, n),
              shear=rs.uniform(-45, 45, n), zx=rs.uniform(0.6, 1.5, n), zy=rs.uniform(0.6, 1.5, n),
              flip_h=rs.rand(n) < 0.5, flip_v=rs.rand(n) < 0.5)


def ours(images, params, fill_mode, cval=CVAL):
  params = {k: jnp.asarray(v) for k, v in params.items()}
  return np.asarray(apply_jit(jnp.asarray(images), params, fill_mode=fill_mode, cval=cval))


def sample_points(rs, height, width):
  """[h, w] grids of points over several periods of every extension: quarter pixels (exact in
  float32 and float64), points 1e-3 either side of every seam, and random ones."""

  def points(size):
    seams = (size - 1) * np.arange(-4, 5)
    return np.concatenate([np.arange(-3 * size, 4 * size, 0.25), seams - 1e-3, seams + 1e-3,
                           rs.uniform(-3 * size, 4 * size, 200)]).astype(np.float32)

  return np.meshgrid(points(height), points(width), indexing='ij')


def per_channel(map_coordinates, image, rows, cols, **kwargs):
  """map_coordinates (scipy's or jax's) on each channel of image [H, W, C]."""
  return np.stack([np.asarray(map_coordinates(image[..., c], [rows, cols], **kwargs))
                   for c in range(image.shape[-1])], -1)


@pytest.mark.parametrize('fill_mode', resample.FILL_MODES)
def test_sample_bilinear_matches_scipy(fill_mode):
  """Per-axis fill semantics, seams included, for scipy's modes and the grid ones."""
  rs = np.random.RandomState(0)
  image = random_images(rs, 1, (7, 9, 2))
  rows, cols = sample_points(rs, 7, 9)
  got = np.asarray(resample.sample_bilinear(jnp.asarray(image), jnp.asarray(rows)[None],
                                            jnp.asarray(cols)[None], fill_mode, CVAL))[0]
  want = per_channel(scipy.ndimage.map_coordinates, image[0], rows.astype(np.float64),
                     cols.astype(np.float64), order=1, mode=fill_mode, cval=CVAL)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


# The Keras layers resample with jax.scipy.ndimage.map_coordinates; its mode names -> scipy's.
JAX_MODES = {'nearest': 'nearest', 'reflect': 'reflect', 'constant': 'grid-constant',
             'wrap': 'grid-wrap'}


@pytest.mark.parametrize('order', [0, 1])
@pytest.mark.parametrize('jax_mode', sorted(JAX_MODES))
def test_sampling_matches_jax_map_coordinates(jax_mode, order):
  rs = np.random.RandomState(1)
  image = random_images(rs, 1, (7, 9, 2))
  rows, cols = sample_points(rs, 7, 9)
  sample = resample.sample_bilinear if order else resample.sample_nearest
  got = np.asarray(sample(jnp.asarray(image), jnp.asarray(rows)[None], jnp.asarray(cols)[None],
                          JAX_MODES[jax_mode], CVAL))[0]
  want = per_channel(jax.scipy.ndimage.map_coordinates, image[0], rows, cols, order=order,
                     mode=jax_mode, cval=CVAL)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


@pytest.mark.parametrize('fill_mode', augment.FILL_MODES)
@pytest.mark.parametrize('shape', SHAPES)
def test_apply_transform_matches_keras(shape, fill_mode):
  rs = np.random.RandomState(1)
  n = 48
  images, params = random_images(rs, n, shape), random_params(rs, n)
  # Keras composes only the non-identity parts; some sets exercise that path.
  params['theta'][:8] = 0
  params['shear'][4:12] = 0
  params['zx'][8:16] = params['zy'][8:16] = 1
  want = keras_apply(images, params, fill_mode, CVAL)
  got = ours(images, params, fill_mode)

  keep = np.ones(got.shape[:3], bool)
  if fill_mode in ('constant', 'wrap'):
    for coord, size in zip(augment.source_coords(params, n, *shape[:2]), shape[:2]):
      coord = np.asarray(coord)
      keep &= np.abs(coord - (size - 1) * np.round(coord / (size - 1))) > SEAM_PX
  assert keep.mean() > 0.999
  np.testing.assert_allclose(got[keep], want[keep], rtol=0, atol=ATOL)


@pytest.mark.parametrize('fill_mode', augment.FILL_MODES)
@pytest.mark.parametrize('shape', SHAPES)
def test_integer_shifts_and_flips_are_exact(shape, fill_mode):
  """Shifts past the image size wrap/reflect several times; every coordinate lands on a pixel."""
  rs = np.random.RandomState(2)
  n = 32
  images = random_images(rs, n, shape)
  params = dict(tx=rs.randint(-45, 46, n).astype(np.float32),
                ty=rs.randint(-45, 46, n).astype(np.float32),
                flip_h=rs.rand(n) < 0.5, flip_v=rs.rand(n) < 0.5)
  np.testing.assert_array_equal(ours(images, params, fill_mode),
                                keras_apply(images, params, fill_mode, CVAL))


def photo_like_images(rs, n, shape):
  """Images with what photos have and uniform noise lacks: flat regions (here 4x4 blocks), and
  saturated 0 and 255 areas, where a truncating consumer sees interpolation's rounding."""
  height, width, channels = shape
  blocks = rs.randint(0, 256, (n, -(-height // 4), -(-width // 4), channels))
  blocks[:, :2, :2] = 255
  blocks[:, -1:, -2:] = 0
  return blocks.repeat(4, 1).repeat(4, 2)[:, :height, :width].astype(np.float32)


def within_one_grey_level(got, want):
  return (np.abs(got - want) <= 1).mean()


@pytest.mark.parametrize('fill_mode', augment.FILL_MODES)
def test_brightness_and_channel_shift_match_keras(fill_mode):
  """After any warp, Keras's PIL brightness truncates to whole grey levels: a float32 rounding
  on the wrong side of an integer moves a pixel by one level (times the factor)."""
  rs = np.random.RandomState(5)
  n, shape = 64, (32, 32, 3)
  images = np.concatenate([photo_like_images(rs, n // 2, shape), random_images(rs, n // 2, shape)])
  params = random_params(rs, n)
  params['theta'][: n // 2] = 0  # Half without rotation: pixels that stay on the grid.
  params.update(brightness=rs.uniform(0.3, 1.7, n), channel_shift_intensity=rs.uniform(-60, 60, n))
  want = keras_apply(images, params, fill_mode, CVAL)
  got = ours(images, params, fill_mode)
  assert want.min() >= 0 and want.max() <= 255 and (want == np.round(want)).all()
  assert within_one_grey_level(got, want) >= 0.999
  assert (got == want).mean() >= 0.99


@pytest.mark.parametrize('cval', [CVAL, -100.0, 400.0])
def test_brightness_alone_is_exact_including_keras_rescaling(cval):
  """Without a warp nothing is interpolated, so the PIL round trip is reproduced exactly; a cval
  outside 0..255 sends Keras through array_to_img(scale=True) and back."""
  rs = np.random.RandomState(6)
  n, shape = 32, (20, 28, 3)
  images = np.concatenate([photo_like_images(rs, n // 2, shape), random_images(rs, n // 2, shape)])
  brightness = rs.uniform(0.0, 2.0, n)
  np.testing.assert_array_equal(ours(images, dict(brightness=brightness), 'constant', cval),
                                keras_apply(images, dict(brightness=brightness), 'constant', cval))
  # Integer shifts bring cval in exactly, so the stretch to 0..255 must match too.
  params = dict(tx=rs.randint(-8, 9, n).astype(np.float32), brightness=brightness)
  want = keras_apply(images, params, 'constant', cval)
  np.testing.assert_allclose(ours(images, params, 'constant', cval), want, rtol=0, atol=1e-3)


def test_brightness_through_the_config_truncates_like_pil():
  fn = jax.jit(augment.make_augment_fn(dict(brightness_range=(1.0, 1.0))))
  images = jnp.asarray([[[[10.7, 255.0, 0.2]]]], jnp.float32)
  np.testing.assert_array_equal(fn(jax.random.PRNGKey(0), images), [[[[10.0, 255.0, 0.0]]]])
  fn = jax.jit(augment.make_augment_fn(dict(brightness_range=(1.5, 1.5))))
  np.testing.assert_array_equal(fn(jax.random.PRNGKey(0), images), [[[[15.0, 255.0, 0.0]]]])


def test_keras_height_shift_moves_columns():
  """Keras's quirk (keras-team/keras#17398), kept: height_shift_range shifts horizontally."""
  image = np.zeros((20, 28, 1), np.float32)
  image[10, 14] = 1
  config = dict(height_shift_range=[5], fill_mode='constant')
  gen = keras_image.ImageDataGenerator(**config)
  for seed in range(4):
    assert np.argwhere(gen.random_transform(image, seed=seed))[0, :2].tolist() in ([10, 9],
                                                                                    [10, 19])
  fn = jax.jit(augment.make_augment_fn(config))
  out = np.asarray(fn(jax.random.PRNGKey(0), jnp.broadcast_to(image, (16, 20, 28, 1))))
  where = np.argwhere(out[..., 0])
  assert len(where) == 16 and set(where[:, 1]) == {10} and set(where[:, 2]) == {9, 19}


# (augment config, {param: (lo, hi) bounds, or None for a discrete draw}) on 20x28 images.
DISTRIBUTIONS = [
    (dict(rotation_range=30.0), dict(theta=(-30, 30))),
    (dict(height_shift_range=0.2), dict(tx=(-0.2 * 20, 0.2 * 20))),  # A fraction of the height.
    (dict(width_shift_range=0.15), dict(ty=(-0.15 * 28, 0.15 * 28))),  # A fraction of the width.
    (dict(height_shift_range=3.5), dict(tx=(-3.5, 3.5))),  # Pixels.
    (dict(width_shift_range=4), dict(ty=None)),  # int: {0..3} times a random sign.
    (dict(height_shift_range=[0.1, 0.25]), dict(tx=None)),  # list: one value times a sign.
    (dict(shear_range=20.0), dict(shear=(-20, 20))),
    (dict(zoom_range=(0.7, 1.2)), dict(zx=(0.7, 1.2), zy=(0.7, 1.2))),
    (dict(zoom_range=0.3), dict(zx=(0.7, 1.3), zy=(0.7, 1.3))),
    (dict(horizontal_flip=True), dict(flip_h=None)),
    (dict(vertical_flip=True), dict(flip_v=None)),
    (dict(brightness_range=(0.6, 1.3)), dict(brightness=(0.6, 1.3))),
    (dict(channel_shift_range=30.0), dict(channel_shift_intensity=(-30, 30))),
]
OPTIONAL_PARAMS = ('brightness', 'channel_shift_intensity')  # Keras: None when off.


@pytest.mark.parametrize('config,varying', DISTRIBUTIONS, ids=lambda x: str(x))
def test_sampled_params_match_keras_distribution(config, varying):
  shape = (20, 28, 3)
  gen = keras_image.ImageDataGenerator(**config)
  np.random.seed(0)
  draws = [gen.get_random_transform(shape) for _ in range(4000)]
  keras = {k: np.array([d[KERAS_NAMES.get(k, k)] for d in draws], np.float64)
           for k in (*augment.IDENTITY_PARAMS, *varying)}
  got = augment.sample_transform_params(jax.random.PRNGKey(0), 20000, *shape[:2], config)
  got = {k: np.asarray(v, np.float64) for k, v in got.items()}

  for k, identity in augment.IDENTITY_PARAMS.items():
    if k not in varying:
      assert (keras[k] == identity).all() and (got[k] == identity).all(), k
  for k in OPTIONAL_PARAMS:
    if k not in varying:
      assert all(d[k] is None for d in draws) and k not in got, k
  for k, bounds in varying.items():
    if bounds is None:  # Discrete: same values, same frequencies.
      values, keras_counts = np.unique(keras[k], return_counts=True)
      got_values, got_counts = np.unique(got[k], return_counts=True)
      np.testing.assert_allclose(got_values, values, rtol=1e-6, err_msg=k)
      np.testing.assert_allclose(got_counts / 20000, keras_counts / 4000, atol=0.035, err_msg=k)
    else:
      lo, hi = bounds
      for sample in (keras[k], got[k]):  # Both fill [lo, hi] and no more.
        assert lo - 1e-5 <= sample.min() < lo + 0.01 * (hi - lo), k
        assert hi - 0.01 * (hi - lo) < sample.max() <= hi + 1e-5, k
      std = keras[k].std()
      assert abs(got[k].mean() - keras[k].mean()) < 5 * std * np.sqrt(1 / 4000 + 1 / 20000), k
      assert abs(got[k].std() / std - 1) < 0.04, k
  if 'zx' in varying:  # Drawn independently, in Keras and here.
    assert abs(np.corrcoef(got['zx'], got['zy'])[0, 1]) < 0.05
  for k in ('flip_h', 'flip_v'):
    if k in varying:
      assert abs(got[k].mean() - 0.5) < 0.02


ALL_ON = dict(rotation_range=20.0, width_shift_range=0.1, height_shift_range=0.1, shear_range=10.0,
              zoom_range=(0.9, 1.1), horizontal_flip=True, vertical_flip=True, fill_mode='reflect')


def test_jit_vmap_and_independent_examples():
  fn = jax.jit(augment.make_augment_fn(ALL_ON))
  rng = jax.random.PRNGKey(3)
  image = random_images(np.random.RandomState(3), 1, (32, 32, 3))
  images = jnp.broadcast_to(image, (8, 32, 32, 3))
  out = fn(rng, images)
  assert out.shape == images.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, fn(rng, images))  # Deterministic given rng.
  # Same as the two-step public path, up to float32 rounding: XLA fuses (and rounds) the jitted
  # parameter arithmetic differently from the eager one.
  params = augment.sample_transform_params(rng, 8, 32, 32, ALL_ON)
  np.testing.assert_allclose(out, apply_jit(images, params, fill_mode='reflect'), atol=1e-2)
  # Identical inputs, different transforms.
  flat = np.asarray(out).reshape(8, -1)
  assert all(np.abs(flat[i] - flat[j]).max() > 1 for i in range(8) for j in range(i))
  # vmap over an outer axis equals one call per slice.
  rngs, stack = jax.random.split(rng, 3), jnp.stack([images, images + 1, images + 2])
  batched = jax.vmap(fn)(rngs, stack)
  for i in range(3):
    np.testing.assert_allclose(batched[i], fn(rngs[i], stack[i]), atol=1e-2)


@pytest.mark.parametrize('fill_mode', augment.FILL_MODES)
def test_everything_off_is_identity(fill_mode):
  assert augment.make_augment_fn(base.get_config().augment) is None
  assert augment.make_augment_fn(dict(fill_mode=fill_mode, cval=3.0, zoom_range=(1.0, 1.0))) is None
  images = random_images(np.random.RandomState(4), 4, (20, 28, 3))
  np.testing.assert_array_equal(ours(images, {}, fill_mode), images)
  np.testing.assert_array_equal(ours(images, augment.IDENTITY_PARAMS, fill_mode), images)
  # Options that are off sample the identity, so a lone flip moves pixels and nothing else.
  fn = jax.jit(augment.make_augment_fn(dict(horizontal_flip=True, fill_mode=fill_mode)))
  out = np.asarray(fn(jax.random.PRNGKey(0), jnp.asarray(images)))
  for x, y in zip(images, out):
    assert (y == x).all() or (y == x[:, ::-1]).all()
  with pytest.raises(ValueError, match='floating'):
    augment.apply_transform(jnp.zeros((1, 4, 4, 1), jnp.uint8), {})


@pytest.mark.parametrize('key,value', [
    ('rotation_range', -1.0),
    ('rotation_range', True),
    ('shear_range', float('nan')),
    ('width_shift_range', -0.1),
    ('height_shift_range', -2),
    ('height_shift_range', []),
    ('width_shift_range', [0.1, -0.2]),
    ('zoom_range', (1.2, 0.8)),  # lo > hi
    ('zoom_range', (0.0, 1.1)),  # a zero scale
    ('zoom_range', -0.1),
    ('zoom_range', 1.5),  # 1 - 1.5 < 0
    ('zoom_range', (0.9, 1.0, 1.1)),
    ('fill_mode', 'mirror'),
    ('horizontal_flip', 'yes'),
    ('vertical_flip', 1),
    ('cval', None),
    ('width_shift_range', 'abc'),  # The field takes any type; the check does not.
    ('height_shift_range', True),
    ('channel_shift_range', -1.0),
    ('brightness_range', (1.2, 0.8)),
    ('brightness_range', 0.5),
    ('brightness_range', (0.5, float('inf'))),
    ('tta', 'mirror'),
    ('layers', 'random_flip'),
    ('layers', (dict(type='random_flop'),)),
])
def test_bad_config_raises_naming_the_key(key, value):
  with pytest.raises(ValueError, match=key):
    augment.validate_augment_config({key: value})
  with pytest.raises(ValueError, match=key):
    augment.make_augment_fn({key: value})


def test_good_configs_validate():
  assert augment.DEFAULTS == base.get_config().augment.to_dict()  # Same keys, same "off" values.
  augment.validate_augment_config(base.get_config().augment)
  for config in (ALL_ON, dict(zoom_range=0.2), dict(width_shift_range=[2, 4]),
                 dict(height_shift_range=3), dict(brightness_range=[0.8, 1.2]),
                 dict(channel_shift_range=10.0)):
    augment.validate_augment_config(config)
    assert augment.make_augment_fn(config) is not None
  assert augment.make_augment_fn(dict(tta='flip', layers=(dict(type='cutout'),))) is None


def parse_flags(*overrides):
  """The config launch.py would get from `--config=configs/base.py *overrides`."""
  argv = ['prog', f'--config={REPO / "configs" / "base.py"}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', lock_config=True, flag_values=flag_values,
                                  sys_argv=argv)  # The overrides are read from here.
  flag_values(argv)
  return flag_values.config


@pytest.mark.parametrize('override,value,draws', [
    ('4', 4, {-3, -2, -1, 0, 1, 2, 3}),  # Keras int n: {0..n-1} times a sign, in pixels.
    ('[2,5]', [2, 5], {-5, -2, 2, 5}),  # A list: its values times a sign.
    ('[0.125,0.25]', [0.125, 0.25], {-8, -4, 4, 8}),  # Fractions of the size (32).
    ('4.0', 4.0, None),  # A float: uniform in [-4, 4] pixels.
])
def test_shift_ranges_keep_their_keras_type_through_the_config(override, value, draws):
  in_code = base.get_config()
  in_code.augment.width_shift_range = value  # As an experiment config sets it.
  for config in (parse_flags(f'--config.augment.width_shift_range={override}'), in_code):
    assert config.augment.width_shift_range == value
    assert type(config.augment.width_shift_range) is type(value)
    ty = np.asarray(augment.sample_transform_params(jax.random.PRNGKey(0), 4000, 32, 32,
                                                    config.augment)['ty'])
    if draws is None:
      assert len(set(ty.tolist())) > 3000 and -4 <= ty.min() < -3.9 and 3.9 < ty.max() <= 4
    else:
      assert set(ty.tolist()) == draws


def test_brightness_range_and_layers_from_the_command_line():
  config = parse_flags('--config.augment.brightness_range=(0.8,1.2)', '--config.augment.tta=flip')
  assert config.augment.brightness_range == (0.8, 1.2) and config.augment.tta == 'flip'
  augment.validate_augment_config(config.augment)
  assert 'brightness' in augment.sample_transform_params(jax.random.PRNGKey(0), 2, 32, 32,
                                                         config.augment)
