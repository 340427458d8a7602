"""Keras weight files -> Flax variables, matched by layer name.

Reads the three formats Keras writes:
* legacy HDF5, as keras.applications downloads into ~/.keras/models/ (and Keras 2
  `save_weights('x.h5')`, or `model.save('x.h5')` under 'model_weights'): one group per layer,
  listed by the root attribute `layer_names`, each holding its weights in the order of the
  group's `weight_names` attribute;
* Keras 3 `model.save_weights('x.weights.h5')`: `layers/<class-based name>/vars/<i>`, with the
  layer's own name in the `vars` group's 'name' attribute, nested models under
  `layers/<model>/layers/...`;
* Keras 3 `model.save('x.keras')`: a zip archive holding that same `model.weights.h5`.

A Keras layer lists its weights in creation order: Conv2D and Dense [kernel, bias],
BatchNormalization [gamma, beta, moving_mean, moving_variance]. Flax holds the same arrays as
params kernel/bias, params scale/bias and batch_stats mean/var, in the same layouts (HWIO
kernels, (in, out) dense kernels), so importing is renaming.
"""

import io
import os
import shutil
import tempfile
import urllib.request
import zipfile
from typing import Mapping

import h5py
import jax.numpy as jnp
import numpy as np

from cifar_jax import paths

# Where keras.applications fetches its ImageNet weights (cache file name, URL, md5), by
# (model name, include_top).
_BASE_URL = 'https://storage.googleapis.com/tensorflow/keras-applications/'
STANDARD_FILES = {
    ('vgg16', True): ('vgg16_weights_tf_dim_ordering_tf_kernels.h5',
                      _BASE_URL + 'vgg16/', '64373286793e3c8b2b4e3219cbf3544b'),
    ('vgg16', False): ('vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
                       _BASE_URL + 'vgg16/', '6d6bbae143d832006294945121d1f1fc'),
    ('densenet121', True): ('densenet121_weights_tf_dim_ordering_tf_kernels.h5',
                            _BASE_URL + 'densenet/', '9d60b8095a5708f2dcce2bca79d332c7'),
    ('densenet121', False): ('densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5',
                             _BASE_URL + 'densenet/', '30ee3e1110167f948a6b9946edeeb738'),
}

# A layer's Flax variables in Keras's weight order; each layer has a subset of these.
KERAS_ORDER = (('params', 'kernel'), ('params', 'scale'), ('params', 'bias'),
               ('batch_stats', 'mean'), ('batch_stats', 'var'))


class WeightsError(ValueError):
  """A weight file that does not fit the model; the message names the layer."""


# --- Fetching the standard files. -------------------------------------------------------------

def keras_home() -> str:
  """Keras's cache root: $KERAS_HOME, else ~/.keras (/tmp/.keras where home is not writable)."""
  if 'KERAS_HOME' in os.environ:
    return os.environ['KERAS_HOME']
  home = os.path.expanduser('~')
  return os.path.join(home if os.access(home, os.W_OK) else '/tmp', '.keras')


def fetch_keras_weights(name: str, include_top: bool = False, download: bool = True) -> str:
  """The path of keras.applications' ImageNet weight file for `name` ('vgg16', 'densenet121').

  Looks where Keras caches it (<keras home>/models/<file>, so a file Keras already downloaded is
  reused); otherwise, with `download`, fetches it from Keras's URL and checks Keras's md5.
  """
  try:
    file_name, url_base, md5 = STANDARD_FILES[(name, include_top)]
  except KeyError:
    raise WeightsError(f'no standard Keras weights for model {name!r}; known: '
                       f'{sorted({n for n, _ in STANDARD_FILES})}') from None
  path = os.path.join(keras_home(), 'models', file_name)
  if os.path.exists(path):
    return path
  url = url_base + file_name
  if not download:
    raise WeightsError(f'{path} is missing and downloading is off; copy {url} there (or set '
                       f'model.backbone.weights to a weight file)')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, partial = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.partial')
  try:
    with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=60) as response:
      shutil.copyfileobj(response, out)
    if paths.file_digest(partial, 'md5') != md5:
      raise WeightsError(f'{url}: the download does not have Keras\'s md5 {md5}')
    os.replace(partial, path)
  except OSError as e:  # urllib's URLError is an OSError.
    raise WeightsError(f'could not download {url} into {path} ({e}); copy the file there from '
                       f'a machine with internet, or set model.backbone.weights to a file') from e
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return path


# --- Reading. ---------------------------------------------------------------------------------

def _text(value) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _add(weights: dict, name: str, arrays: list, source: str) -> None:
  if not arrays:
    return
  if name in weights:
    raise WeightsError(f'{source}: two layers are named {name!r} (nested models?); cannot '
                       f'match weights by name')
  weights[name] = arrays


