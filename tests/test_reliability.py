"""A new user's mistakes and broken inputs: each ends in one clear line, nothing untrustworthy is
left behind (issue #15). Command-line mistakes are exit code 2 before any data loads; short data
files are errors naming the file; a diverged state is never checkpointed."""

import json
import logging
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import pytest

from cifar_jax.data import cifar10
from cifar_jax.data.cifar10 import DataError
from cifar_jax.train import checkpointing
from cifar_jax.train import steps
from cifar_jax.train import train_and_evaluate
from tests import synthetic_cifar
from tests.conftest import REPO, compile_counter, forget_train_step_programs, tiny_config
from tests.conftest import tiny_state

TINY = '--config=tests/tiny_config.py'
# A data folder that does not exist: a config error must be reported before the data is looked for.
NO_DATA = '--config.data.dir=/nonexistent/cifar'


def launch(*args, env=None):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env={**os.environ, **(env or {})})


# Runs `python launch.py ARGS` for each argv list in the JSON file argv[1], each in a process of
# its own forked from this one after the imports a config check needs (jax, cifar_jax: seconds
# of CPU per process otherwise): launch.py itself runs as __main__ in the child, flags and all,
# and the child's exit status, stdout and stderr are what `python launch.py` would give.
# Writes [{'returncode', 'stdout', 'stderr'}, ...] to argv[2].
LAUNCH_EACH = '''
import json, os, runpy, sys, tempfile, threading, traceback
import absl.app, ml_collections.config_flags, jax
import cifar_jax.train, cifar_jax.train.checkpointing, cifar_jax.train.config_checks
import cifar_jax.models.summary
assert threading.active_count() == 1  # Nothing to fork mid-way.
results = []
for argv in json.load(open(sys.argv[1])):
  out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
  pid = os.fork()
  if pid == 0:  # The child: `python launch.py *argv`.
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.argv = ['launch.py', *argv]
    code = 0
    try:
      runpy.run_path('launch.py', run_name='__main__')
    except SystemExit as e:  # As the interpreter exits: None is 0, a message is 1.
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      if not isinstance(e.code, (int, type(None))):
        print(e.code, file=sys.stderr)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  _, status = os.waitpid(pid, 0)
  texts = []
  for f in (out, err):
    f.seek(0)
    texts.append(f.read().decode())
  results.append({'returncode': os.waitstatus_to_exitcode(status), 'stdout': texts[0],
                  'stderr': texts[1]})
json.dump(results, open(sys.argv[2], 'w'))
'''


def launch_each(argvs, folder):
  """`launch(*argv)` for each argv, as subprocess.CompletedProcess-like namespaces, from one
  process that forks a child per argv (LAUNCH_EACH)."""
  cases, outputs = folder / 'argvs.json', folder / 'results.json'
  cases.write_text(json.dumps([list(argv) for argv in argvs]))
  process = subprocess.run([sys.executable, '-c', LAUNCH_EACH, str(cases), str(outputs)],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]
  return [types.SimpleNamespace(**r) for r in json.loads(outputs.read_text())]


@pytest.fixture(scope='module')
def broken_configs(tmp_path_factory):
  folder = tmp_path_factory.mktemp('configs')
  (folder / 'syntax.py').write_text('def get_config(:\n  pass\n')
  (folder / 'raises.py').write_text('def get_config():\n  raise ValueError("no such report")\n')
  return folder


CONFIG_MISTAKES = {
    'unknown key': ((TINY, '--config.optim.lerning_rate=0.1'),
                    "no key 'optim.lerning_rate'", 'did you mean --config.optim.learning_rate?'),
    'unknown section': ((TINY, '--config.optm.learning_rate=0.1'),
                        "no key 'optm.learning_rate'", '--config.optim.learning_rate'),
    'missing config file': (('--config=configs/no_such.py',), 'no such config file', 'configs/'),
    'syntax error': (('--config={configs}/syntax.py',), 'syntax error', ''),
    'get_config raises': (('--config={configs}/raises.py',), 'ValueError: no such report',
                          '--debug'),
    'bad value type': ((TINY, '--config.train.epochs=three'), '--config.train.epochs=three', ''),
    'unknown flag': ((TINY, '--workdr=x'), "'workdr'", 'did you mean --workdir?'),
    'unknown layer': ((TINY, "--config.augment.layers=({'type': 'random_flp'},)"),
                      "augment.layers[0].type='random_flp'", ''),
    'unknown layer argument': (
        (TINY, "--config.augment.layers=({'type': 'random_flip', 'mod': 'horizontal'},)"),
        "unknown key(s) ['mod']", ''),
    'unknown optimizer': ((TINY, '--config.optim.name=adma'), "optim.name='adma'",
                          ''),
    'unknown tta': ((TINY, '--config.augment.tta=flips'), "augment.tta='flips'", ''),
    'validation_split 1.5': ((TINY, '--config.data.num_validation=0',
                              '--config.data.validation_split=1.5'),
                             'data.validation_split=1.5', ''),
    'num_validation >= train': (('--config=configs/redes/m0.py',
                                 '--config.data.num_train_examples=4000'),
                                'data.num_validation=10000', ''),
    'infinite learning rate': ((TINY, '--config.optim.learning_rate=inf'),
                               'optim.learning_rate=inf: must be a finite number', ''),
    'infinite momentum': ((TINY, '--config.optim.name=sgd', '--config.optim.momentum=inf'),
                          'optim.momentum=inf', ''),
    'nan decay rate': ((TINY, '--config.optim.schedule.decay_rate=nan'),
                       'optim.schedule.decay_rate=nan', ''),
    'too many train examples': ((TINY, '--config.data.num_train_examples=60000'),
                                'data.num_train_examples=60000', ''),
    'steps_per_epoch too large': ((TINY, '--config.train.steps_per_epoch=100'),
                                  'train.steps_per_epoch=100', ''),
    'unknown model layer argument': ((TINY, "--config.model.layers=({'type': 'dense', 'unit': 3},)"),
                                     "unknown argument(s) ['unit']", ''),
    'unknown monitor': ((TINY, '--config.checkpoint.monitor=val_acc'),
                        "checkpoint.monitor='val_acc'", ''),
}


