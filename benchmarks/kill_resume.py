"""Kill a short run with SIGKILL at random moments, rerun it, and compare with an uninterrupted run.

    python benchmarks/kill_resume.py --n=20                       # synthetic data, tiny config
    python benchmarks/kill_resume.py --n=5 --data_dir=../shared/data/cifar10-jpeg --out=k.json

Each trial starts `launch.py` on a fresh workdir, SIGKILLs it once at a random point, reruns the
same command to the end and compares everything the run leaves with an uninterrupted reference
run: history (without wall-clock times), results.json (without train_seconds), the test
predictions and every array of the final checkpoint, bit for bit. The kill points are:

- `after_save`: a random delay (0-0.3 s) after the checkpoint of a random step is committed, so
  the kill lands at a random step between saves;
- `during_save`: as soon as orbax's temporary folder of a save at or after a random step
  appears, i.e. while that checkpoint is being written;
- `startup`: a random moment before the first checkpoint (imports, data, compilation).

The run is tests/tiny_config.py on a synthetic copy (300 train / 70 test images used; 8 steps
per epoch) with a checkpoint every `--every_steps` steps, so most kills land in training or
in a save rather than in start-up. Prints a line per trial and `k/N bit-identical`.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import json_out  # This folder's --out writer (local or gs://).

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# As tests/conftest.py: the runs are compile-bound; these flags change no result.
FAST_COMPILE_XLA_FLAGS = ('--xla_backend_optimization_level=0 '
                          '--xla_llvm_disable_expensive_passes=true '
                          '--xla_cpu_use_fusion_emitters=false')
MODES = ('after_save', 'during_save', 'startup')


def command(args, workdir):
  return [sys.executable, 'launch.py', '--config=tests/tiny_config.py',
          f'--config.data.dir={args.data_dir}', f'--config.train.epochs={args.epochs}',
          f'--config.checkpoint.every_steps={args.every_steps}', '--verbosity=0',
          f'--workdir={workdir}']


def environment(args):
  env = dict(os.environ)
  if args.fast_compile:
    env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} {FAST_COMPILE_XLA_FLAGS}".strip()
  return env


def run_to_end(args, workdir):
  done = subprocess.run(command(args, workdir), cwd=REPO, env=environment(args),
                        capture_output=True, text=True, timeout=1200)
  if done.returncode:
    raise RuntimeError(f'run in {workdir} failed (exit {done.returncode}):\n{done.stderr[-3000:]}')


def checkpoint_state(workdir):
  """(committed steps, steps being written) in workdir/checkpoints/latest."""
  folder = os.path.join(workdir, 'checkpoints', 'latest')
  try:
    names = os.listdir(folder)
  except FileNotFoundError:
    return [], []
  committed = sorted(int(n) for n in names if n.isdigit())
  writing = sorted(int(n.split('.')[0]) for n in names if 'tmp' in n and n.split('.')[0].isdigit())
  return committed, writing


def kill_once(args, workdir, mode, target_step, rng):
  """Starts the run and SIGKILLs it at the chosen point; returns what was seen at the kill."""
  process = subprocess.Popen(command(args, workdir), cwd=REPO, env=environment(args),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  start = time.monotonic()
  startup_delay = rng.uniform(0.5, args.startup_seconds)
  delay_until = None
  while process.poll() is None:
    committed, writing = checkpoint_state(workdir)
    if mode == 'startup':
      fire = time.monotonic() - start >= startup_delay or committed or writing
    elif mode == 'during_save':
      fire = any(step >= target_step for step in writing)
    else:
      if delay_until is None and any(step >= target_step for step in committed):
        delay_until = time.monotonic() + rng.uniform(0.0, 0.3)
      fire = delay_until is not None and time.monotonic() >= delay_until
    if fire:
      committed, writing = checkpoint_state(workdir)
      process.send_signal(signal.SIGKILL)
      process.wait()
      return {'killed': True, 'seconds': round(time.monotonic() - start, 3),
              'committed_at_kill': committed, 'writing_at_kill': writing}
    time.sleep(0.002)
  _, err = process.communicate()
  if process.returncode:
    raise RuntimeError(f'run in {workdir} failed before the kill:\n{err[-3000:]}')
  return {'killed': False, 'note': 'finished before the kill point'}


def run_record(workdir):
  """Everything a finished run leaves that must not depend on the interruption."""
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.testing import runs  # pylint: disable=g-import-not-at-top
  outcome = runs.run_outcome(workdir)
  leaves = jax.tree_util.tree_flatten_with_path(outcome.pop('state'))[0]
  return {**outcome, 'class_names': list(outcome['class_names']),
          'state': {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}}


def differences(reference, other) -> list[str]:
  found = [key for key in ('history', 'results', 'class_names', 'final_step')
           if reference[key] != other[key]]
  for key in ('probabilities', 'labels'):
    if not np.array_equal(reference[key], other[key]):
      found.append(key)
  if reference['state'].keys() != other['state'].keys():
    found.append('state structure')
  else:
    found += [f'state{path}' for path, leaf in reference['state'].items()
              if leaf.tobytes() != other['state'][path].tobytes()]
  return found


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--n', type=int, default=20, help='trials (one SIGKILL each)')
  parser.add_argument('--seed', type=int, default=0, help='of the kill points')
  parser.add_argument('--data_dir', default='', help='CIFAR-10 (default: a synthetic copy)')
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument('--every_steps', type=int, default=2)
  parser.add_argument('--startup_seconds', type=float, default=8.0,
                      help='startup kills land in the first this many seconds')
  parser.add_argument('--fast_compile', type=int, default=1, help="conftest's XLA flags")
  parser.add_argument('--out', default='', help='write the trials as JSON here')
  args = parser.parse_args(argv)
  json_out.check(args.out)
  rng = random.Random(args.seed)
  with tempfile.TemporaryDirectory(prefix='kill_resume_') as scratch:
    if not args.data_dir:
      from tests import synthetic_cifar  # pylint: disable=g-import-not-at-top
      args.data_dir = scratch
      synthetic_cifar.write_binary_dataset(scratch, num_train=300, num_test=70)
    steps_total = args.epochs * 8  # tiny_config: 240 training images in batches of 32.
    reference_dir = os.path.join(scratch, 'reference')
    started = time.perf_counter()
    run_to_end(args, reference_dir)
    reference = run_record(reference_dir)
    trials = []
    for i in range(args.n):
      mode = MODES[i % len(MODES)] if i < len(MODES) else rng.choice(MODES[:2] * 3 + MODES[2:])
      target = rng.randrange(args.every_steps, steps_total)
      workdir = os.path.join(scratch, f'trial_{i}')
      trial = {'trial': i, 'mode': mode, 'target_step': target}
      trial.update(kill_once(args, workdir, mode, target, rng))
      run_to_end(args, workdir)
      trial['differences'] = differences(reference, run_record(workdir))
      trial['identical'] = not trial['differences']
      trials.append(trial)
      print(json.dumps(trial), flush=True)
  identical = sum(t['identical'] for t in trials)
  killed = sum(t['killed'] for t in trials)
  summary = {'n': args.n, 'bit_identical': identical, 'killed': killed,
             'killed_during_save': sum(bool(t.get('writing_at_kill')) for t in trials),
             'seconds': round(time.perf_counter() - started, 1),
             'command': ' '.join(['python', 'benchmarks/kill_resume.py', *(argv or sys.argv[1:])])}
  print(f"{identical}/{args.n} bit-identical ({killed} killed, "
        f"{summary['killed_during_save']} of them during a save)")
  json_out.write(args.out, {'summary': summary, 'trials': trials})
  return 0 if identical == args.n else 1


if __name__ == '__main__':
  sys.exit(main())
