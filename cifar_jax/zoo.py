"""The zoo: every config of a tier trained with its seeds, each finished run turned into a record.

    python -m cifar_jax.zoo --tier=cheap [--seeds=0,1,2] [--configs=exp0,redes/m1] \\
        [--data_dir=DIR] [--out=runs/zoo] [--results=results] [--nice=19] [-- launch.py flags]

Tiers are the cost of an epoch (XLA's FLOPs per epoch on CPU, see TIERS): `cheap` runs on a
2-core CPU in hours, `medium` in days, `accelerator` needs a GPU or TPU (the transfer configs
also need the ImageNet weights); `all` is every tier. The same command runs the whole zoo on an
accelerator.

Each run is a `launch.py` process (cifar_jax.sweep's machinery) in OUT/<config>/seed<s> (or
OUT/<config>/seeds<a>-<b> for a config whose seeds train together, --config.num_seeds). Before
it starts, the zoo writes provenance.json there: the commit (it refuses a tree with uncommitted
changes unless --allow-dirty, and then marks the records dirty), the config file and flags, the
CPU, the jax device kind, the matmul precision and dtype. When the run finishes, its records go
to RESULTS (cifar_jax.report.records). Rerun the same command to go on: a (config, seed) with a
record of the current config is skipped, an unfinished workdir resumes from its checkpoint. A
failed run is reported and the others still run (exit 1); Ctrl-C (or a SIGINT/SIGTERM to the
zoo's process) stops the zoo once the current run has saved (exit 130).

OUT, RESULTS and --data_dir may be gs:// URLs (cifar_jax.paths): an accelerator VM can keep
the runs and their records in a bucket (`--out=gs://BUCKET/zoo --results=gs://BUCKET/results`).
"""

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from cifar_jax import host_cpu
from cifar_jax import paths
from cifar_jax import sweep
from cifar_jax.report import records as records_lib
from cifar_jax.report import results

REPO = Path(__file__).resolve().parents[1]
# Config -> tier, from XLA's cost analysis of a training epoch on CPU: cheap <= 5 TFLOP/epoch,
# medium ~11; accelerator: exp11 ~75, proyecto4/exp10 ~190, tl_vgg16 ~1,170 (224x224).
TIERS = {
    'cheap': ('exp0', 'p2cnn/exp1', 'p2cnn/exp2', 'proyecto4/exp1', 'proyecto4/exp1_val_on_test',
              'proyecto4/exp2', 'proyecto4/exp2_val_on_test', 'proyecto4/exp3', 'arquitecturas/a2',
              'arquitecturas/a2_val_on_test', 'arquitecturas/a2_leaky', 'redes/m0',
              'redes/m0_relu_conv', 'redes/m1', 'redes/m2', 'redes/m3'),
    'medium': tuple(f'exp{i}' for i in range(1, 8)),
    'accelerator': (
        'exp8a', 'exp8b', 'exp9', 'exp10', 'exp11', 'exp12',
        *(f'p2cnn/exp{i}' for i in range(3, 9)),
        *(f'proyecto4/exp{i}' for i in range(4, 11)),
        'arquitecturas/a1', 'arquitecturas/a1_mejorada', 'arquitecturas/a3',
        'arquitecturas/a3_da_peor', 'arquitecturas/a3_da_mejor', 'arquitecturas/tl_basic',
        'arquitecturas/tl_vgg16', 'arquitecturas/tl_densenet121',
        'redes/m4', 'redes/m5', 'redes/m6',
        'fast/airbench94'),  # Beyond the reports: ~31 TFLOP an epoch.
}
# Seeds per config (default 1): three where a claim rests on the mean.
# The alternative readings get as many, to compare with the reading they question.
NUM_SEEDS = {name: 3 for name in ('exp0', 'redes/m0', 'redes/m0_relu_conv', 'redes/m1',
                                  'p2cnn/exp1', 'proyecto4/exp1', 'proyecto4/exp1_val_on_test',
                                  'proyecto4/exp2', 'proyecto4/exp2_val_on_test')}
