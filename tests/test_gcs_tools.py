"""The tools around runs in a bucket, against the real GCS emulator of tests/gcs_emulator.py:
records made from gs:// run folders and gs:// data into a gs:// records folder (the same record,
byte for byte, as from local copies), the table and the comparison read from there, the zoo's
--out/--results/--data_dir on gs://, a sweep's table over gs:// points, and a gs:// argument
without gcsfs (one error line naming the install, exit 2, before any work). These runs are the
files launch.py writes (the zoo's new run: launch.py stubbed). One test trains: two processes
(jax.distributed over gloo) as two hosts of a pod slice, sharing one gs:// workdir."""
# pylint: disable=redefined-outer-name  (pytest fixtures)

import copy
import json
import os
import socket
import subprocess
import sys

import pytest

from cifar_jax import paths
from cifar_jax import sweep
from cifar_jax import zoo
from cifar_jax.report import experiments
from cifar_jax.report import records
from cifar_jax.testing import runs
from tests.conftest import REPO
from tests.gcs_emulator import gcs_bucket  # noqa: F401  pylint: disable=unused-import

COMMIT = '0123456789abcdef0123456789abcdef01234567'
NAME = 'p2cnn/exp1'  # A config the report logged per epoch (for `compare`).
TINY = 'tests/tiny_config.py'
TIMEOUT = 120  # A hang (processes waiting on each other) fails the test, not the suite.
MISSING_GCSFS = ('gs:// paths need gcsfs, which is not installed; install it with '
                 '`pip install -r requirements-gcs.txt`')


def write_run(workdir, config, data_dir, seed=0, accuracy=0.66, epochs=3):
  """A finished run's files as launch.py writes them (config.json, history.json and, last,
  results.json), through cifar_jax.paths: local or gs://."""
  config = dict(copy.deepcopy(config), seed=seed)
  config['data'] = dict(config['data'], dir=data_dir)
  history = [{'epoch': e, 'loss': 1.0 / e, 'accuracy': 0.5 + 0.01 * e, 'val_loss': 1.2 / e,
              'val_accuracy': 0.123456789 + 0.1 * e, 'learning_rate': 0.001, 'time': 12.3456}
             for e in range(1, epochs + 1)]
  results = {'config': config['name'], 'test_accuracy': accuracy, 'test_loss': 0.9,
             'epochs_run': epochs, 'best_epoch': epochs, 'stopped_by': None,
             'train_seconds': 60.0, 'params': 1234, 'device': 'cpu x1',
             'data_source': f'binary folder {data_dir}/cifar-10-batches-bin',
             'num_train': 20, 'num_validation': 0, 'num_test': 10, 'jax_version': '0.10.2'}
  paths.makedirs(workdir)
  for filename, content in (('config.json', config), ('history.json', history),
                            ('results.json', results)):
    paths.write_text(paths.join(workdir, filename), json.dumps(content))


def write_provenance(workdir, config_file=f'configs/{NAME}.py'):
  paths.write_text(paths.join(workdir, 'provenance.json'), json.dumps(
      {'commit': COMMIT, 'dirty': False, 'config_file': config_file,
       'overrides': ['--config.seed=0'], 'cpu': 'Some CPU', 'started': '2026-01-01T00:00:00Z'}))


@pytest.fixture(scope='module')
def data(gcs_bucket, tmp_path_factory):
  """(local, gs://) folders named `data` holding the same cifar-10-batches-bin files: what a
  record checksums (a few bytes each: no run here reads them)."""
  local = tmp_path_factory.mktemp('tools') / 'data'
  folder = local / 'cifar-10-batches-bin'
  folder.mkdir(parents=True)
  url = f'{gcs_bucket}/tools/data'
  for name, content in (('data_batch_1.bin', b'\x03' * 3073), ('batches.meta.txt', b'cat\n')):
    (folder / name).write_bytes(content)
    paths.write_bytes(f'{url}/cifar-10-batches-bin/{name}', content)
  return str(local), url


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
  """An empty working folder: a gs:// path mistaken for a local one would land here."""
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  return cwd


