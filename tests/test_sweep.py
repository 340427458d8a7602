"""Sweeps: a real two-point sweep of the tiny config through launch.py, then resuming, failures,
interruptions (with launch.py stubbed) and malformed flags, which fail before any run."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from cifar_jax import sweep
from tests.conftest import REPO

LEARNING_RATES = ('0.001', '0.003')
POINTS = [f'optim.learning_rate={lr}' for lr in LEARNING_RATES]
TINY = 'tests/tiny_config.py'


def sweep_args(workdir, synthetic_dir, values=LEARNING_RATES):
  return [f'--config={TINY}', f"--sweep=optim.learning_rate=[{','.join(values)}]",
          f'--workdir={workdir}', '--', f'--config.data.dir={synthetic_dir}',
          '--config.train.epochs=1']


def read_rows(workdir):
  with open(os.path.join(workdir, 'sweep.csv')) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def finished_sweep(tmp_path_factory, synthetic_dir):
  """A two-point learning-rate sweep, run as a user runs it."""
  workdir = str(tmp_path_factory.mktemp('sweep') / 'tiny_sweep')
  result = subprocess.run([sys.executable, '-m', 'cifar_jax.sweep',
                           *sweep_args(workdir, synthetic_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result.stdout


@pytest.fixture
def no_launch(monkeypatch):
  """launch.py runs that must not happen; the commands asked for are recorded."""
  commands = []

  def refuse(command, niceness=0):
    commands.append(command)
    raise AssertionError(f'launched {command}')

  monkeypatch.setattr(sweep, 'launch', refuse)
  monkeypatch.chdir(REPO)  # For the config path, as the CLI is run from the checkout.
  return commands


def test_each_point_runs_in_its_own_workdir_and_gets_a_row(finished_sweep):
  workdir, stdout = finished_sweep

  assert sorted(os.listdir(workdir)) == sorted(POINTS + ['sweep.csv', 'sweep.md'])
  for point, lr in zip(POINTS, LEARNING_RATES):
    config = json.load(open(os.path.join(workdir, point, 'config.json')))
    assert config['optim']['learning_rate'] == float(lr)
    assert config['train']['epochs'] == 1  # The flags after `--` reach every run.
  rows = read_rows(workdir)
  assert [row['optim.learning_rate'] for row in rows] == list(LEARNING_RATES)
  assert [row['status'] for row in rows] == ['finished'] * 2
  assert [row['run'] for row in rows] == POINTS
  assert all(0 <= float(row['test acc. (%)']) <= 100 for row in rows)
  markdown = open(os.path.join(workdir, 'sweep.md')).read().splitlines()
  assert len(markdown) == 2 + 2  # Header, rule, a row per point.
  assert markdown[0].startswith('| optim.learning_rate | status |')
  assert '| 0.003 | finished |' in stdout


def copy_sweep(finished_sweep, destination):
  """A copy of the module's sweep, for a test that changes it."""
  return str(shutil.copytree(finished_sweep[0], destination))


def test_a_rerun_skips_finished_points_and_rewrites_the_table(finished_sweep, synthetic_dir,
                                                              tmp_path, no_launch, capsys):
  workdir = copy_sweep(finished_sweep, tmp_path / 'sweep')
  os.remove(os.path.join(workdir, 'sweep.csv'))

  assert sweep.main(sweep_args(workdir, synthetic_dir)) == 0
  assert no_launch == []
  assert capsys.readouterr().out.count('finished earlier, skipped') == 2
  assert [row['status'] for row in read_rows(workdir)] == ['finished earlier'] * 2


@pytest.mark.parametrize('exit_code, status, sweep_exit', [
    (2, 'failed (exit 2)', 1),         # A failed point is marked; the sweep goes on.
    (sweep.INTERRUPTED, 'interrupted', sweep.INTERRUPTED),  # Ctrl-C stops the sweep.
])
def test_unfinished_points_are_marked(exit_code, status, sweep_exit, finished_sweep,
                                      synthetic_dir, tmp_path, monkeypatch):
  workdir = copy_sweep(finished_sweep, tmp_path / 'sweep')
  commands = []
  monkeypatch.setattr(sweep, 'launch',
                      lambda command, niceness=0: commands.append(command) or exit_code)
  monkeypatch.chdir(REPO)

  values = ('0.01', '0.001', '0.03')  # 0.001 finished in the module's sweep.
  assert sweep.main(sweep_args(workdir, synthetic_dir, values)) == sweep_exit

  later = 'not run' if exit_code == sweep.INTERRUPTED else status
  assert [row['status'] for row in read_rows(workdir)] == [status, 'finished earlier', later]
  assert len(commands) == (1 if exit_code == sweep.INTERRUPTED else 2)
  assert f'--workdir={os.path.join(workdir, "optim.learning_rate=0.01")}' in commands[0]
  assert '--config.optim.learning_rate=0.01' in commands[0]


def test_a_grid_runs_every_combination_first_axis_slowest():
  points = sweep.grid([sweep.parse_axis('optim.learning_rate=[1e-3, 3e-3]'),
                       sweep.parse_axis("optim.name=['adam', 'sgd']")])

  assert [p.name for p in points] == [
      'optim.learning_rate=0.001,optim.name=adam', 'optim.learning_rate=0.001,optim.name=sgd',
      'optim.learning_rate=0.003,optim.name=adam', 'optim.learning_rate=0.003,optim.name=sgd']
  assert points[1].flags == ['--config.optim.learning_rate=0.001', '--config.optim.name=sgd']
  shape = sweep.parse_axis('model.input_shape=[(32, 32, 3)]')
  assert sweep.grid([shape])[0].name == 'model.input_shape=(32,_32,_3)'


