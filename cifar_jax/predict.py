"""Top classes for image files, from a finished run's checkpoint.

    python -m cifar_jax.predict --workdir=runs/exp0 cat.png photos/ [--checkpoint=best|latest]
        [--top=3] [--json]

Images go in as the training data did: decoded to RGB, resized to the model's input size with
Pillow's bilinear filter (antialiased: when shrinking, the filter widens with the scale factor)
and kept as uint8 0..255; the run's input pipeline then normalises them, (x - mean) / std with
results.json's `normalization`. The aspect ratio is not kept (Keras's load_img(target_size)
squashes too). A folder contributes its .png/.jpg/.jpeg files. An image many times the input
size is decoded at a reduced size first (JPEG: Pillow's `draft`, which scales the DCT; others:
`reduce` by a whole factor right after decoding), never below 4x the input size, so a huge photo
costs megabytes, not gigabytes.

The command classifies every readable image, lists each unreadable one on stderr (`error:
PATH: why`) and then exits with code 1; a missing file or a bad run folder is exit code 2,
before any work. The workdir and the images may be gs:// URLs (cifar_jax.paths).

In a script:

    predictor = load_predictor('runs/exp0')               # best checkpoint
    probabilities = predictor.predict(uint8_images)        # [N, H, W, 3] -> [N, classes]
"""

import argparse
import dataclasses
import functools
import json
import os
import sys
import warnings
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps

from cifar_jax import paths as fs  # (`paths` names lists of image paths below)
from cifar_jax.data import pipeline
from cifar_jax.models import create_model
from cifar_jax.report import run_files
from cifar_jax.train import checkpointing
from cifar_jax.train import freezing
from cifar_jax.train import loop
from cifar_jax.train import steps
from cifar_jax.train import transfer
from cifar_jax.train.state import TrainState, create_train_state

CHECKPOINTS = ('best', 'latest')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
RESIZE_METHOD = 'Pillow bilinear (antialiased)'
# Images larger than this many times the input (per side) are decoded reduced, to this multiple.
DECODE_MARGIN = 4


class PredictError(ValueError):
  """A run or an image cannot be used for prediction; the message says which and why."""


class ImageError(PredictError):
  """An image file is missing or cannot be decoded; the message names it."""


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A restored model with its input pipeline: uint8 images in, class probabilities out."""
  state: TrainState
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]  # (H, W, C) the model takes.
  checkpoint: str  # 'best' or 'latest'.
  step: int  # The training step the checkpoint was taken at.
  batch_size: int  # Images per device call (the run's eval_batch_size).

  def predict(self, images: np.ndarray) -> np.ndarray:
    """Class probabilities (float32 [N, classes]) of uint8 images [N, H, W, C]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      shape = ', '.join(map(str, self.image_shape))
      raise ValueError(f'expected uint8 images of shape [N, {shape}], got {images.dtype} '
                       f'{images.shape} (read_images prepares files)')
    if not len(images):
      return np.zeros((0, len(self.class_names)), np.float32)
    # The batching the run used for predictions.npz: whole batches, the last one padded.
    batches = pipeline.make_eval_batches(
        pipeline.Split(images, np.zeros(len(images), np.int32)), self.batch_size)
    probabilities = jax.device_get(steps.predict_batches(self.state, batches.images))
    return np.asarray(probabilities, np.float32).reshape(-1, len(self.class_names))[:len(images)]


