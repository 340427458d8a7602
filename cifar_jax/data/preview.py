"""A PNG grid of training images as a config's augmentation hands them to the model.

    python -m cifar_jax.data.preview --config=configs/exp7.py --out=aug.png [--num=8] [--views=6]
        [--seed=0] [--config.data.dir=PATH] [--config.augment.rotation_range=30 ...]

Each row is one training image (round-robin over the classes: one of each class first),
labelled with its class: the original, then `views` augmented versions. Both augmentation
stages run exactly as in training (InputPipeline with train=True), with fixed keys, and the
result is mapped back from the normalised space to 0..255 for display. The data is found as a
run finds it (--config.data.dir, else $CIFAR10_DIR, else the caches).
"""

import dataclasses
import sys

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags
from PIL import Image, ImageDraw, ImageFont

from cifar_jax.data import augment
from cifar_jax.data import pipeline
from cifar_jax.data.cifar10 import DataError

SCALE = 4  # 32x32 images drawn at 128x128, pixels kept square (nearest neighbour).
GAP = 6
LABEL_WIDTH = 120
FONT_SIZE = 15


def round_robin_by_class(labels: np.ndarray, num: int) -> np.ndarray:
  """Indices of `num` examples: the first of each class, then the second of each, and so on."""
  rank_in_class = np.zeros(len(labels), np.int64)
  for label in np.unique(labels):
    where = np.flatnonzero(labels == label)
    rank_in_class[where] = np.arange(len(where))
  return np.lexsort((labels, rank_in_class))[:num]


def augmented_views(input_pipeline: pipeline.InputPipeline, images: np.ndarray, views: int,
                    seed: int) -> np.ndarray:
  """uint8 [views + 1, N, H, W, C]: the originals (eval path), then `views` training draws."""
  mean, std = (np.asarray(v, np.float32) for v in (input_pipeline.mean, input_pipeline.std))
  train = jax.jit(lambda rng, x: input_pipeline(rng, x, train=True))
  outputs = [input_pipeline(None, images, train=False)]
  outputs += [train(jax.random.fold_in(jax.random.PRNGKey(seed), v), images)
              for v in range(views)]
  pixels = np.stack([np.asarray(x) for x in outputs]) * std + mean
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def describe_augment(augment_config) -> list[str]:
  """The options a config changes from the defaults, one line each for the layers."""
  given = augment_config.to_dict()
  changed = [f'{k}={given[k]!r}' for k in augment.IMAGE_DATA_GENERATOR_KEYS
             if given[k] != augment.DEFAULTS[k]]
  lines = ['ImageDataGenerator: ' + (', '.join(changed) or 'off')]
  for entry in given['layers']:
    entry = dict(entry)
    kind = entry.pop('type')
    lines.append(f'layer {kind}(' + ', '.join(f'{k}={v!r}' for k, v in entry.items()) + ')')
  return lines


def load_font(size: int = FONT_SIZE):
  try:
    return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable.
  except (TypeError, OSError):
    return ImageFont.load_default()


def _wrap(lines: list[str], font, width: int) -> list[str]:
  """Word-wraps each line to `width` pixels; continuation lines are indented."""
  wrapped = []
  for line in lines:
    current = ''
    for word in line.split(' '):
      candidate = f'{current} {word}' if current else word
      if current and font.getlength(candidate) > width:
        wrapped.append(current)
        candidate = '    ' + word
      current = candidate
    wrapped.append(current)
  return wrapped


@dataclasses.dataclass(frozen=True)
class GridLayout:
  """Where things go in the grid: the header lines (wrapped), then the column titles, then
  `num` rows of `num_views` cells of `cell_size` pixels, each row labelled on the left."""
  header: tuple[str, ...]
  num_views: int
  num: int
  cell_size: tuple[int, int]  # (height, width)
  line_height: int = FONT_SIZE + 5

  @property
  def top(self) -> int:  # The header, half a blank line, the column titles.
    return GAP + self.line_height * len(self.header) + self.line_height // 2 + self.line_height

  @property
  def size(self) -> tuple[int, int]:  # (width, height), as PIL wants it.
    height, width = self.cell_size
    return (LABEL_WIDTH + self.num_views * (width + GAP) + GAP,
            self.top + self.num * (height + GAP))

  def cell(self, row: int, column: int) -> tuple[int, int]:
    """The (left, top) corner of a cell."""
    height, width = self.cell_size
    return LABEL_WIDTH + column * (width + GAP), self.top + row * (height + GAP)


def grid_layout(header: list[str], num_views: int, num: int, image_size, font) -> GridLayout:
  cell_size = (image_size[0] * SCALE, image_size[1] * SCALE)
  width = GridLayout((), num_views, num, cell_size).size[0]
  return GridLayout(tuple(_wrap(header, font, width - 2 * GAP)), num_views, num, cell_size)


def render_grid(views: np.ndarray, class_names: list[str], header: list[str]) -> Image.Image:
  """views uint8 [V, N, H, W, C] as N rows of V cells, with a header block and row labels."""
  num_views, num, height, width, _ = views.shape
  font = load_font()
  layout = grid_layout(header, num_views, num, (height, width), font)
  grid = Image.new('RGB', layout.size, 'white')
  draw = ImageDraw.Draw(grid)
  for i, line in enumerate(layout.header):
    draw.text((GAP, GAP + i * layout.line_height), line, fill='black', font=font)
  for v in range(num_views):
    title = 'original' if v == 0 else f'augmented {v}'
    draw.text((layout.cell(0, v)[0], layout.top - layout.line_height), title, fill='black',
              font=font)
  for n in range(num):
    top = layout.cell(n, 0)[1]
    draw.text((GAP, top + layout.cell_size[0] // 2 - FONT_SIZE // 2), class_names[n],
              fill='black', font=font)
    for v in range(num_views):
      cell = Image.fromarray(views[v, n].squeeze(-1) if views.shape[-1] == 1 else views[v, n])
      grid.paste(cell.resize(layout.cell_size[::-1], Image.NEAREST), layout.cell(n, v))
  return grid


def write_preview(config, out: str, num: int = 8, views: int = 6, seed: int = 0) -> Image.Image:
  """Loads the config's training split, augments `num` images `views` times, writes `out`."""
  augment.validate_augment_config(config.augment)
  splits = pipeline.make_splits(config.data)
  input_pipeline = pipeline.make_input_pipeline(config, splits.train.images)
  chosen = round_robin_by_class(splits.train.labels, num)
  grid = render_grid(
      augmented_views(input_pipeline, splits.train.images[chosen], views, seed),
      [splits.class_names[label] for label in splits.train.labels[chosen]],
      [f'{config.name}: training-time augmentation (seed {seed})'] +
      describe_augment(config.augment))
  grid.save(out)
  return grid


def main():
  # Flags are defined here, not at import, so importing this module defines none.
  config = config_flags.DEFINE_config_file('config', None, 'Experiment config (configs/*.py).',
                                           lock_config=True)
  out = flags.DEFINE_string('out', 'augmentation.png', 'Where to write the PNG.')
  num = flags.DEFINE_integer('num', 8, 'Rows: how many training images.', lower_bound=1)
  views = flags.DEFINE_integer('views', 6, 'Augmented versions per image.', lower_bound=1)
  seed = flags.DEFINE_integer('seed', 0, 'Seed of the augmentation draws.')
  flags.mark_flags_as_required(['config'])

  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
      write_preview(config.value, out.value, num.value, views.value, seed.value)
    except (DataError, ValueError, OSError) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    print(f'wrote {out.value}')

  app.run(run)


if __name__ == '__main__':
  main()
