"""python -m cifar_jax.report WORKDIR [WORKDIR ...] [--out DIR] [--table] [--data-dir DIR]

Per run: learning curves, confusion matrix, per-class table, test-image grid and an HTML page,
in WORKDIR/report (or in --out: directly for one run, in --out/<run> for several). For several
runs, or with --table: the comparison (a row per run), the results table (a row per config,
seeds pooled) and results.html, in --out (default ./report). --table skips the per-run reports.
A multi-seed workdir (--config.num_seeds=N) stands for its seed_<i> runs. Workdirs and --out
may be gs:// URLs (cifar_jax.paths).
"""

import argparse
import os
import re
import sys
from typing import Sequence

from cifar_jax import paths
from cifar_jax.report import run_files
from cifar_jax.report import writer

DEFAULT_COMPARISON_DIR = 'report'


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m cifar_jax.report', description=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+', metavar='WORKDIR', help='finished run folders')
  parser.add_argument('--out', default='', help='where to write (see above)')
  parser.add_argument('--table', action='store_true',
                      help='only the comparison and results tables (fast, for many runs)')
  parser.add_argument('--data-dir', default='',
                      help="CIFAR-10 for the test-image grid, instead of the run's data.dir")
  parser.add_argument('--samples', type=int, default=writer.DEFAULT_NUM_SAMPLES,
                      help='test images in the grid (default %(default)s)')
  return parser.parse_args(argv)


def expand_seed_runs(workdirs: Sequence[str]) -> list[str]:
  """A multi-seed workdir (it has seed_<i>/ run folders and no history of its own) becomes its
  seed runs, so they are reported and pooled like separate runs of one config."""
  expanded = []
  for workdir in workdirs:
    seeds = []
    if paths.isdir(workdir) and not paths.exists(paths.join(workdir, 'history.json')):
      names = [n for n in paths.listdir(workdir) if re.fullmatch(r'seed_\d+', n)]
      seeds = [paths.join(workdir, n) for n in sorted(names, key=lambda n: int(n[5:]))
               if paths.exists(paths.join(workdir, n, 'history.json'))]
    expanded += seeds or [workdir]
  return expanded


def run_labels(workdirs: Sequence[str]) -> list[str]:
  """Folder names, or paths below the common folder where two runs share a folder name."""
  names = [paths.name(w) for w in workdirs]
  if len(set(names)) == len(names):
    return names
  # As folder paths ('gs://b/x' -> 'gs:/b/x': only the parts matter here, and abspath would
  # make a URL a local path).
  full = [paths.absolute(w).rstrip('/').split('/') for w in workdirs]
  common = len(os.path.commonprefix(full))
  return ['_'.join(parts[common:]) or paths.name(w) for parts, w in zip(full, workdirs)]


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  args.workdirs = expand_seed_runs(args.workdirs)
  try:  # Every run is read before anything is written, so a bad folder costs nothing.
    runs = [run_files.load_run(w, label)
            for w, label in zip(args.workdirs, run_labels(args.workdirs))]
    written = []
    if not args.table:
      for run in runs:
        out = (paths.join(run.workdir, 'report') if not args.out else
               args.out if len(runs) == 1 else paths.join(args.out, run.label))
        written.append(writer.write_run_report(run, out, args.data_dir, args.samples))
    if args.table or len(runs) > 1:
      written.append(writer.write_comparison(runs, args.out or DEFAULT_COMPARISON_DIR))
  except run_files.RunFilesError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for result in written:
    for path in result.files:
      print(path)
    for note in result.notes:
      print(f'note: {note}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