def _read_legacy(root: h5py.Group, source: str) -> dict[str, list[np.ndarray]]:
  """Legacy HDF5: the groups named by `layer_names`, weights ordered by `weight_names`."""
  weights = {}
  for layer_name in map(_text, root.attrs['layer_names']):
    group = root[layer_name]  # A name with '/' (old 'conv1/conv') is a nested path; h5py agrees.
    # Old files name layers 'conv1/conv' where current Keras says 'conv1_conv'.
    own, nested = [], {}
    for weight_name in map(_text, group.attrs.get('weight_names', [])):
      array = np.asarray(group[weight_name])
      if weight_name.startswith(layer_name + '/') or '/' not in weight_name:
        own.append(array)
      else:  # A nested model's weights: '<layer>/<variable>' under the model's group.
        nested.setdefault(weight_name.split('/')[-2], []).append(array)
    _add(weights, layer_name.replace('/', '_'), own, source)
    for name, arrays in nested.items():
      _add(weights, name, arrays, source)
  return weights


def _read_keras3(root: h5py.Group, source: str) -> dict[str, list[np.ndarray]]:
  """Keras 3 `.weights.h5`: layers/<key>/vars/<i>, nested models under layers/<key>/layers."""
  weights = {}

  def visit(layers: h5py.Group):
    for key in layers:
      group = layers[key]
      if 'vars' in group:
        variables = group['vars']
        name = _text(variables.attrs.get('name', key))  # Keras >= 3.? records the real name.
        _add(weights, name, [np.asarray(variables[str(i)]) for i in range(len(variables))],
             source)
      if 'layers' in group:
        visit(group['layers'])

  visit(root['layers'])
  return weights


def _read_h5(file: h5py.File, source: str) -> dict[str, list[np.ndarray]]:
  if 'layer_names' in file.attrs:
    return _read_legacy(file, source)
  if 'model_weights' in file and 'layer_names' in file['model_weights'].attrs:
    return _read_legacy(file['model_weights'], source)  # Keras 2 model.save('x.h5').
  if 'layers' in file:
    return _read_keras3(file, source)
  raise WeightsError(f'{source}: not a Keras weight file (no layer_names, model_weights or '
                     f'layers)')


def read_keras_weights(path: str) -> dict[str, list[np.ndarray]]:
  """{layer name: its weights in Keras order} for every layer with weights in the file."""
  if zipfile.is_zipfile(path):  # .keras
    with zipfile.ZipFile(path) as archive:
      if 'model.weights.h5' not in archive.namelist():
        raise WeightsError(f'{path}: a zip without model.weights.h5, not a .keras file')
      data = io.BytesIO(archive.read('model.weights.h5'))
    with h5py.File(data, 'r') as file:
      return _read_h5(file, path)
  with h5py.File(path, 'r') as file:
    return _read_h5(file, path)


# --- Assigning. -------------------------------------------------------------------------------

def _layers(tree: Mapping, path: tuple = ()):
  """(path, layer dict) for each dict in `tree` that holds arrays: Flax's leaf modules."""
  if any(not isinstance(v, Mapping) for v in tree.values()):
    yield path, tree
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _layers(value, path + (key,))


def _subtree(tree: Mapping, path: tuple) -> dict:
  for key in path:
    tree = tree.get(key, {})
  return tree


def _copy(tree):
  return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def assign_keras_weights(weights: Mapping[str, list], params, batch_stats, scope: tuple = (),
                         source: str = 'weights'):
  """(params, batch_stats) with every Flax layer under `scope` set from `weights[layer name]`.

  Layers of `weights` that the model lacks are ignored; a model layer that `weights` lacks, or a
  weight of another shape, is a WeightsError naming the layer.
  """
  variables = {'params': _copy(params), 'batch_stats': _copy(batch_stats or {})}
  for path, _ in _layers(_subtree(params, scope)):
    full_path = scope + path
    name = path[-1] if path else scope[-1]
    slots = [(collection, leaf) for collection, leaf in KERAS_ORDER
             if leaf in _subtree(variables[collection], full_path)]
    where = '/'.join(full_path)
    if name not in weights:
      known = ', '.join(sorted(weights)[:12]) + (', ...' if len(weights) > 12 else '')
      raise WeightsError(f'{source}: no weights for layer {name!r} ({where}); the file has '
                         f'{len(weights)} layers with weights: {known}')
    arrays = weights[name]
    if len(arrays) != len(slots):
      raise WeightsError(f'{source}: layer {name!r} ({where}) has {len(arrays)} weights in the '
                         f'file but the model expects {len(slots)} ({[s[1] for s in slots]})')
    for (collection, leaf), array in zip(slots, arrays):
      target = _subtree(variables[collection], full_path)
      if tuple(array.shape) != tuple(target[leaf].shape):
        raise WeightsError(f'{source}: layer {name!r} ({where}) weight {leaf!r}: the file has '
                           f'shape {tuple(array.shape)}, the model expects '
                           f'{tuple(target[leaf].shape)}')
      target[leaf] = jnp.asarray(array, target[leaf].dtype)
  return variables['params'], variables['batch_stats']


def load_keras_weights(path: str, params, batch_stats, scope: tuple = ()):
  """`assign_keras_weights` from the Keras weight file at `path` (any of the three formats)."""
  return assign_keras_weights(read_keras_weights(path), params, batch_stats, scope, source=path)
