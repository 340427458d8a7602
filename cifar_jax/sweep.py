"""Sweeps: one launch.py run per point of a grid of config overrides, then a table of them.

    python -m cifar_jax.sweep --config=configs/exp2.py \\
        --sweep='optim.learning_rate=[1e-3,3e-3,1e-2]' [--sweep='train.batch_size=[64,128]'] \\
        [--workdir=runs/exp2_sweep] [-- --config.train.epochs=5 ...]

Several --sweep flags make a grid (every combination, the first flag varying slowest). Each point
runs as its own `launch.py` process, one after another, in WORKDIR/<its overrides>, e.g.
runs/exp2_sweep/optim.learning_rate=0.003; flags after `--` go to every run. A point whose
results.json exists is skipped and an unfinished one resumes, so rerunning the same command
finishes a sweep. A failed point is marked and the others still run; Ctrl-C (or a SIGINT/SIGTERM
to the sweep's process) stops the sweep after the current run has saved its checkpoint. WORKDIR/sweep.md and sweep.csv get a row per point.
WORKDIR may be a gs:// URL (cifar_jax.paths).
"""

import argparse
import ast
import dataclasses
import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from typing import Any, Sequence

from absl import flags
from ml_collections import config_flags

from cifar_jax import paths as fs  # (`paths` is a local name in main)
from cifar_jax.report import results
from cifar_jax.report import run_files
from cifar_jax.report import tables

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'launch.py')
INTERRUPTED = 130  # launch.py's exit code after SIGINT/SIGTERM (its checkpoint is saved).
_KEY = re.compile(r'^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$')
_SCALARS = (bool, int, float, str, type(None))
# Characters kept in a point's folder name; others (a path's '/', spaces) become '_'.
_UNSAFE_IN_NAME = re.compile(r'[^\w.,=+()\-]')


class SweepError(ValueError):
  """A --sweep flag, an override or an extra flag is malformed; the message names it."""


