"""Writes the report files: per run, and for several runs side by side.

A gs:// output folder (the default for a gs:// run: WORKDIR/report) is written locally first,
where matplotlib and the table writers can write files, then uploaded object by object through
cifar_jax.paths.
"""

import contextlib
import dataclasses
import functools
import os
import tempfile
from typing import Sequence

from cifar_jax import paths

from cifar_jax.data.cifar10 import DataError
from cifar_jax.report import confusion
from cifar_jax.report import curves
from cifar_jax.report import html
from cifar_jax.report import results
from cifar_jax.report import samples
from cifar_jax.report import tables
from cifar_jax.report.run_files import Run, load_test_images

DEFAULT_NUM_SAMPLES = 32


@dataclasses.dataclass
class Written:
  """The files a report wrote, and what it had to leave out and why."""
  files: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)


def write_run_report(run: Run, out_dir: str, data_dir: str = '',
                     num_samples: int = DEFAULT_NUM_SAMPLES) -> Written:
  """curves.png, confusion.png, per_class.{md,csv}, samples.png and index.html in `out_dir`.

  The sample grid needs the run's test images; without them it is left out, with a note.

  Raises:
    RunFilesError: predictions.npz is missing or unreadable.
  """
  with _writable(out_dir) as (local_dir, written):
    _write_run_report(run, local_dir, written, data_dir, num_samples)
  return written


def _write_run_report(run: Run, out_dir: str, written: Written, data_dir: str,
                      num_samples: int) -> None:
  path = functools.partial(os.path.join, out_dir)
  predictions = run.predictions()
  matrix = confusion.confusion_of(predictions)
  per_class = confusion.per_class_table(matrix, predictions.class_names)
  title = f'{run.description}: test accuracy {run.test_accuracy_percent:.2f}%'
  written.files += [
      curves.plot_run_curves(run, path('curves.png')),
      confusion.plot_confusion(matrix, predictions.class_names,
                               f'{title} on {matrix.sum():,} images', path('confusion.png')),
      tables.write(path('per_class.md'), per_class.to_markdown()),
      tables.write(path('per_class.csv'), per_class.to_csv()),
  ]
  sections = [('Run', results.runs_table([run]).to_html()),
              ('Learning curves', html.image(path('curves.png'), 'learning curves')),
              ('Confusion matrix (test set)', html.image(path('confusion.png'), 'confusion')),
              ('Per class (test set)', per_class.to_html())]
  try:
    images = load_test_images(run, min(num_samples, len(predictions.labels)), data_dir)
  except DataError as e:
    written.notes.append(
        f'{run.workdir}: samples.png left out: the test images are not in the run files and '
        f'the data it used cannot be read: {e} (pass --data-dir to point at it).')
    sections.append(('Test images', html.note(written.notes[-1])))
  else:
    written.files.append(samples.plot_samples(images, predictions, title, path('samples.png')))
    sections.append(('Test images', html.image(path('samples.png'), 'test images')))
  written.files.append(tables.write(path('index.html'), html.page(title, sections)))


def write_comparison(runs: Sequence[Run], out_dir: str) -> Written:
  """runs.{md,csv} (a row per run), results.{md,csv} (a row per config), curves.png (overlaid,
  for several runs), each run's curves as curves_<run>.png, and results.html with all of it."""
  with _writable(out_dir) as (local_dir, written):
    _write_comparison(runs, local_dir, written)
  return written


def _write_comparison(runs: Sequence[Run], out_dir: str, written: Written) -> None:
  path = functools.partial(os.path.join, out_dir)
  per_run, per_config = results.runs_table(runs), results.results_table(runs)
  for name, table in (('runs', per_run), ('results', per_config)):
    written.files += [tables.write(path(f'{name}.md'), table.to_markdown()),
                      tables.write(path(f'{name}.csv'), table.to_csv())]
  sections = [('Results by config (test accuracy: mean ± std over seeds)', per_config.to_html()),
              ('Runs', per_run.to_html())]
  if len(runs) > 1:
    written.files.append(curves.plot_overlaid_curves(runs, path('curves.png')))
    sections.append(('Learning curves, overlaid', html.image(path('curves.png'), 'overlaid')))
  for run in runs:
    png = curves.plot_run_curves(run, path(f'curves_{run.label}.png'))
    written.files.append(png)
    sections.append((f'Learning curves: {run.description}', html.image(png, run.label)))
  written.files.append(tables.write(path('results.html'), html.page('cifar_jax results',
                                                                    sections)))


@contextlib.contextmanager
def _writable(out_dir: str):
  """(a local folder to write into, the Written to fill); for a URL, a temporary folder whose
  files are uploaded to `out_dir` at the end (and Written names them there)."""
  written = Written()
  if not paths.is_url(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    yield out_dir, written
    return
  with tempfile.TemporaryDirectory(prefix='cifar_jax_report_') as local_dir:
    yield local_dir, written
    paths.makedirs(out_dir)
    uploaded = []
    for file in written.files:
      target = paths.join(out_dir, os.path.relpath(file, local_dir))
      paths.write_bytes(target, paths.read_bytes(file))
      uploaded.append(target)
    written.files = uploaded