# Configs whose seeds train in one program (--config.num_seeds): where that is faster than runs
# one after another on CPU (redes/m0: 4 seeds cost 1.06x one seed per epoch; the other small
# models already keep both cores busy with one seed, README "Predict and sweeps"); m0's relu
# reading is the same size.
SEEDS_TOGETHER = frozenset({'redes/m0', 'redes/m0_relu_conv'})
REPORT_ORDER = ('entregable4', 'p2cnn', 'proyecto4', 'arquitecturas', 'redes', 'fast')
# Flags the zoo sets itself.
_OWN_FLAGS = ('--config', '--workdir', '--config.seed', '--config.num_seeds', '--config.data.dir')


class ZooError(ValueError):
  """Bad arguments or a workdir the zoo must not touch; the message names it and the fix."""


def tier_of(name: str) -> str:
  for tier, names in TIERS.items():
    if name in names:
      return tier
  return '—'


def ordered_configs() -> list[str]:
  """Every config in TIERS, by report (the README's order), then by natural name order."""
  names = [name for tier in TIERS.values() for name in tier]
  def key(name):
    report = name.split('/')[0] if '/' in name else 'entregable4'
    return REPORT_ORDER.index(report), results.natural_key(name)
  return sorted(names, key=key)


def config_files() -> list[str]:
  """The experiment configs in configs/ (names as TIERS spells them)."""
  not_experiments = {'base', 'layers', 'reports', 'entregable4', 'common', '__init__'}
  return sorted(str(p.relative_to(REPO / 'configs').with_suffix(''))
                for p in (REPO / 'configs').rglob('*.py') if p.stem not in not_experiments)


@dataclasses.dataclass
class Job:
  """One launch.py run: a config's seeds (one, or several trained together)."""
  name: str
  config_file: str
  seeds: tuple[int, ...]
  workdir: str
  status: str = 'not run'

  @property
  def seed_flags(self) -> list[str]:
    flags = [f'--config.seed={self.seeds[0]}']
    return flags + ([f'--config.num_seeds={len(self.seeds)}'] if len(self.seeds) > 1 else [])


def config_file_of(name: str) -> str:
  """A name of configs/ ('p2cnn/exp1'), or a config file's path (e.g. a test's)."""
  if name.endswith('.py'):
    if not os.path.isfile(name):
      raise ZooError(f'--configs: {name}: no such config file')
    return name
  path = REPO / 'configs' / f'{name}.py'
  if not path.is_file():
    raise ZooError(f'--configs: {name} is not a config of configs/ (known: '
                   f'{", ".join(ordered_configs())})')
  return str(path)


def plan(names: Sequence[str], seeds: Sequence[int] | None, out: str, data_flags: list[str],
         extra: Sequence[str], done: Sequence[dict[str, Any]]) -> list[Job]:
  """The runs still to do: each config's seeds without a record of the current config.

  Raises:
    ZooError, sweep.SweepError: a config or flag that does not parse.
  """
  config_flags = [f for f in extra if f.startswith('--config.')] + data_flags
  jobs = []
  for name in names:
    config_file = config_file_of(name)
    config = sweep.parse_config(config_file, config_flags)
    as_json = json.loads(config.to_json_best_effort())
    wanted = list(seeds) if seeds is not None else list(range(NUM_SEEDS.get(config.name, 1)))
    todo = [s for s in wanted if not records_lib.has_record(done, as_json, s)]
    folder = paths.join(out, config.name.replace('/', '_'))
    consecutive = todo == list(range(todo[0], todo[0] + len(todo))) if todo else False
    if config.name in SEEDS_TOGETHER and len(todo) > 1 and consecutive:
      jobs.append(Job(config.name, config_file, tuple(todo),
                      paths.join(folder, f'seeds{todo[0]}-{todo[-1]}')))
    else:
      jobs += [Job(config.name, config_file, (s,), paths.join(folder, f'seed{s}'))
               for s in todo]
  return jobs


