"""Records: what a finished workdir's record holds (and never: machine paths), num_seeds
workdirs, refusals, the config hash; then experiments.py: the Experiments table pooled from
records, the README's generated block against the committed records, and the per-epoch
comparison with a report."""

import copy
import json
import os

import numpy as np
import pytest

from cifar_jax.report import experiments
from cifar_jax.report import records
from cifar_jax.report import report_logs
from tests import synthetic_cifar
from tests.conftest import REPO

COMMIT = '0123456789abcdef0123456789abcdef01234567'
NAME = 'p2cnn/exp1'  # A config the report logged per epoch.


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  synthetic_cifar.write_binary_dataset(root, num_train=20, num_test=10)
  return str(root)


def write_run(workdir, data_dir, seed=0, accuracy=0.66, epochs=3, name=NAME, **config_changes):
  """A finished run's files as launch.py writes them (config.json, history.json, results.json),
  for `name`'s current config."""
  os.makedirs(workdir, exist_ok=True)
  config = copy.deepcopy(records.current_config(name))
  config.update(seed=seed, data=dict(config['data'], dir=data_dir), **config_changes)
  history = [{'epoch': e, 'loss': 1.0 / e, 'accuracy': 0.5 + 0.01 * e,
              'val_loss': 1.2 / e, 'val_accuracy': 0.123456789 + 0.1 * e,
              'learning_rate': 0.0010000000474974513, 'time': 12.3456} for e in
             range(1, epochs + 1)]
  results = {'config': name, 'test_accuracy': accuracy, 'test_loss': 0.9, 'epochs_run': epochs,
             'best_epoch': epochs, 'best_val_accuracy': history[-1]['val_accuracy'],
             'stopped_by': None, 'train_seconds': 7200.0, 'params': 128074,
             'data_source': f'binary folder {data_dir}/cifar-10-batches-bin',
             'num_train': 20, 'num_validation': 0, 'num_test': 10, 'device': 'cpu x1',
             'jax_version': '0.10.2'}
  for filename, content in (('config.json', config), ('history.json', history),
                            ('results.json', results)):
    with open(os.path.join(workdir, filename), 'w') as f:
      json.dump(content, f)
  return workdir


def write_provenance(workdir, **changes):
  provenance = {'commit': COMMIT, 'config_file': f'configs/{NAME}.py',
                'overrides': '--config.seed=1 --config.data.dir=/somewhere/data', 'cpu': 'Some CPU',
                'started': '2026-01-01T00:00:00Z', **changes}
  with open(os.path.join(workdir, 'provenance.json'), 'w') as f:
    json.dump(provenance, f)


def test_record_of_a_finished_run(tmp_path, data_dir):
  workdir = write_run(str(tmp_path / 'run'), data_dir, seed=1)
  write_provenance(workdir)

  [record] = records.build_records(workdir)

  assert record['config'] == NAME and record['seed'] == 1
  assert record['config_hash'] == records.config_hash(records.current_config(NAME))
  assert record['commit'] == COMMIT and not record['dirty']
  assert record['overrides'] == ['--config.seed=1']  # The data folder is the source, below.
  assert record['data']['source'] == (
      f'binary folder {os.path.basename(data_dir)}/cifar-10-batches-bin')
  folder = os.path.join(data_dir, 'cifar-10-batches-bin')
  assert record['data']['checksum'] == records.data_checksum(folder)
  assert (record['precision'], record['dtype'], record['cpu']) == ('default', 'float32',
                                                                   'Some CPU')
  assert (record['test_accuracy'], record['best_val_accuracy'], record['best_epoch'],
          record['epochs_run'], record['planned_epochs']) == (0.66, 0.423457, 3, 3, 50)
  assert record['history']['val_accuracy'] == [0.223457, 0.323457, 0.423457]
  assert record['history']['learning_rate'] == [0.001] * 3
  path = records.write_record(str(tmp_path / 'results'), record)
  assert path == str(tmp_path / 'results' / 'p2cnn_exp1' /
                     f'seed1-{COMMIT[:10]}-{record["config_hash"][:8]}.json')
  text = open(path).read()
  assert str(tmp_path) not in text and '/somewhere' not in text
  assert json.loads(text) == record
  assert records.load_records(str(tmp_path / 'results')) == [record]