@dataclasses.dataclass(frozen=True)
class Axis:
  """One --sweep flag: a dotted config key and the values it takes."""
  key: str
  values: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep: a value for each axis, as (key, value) pairs in axis order."""
  overrides: tuple[tuple[str, Any], ...]

  @property
  def name(self) -> str:
    """Its folder name: 'optim.learning_rate=0.003,train.batch_size=64'."""
    text = ','.join(f'{key}={value_text(value)}' for key, value in self.overrides)
    return _UNSAFE_IN_NAME.sub('_', text)

  @property
  def flags(self) -> list[str]:
    """Its launch.py flags: ['--config.optim.learning_rate=0.003', ...]."""
    return [f'--config.{key}={value_text(value)}' for key, value in self.overrides]


@dataclasses.dataclass
class Outcome:
  """What became of a point: 'finished', 'finished earlier', 'failed (exit N)', 'interrupted'
  or 'not run'."""
  point: Point
  workdir: str
  status: str = 'not run'

  @property
  def finished(self) -> bool:
    return self.status.startswith('finished')


def value_text(value) -> str:
  """A value as launch.py's --config.KEY= flag reads it (strings as they are, the rest as
  Python literals: 0.003, True, (32, 32, 3))."""
  return value if isinstance(value, str) else repr(value)


def parse_axis(text: str) -> Axis:
  """'optim.learning_rate=[1e-3,3e-3]' -> Axis('optim.learning_rate', (0.001, 0.003)).

  The values are read with ast.literal_eval, which evaluates literals only, never code.

  Raises:
    SweepError: not KEY=[VALUE, ...], values that are not literals, none, or repeated.
  """
  usage = f"--sweep={text!r}: expected KEY=[VALUE, ...], e.g. 'optim.learning_rate=[1e-3,3e-3]'"
  key, equals, literal = text.partition('=')
  key = key.strip()
  if not equals or not _KEY.match(key):
    raise SweepError(f'{usage}; {key!r} is not a dotted config key')
  try:
    values = ast.literal_eval(literal.strip())
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
    raise SweepError(f'{usage}; {literal.strip()!r} is not a Python literal list '
                     f'({type(e).__name__}: {e})') from None
  if not isinstance(values, (list, tuple)) or not values:
    raise SweepError(f'{usage}; {literal.strip()!r} is not a non-empty list')
  for value in values:
    if not _is_flag_value(value):
      raise SweepError(f'{usage}; {value!r} is not a number, string, bool, None or tuple of '
                       'them')
  if len({value_text(v) for v in values}) != len(values):
    raise SweepError(f'{usage}; a value is repeated')
  return Axis(key, tuple(values))


def _is_flag_value(value) -> bool:
  if isinstance(value, tuple):
    return all(isinstance(v, _SCALARS) for v in value)
  return isinstance(value, _SCALARS)


def grid(axes: Sequence[Axis]) -> list[Point]:
  """Every combination of the axes' values, the first axis varying slowest.

  Raises:
    SweepError: a key is swept twice, or two points would share a folder.
  """
  keys = [axis.key for axis in axes]
  repeated = sorted({key for key in keys if keys.count(key) > 1})
  if repeated:
    raise SweepError(f'--sweep: {", ".join(repeated)} is swept more than once; give each key '
                     'one --sweep with all its values')
  points = [Point(tuple(zip(keys, values)))
            for values in itertools.product(*(axis.values for axis in axes))]
  names = [point.name for point in points]
  if len(set(names)) != len(names):
    raise SweepError(f'two points would share a folder (values that differ only in characters '
                     f'a folder name cannot hold): {names}')
  return points


def check_flags(config_file: str, points: Sequence[Point], extra: Sequence[str]) -> str:
  """Parses every point's config flags as launch.py will, so that an unknown key or a value of
  the wrong type fails now rather than in every run; returns the config's name.

  Raises:
    SweepError: an extra flag that the sweep sets itself, or a point whose flags do not parse.
  """
  swept = {f'--config.{key}' for key, _ in points[0].overrides}
  for flag in extra:
    name = flag.split('=', 1)[0]
    if name in ('--config', '--workdir') or name in swept:
      raise SweepError(f'{flag}: the sweep sets {name} itself; leave it out of the flags after --')
  config_overrides = [flag for flag in extra if flag.startswith('--config.')]
  name = ''
  for point in points:
    try:
      name = parse_config(config_file, [*point.flags, *config_overrides]).name
    except SweepError as e:
      raise SweepError(f'point {point.name}: {e}') from None
  return name


def parse_config(config_file: str, config_flags_: Sequence[str]):
  """The config launch.py would train with `--config=config_file` and these `--config.KEY=VALUE`
  flags (the zoo hashes it before a run; check_flags parses every sweep point).

  Raises:
    SweepError: an unknown key, a wrong type or a config file that does not load.
  """
  argv = ['launch.py', f'--config={config_file}', *config_flags_]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config file', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  try:
    flag_values(argv)
    return flag_values.config
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    raise SweepError(f'{" ".join(argv[1:])}: {type(e).__name__}: {e}') from None


def launch(command: Sequence[str], niceness: int = 0) -> int:
  """Runs one launch.py process to its end; returns its exit code.

  The run gets its own session, and a SIGINT or SIGTERM to this process is passed on to it: it
  then saves its checkpoint and exits 130 (a second one exits at once). Its own session makes
  this the only way a signal reaches it, so a Ctrl-C in the terminal arrives once, and a
  `kill -INT` or a scheduler's SIGTERM aimed at the sweep or the zoo stops the run too instead
  of leaving it training with nobody waiting.

  Its session shares the CPU at this process's niceness plus `niceness` (the zoo's --nice, which
  also prefixes the command with `nice`): see `_share_cpu_as`.
  """
  process = subprocess.Popen(command, start_new_session=True)
  _share_cpu_as(process.pid, os.getpriority(os.PRIO_PROCESS, 0) + niceness)
  if threading.current_thread() is not threading.main_thread():
    return process.wait()  # Signal handlers can only be installed from the main thread.
  forward = lambda signum, frame: process.send_signal(signum)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    return process.wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _share_cpu_as(pid: int, niceness: int) -> None:
  """Gives process `pid`'s session (its autogroup) `niceness`.

  Linux's autogroup scheduling (sched_autogroup_enabled, on by default) first shares the CPU
  evenly between sessions, and niceness only counts within one: a run in a session of its own
  at nice 19 took as much CPU as a nice-0 process of another session (a 2-core AMD EPYC: a
  benchmark's float32 matmul peak 153 GFLOP/s quiet, 53 with two such runs beside it). The
  autogroup's own niceness is what yields. Kernels without autogroups have no such file, and
  lowering a niceness needs privileges: both leave the run as it is.
  """
  if niceness <= 0:
    return
  try:
    with open(f'/proc/{pid}/autogroup', 'w') as f:
      f.write(str(min(niceness, 19)))
  except OSError:
    pass


def run_sweep(config_file: str, points: Sequence[Point], workdir: str,
              extra: Sequence[str] = ()) -> list[Outcome]:
  """Runs the points in order, skipping finished ones; an interrupted run stops the rest."""
  outcomes = [Outcome(point, fs.join(workdir, point.name)) for point in points]
  interrupted = False
  for number, outcome in enumerate(outcomes, start=1):
    progress = f'[{number}/{len(outcomes)}] {outcome.point.name}'
    if _finished(outcome.workdir):
      outcome.status = 'finished earlier'
      print(f'{progress}: finished earlier, skipped', flush=True)
      continue
    if interrupted:
      continue
    command = [sys.executable, LAUNCH, f'--config={config_file}',
               f'--workdir={outcome.workdir}', *outcome.point.flags, *extra]
    outcome.status = run_to_end(command, outcome.workdir, progress)
    interrupted = outcome.status == 'interrupted'
  return outcomes


def run_to_end(command: Sequence[str], workdir: str, progress: str, niceness: int = 0) -> str:
  """Runs one launch.py command into `workdir` (`niceness` as launch's); returns 'finished',
  'interrupted' (Ctrl-C or SIGTERM: its checkpoint is saved, the caller should stop) or
  'failed (exit N)'."""
  print(f'{progress}: {shlex.join(command)}', flush=True)
  code = launch(command, niceness)
  if code == 0 and _finished(workdir):
    return 'finished'
  if code in (INTERRUPTED, -2, -15):  # launch.py's own code, or killed by SIGINT/SIGTERM.
    print(f'{progress}: interrupted; run the same command to resume', file=sys.stderr,
          flush=True)
    return 'interrupted'
  print(f'{progress}: failed (exit {code}); the others go on', file=sys.stderr, flush=True)
  return f'failed (exit {code})'


def _finished(workdir: str) -> bool:
  return fs.exists(fs.join(workdir, 'results.json'))


def sweep_table(axes: Sequence[Axis], outcomes: Sequence[Outcome]) -> tables.Table:
  """A row per point: its values and status, then the report's per-run columns (test accuracy,
  best validation accuracy, epochs, train time, ...; empty for a point without results)."""
  finished = [outcome for outcome in outcomes if outcome.finished]
  per_run = results.runs_table([run_files.load_run(outcome.workdir, outcome.point.name)
                                for outcome in finished])
  run_rows = iter(per_run.rows)
  blank = [tables.MISSING] * len(per_run.header)
  rows = [[value_text(value) for _, value in outcome.point.overrides] + [outcome.status]
          + list(next(run_rows) if outcome.finished else blank) for outcome in outcomes]
  numeric = [all(isinstance(v, (int, float)) for v in axis.values) for axis in axes]
  return tables.Table([axis.key for axis in axes] + ['status', *per_run.header], rows,
                      numeric=numeric + [False] + list(per_run.numeric))


def write_table(workdir: str, table: tables.Table) -> list[str]:
  return [tables.write(fs.join(workdir, 'sweep.md'), table.to_markdown()),
          tables.write(fs.join(workdir, 'sweep.csv'), table.to_csv())]


def split_launch_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(the arguments before `--`, the flags after it, which go to every launch.py run)."""
  if '--' not in argv:
    return list(argv), []
  split = list(argv).index('--')
  return list(argv[:split]), list(argv[split + 1:])


def argument_parser(prog: str, doc: str) -> argparse.ArgumentParser:
  """A parser whose usage is the second paragraph of the module docstring `doc` (its command
  lines) and whose description is the rest."""
  return argparse.ArgumentParser(
      prog=prog, description=doc.split('\n\n', 2)[2], usage=doc.split('\n\n')[1].strip(),
      formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  """(the sweep's arguments, the flags after `--` for every launch.py run)."""
  argv, extra = split_launch_flags(argv)
  parser = argument_parser('python -m cifar_jax.sweep', __doc__)
  parser.add_argument('--config', required=True, help='the experiment config file')
  parser.add_argument('--sweep', action='append', required=True, metavar="KEY=[VALUE,...]",
                      help='a config key and its values; several make a grid')
  parser.add_argument('--workdir', default='',
                      help="the sweep's folder (default runs/<config name>_sweep)")
  return parser.parse_args(argv), extra


def main(argv: Sequence[str]) -> int:
  args, extra = parse_args(argv)
  try:
    fs.check_usable(args.workdir)  # Before the configs load: the quickest mistake to report.
    axes = [parse_axis(text) for text in args.sweep]
    points = grid(axes)
    name = check_flags(args.config, points, extra)
    workdir = args.workdir or os.path.join('runs', f'{name}_sweep')
    fs.makedirs(workdir)
    outcomes = run_sweep(args.config, points, workdir, extra)
    table = sweep_table(axes, outcomes)
  except (SweepError, run_files.RunFilesError, OSError, fs.MissingExtraError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  paths = write_table(workdir, table)
  print(table.to_markdown(), end='')
  print('\n'.join(paths))
  if any(outcome.status == 'interrupted' for outcome in outcomes):
    return INTERRUPTED
  return 1 if any(outcome.status.startswith('failed') for outcome in outcomes) else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
