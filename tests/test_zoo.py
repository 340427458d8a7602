"""The zoo: every config in one tier, what a plan runs and skips, a real run of the tiny config's
two seeds trained together (provenance, a record per seed, nothing run again on a rerun), and
arguments or trees it refuses before any run."""

import glob
import json
import os
import subprocess

import pytest

from cifar_jax import sweep
from cifar_jax import zoo
from cifar_jax.report import records
from tests.conftest import REPO


def test_every_config_is_in_exactly_one_tier():
  in_tiers = [name for names in zoo.TIERS.values() for name in names]

  assert sorted(in_tiers) == zoo.config_files()  # Each once, none left out.
  assert set(zoo.NUM_SEEDS) | set(zoo.SEEDS_TOGETHER) <= set(in_tiers)
  assert zoo.ordered_configs()[:2] == ['exp0', 'exp1']
  assert zoo.ordered_configs()[-2:] == ['redes/m6', 'fast/airbench94']


def current_hash(name):
  return records.config_hash(records.current_config(name))


def test_plan_runs_the_seeds_without_a_record_of_the_current_config():
  done = [{'config': 'redes/m1', 'seed': 1, 'config_hash': current_hash('redes/m1')},
          {'config': 'redes/m1', 'seed': 2, 'config_hash': 'an older config'}]

  jobs = zoo.plan(['redes/m1', 'redes/m0', 'exp0'], None, 'out', [], [], done)

  assert [(j.name, j.seeds, j.workdir) for j in jobs] == [
      ('redes/m1', (0,), os.path.join('out', 'redes_m1', 'seed0')),
      ('redes/m1', (2,), os.path.join('out', 'redes_m1', 'seed2')),
      ('redes/m0', (0, 1, 2), os.path.join('out', 'redes_m0', 'seeds0-2')),  # num_seeds=3
      ('exp0', (0,), os.path.join('out', 'exp0', 'seed0')),
      ('exp0', (1,), os.path.join('out', 'exp0', 'seed1')),
      ('exp0', (2,), os.path.join('out', 'exp0', 'seed2'))]
  assert jobs[2].seed_flags == ['--config.seed=0', '--config.num_seeds=3']
  assert zoo.plan(['redes/m2'], [4], 'out', [], [], done)[0].seed_flags == ['--config.seed=4']
  # A flag that changes the computation makes another config: its seeds are not done.
  changed = zoo.plan(['redes/m1'], [1], 'out', [], ['--config.optim.learning_rate=0.01'], done)
  assert [j.seeds for j in changed] == [(1,)]


@pytest.fixture
def in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


def test_zoo_trains_records_and_skips_what_is_recorded(tmp_path, synthetic_dir, monkeypatch,
                                                        in_repo, capsys):
  monkeypatch.setattr(zoo, 'SEEDS_TOGETHER', frozenset({'tiny'}))
  out, results = str(tmp_path / 'runs'), str(tmp_path / 'results')
  argv = ['--configs=tests/tiny_config.py', '--seeds=0,1', f'--data_dir={synthetic_dir}',
          f'--out={out}', f'--results={results}', '--allow-dirty', '--',
          '--config.train.epochs=1']

  assert zoo.main(argv) == 0

  workdir = os.path.join(out, 'tiny', 'seeds0-1')
  provenance = json.load(open(os.path.join(workdir, 'provenance.json')))
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True,
                        text=True).stdout.strip()
  assert provenance['commit'] == head
  assert provenance['dirty'] == zoo.git_state(results)[1]
  assert provenance['config_file'] == 'tests/tiny_config.py'
  assert provenance['overrides'] == ['--config.seed=0', '--config.num_seeds=2',
                                     '--config.train.epochs=1']
  # The process default the zoo's runs inherit (tests/conftest.py pins it).
  assert (provenance['platform'], provenance['precision'], provenance['dtype']) == (
      'cpu', os.environ.get('JAX_DEFAULT_MATMUL_PRECISION', 'default'), 'float32')
  made = records.load_records(results)
  assert [(r['config'], r['seed'], r['seeds_in_program']) for r in made] == [
      ('tiny', 0, 2), ('tiny', 1, 2)]
  for record in made:
    assert record['commit'] == head and record['epochs_run'] == 1
    seed_config = json.load(open(os.path.join(workdir, f'seed_{record["seed"]}', 'config.json')))
    assert record['config_hash'] == records.config_hash(seed_config)
    assert str(tmp_path) not in json.dumps(record)
  assert len(glob.glob(os.path.join(results, 'tiny', '*.json'))) == 2

  def refuse(command, niceness=0):
    raise AssertionError(f'launched {command}')
  monkeypatch.setattr(sweep, 'launch', refuse)
  capsys.readouterr()
  assert zoo.main(argv) == 0  # Both seeds are recorded: nothing runs.
  assert 'zoo: 0 runs to do for 1 configs' in capsys.readouterr().out


@pytest.mark.parametrize('argv, message', [
    (['--tier=bogus'], '--tier=bogus: expected one of cheap, medium, accelerator, all'),
    ([], 'give --tier='),
    (['--configs=nope'], '--configs: nope is not a config of configs/'),
    (['--tier=cheap', '--configs=exp11'], 'exp11 is not in tier cheap (it is accelerator)'),
    (['--tier=cheap', '--seeds=a'], '--seeds=a: expected integers'),
    (['--tier=cheap', '--', '--config.seed=3'], 'the zoo sets --config.seed itself'),
    (['--configs=exp0', '--', '--config.optim.lerning_rate=1'], 'lerning_rate'),
])
def test_bad_arguments_fail_before_any_run(argv, message, monkeypatch, in_repo, capsys):
  monkeypatch.setattr(sweep, 'launch',
                      lambda command, niceness=0: pytest.fail(f'launched {command}'))
  monkeypatch.setattr(zoo, 'git_state', lambda results: ('f' * 40, False))

  assert zoo.main(argv) == 2
  assert message in capsys.readouterr().err


def test_a_dirty_tree_is_refused_unless_allowed(monkeypatch, in_repo, tmp_path, capsys):
  monkeypatch.setattr(zoo, 'git_state', lambda results: ('f' * 40, True))

  assert zoo.main(['--configs=exp0', f'--results={tmp_path}', '--dry-run']) == 2
  assert 'uncommitted changes' in capsys.readouterr().err
  assert zoo.main(['--configs=exp0', f'--results={tmp_path}', '--dry-run',
                   '--allow-dirty']) == 0
  assert '3 runs to do for 1 configs at ffffffffff (dirty)' in capsys.readouterr().out


def test_an_unfinished_run_of_another_commit_is_not_resumed(tmp_path):
  job = zoo.Job('exp0', 'configs/exp0.py', (0,), str(tmp_path / 'exp0'))
  zoo.prepare(job, 'a' * 40, False, {}, [], 'float32')
  zoo.prepare(job, 'a' * 40, False, {}, [], 'float32')  # The same commit resumes.

  with pytest.raises(zoo.ZooError, match=f'started at commit {"a" * 40}, this tree is '):
    zoo.prepare(job, 'b' * 40, False, {}, [], 'float32')