def test_records_of_gs_runs_go_to_a_gs_results_folder_and_read_back(gcs_bucket, data, tmp_path,
                                                                      elsewhere, capsys):
  local_data, gs_data = data
  config = records.current_config(NAME)
  local_run, gs_run = str(tmp_path / 'run'), f'{gcs_bucket}/tools/runs/p2cnn_exp1'
  for workdir, data_dir in ((local_run, local_data), (gs_run, gs_data)):
    write_run(workdir, config, data_dir)
    write_provenance(workdir)
  gs_results, local_results = f'{gcs_bucket}/tools/results', str(tmp_path / 'results')

  assert experiments.main(['add', gs_run, '--results', gs_results]) == 0, capsys.readouterr().err

  [written] = capsys.readouterr().out.split()
  [local_record] = records.build_records(local_run)
  expected = records.write_record(local_results, local_record)
  # The record is the local one's: the data's checksum is of its bytes, its source names no
  # bucket (nor machine folder), and the file lands under the same name.
  assert written == f'{gs_results}/{os.path.relpath(expected, local_results)}'
  assert paths.read_text(written) == paths.read_text(expected)
  assert local_record['data']['source'] == 'binary folder data/cifar-10-batches-bin'
  assert records.load_records(gs_results) == records.load_records(local_results)

  assert experiments.main(['table', '--results', gs_results]) == 0
  assert f'| {NAME} | p2cnn, "1 - Naive (Adam)" | cheap | 68.5 | 66.00 | 1 (seed 0) |' in (
      capsys.readouterr().out)
  for target in (written, gs_run):  # A gs:// record file, and a gs:// workdir.
    assert experiments.main(['compare', target, '--results', gs_results]) == 0
    assert f"{target} against the report's log of {NAME}" in capsys.readouterr().out
  assert os.listdir(elsewhere) == []


def test_zoo_runs_and_records_in_a_bucket(gcs_bucket, data, elsewhere, monkeypatch, capsys):
  """--out, --results and --data_dir on gs://: a finished run there is recorded without running
  it again, the unfinished one starts with its provenance in the bucket and the gs:// data, and
  a rerun finds both records in the bucket."""
  _, gs_data = data
  out, results = f'{gcs_bucket}/zoo/runs', f'{gcs_bucket}/zoo/results'
  data_flag = f'--config.data.dir={gs_data}'
  config = json.loads(sweep.parse_config(str(REPO / TINY), [data_flag]).to_json_best_effort())
  write_run(f'{out}/tiny/seed0', config, gs_data, seed=0)  # Stopped before its record was made.
  write_provenance(f'{out}/tiny/seed0', TINY)
  launched = []

  # launch.py, stubbed: what it reads and writes where it looks.
  def run_launch_py(command, niceness=0):
    workdir = next(a.split('=', 1)[1] for a in command if a.startswith('--workdir='))
    launched.append((command, json.loads(paths.read_text(f'{workdir}/provenance.json'))))
    write_run(workdir, config, gs_data, seed=1)
    return 0

  monkeypatch.setattr(sweep, 'launch', run_launch_py)
  monkeypatch.setattr(zoo, 'machine_info', lambda: {'cpu': 'Some CPU'})  # Spares a jax process.
  argv = [f'--configs={REPO / TINY}', '--seeds=0,1', f'--out={out}', f'--results={results}',
          f'--data_dir={gs_data}', '--allow-dirty']

  assert zoo.main(argv) == 0, capsys.readouterr().err

  [(command, provenance)] = launched
  assert f'--workdir={out}/tiny/seed1' in command and data_flag in command
  assert provenance['overrides'] == ['--config.seed=1']
  made = records.load_records(results)
  assert [(r['config'], r['seed'], r['data']['source']) for r in made] == [
      ('tiny', s, 'binary folder data/cifar-10-batches-bin') for s in (0, 1)]
  capsys.readouterr()
  assert zoo.main(argv) == 0  # Both recorded: nothing runs.
  assert 'zoo: 0 runs to do for 1 configs' in capsys.readouterr().out
  assert len(launched) == 1 and os.listdir(elsewhere) == []


def test_a_sweep_of_finished_gs_points_tables_them_in_the_bucket(gcs_bucket, data, elsewhere,
                                                                   monkeypatch, capsys):
  _, gs_data = data
  workdir = f'{gcs_bucket}/sweep/tiny_sweep'
  for rate, accuracy in (('0.001', 0.5), ('0.003', 0.625)):
    config = json.loads(sweep.parse_config(str(REPO / TINY), [
        f'--config.optim.learning_rate={rate}']).to_json_best_effort())
    write_run(f'{workdir}/optim.learning_rate={rate}', config, gs_data, accuracy=accuracy)
  monkeypatch.setattr(sweep, 'launch',
                      lambda command, niceness=0: pytest.fail(f'launched {command}'))

  assert sweep.main([f'--config={REPO / TINY}', '--sweep=optim.learning_rate=[0.001,0.003]',
                     f'--workdir={workdir}']) == 0, capsys.readouterr().err

  rows = paths.read_text(f'{workdir}/sweep.csv').splitlines()
  assert [row.split(',')[:3] for row in rows[1:]] == [
      ['0.001', 'finished earlier', 'optim.learning_rate=0.001'],
      ['0.003', 'finished earlier', 'optim.learning_rate=0.003']]
  assert '| 0.003 | finished earlier | optim.learning_rate=0.003 | tiny | 0 | 62.50 |' in (
      paths.read_text(f'{workdir}/sweep.md'))
  assert os.listdir(elsewhere) == []


