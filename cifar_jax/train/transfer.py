"""What the training loop does differently for transfer-learning models (models/backbone.py):
load the pretrained backbone, and in bottleneck mode train the head on features computed once."""

import dataclasses

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
    compute = lambda images: backbone.compute_bottleneck_features(
        model, variables, images, config.train.eval_batch_size, normalize=normalize)
    values = backbone.cached_bottleneck_features(workdir, name, config.model, split.images,
                                                 compute)
    return pipeline.Split(values, split.labels)

  new = dataclasses.replace(splits, train=features('train', splits.train),
                            validation=features('validation', splits.validation),
                            test=features('test', splits.test))
  return new, tuple(new.train.images.shape[1:])
