"""What the training loop does differently for transfer-learning models (models/backbone.py):
load the pretrained backbone, and in bottleneck mode train the head on features computed once.

The bottleneck features are computed here, batched on the device, and cached as files in the
run's workdir: a model knows nothing of workdirs, so the caching lives with training.
"""

import dataclasses
import hashlib
import io
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax import paths
from cifar_jax.data import pipeline
from cifar_jax.models import backbone


def uses_bottleneck(model, config) -> bool:
  return isinstance(model, backbone.TransferModel) and bool(config.model.backbone.bottleneck)


def head_model(model):
  return backbone.head_model(model)


def load_pretrained(model, config, state):
  """The state with model.backbone.weights loaded into the backbone (no-op for other models)."""
  if not isinstance(model, backbone.TransferModel):
    return state
  params, batch_stats = backbone.load_pretrained(config.model, state.params, state.batch_stats)
  return state.replace(params=params, batch_stats=batch_stats)


def bottleneck_splits(model, config, splits: pipeline.Splits, input_pipeline, workdir: str):
  """(splits whose images are the backbone's features, the feature shape). The features are
  computed once in inference mode and cached in <workdir>/bottleneck."""
  from cifar_jax.train.state import init_variables  # pylint: disable=g-import-not-at-top

  params, batch_stats = init_variables(model, config.model.input_shape, config.seed)
  params, batch_stats = backbone.load_pretrained(config.model, params, batch_stats)
  variables = {'params': params, 'batch_stats': batch_stats}
  normalize = lambda batch: input_pipeline(None, batch, train=False)

  def features(name, split):
    if split is None:
      return None
    compute = lambda images: compute_bottleneck_features(
        model, variables, images, config.train.eval_batch_size, normalize=normalize)
    values = cached_bottleneck_features(workdir, name, config.model, split.images, compute)
    return pipeline.Split(values, split.labels)

  new = dataclasses.replace(splits, train=features('train', splits.train),
                            validation=features('validation', splits.validation),
                            test=features('test', splits.test))
  return new, tuple(new.train.images.shape[1:])


# --- Bottleneck features (compute the frozen backbone once, train the head on them). ---------

def compute_bottleneck_features(model: backbone.TransferModel, variables, images: np.ndarray,
                                batch_size: int, normalize: Callable | None = None) -> np.ndarray:
  """`model.features` of every image, in inference mode, batched on the device: float32 [N, ...].

  `normalize` maps a raw batch to the model's input inside jit (e.g. the run's input pipeline,
  `lambda x: input_pipeline(None, x, train=False)`); None feeds the images as float32. The last
  batch is padded to `batch_size`, so one compilation serves every batch.
  """
  variables = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}

  # The variables are an argument: closed over, they would be baked into the program.
  @jax.jit
  def features(variables, batch):
    x = normalize(batch) if normalize is not None else batch.astype(jnp.float32)
    return model.apply(variables, x, train=False, method=backbone.TransferModel.features)

  n = len(images)
  out = None

  def store(start, size, result):
    nonlocal out
    result = np.asarray(result)[:size]
    if out is None:
      out = np.empty((n, *result.shape[1:]), np.float32)
    out[start:start + size] = result

  pending = None  # One batch in flight: the device computes it while the host stores the last.
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    size = len(batch)
    if size < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - size, *batch.shape[1:]), batch.dtype)])
    result = features(variables, batch)
    if pending is not None:
      store(*pending)
    pending = (start, size, result)
  if pending is not None:
    store(*pending)
  return out


def _fingerprint(model_config, images: np.ndarray) -> str:
  """What the features depend on: the backbone config, the weight file and the images."""
  digest = hashlib.blake2b(digest_size=12)
  digest.update(repr((model_config.name, model_config.backbone.to_dict(),
                      model_config.input_shape, model_config.dtype)).encode())
  path = backbone.weights_path(model_config)
  if path:
    stat = os.stat(path)
    digest.update(repr((os.path.abspath(path), stat.st_size, stat.st_mtime_ns)).encode())
  digest.update(repr(images.shape).encode())
  digest.update(np.ascontiguousarray(images).data)
  return digest.hexdigest()


def cached_bottleneck_features(cache_dir: str, split_name: str, model_config, images: np.ndarray,
                               compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """`compute(images)`, cached as <cache_dir>/bottleneck/<split_name>-<fingerprint>.npy.

  The fingerprint covers the backbone config, the weight file and the images, so a changed
  backbone or split recomputes, and a rerun in the same workdir loads the file instead.
  """
  folder = paths.join(cache_dir, 'bottleneck')  # The workdir: local or gs:// (cifar_jax.paths).
  path = paths.join(folder, f'{split_name}-{_fingerprint(model_config, images)}.npy')
  if paths.exists(path):
    return np.load(paths.bytes_file(path))
  features = compute(images)
  paths.makedirs(folder)
  buffer = io.BytesIO()
  np.save(buffer, features)
  # Whole or absent, never truncated: a local temp file renamed, or one gs:// object.
  paths.write_bytes(path, buffer.getvalue())
  return features