@pytest.fixture(scope='module')
def mistake_runs(broken_configs, tmp_path_factory):
  """Each CONFIG_MISTAKES case launched (launch_each): case -> (result, its workdir)."""
  folder = tmp_path_factory.mktemp('mistakes')
  names = sorted(CONFIG_MISTAKES)
  argvs, workdirs = [], []
  for i, name in enumerate(names):
    args = [a.replace('{configs}', str(broken_configs)) for a in CONFIG_MISTAKES[name][0]]
    workdirs.append(folder / f'run_{i}')
    argvs.append([*args, NO_DATA, f'--workdir={workdirs[-1]}'])
  return dict(zip(names, zip(launch_each(argvs, folder), workdirs)))


@pytest.mark.parametrize('case', sorted(CONFIG_MISTAKES))
def test_config_mistakes_are_one_error_line_and_exit_2_before_data_loads(case, mistake_runs):
  _, message, hint = CONFIG_MISTAKES[case]
  result, workdir = mistake_runs[case]
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert lines and lines[0].startswith('error: ') and message in lines[0], result.stderr
  assert len(lines) <= 2 and all(line.startswith('hint: ') for line in lines[1:]), result.stderr
  assert hint in result.stderr
  assert not os.path.exists(workdir)  # Nothing was started.


def test_debug_shows_the_traceback(tmp_path):
  result = launch(TINY, '--config.optim.lerning_rate=0.1', '--debug', f'--workdir={tmp_path}')
  assert result.returncode == 2
  assert 'Traceback' in result.stderr and 'error: ' in result.stderr


# ---------------------------------------------------------------------------------------------
# Data files: the official layout, exactly.


def _shorten_binary(path, records):
  with open(path, 'r+b') as f:
    f.truncate(records * (1 + 32 * 32 * 3))


@pytest.mark.parametrize('kind', ['folder', 'tarball'])
def test_a_short_binary_batch_of_valid_records_is_an_error_naming_it(kind, tmp_path):
  folder = synthetic_cifar.write_binary_dataset(tmp_path / 'copy', num_train=20, num_test=10)
  _shorten_binary(folder / 'data_batch_1.bin', 341)  # Whole, valid records; 341 of 10,000.
  if kind == 'tarball':
    import tarfile  # pylint: disable=g-import-not-at-top
    path = tmp_path / 'cifar-10-binary.tar.gz'
    with tarfile.open(path, 'w:gz', compresslevel=1) as tar:
      tar.add(folder, arcname=folder.name)
    read = lambda: cifar10.read_tarball(path)
  else:
    read = lambda: cifar10.read_binary_dir(folder)
  with pytest.raises(DataError, match=r'data_batch_1\.bin holds 341 images .*exactly 10,000'
                     r'.*num_train_examples') as error:
    read()
  assert '1,047,893 bytes' in str(error.value)  # What it holds, and what it should.


def test_a_short_python_batch_is_an_error_naming_it(tmp_path):
  folder = synthetic_cifar.write_python_dataset(tmp_path, num_train=20, num_test=10)
  images, labels, _, _ = synthetic_cifar.make_arrays(5, 1)
  batch = {b'data': images.transpose(0, 3, 1, 2).reshape(5, -1), b'labels': labels.tolist()}
  (folder / 'test_batch').write_bytes(synthetic_cifar.official_pickle(batch))
  with pytest.raises(DataError, match=r'test_batch holds 5 images.*exactly 10,000'):
    cifar10.read_python_dir(folder)


