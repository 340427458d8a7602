"""One preemption, all hosts (issue #18): a SIGTERM to one process of a two-process run stops
both after the same step, with one checkpoint written collectively (asynchronously, as on one
process); both exit 130 with the same message, and rerunning both resumes bit-identically.
Asynchronous saves across processes: the best and latest checkpoints of one step, whose commits
overlap, no longer collide in the coordination service's barriers (the old hang at exit)."""

import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from cifar_jax.testing import runs
from cifar_jax.train import host_agreement
from tests.conftest import REPO

# 240 training examples in batches of 32: 8 steps an epoch; one step a chunk, so that every
# step is a chunk boundary where the processes agree (and may stop).
ARGS = ('--config=tests/tiny_config.py', '--config.train.epochs=4',
        '--config.train.steps_per_dispatch=1')
TIMEOUT = 240  # A hang (the processes disagreeing) fails the test instead of blocking the suite.


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch_pair(workdir, data_dir):
  port = free_port()
  return [subprocess.Popen(
      [sys.executable, 'launch.py', *ARGS, f'--config.data.dir={data_dir}',
       f'--workdir={workdir}', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}'], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def wait_all(processes) -> list[tuple[str, str]]:
  """Each process's (stdout, stderr); kills all if one outlives TIMEOUT (a hang)."""
  outputs = []
  try:
    for process in processes:
      outputs.append(process.communicate(timeout=TIMEOUT))
  except subprocess.TimeoutExpired:
    for process in processes:
      process.kill()
    pytest.fail('the processes hung:\n' + '\n---\n'.join(
        (p.communicate()[1] or '')[-2000:] for p in processes))
  return outputs


def finish(processes) -> None:
  errors = [err for _, err in wait_all(processes)]
  for i, (process, err) in enumerate(zip(processes, errors)):
    assert process.returncode == 0, f'process {i}:\n' + '\n---\n'.join(e[-2500:] for e in errors)


@pytest.fixture(scope='module')
def reference_run(synthetic_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  finish(launch_pair(workdir, synthetic_dir))
  return workdir


def test_sigterm_to_one_process_stops_both_at_one_step_and_both_resume_identically(
    synthetic_dir, reference_run, tmp_path):
  workdir = str(tmp_path / 'preempted')
  processes = launch_pair(workdir, synthetic_dir)
  # Training has started once the first checkpoint (epoch 1's) is committed; then a moment
  # that differs from run to run, so that the signal lands anywhere in a chunk or an epoch end.
  deadline = time.time() + TIMEOUT
  while (not runs.checkpoint_steps(workdir) and time.time() < deadline
         and all(p.poll() is None for p in processes)):
    time.sleep(0.05)
  time.sleep(random.Random().uniform(0.0, 0.5))
  processes[1].send_signal(signal.SIGTERM)
  errors = [err for _, err in wait_all(processes)]
  if all(p.returncode == 0 for p in processes):
    pytest.skip('the run finished before the signal arrived')  # A machine far too fast.
  stops = [re.findall(r'SIGTERM \(process 1\): stopped at step (\d+) ', err) for err in errors]
  for i, process in enumerate(processes):
    assert process.returncode == 130 and len(stops[i]) == 1, f'process {i}:\n' + '\n---\n'.join(
        e[-2500:] for e in errors)
  assert stops[0] == stops[1]  # The same step, and the same message, on both.
  step = int(stops[0][0])
  assert runs.checkpoint_steps(workdir)[-1] == step  # The one checkpoint both wrote.
  finish(launch_pair(workdir, synthetic_dir))
  runs.assert_same_outcome(reference_run, workdir)


# Best and latest checkpoints of one step, as an epoch that improves saves them, their
# asynchronous commits overlapping: each manager's barriers must have their own names.
SAVE_BOTH = """
import sys
import numpy as np
from cifar_jax.train import checkpointing, sharding
sharding.initialize_distributed(sys.argv[1], 2, int(sys.argv[2]))
state = sharding.replicate({'w': np.ones(1_000_000, np.float32)}, sharding.make_mesh())
checkpointer = checkpointing.Checkpointer(sys.argv[3])
for step in range(1, 4):
  checkpointer.save_best(step, state)
  checkpointer.save_latest(step, state, {'epoch': step}, {})
checkpointer.close()
print(checkpointer.latest.all_steps(), checkpointer.best.all_steps())
"""


def test_two_processes_save_best_and_latest_of_one_step_asynchronously(tmp_path):
  address = f'127.0.0.1:{free_port()}'
  processes = [subprocess.Popen([sys.executable, '-c', SAVE_BOTH, address, str(i), str(tmp_path)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for i in range(2)]
  outputs = wait_all(processes)
  for i, (process, (out, _)) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, f'process {i}:\n' + '\n---\n'.join(
        err[-2500:] for _, err in outputs)
    assert out.strip().splitlines()[-1] == '[2, 3] [3]'  # (gloo writes to stdout too)


def test_one_process_agrees_with_itself_without_any_exchange():
  decision = host_agreement.agree(num_steps=7, stop_signal=int(signal.SIGTERM), save=True)
  assert (decision.num_steps, decision.stop, decision.save) == (7, True, True)
  assert decision.stop_reason() == 'SIGTERM'
  assert not host_agreement.agree(num_steps=3).stop
