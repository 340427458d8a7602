"""Keras-style `model.summary()`: layer, output shape, parameter count, and the three totals.

Shapes come from `jax.eval_shape`, so summarising a 36M-parameter model allocates nothing.
As in Keras, BatchNorm moving mean/variance ('batch_stats') are non-trainable parameters, and
so are the weights of frozen layers (a model's `trainable_mask(params)`, where it has one).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerRow:
  name: str
  class_name: str
  output_shape: tuple
  params: int


@dataclasses.dataclass(frozen=True)
class Summary:
  rows: tuple[LayerRow, ...]
  trainable: int
  non_trainable: int

  @property
  def total(self) -> int:
    return self.trainable + self.non_trainable


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def summarize(model, input_shape) -> Summary:
  """Summarises `model` applied to a batch of images of `input_shape` (H, W, C)."""
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  variables = jax.eval_shape(lambda r, v: model.init(r, v, train=False, mutable=True), rngs, x)
  params = variables.get('params', {})
  batch_stats = variables.get('batch_stats', {})
  rows = tuple(_rows(variables.get('intermediates', {}), params, batch_stats))
  mask_fn = getattr(model, 'trainable_mask', None)  # Frozen layers (transfer learning).
  mask = mask_fn(params) if mask_fn else jax.tree.map(lambda _: True, params)
  trainable = sum(math.prod(p.shape) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
                  if m)
  return Summary(rows, trainable=trainable,
                 non_trainable=_count(params) - trainable + _count(batch_stats))


def _rows(intermediates, params, batch_stats):
  """Keys are '<layer index>_<name>:<Keras class>', as the models sow them; a nested dict is a
  submodule's layers (a backbone, then a head: keys sort in model order). A layer's count is the
  size of its variables (its kind's `weights`), trainable or not."""
  for key, outputs in sorted(intermediates.items()):
    if isinstance(outputs, dict):
      yield from _rows(outputs, params.get(key, {}), batch_stats.get(key, {}))
      continue
    name, _, class_name = key.split('_', 1)[1].partition(':')
    shape = ('None', *outputs[0].shape[1:])
    yield LayerRow(name, class_name or name, shape,
                   _count(params.get(name, {})) + _count(batch_stats.get(name, {})))


def _size(n: int) -> str:
  """Keras's float32 byte size annotation, e.g. '1.00 MB'."""
  size = 4 * n
  for unit in ('Byte', 'KB', 'MB', 'GB'):
    if size < 1024 or unit == 'GB':
      return f'{size:.2f} {unit}' if unit != 'Byte' else f'{size:.2f} Byte'
    size /= 1024


def format_summary(summary: Summary, title: str = 'sequential') -> str:
  header = ('Layer (type)', 'Output Shape', 'Param #')
  body = [(f'{r.name} ({r.class_name})', '(' + ', '.join(map(str, r.output_shape)) + ')',
           f'{r.params:,}') for r in summary.rows]
  widths = [max(len(row[i]) for row in [header, *body]) + 2 for i in range(3)]
  rule = '-' * sum(widths)

  def line(cells):
    return ''.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

  lines = [f'Model: "{title}"', rule, line(header), '=' * sum(widths)]
  lines += [line(row) for row in body]
  lines += ['=' * sum(widths),
            f'Total params: {summary.total:,} ({_size(summary.total)})',
            f'Trainable params: {summary.trainable:,} ({_size(summary.trainable)})',
            f'Non-trainable params: {summary.non_trainable:,} ({_size(summary.non_trainable)})']
  return '\n'.join(lines)