# ---------------------------------------------------------------------------------------------
# Checkpoints: finite, or not written; a fallback is one line.


def checkpoint_steps(workdir, kind='latest'):
  folder = os.path.join(workdir, 'checkpoints', kind)
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def test_a_diverged_state_is_never_checkpointed(synthetic_dir, tmp_path, monkeypatch):
  config = tiny_config(synthetic_dir, epochs=2)
  config.checkpoint.every_steps = 3
  original = steps.train_step

  def diverging(state, batch):  # From step 5 on the params (and the loss) are NaN.
    state, sums = original(state, batch)
    bad = state.step >= 5
    params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), state.params)
    return state.replace(params=params), dict(sums, loss=jnp.where(bad, jnp.nan, sums['loss']))

  monkeypatch.setattr(steps, 'train_step', diverging)
  forget_train_step_programs()  # Programs traced before call the original.
  with pytest.raises(FloatingPointError,
                     match=r"at step 6 state\.params\[.*NaN or Inf.*last finite checkpoint "
                           r'\(step 3\)'):
    train_and_evaluate(config, str(tmp_path))
  monkeypatch.setattr(steps, 'train_step', original)
  forget_train_step_programs()
  assert checkpoint_steps(str(tmp_path)) == [3]  # The every_steps save of step 6 was refused.
  assert checkpoint_steps(str(tmp_path), 'best') == []


def test_a_corrupt_checkpoint_fallback_is_one_warning_line_and_is_set_aside(synthetic_dir,
                                                                            tmp_path, caplog):
  config = tiny_config(synthetic_dir, epochs=2)
  workdir = str(tmp_path / 'run')
  reference = train_and_evaluate(config, workdir)
  assert checkpoint_steps(workdir) == [8, 16]
  newest = os.path.join(workdir, 'checkpoints', 'latest', '16')
  for root, _, files in os.walk(os.path.join(newest, 'state')):
    for name in files:
      if os.sep + 'd' in root:  # The array data: garbage, as a bad disk block would leave.
        with open(os.path.join(root, name), 'wb') as f:
          f.write(os.urandom(100))
  with caplog.at_level(logging.INFO, logger='cifar_jax'):
    again = train_and_evaluate(config, workdir)  # Falls back to step 8 and retrains epoch 2.
  assert again['test_loss'] == reference['test_loss']
  # cifar_jax's own lines (asyncio's reports of orbax's failed reads are collected muted by
  # checkpointing, but when the garbage collector runs is not the test's to decide).
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and r.name.startswith('cifar_jax')]
  assert warnings, caplog.text
  # TensorStore's many-line detail goes to the debug log, not the console.
  assert all('\n' not in w and len(w) < 400 for w in warnings), warnings
  assert any(newest in w and 'unusable' in w for w in warnings), warnings
  # Set aside, and written again by the resumed run: the next resume needs no fallback.
  assert os.path.isdir(f'{newest}.unusable') and checkpoint_steps(workdir) == [8, 16]
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger='cifar_jax'):
    train_and_evaluate(config, workdir)
  assert not [r for r in caplog.records if r.name.startswith('cifar_jax')], caplog.text


def _poison(state, where, value):
  """`state` with the first value of its first float array under `where` (a TrainState field)
  set to `value`."""
  leaves, treedef = jax.tree.flatten(getattr(state, where))
  i = next(i for i, x in enumerate(leaves) if jnp.issubdtype(x.dtype, jnp.floating))
  leaves[i] = leaves[i].at[(0,) * leaves[i].ndim].set(value)
  return state.replace(**{where: jax.tree.unflatten(treedef, leaves)})


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('where', ['params', 'batch_stats', 'opt_state'])
def test_the_host_and_the_device_finiteness_checks_agree(where, value):
  """Arrays this process holds whole are checked on the host (NumPy: nothing to compile before
  a run's first save); arrays sharded across processes on the devices. Both flag the same
  arrays, and a state holding NaN or Inf is refused, naming the array."""
  state, _, _ = tiny_state(tiny_config())
  for tree, bad in ((state, None), (_poison(state, where, value), where)):
    leaves = [x for x in jax.tree.leaves(tree)
              if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.inexact)]
    # pylint: disable=protected-access
    with compile_counter() as compiled:
      on_host = checkpointing._finite_flags(leaves)
      what = checkpointing._nonfinite_in_checkpoint(tree, None, None)
    assert not compiled, compiled
    on_device = checkpointing._finite_flags_on_device(leaves)
    # pylint: enable=protected-access
    assert on_host.tolist() == jax.device_get(on_device).tolist()
    if bad is None:
      assert on_host.all() and what is None
    else:
      assert (~on_host).sum() == 1
      assert what.startswith(f'state.{bad}') and what.endswith('holds NaN or Inf'), what