def git_state(results_dir: str) -> tuple[str, bool]:
  """(HEAD's commit, whether the tree has changes outside the records folder).

  Raises:
    ZooError: not a git checkout.
  """
  def git(*args):
    return subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True, check=True)
  try:
    commit = git('rev-parse', 'HEAD').stdout.strip()
    excluded = []
    results = Path(results_dir).resolve()
    if not paths.is_url(results_dir) and results.is_relative_to(REPO):
      excluded = [f':(exclude){results.relative_to(REPO)}']
    changes = git('status', '--porcelain', '--', '.', *excluded).stdout.strip()
  except (OSError, subprocess.CalledProcessError) as e:
    raise ZooError(f'{REPO}: cannot read the git commit ({e}); records name the commit they '
                   'ran, so the zoo runs from a git checkout') from None
  return commit, bool(changes)


def machine_info() -> dict[str, Any]:
  """The CPU, and what jax runs on and with, asked of a child process (in this one jax would
  take the accelerator's memory from the runs)."""
  probe = ('import json, jax; d = jax.devices()[0]; print(json.dumps({"platform": d.platform, '
           '"device_kind": d.device_kind, "device_count": jax.device_count(), '
           '"precision": jax.config.jax_default_matmul_precision or "default", '
           '"jax_version": jax.__version__}))')
  found = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)
  info = json.loads(found.stdout.strip().splitlines()[-1]) if found.returncode == 0 else {}
  return {'cpu': host_cpu.describe(), **info}


def provenance(job: Job, commit: str, dirty: bool, machine: dict[str, Any],
               extra: Sequence[str], dtype: str) -> dict[str, Any]:
  config_file = Path(job.config_file).resolve()
  return {
      'commit': commit, 'dirty': dirty,
      'config_file': str(config_file.relative_to(REPO) if config_file.is_relative_to(REPO)
                         else config_file.name),
      'overrides': [*job.seed_flags, *extra], **machine, 'dtype': dtype,
      'started': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
  }


def prepare(job: Job, commit: str, dirty: bool, machine, extra, dtype) -> None:
  """Writes the job's provenance.json, or checks the one of an unfinished run it resumes.

  Raises:
    ZooError: the workdir was started by another commit (resuming would mix two versions).
  """
  path = paths.join(job.workdir, 'provenance.json')
  if paths.exists(path):
    started = json.loads(paths.read_text(path))
    if started.get('commit') != commit or started.get('dirty') != dirty:
      raise ZooError(f'{job.workdir} was started at commit {started.get("commit")}'
                     f'{" (dirty)" if started.get("dirty") else ""}, this tree is {commit}'
                     f'{" (dirty)" if dirty else ""}: move the folder aside, or finish it from '
                     'that commit')
    return
  paths.makedirs(job.workdir)
  paths.write_text(path, json.dumps(provenance(job, commit, dirty, machine, extra, dtype),
                                    indent=2) + '\n')


def run_jobs(jobs: Sequence[Job], args, extra: list[str], data_flags: list[str], commit: str,
             dirty: bool) -> None:
  machine = machine_info() if jobs else {}
  for number, job in enumerate(jobs, start=1):
    progress = f'[{number}/{len(jobs)}] {job.name} seed{"s" if len(job.seeds) > 1 else ""} ' + (
        ','.join(map(str, job.seeds)))
    command = [*(['nice', '-n', str(args.nice)] if args.nice else []), sys.executable,
               sweep.LAUNCH, f'--config={job.config_file}', f'--workdir={job.workdir}',
               *job.seed_flags, *data_flags, *extra]
    try:
      if paths.exists(paths.join(job.workdir, 'results.json')):
        job.status = 'finished earlier'  # E.g. stopped between the run and its records.
      else:
        dtype = sweep.parse_config(job.config_file, [f for f in extra
                                                     if f.startswith('--config.')]).model.dtype
        prepare(job, commit, dirty, machine, extra, dtype)
        job.status = sweep.run_to_end(command, job.workdir, progress, args.nice)
      if job.status.startswith('finished'):
        for record in records_lib.build_records(job.workdir, allow_dirty=True):
          print(f'{progress}: {records_lib.write_record(args.results, record)}', flush=True)
    except (ZooError, records_lib.RecordError) as e:
      job.status = f'failed ({e})'
      print(f'{progress}: {job.status}', file=sys.stderr, flush=True)
    if job.status == 'interrupted':
      return


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  argv, extra = sweep.split_launch_flags(argv)
  parser = sweep.argument_parser('python -m cifar_jax.zoo', __doc__)
  parser.add_argument('--tier', default='', help=f'{", ".join(TIERS)} or all')
  parser.add_argument('--configs', default='',
                      help='comma-separated config names (or config files) instead of, or '
                      'within, the tier')
  parser.add_argument('--seeds', default='',
                      help='comma-separated seeds for every config (default: NUM_SEEDS)')
  parser.add_argument('--data_dir', default='', help='CIFAR-10 for every run (data.dir)')
  parser.add_argument('--out', default=os.path.join('runs', 'zoo'),
                      help='run folders (default %(default)s)')
  parser.add_argument('--results', default=records_lib.DEFAULT_RESULTS_DIR,
                      help='records folder (default %(default)s)')
  parser.add_argument('--nice', type=int, default=0, help='run each training with this niceness')
  parser.add_argument('--allow-dirty', action='store_true',
                      help='run from a tree with uncommitted changes (records marked dirty)')
  parser.add_argument('--dry-run', action='store_true', help='print the plan and exit')
  return parser.parse_args(argv), extra