@pytest.mark.parametrize('text, message', [
    ('optim.learning_rate', 'expected KEY=\\[VALUE, ...\\]'),
    ('=[1, 2]', 'is not a dotted config key'),
    ('optim.learning rate=[1]', 'is not a dotted config key'),
    ('optim.learning_rate=[1e-3, 3e-3', 'is not a Python literal list'),
    ('optim.learning_rate=__import__("os").getcwd()', 'is not a Python literal list'),
    ('optim.learning_rate=1e-3', 'is not a non-empty list'),
    ('optim.learning_rate=[]', 'is not a non-empty list'),
    ('optim.learning_rate=[{"a": 1}]', 'is not a number, string'),
    ('optim.learning_rate=[1e-3, 0.001]', 'a value is repeated'),
])
def test_a_malformed_sweep_is_a_clear_error(text, message):
  with pytest.raises(sweep.SweepError, match=message):
    sweep.parse_axis(text)


@pytest.mark.parametrize('sweeps, extra, message', [
    (['optim.learning_rate=[1e-3'], [], 'is not a Python literal list'),
    (['optim.lerning_rate=[1e-3]'], [], 'point optim.lerning_rate=0.001: .*lerning_rate'),
    (['train.batch_size=[0.5]'], [], 'point train.batch_size=0.5: .*invalid literal for int'),
    (['optim.learning_rate=[1e-3]', 'optim.learning_rate=[2e-3]'], [], 'swept more than once'),
    (['optim.learning_rate=[1e-3]'], ['--workdir=elsewhere'], 'the sweep sets --workdir'),
    (['optim.learning_rate=[1e-3]'], ['--config.optim.learning_rate=1'], 'the sweep sets'),
])
def test_bad_flags_fail_before_any_run(sweeps, extra, message, tmp_path, no_launch, capsys):
  argv = [f'--config={TINY}', *(f'--sweep={s}' for s in sweeps), f'--workdir={tmp_path / "s"}',
          '--', *extra]

  assert sweep.main(argv) == 2
  error = capsys.readouterr().err
  assert error.startswith('error: ')
  assert re.search(message, error), error
  assert no_launch == []
  assert not (tmp_path / 's').exists()


# A stand-in for launch.py: counts the signals it gets, exits 130 on the first (as launch.py does
# after saving), 0 if none comes within 30 s.
_SIGNAL_COUNTING_RUN = '''
import os, signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda n, f: got.append(n))
signal.signal(signal.SIGTERM, lambda n, f: got.append(n))
open(sys.argv[1], 'w').close()
deadline = time.time() + 30
while not got and time.time() < deadline:
  time.sleep(0.05)
time.sleep(0.5)  # a second signal, if one is coming, arrives now
open(sys.argv[1], 'w').write(str(len(got)))
sys.exit(130 if got else 0)
'''
_SWEEP_LAUNCHING = '''
import sys
from cifar_jax import sweep
print(sweep.launch([sys.executable, sys.argv[1], sys.argv[2]]), flush=True)
'''


@pytest.mark.parametrize('to_group', [False, True], ids=['kill to the sweep', 'Ctrl-C'])
@pytest.mark.parametrize('signum', [2, 15], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_to_the_sweep_reaches_its_run_exactly_once(tmp_path, signum, to_group):
  import time  # pylint: disable=g-import-not-at-top
  run, marker = tmp_path / 'run.py', tmp_path / 'signals'
  run.write_text(_SIGNAL_COUNTING_RUN)
  driver = subprocess.Popen([sys.executable, '-c', _SWEEP_LAUNCHING, str(run), str(marker)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a terminal's job is
  deadline = time.time() + 60
  while not marker.exists() and time.time() < deadline:
    time.sleep(0.05)
  assert marker.exists(), 'the run never started'
  if to_group:  # the terminal's Ctrl-C goes to the whole foreground process group
    os.killpg(driver.pid, signum)
  else:  # `kill -INT PID` or a scheduler's SIGTERM: to the sweep's process only
    os.kill(driver.pid, signum)
  stdout, _ = driver.communicate(timeout=60)
  assert driver.returncode == 0
  assert stdout.strip() == '130'  # the run stopped on the signal
  assert marker.read_text() == '1'  # and got it once: a second would exit without saving


@pytest.mark.skipif(not os.path.exists('/proc/self/autogroup'),
                    reason='a kernel without autogroup scheduling: niceness alone decides')
def test_a_niced_run_yields_from_its_own_session_too(tmp_path):
  # The run's session is an autogroup of its own; its niceness is what the scheduler weighs
  # against other sessions (the process's own niceness only counts inside it).
  seen = tmp_path / 'autogroup'
  code = sweep.launch([sys.executable, '-c', 'import sys, time; time.sleep(1); '
                       'open(sys.argv[1], "w").write(open("/proc/self/autogroup").read())',
                       str(seen)], niceness=7)
  assert code == 0
  expected = min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)
  assert seen.read_text().split()[-2:] == ['nice', str(expected)]