@pytest.mark.parametrize('argv', [
    ['zoo', '--configs=exp0', '--out=gs://bucket/zoo', '--dry-run'],
    ['zoo', '--configs=exp0', '--results=gs://bucket/zoo', '--dry-run'],
    ['zoo', '--configs=exp0', '--data_dir=gs://bucket/zoo', '--dry-run'],
    ['experiments', 'add', 'gs://bucket/zoo'],
    ['experiments', 'table', '--results', 'gs://bucket/zoo'],
    ['experiments', 'compare', NAME, '--results', 'gs://bucket/zoo'],
    ['sweep', f'--config={REPO / TINY}', '--sweep=optim.learning_rate=[0.1]',
     '--workdir=gs://bucket/zoo'],
], ids=['zoo --out', 'zoo --results', 'zoo --data_dir', 'experiments add', 'experiments table',
        'experiments compare', 'sweep --workdir'])
def test_a_gs_path_without_gcsfs_is_one_error_before_any_work(argv, monkeypatch, elsewhere,
                                                              capsys):
  """As on a machine without the extra (gcsfs, and TensorFlow's gfile, made unimportable)."""
  monkeypatch.setitem(sys.modules, 'gcsfs', None)
  monkeypatch.setitem(sys.modules, 'tensorflow', None)
  monkeypatch.setattr(sweep, 'launch',
                      lambda command, niceness=0: pytest.fail(f'launched {command}'))
  main = {'zoo': zoo.main, 'experiments': experiments.main, 'sweep': sweep.main}[argv[0]]

  assert main(argv[1:]) == 2

  out, err = capsys.readouterr()
  assert err.strip().splitlines() == [f'error: gs://bucket/zoo: {MISSING_GCSFS}'], err
  assert out == '' and os.listdir(elsewhere) == []


def test_two_processes_train_into_one_gs_workdir(gcs_bucket, synthetic_dir, tmp_path):
  """A pod slice's layout on this machine: each process a host with its own working folder, the
  workdir shared through the bucket only: checkpoints written there collectively, the run files
  by process 0."""
  workdir = f'{gcs_bucket}/pod/tiny'
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    address = f'127.0.0.1:{s.getsockname()[1]}'
  hosts = [tmp_path / f'host{i}' for i in range(2)]
  processes = []
  for i, cwd in enumerate(hosts):
    cwd.mkdir()
    processes.append(subprocess.Popen(
        [sys.executable, str(REPO / 'launch.py'), f'--config={REPO / TINY}',
         '--config.train.epochs=1', '--config.data.num_train_examples=96',
         '--config.data.num_validation=32', '--config.data.num_test_examples=32',
         f'--config.data.dir={synthetic_dir}', f'--workdir={workdir}',
         f'--coordinator_address={address}', '--num_processes=2', f'--process_id={i}'],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, 'PYTHONPATH': str(REPO)}))
  try:
    errors = [process.communicate(timeout=TIMEOUT)[1] for process in processes]
  except subprocess.TimeoutExpired:
    for process in processes:
      process.kill()
    pytest.fail('the processes hung:\n' + '\n---\n'.join(
        (process.communicate()[1] or '')[-3000:] for process in processes))
  for i, process in enumerate(processes):
    assert process.returncode == 0, f'process {i}:\n' + '\n---\n'.join(e[-2500:] for e in errors)

  assert {'config.json', 'history.json', 'results.json', 'predictions.npz', 'tensorboard',
          'checkpoints'} <= set(paths.listdir(workdir))
  assert runs.checkpoint_steps(workdir) == [2]  # 64 training examples in batches of 32.
  assert json.loads(paths.read_text(f'{workdir}/results.json'))['device'] == 'cpu x2'
  assert [os.listdir(cwd) for cwd in hosts] == [[], []]  # No local './gs:/...' on either host.