def select(args) -> list[str]:
  """The configs to run, in the README's order.

  Raises:
    ZooError: no tier or configs, or an unknown one.
  """
  if args.tier and args.tier != 'all' and args.tier not in TIERS:
    raise ZooError(f'--tier={args.tier}: expected one of {", ".join(TIERS)}, all')
  in_tier = (ordered_configs() if args.tier == 'all' else
             [n for n in ordered_configs() if tier_of(n) == args.tier] if args.tier else [])
  chosen = [n.strip() for n in args.configs.split(',') if n.strip()]
  if not args.tier and not chosen:
    raise ZooError('give --tier=cheap|medium|accelerator|all and/or --configs=NAME,...')
  for name in chosen:
    config_file_of(name)
    if args.tier and name not in in_tier:
      raise ZooError(f'--configs: {name} is not in tier {args.tier} (it is {tier_of(name)})')
  return chosen if chosen else in_tier


def main(argv: Sequence[str]) -> int:
  args, extra = parse_args(argv)
  try:
    for flag in extra:
      if flag.split('=', 1)[0] in _OWN_FLAGS:
        raise ZooError(f'{flag}: the zoo sets {flag.split("=", 1)[0]} itself (--seeds, '
                       '--data_dir); leave it out of the flags after --')
    try:
      seeds = [int(s) for s in args.seeds.split(',')] if args.seeds else None
    except ValueError:
      raise ZooError(f'--seeds={args.seeds}: expected integers, e.g. --seeds=0,1,2') from None
    for path in (args.out, args.results, args.data_dir):
      try:
        paths.check_usable(path)
      except paths.MissingExtraError as e:
        raise ZooError(str(e)) from None
    names = select(args)
    # os.path.abspath would make a gs:// URL a local './gs:/...' path.
    data_flags = [f'--config.data.dir={paths.absolute(args.data_dir)}'] if args.data_dir else []
    commit, dirty = git_state(args.results)
    if dirty and not args.allow_dirty:
      raise ZooError(f'{REPO} has uncommitted changes (git status): a record must name the '
                     'commit it ran; commit first, or pass --allow-dirty (records marked dirty)')
    jobs = plan(names, seeds, args.out, data_flags, extra,
                records_lib.load_records(args.results))
  except ValueError as e:  # ZooError, SweepError, a bad --seeds.
    print(f'error: {e}', file=sys.stderr)
    return 2
  skipped = len(names) - len({job.name for job in jobs})
  print(f'zoo: {len(jobs)} runs to do for {len(names)} configs at {commit[:10]}'
        f'{" (dirty)" if dirty else ""}; {skipped} configs already recorded', flush=True)
  if args.dry_run:
    for job in jobs:
      print(f'  {job.name} seeds {",".join(map(str, job.seeds))} -> {job.workdir}')
    return 0
  run_jobs(jobs, args, extra, data_flags, commit, dirty)
  for job in jobs:
    print(f'{job.name} seeds {",".join(map(str, job.seeds))}: {job.status}')
  if any(job.status == 'interrupted' for job in jobs):
    return sweep.INTERRUPTED
  return 1 if any(job.status.startswith('failed') for job in jobs) else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