def config_from_json(config: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """config.json as the ConfigDict the run had: JSON arrays back to tuples, which the configs
  use throughout (model layers become hashable module attributes)."""
  def tuples(value):
    if isinstance(value, Mapping):
      return {k: tuples(v) for k, v in value.items()}
    if isinstance(value, list):
      return tuple(tuples(v) for v in value)
    return value
  return ml_collections.ConfigDict(tuples(config))


def normalization(run: run_files.Run) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """The (mean, std) the run's input pipeline normalised with."""
  recorded = run.results.get('normalization')
  if recorded:
    return tuple(recorded['mean']), tuple(recorded['std'])
  # Runs older than the `normalization` record: the fixed kinds need no training data.
  kind = run.config['data']['normalization']
  if kind == 'standardize':
    raise run_files.RunFilesError(
        f'{os.path.join(run.workdir, "results.json")} has no "normalization" and the run '
        "standardised with its training set's statistics; rerun it to record them.")
  channels = run.config['model']['input_shape'][-1]
  return pipeline.normalization_constants(kind, np.zeros((1, channels), np.uint8))


def state_template(config, run: run_files.Run, epoch: int) -> TrainState:
  """An abstract TrainState shaped like the run's at 0-based `epoch`, built as the training loop
  builds its own but without data: the fine-tuning phase of that epoch decides the frozen layers
  and so the optimizer state's structure.
  """
  phase = freezing.phase_of_epoch(freezing.fine_tuning_phases(config), config, epoch)
  model, tx = freezing.phase_model_and_tx(phase, steps_per_epoch(config, run))
  mean, std = normalization(run)
  return jax.eval_shape(lambda: create_train_state(phase.config, model, tx,
                                                   pipeline.InputPipeline(mean, std)))


def steps_per_epoch(config, run: run_files.Run) -> int:
  return loop.EpochPlan.create(run.results['num_train'], config.train.batch_size,
                               config.train.steps_per_epoch).steps_per_epoch


def restore_state(config, run: run_files.Run, checkpoint: str) -> TrainState:
  """The `checkpoint` ('best' or 'latest') TrainState of the run.

  Raises:
    checkpointing.CheckpointError: the workdir has no such checkpoint.
  """
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f'checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}')
  folder = fs.join(run.workdir, 'checkpoints')
  # Checked first: the Checkpointer creates missing folders, and predicting writes nothing.
  if not all(fs.isdir(fs.join(folder, kind)) for kind in CHECKPOINTS):
    raise checkpointing.CheckpointError(
        f'no checkpoint in {folder}: the run was trained with checkpoint.enabled=False, or its '
        'checkpoints were moved.')
  template = functools.partial(state_template, config, run)
  checkpointer = checkpointing.Checkpointer(run.workdir)
  try:
    if checkpoint == 'best':
      # Saved at the end of an epoch, by the step count of the epochs so far.
      step = checkpointer.best.latest_step() or 0  # restore_best reports a missing one.
      return checkpointer.restore_best(template(step // steps_per_epoch(config, run) - 1))
    first = template(0)
    restored = checkpointer.restore_latest(lambda host: template(freezing.saved_epoch(host)),
                                           (first.params, first.batch_stats),
                                           set_aside_unusable=False)  # Predicting writes nothing.
    if restored is None:
      raise checkpointing.CheckpointError(f'no latest checkpoint in {checkpointer.directory}: '
                                          'the run has not saved one yet.')
    return restored[0]
  finally:
    checkpointer.close()


def load_predictor(workdir: str, checkpoint: str = 'best') -> Predictor:
  """Restores a finished run's 'best' (ModelCheckpoint) or 'latest' (end of training) state.

  Raises:
    run_files.RunFilesError: config.json, results.json or predictions.npz is missing or
      unreadable (named).
    checkpointing.CheckpointError: the workdir has no such checkpoint.
    PredictError: the run's checkpoints cannot classify images.
  """
  run = run_files.load_run(workdir)
  class_names = run.predictions().class_names
  config = config_from_json(run.config)
  if transfer.uses_bottleneck(create_model(config.model), config):
    raise PredictError(f'{workdir} trained model.backbone.bottleneck: its checkpoints hold the '
                       'head alone, without the backbone, so they cannot classify images.')
  state = restore_state(config, run, checkpoint)
  return Predictor(state=state, class_names=class_names,
                   image_shape=tuple(config.model.input_shape), checkpoint=checkpoint,
                   step=int(state.step), batch_size=config.train.eval_batch_size)


def image_paths(paths: Sequence[str]) -> list[str]:
  """Files as given; each folder's PNG/JPEG files, sorted by name.

  Raises:
    ImageError: a path does not exist, or a folder holds no PNG/JPEG file.
  """
  found = []
  for path in paths:
    if fs.isdir(path):
      files = sorted(fs.join(path, name) for name in fs.listdir(path)
                     if name.lower().endswith(IMAGE_SUFFIXES))
      if not files:
        raise ImageError(f'{path}: the folder holds no {"/".join(IMAGE_SUFFIXES)} file')
      found += files
    elif fs.exists(path):
      found.append(path)
    else:
      raise ImageError(f'{path}: no such file or folder')
  return found


def read_image(path: str, image_shape: Sequence[int]) -> np.ndarray:
  """One file as uint8 [H, W, C] of `image_shape` (C = 3: RGB, C = 1: greyscale).

  Raises:
    ImageError: the file cannot be read or decoded (named, with the reason).
  """
  height, width, channels = image_shape
  try:
    with warnings.catch_warnings():
      # Pillow warns about (and decodes) images over ~89M pixels; these are decoded reduced.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(fs.bytes_file(path) if fs.is_url(path) else path) as image:
        image = _decode_reduced(image, width, height)
        image = ImageOps.exif_transpose(image)  # Camera JPEGs: upright, as a viewer shows them.
        image = image.convert('RGB' if channels == 3 else 'L')
        if image.size != (width, height):
          image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, np.uint8)
  except Image.DecompressionBombError as e:
    raise ImageError(f'{path}: too large to decode ({_first_line(e)})') from e
  except Exception as e:  # pylint: disable=broad-except  (Pillow's decoders raise many kinds)
    raise ImageError(f'{path}: not a readable image ({type(e).__name__}: {_first_line(e)})'
                     ) from e
  return pixels.reshape(height, width, channels)


def _decode_reduced(image: Image.Image, width: int, height: int) -> Image.Image:
  """Decodes `image`, at a reduced size when it is more than DECODE_MARGIN times (width,
  height) on both sides: JPEG's draft mode decodes at 1/2, 1/4 or 1/8 scale directly; other
  formats are decoded whole and reduced at once by a whole factor (before any conversion copies
  them). Either way at least DECODE_MARGIN x the target is kept for the antialiased resize."""
  target = (DECODE_MARGIN * width, DECODE_MARGIN * height)
  if image.format == 'JPEG':
    image.draft(image.mode, target)  # Keeps the size >= target on both sides.
  image.load()
  factor = min(image.size[0] // target[0], image.size[1] // target[1])
  if factor >= 2:
    try:
      image = image.reduce(factor)
    except ValueError:  # Modes reduce() lacks (palette, 16-bit): convert first.
      image = image.convert('RGBA' if 'A' in image.getbands() else 'RGB').reduce(factor)
  return image


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


def read_images(paths: Sequence[str], image_shape: Sequence[int]) -> np.ndarray:
  """uint8 [N, H, W, C]; every file is read before any prediction, so a bad one costs little.

  Raises:
    ImageError: the first file that cannot be read (see `read_readable_images` to skip them).
  """
  return np.stack([read_image(path, image_shape) for path in paths])


def read_readable_images(paths: Sequence[str], image_shape: Sequence[int]
                         ) -> tuple[list[str], np.ndarray, list[ImageError]]:
  """(readable paths, their uint8 images [N, H, W, C], one ImageError per unreadable file)."""
  readable, images, failures = [], [], []
  for path in paths:
    try:
      images.append(read_image(path, image_shape))
      readable.append(path)
    except ImageError as e:
      failures.append(e)
  shape = (0, *image_shape)
  return readable, np.stack(images) if images else np.zeros(shape, np.uint8), failures


def top_classes(probabilities: np.ndarray, class_names: Sequence[str],
                k: int) -> list[list[tuple[str, float]]]:
  """Per image, the k most probable (class name, probability), most probable first."""
  order = np.argsort(-probabilities, axis=1, kind='stable')[:, :k]
  return [[(class_names[c], float(p[c])) for c in row] for p, row in zip(probabilities, order)]


def format_text(predictor: Predictor, workdir: str, paths: Sequence[str],
                tops: Sequence[Sequence[tuple[str, float]]],
                failures: Sequence[ImageError] = ()) -> str:
  del failures  # Listed on stderr.
  width = max((len(name) for top in tops for name, _ in top), default=0)
  lines = [f'{workdir}, {predictor.checkpoint} checkpoint (step {predictor.step}); images '
           f'resized {_resize_text(predictor)} where needed']
  for path, top in zip(paths, tops):
    lines.append(path)
    lines += [f'  {rank}. {name:<{width}} {100 * p:6.2f}%' for rank, (name, p)
              in enumerate(top, start=1)]
  return '\n'.join(lines)


def format_json(predictor: Predictor, workdir: str, paths: Sequence[str],
                tops: Sequence[Sequence[tuple[str, float]]],
                failures: Sequence[ImageError] = ()) -> str:
  return json.dumps({
      'workdir': workdir, 'checkpoint': predictor.checkpoint, 'step': predictor.step,
      'resize': _resize_text(predictor),
      'images': [{'path': path, 'top': [{'class': name, 'probability': p} for name, p in top]}
                 for path, top in zip(paths, tops)],
      'unreadable': [str(e) for e in failures],
  }, indent=2)


def _resize_text(predictor: Predictor) -> str:
  height, width, _ = predictor.image_shape
  return f'to {width}x{height} with {RESIZE_METHOD}'


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m cifar_jax.predict', description=__doc__.split('\n\n', 1)[0],
      epilog=__doc__.split('\n\n')[2], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files or folders')
  parser.add_argument('--workdir', required=True, help='a finished run folder')
  parser.add_argument('--checkpoint', choices=CHECKPOINTS, default='best',
                      help="'best' (ModelCheckpoint's epoch, the default) or 'latest' (the "
                           'last saved training state)')
  parser.add_argument('--top', type=int, default=3, help='classes per image (default 3)')
  parser.add_argument('--json', action='store_true', help='machine-readable output')
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  if args.top < 1:
    print(f'error: --top={args.top} must be at least 1', file=sys.stderr)
    return 2
  try:
    run = run_files.load_run(args.workdir)  # Its input shape, before loading a model.
    paths = image_paths(args.images)
    paths, images, failures = read_readable_images(paths, run.config['model']['input_shape'])
    predictor = load_predictor(args.workdir, args.checkpoint)
  except (PredictError, run_files.RunFilesError, checkpointing.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  tops = top_classes(predictor.predict(images), predictor.class_names, args.top)
  output = format_json if args.json else format_text
  print(output(predictor, args.workdir, paths, tops, failures))
  for failure in failures:
    print(f'error: {failure}', file=sys.stderr)
  if failures:
    print(f'error: {len(failures)} of {len(paths) + len(failures)} images could not be read',
          file=sys.stderr)
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