def test_data_checksum_is_of_the_contents_not_the_place(tmp_path, data_dir):
  folder = os.path.join(data_dir, 'cifar-10-batches-bin')
  copy_of = tmp_path / 'elsewhere'
  copy_of.mkdir()
  for name in os.listdir(folder):
    (copy_of / name).write_bytes(open(os.path.join(folder, name), 'rb').read())
  assert records.data_checksum(str(copy_of)) == records.data_checksum(folder)
  (copy_of / 'test_batch.bin').write_bytes(b'\0' + (copy_of / 'test_batch.bin').read_bytes()[1:])
  assert records.data_checksum(str(copy_of)) != records.data_checksum(folder)


def test_a_num_seeds_workdir_gives_a_record_per_seed_with_the_parents_provenance(tmp_path,
                                                                                  data_dir):
  workdir = str(tmp_path / 'seeds')
  for i in range(3):
    write_run(os.path.join(workdir, f'seed_{i}'), data_dir, seed=5 + i, accuracy=0.6 + i / 100)
  write_provenance(workdir, overrides=['--config.seed=5', '--config.num_seeds=3'])

  built = records.build_records(workdir)

  assert [(r['seed'], r['test_accuracy']) for r in built] == [(5, 0.6), (6, 0.61), (7, 0.62)]
  assert {r['commit'] for r in built} == {COMMIT}
  assert {r['seeds_in_program'] for r in built} == {3}
  # One program trained the three: its two hours count once.
  assert experiments.train_time_line(built) == (
      '3 records of 1 configs; train time: 2.00 h on cpu x1 (Some CPU).')


def test_refusals_name_the_problem(tmp_path, data_dir):
  workdir = write_run(str(tmp_path / 'run'), data_dir)
  with pytest.raises(records.RecordError, match='no provenance.json'):
    records.build_records(workdir)
  write_provenance(workdir, dirty=True)
  with pytest.raises(records.RecordError, match='uncommitted changes'):
    records.build_records(workdir)
  assert records.build_records(workdir, allow_dirty=True)[0]['dirty']
  os.remove(os.path.join(workdir, 'results.json'))
  with pytest.raises(records.RecordError, match='results.json is missing'):
    records.build_records(workdir, allow_dirty=True)
  assert experiments.main(['add', str(tmp_path / 'nowhere')]) == 2


def test_config_hash_ignores_where_and_how_a_run_ran_but_not_what_it_computes():
  config = records.current_config(NAME)
  same = copy.deepcopy(config)
  same.update(seed=3, name='renamed', reported_test_accuracy=1.0)
  same['data']['dir'] = '/elsewhere'
  same['log'] = {'verbosity': 0}
  same['train']['steps_per_dispatch'] = 7
  other = copy.deepcopy(config)
  other['optim']['learning_rate'] = 0.01

  assert records.config_hash(same) == records.config_hash(config)
  assert records.config_hash(other) != records.config_hash(config)


def make_record(tmp_path, data_dir, seed, accuracy, **config_changes):
  workdir = write_run(str(tmp_path / f'run{seed}'), data_dir, seed=seed, accuracy=accuracy,
                      epochs=50, **config_changes)
  write_provenance(workdir)
  return records.build_records(workdir)[0]


def row_of(table, name):
  return dict(zip(table.header, next(row for row in table.rows if row[0] == name)))


def test_table_pools_a_configs_seeds_against_the_report(tmp_path, data_dir):
  made = [make_record(tmp_path, data_dir, seed, accuracy)
          for seed, accuracy in ((0, 0.66), (1, 0.68), (2, 0.67))]

  table = experiments.experiments_table(made)

  row = row_of(table, NAME)
  assert row['reported test acc. (%)'] == '68.5'
  assert row['cifar_jax test acc. (%)'] == '67.00 ± 1.00'
  assert row['runs'] == '3 (seeds 0, 1, 2)'
  assert row['difference'] == '-1.50'
  assert row['epochs'] == '50'
  assert row['tier'] == 'cheap'
  assert row['commit'] == COMMIT[:7]
  log = report_logs.load()[NAME]
  ours = np.array(records.history_rows(made[0])[-1]['val_accuracy'])
  assert row["val. acc. at the report's last logged epoch: ours vs report"] == (
      f'{100 * ours:.2f} vs {100 * log.rows[-1]["val_accuracy"]:.2f} (epoch 50)')
  expected = np.mean([abs(h['val_accuracy'] - r['val_accuracy'])
                      for h, r in zip(records.history_rows(made[0]), log.rows)])
  assert row["val. acc. vs report's log: mean abs. diff. per epoch (points)"] == (
      f'{100 * expected:.2f}')
  assert row_of(table, 'exp0')['cifar_jax test acc. (%)'] == 'not run yet'
  assert len(table.rows) == len(set(r[0] for r in table.rows))


def test_records_of_an_older_config_are_marked_and_give_way_to_current_ones(tmp_path, data_dir):
  old = make_record(tmp_path, data_dir, 0, 0.60, optim={'name': 'adam', 'learning_rate': 0.5})
  assert row_of(experiments.experiments_table([old]), NAME)['cifar_jax test acc. (%)'] == (
      '60.00 (older config)')
  current = make_record(tmp_path / 'b', data_dir, 0, 0.66)
  assert row_of(experiments.experiments_table([old, current]), NAME)[
      'cifar_jax test acc. (%)'] == '66.00'


def test_readme_experiments_block_is_generated_from_the_committed_records():
  readme = (REPO / 'README.md').read_text()
  committed = records.load_records(str(REPO / records.DEFAULT_RESULTS_DIR))

  assert experiments.current_readme_block(readme) == experiments.readme_block(committed), (
      'README.md is out of date: python -m cifar_jax.report.experiments table --readme README.md')


def test_table_command_rewrites_and_checks_a_readme(tmp_path, data_dir, capsys):
  results = str(tmp_path / 'results')
  records.write_record(results, make_record(tmp_path, data_dir, 0, 0.66))
  readme = tmp_path / 'README.md'
  readme.write_text(f'# x\n\n{experiments.README_BEGIN}\nold\n{experiments.README_END}\n\nafter\n')

  assert experiments.main(['table', '--results', results, '--readme', str(readme), '--check']) == 1
  assert experiments.main(['table', '--results', results, '--readme', str(readme)]) == 0
  assert experiments.main(['table', '--results', results, '--readme', str(readme), '--check']) == 0
  text = readme.read_text()
  assert text.startswith('# x\n\n<!-- results:begin -->') and text.endswith('-->\n\nafter\n')
  assert '| p2cnn/exp1 |' in text and '66.00' in text
  readme.write_text('no markers\n')
  assert experiments.main(['table', '--results', results, '--readme', str(readme)]) == 2
  assert 'no <!-- results:begin -->' in capsys.readouterr().err


def test_compare_prints_the_per_epoch_difference_to_the_reports_log(tmp_path, data_dir, capsys):
  results = str(tmp_path / 'results')
  record = make_record(tmp_path, data_dir, 0, 0.66)
  records.write_record(results, record)

  assert experiments.main(['compare', NAME, '--results', results]) == 0

  out = capsys.readouterr().out
  log = report_logs.load()[NAME]
  first = 100 * (record['history']['val_accuracy'][0] - log.rows[0]['val_accuracy'])
  assert f'    1 {22.35:22.2f}   54.52 {first:+7.2f}' in out
  assert 'mean abs. difference over 50 epochs:' in out
  assert experiments.main(['compare', 'exp0', '--results', results]) == 2


def test_a_field_added_to_the_configs_since_a_record_keeps_it_current_at_its_default(tmp_path,
                                                                                    data_dir):
  record = make_record(tmp_path, data_dir, 0, 0.66)
  config = copy.deepcopy(records.current_config(NAME))
  assert records.is_current(record, config)
  # As if the record's version had no train.max_steps (base.py: 0) and no loss section.
  del record['settings']['train']['max_steps'], record['settings']['loss']
  record['config_hash'] = 'of that older version'
  assert records.is_current(record, config)
  config['train']['max_steps'] = 100  # A new field set otherwise: another computation.
  assert not records.is_current(record, config)
  config = copy.deepcopy(records.current_config(NAME))
  config['optim']['learning_rate'] = 0.01
  assert not records.is_current(record, config)


def test_a_run_on_other_convolution_kernels_is_a_run_of_the_config(tmp_path, data_dir):
  record = make_record(tmp_path, data_dir, 0, 0.66)
  config = copy.deepcopy(records.current_config(NAME))
  config['model']['conv_backend'] = 'onednn'
  config['model']['conv_grad'] = 'matmul'
  assert records.config_hash(config) == record['config_hash']
  # A record written before these keys left the hash: its settings still hold them.
  record['settings']['model'].update(conv_backend='onednn', conv_grad='matmul')
  record['config_hash'] = 'of that older version'
  assert records.is_current(record, records.current_config(NAME))
  config['model']['dtype'] = 'bfloat16'  # Another computation.
  assert not records.is_current(record, config)
