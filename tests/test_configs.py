"""Every config of every report: the exact Keras parameter counts, a docstring that documents it,
one real training step, and strict keys."""

import concurrent.futures
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import traceback

import pytest

from cifar_jax.models import create_model
from cifar_jax.models.summary import format_summary, summarize
from cifar_jax.train.config_checks import check_config
from configs import base
from tests.conftest import REPO

# (total, trainable, non-trainable), as each report's model.summary() prints them (p2cnn exp1
# and exp2 print no summary: computed from their code). Issue 5 lists the same table.
PARAMS = {
    # entregable4
    'exp0': (263_402, 263_402, 0),
    'exp1': (961_706, 961_706, 0),
    'exp2': (961_706, 961_706, 0),
    **{f'exp{i}': (965_034, 963_370, 1_664) for i in range(3, 8)},
    **{name: (7_525_194, 7_517_770, 7_424) for name in ('exp8a', 'exp8b', 'exp9', 'exp10')},
    'exp11': (15_448_842, 15_438_986, 9_856),
    # p2cnn
    'p2cnn/exp1': (128_074, 128_074, 0),
    'p2cnn/exp2': (1_831_840, 1_831_840, 0),
    'p2cnn/exp3': (1_030_378, 1_029_546, 832),
    'p2cnn/exp4': (1_398_454, 1_398_454, 0),
    'p2cnn/exp5': (3_087_354, 3_087_354, 0),
    'p2cnn/exp6': (3_137_718, 3_137_718, 0),
    'p2cnn/exp7': (2_867_210, 2_867_210, 0),
    'p2cnn/exp8': (2_867_210, 2_867_210, 0),
    # proyecto4
    'proyecto4/exp1': (159_146, 159_146, 0),
    'proyecto4/exp1_val_on_test': (159_146, 159_146, 0),  # exp1's other validation reading.
    'proyecto4/exp2_val_on_test': (159_146, 159_146, 0),  # exp2's.
    'proyecto4/exp2': (159_146, 159_146, 0),
    'proyecto4/exp3': (305_546, 304_650, 896),
    **{f'proyecto4/exp{i}': (1_709_514, 1_707_466, 2_048) for i in (4, 5, 8)},
    'proyecto4/exp6': (2_267_210, 2_264_906, 2_304),
    **{f'proyecto4/exp{i}': (6_797_898, 6_793_034, 4_864) for i in (7, 9)},
    'proyecto4/exp10': (36_595_850, 36_584_074, 11_776),
    # arquitecturas
    'arquitecturas/a1': (2_394_826, 2_393_290, 1_536),
    'arquitecturas/a1_mejorada': (2_394_826, 2_393_290, 1_536),
    'arquitecturas/a2': (802_506, 801_034, 1_472),
    'arquitecturas/a2_val_on_test': (802_506, 801_034, 1_472),  # a2's other validation reading.
    'arquitecturas/a2_leaky': (800_970, 800_266, 704),
    **{f'arquitecturas/{name}': (1_118_154, 1_116_106, 2_048)
       for name in ('a3', 'a3_da_peor', 'a3_da_mejor')},
    # redes
    'redes/m0': (98_993, 98_993, 0),
    'redes/m0_relu_conv': (98_993, 98_993, 0),  # m0's other reading (relu conv).
    'redes/m1': (127_130, 127_130, 0),
    'redes/m2': (359_402, 359_402, 0),
    'redes/m3': (360_298, 359_850, 448),
    **{f'redes/m{i}': (3_253_834, 3_251_018, 2_816) for i in (4, 5, 6)},
}
CONFIGS = sorted(PARAMS)
# Transfer learning: counts and steps in tests/test_transfer_keras_parity.py.
TESTED_ELSEWHERE = ('exp12', 'arquitecturas/tl_basic', 'arquitecturas/tl_vgg16',
                    'arquitecturas/tl_densenet121',
                    'fast/airbench94')  # tests/test_airbench.py.

STEP_BATCH = 4
# The most the one-step programs kept in .pytest_cache may take (a few MB a config).
COMPILATION_CACHE_BYTES = 256 * 2**20


def config_module(name):
  return importlib.import_module('configs.' + name.replace('/', '.'))


def load(name):
  return config_module(name).get_config()


def report_of(name):
  return name.split('/')[0] if '/' in name else 'entregable4'


def test_every_config_file_is_tested():
  found = {str(path.relative_to(REPO / 'configs').with_suffix(''))
           for path in (REPO / 'configs').rglob('*.py')}
  found = {name for name in found
           if name != 'base' and hasattr(config_module(name), 'get_config')}
  assert found - set(TESTED_ELSEWHERE) == set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_summary_prints_the_reports_parameter_counts(name):
  """What `launch.py --summary` prints (the same two calls), against the report's counts."""
  config = load(name)
  printed = format_summary(summarize(create_model(config.model), config.model.input_shape))
  total, trainable, non_trainable = PARAMS[name]
  assert f'\nTotal params: {total:,} (' in printed
  assert f'\nTrainable params: {trainable:,} (' in printed
  assert f'\nNon-trainable params: {non_trainable:,} (' in printed


@pytest.mark.parametrize('name', CONFIGS)
def test_config_documents_itself(name):
  module = config_module(name)
  config = module.get_config()
  doc = module.__doc__
  report = report_of(name)
  assert config.name == name
  assert f'python launch.py --config=configs/{name}.py' in doc
  assert report in config.report and f'{report}.txt' in doc
  assert f'{PARAMS[name][0]:,}' in doc
  if config.reported_test_accuracy is None:
    assert re.search(r'[Nn]o (exact )?test accuracy', doc)
  else:
    assert f'{config.reported_test_accuracy:g}' in doc


@pytest.mark.parametrize('name, layer_row', [
    ('exp11', ('conv2d_10 (Conv2D)', '(None, 4, 4, 512)')),
    ('proyecto4/exp10', ('conv2d_7 (Conv2D)', '(None, 4, 4, 1024)')),
])
def test_summary_command_prints_keras_totals(name, layer_row):
  out = subprocess.run([sys.executable, 'launch.py', f'--config=configs/{name}.py', '--summary'],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  total, trainable, non_trainable = PARAMS[name]
  assert f'Total params: {total:,}' in out
  assert f'Trainable params: {trainable:,}' in out
  assert f'Non-trainable params: {non_trainable:,}' in out
  assert all(cell in out for cell in layer_row)


def one_training_step(name: str, data_dir: str) -> dict:
  """Builds `name` the way a run does (checks, splits, input pipeline, model, optimizer, state)
  on the synthetic data in `data_dir` and takes one jitted `train_step` on a batch of 4.

  Runs in the subprocess that `step_results` starts; returns what the test checks.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from cifar_jax.train import create_train_state, optimizers, train_step

  config = load(name)
  config.data.dir = data_dir
  # The synthetic part of conftest's data (full-size files, filler after it); one step, so no
  # epoch of the config's steps_per_epoch (78 x 512 images) has to fit in it.
  config.data.num_train_examples, config.data.num_test_examples = 300, 70
  config.train.steps_per_epoch = 0
  if config.data.num_validation:  # The synthetic training split holds only 300 images.
    config.data.num_validation = 60
  check_config(config)
  splits = pipeline.make_splits(config.data)
  tx = optimizers.make_optimizer(config.optim, steps_per_epoch=10,
                                 total_steps=10 * config.train.epochs)
  state = create_train_state(config, create_model(config.model), tx,
                             pipeline.make_input_pipeline(config, splits.train.images))
  batch = {'image': splits.train.images[:STEP_BATCH], 'label': splits.train.labels[:STEP_BATCH]}
  new_state, metrics = jax.jit(train_step)(state, batch)
  return dict(
      step=int(new_state.step), count=float(metrics['count']),
      loss=float(metrics['loss']) / float(metrics['count']),
      params_changed=any(not np.array_equal(old, new) for old, new in
                         zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params))),
      num_validation=len(splits.validation) if splits.validation else 0)


def step_results_json(data_dir: str, names) -> str:
  """Subprocess entry point: one_training_step for each name, as JSON (errors as tracebacks)."""
  results = {}
  for name in names:
    try:
      results[name] = one_training_step(name, data_dir)
    except Exception:  # pylint: disable=broad-except
      results[name] = {'error': traceback.format_exc()}
  return json.dumps(results)


def _run_steps(data_dir, names, compilation_cache):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}  # XLA_FLAGS: conftest's fast-compile ones.
  if compilation_cache:  # A rerun loads the compiled steps instead of compiling them again.
    # No JAX_COMPILATION_CACHE_MAX_SIZE: jax needs the optional `filelock` package for it, and
    # without it refuses every read and write (a warning each), so nothing was ever cached;
    # step_results bounds the folder instead.
    env.update(JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  code = ('import sys; from tests import test_configs as t; '
          'print(t.step_results_json(sys.argv[1], sys.argv[2:]))')
  result = subprocess.run([sys.executable, '-c', code, data_dir, *names], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(f'one-step subprocess failed:\n{result.stderr[-5000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def step_results(synthetic_dir, request):
  """One training step of every config, taken in two subprocesses side by side (each config
  compiles its own step, the slow and single-threaded part) with conftest's XLA flags. Compiled
  programs are kept in pytest's cache folder (.pytest_cache) when there is one."""
  cache = getattr(request.config, 'cache', None)
  compilation_cache = cache.mkdir('xla_compilation_cache') if cache else None
  if compilation_cache and sum(f.stat().st_size for f in compilation_cache.rglob('*')
                               if f.is_file()) > COMPILATION_CACHE_BYTES:
    shutil.rmtree(compilation_cache)  # Mostly programs of configs as they were: start afresh.
    compilation_cache.mkdir()
  # Configs of one model (same parameter counts) in the same half: a process initialises a model
  # it has initialised before with the program it compiled then (cifar_jax.train.state).
  halves = ([], [])
  for counts in sorted(set(PARAMS.values())):
    min(halves, key=len).extend(name for name in CONFIGS if PARAMS[name] == counts)
  with concurrent.futures.ThreadPoolExecutor(len(halves)) as pool:
    results = {}
    for part in pool.map(lambda names: _run_steps(synthetic_dir, names, compilation_cache),
                         halves):
      results.update(part)
  return results


@pytest.mark.parametrize('name', CONFIGS)
def test_one_training_step_runs(name, step_results):
  result = step_results[name]
  assert 'error' not in result, result.get('error')
  assert result['step'] == 1 and result['count'] == STEP_BATCH
  assert 0 < result['loss'] < 100  # Finite: cross-entropy of 10 classes plus any l2 penalty.
  assert result['params_changed']
  config = load(name)
  if config.data.num_validation or config.data.validation_split:
    assert result['num_validation'] > 0


def test_unknown_key_in_config_code_is_refused():
  config = base.get_config()
  with pytest.raises(AttributeError, match='lerning_rate'):
    config.optim.lerning_rate = 0.1


@pytest.mark.parametrize('override, message', [
    ('--config.optim.lerning_rate=0.1', 'lerning_rate'),
    ('--config.train.batch_size=big', 'batch_size'),
])
def test_bad_command_line_override_fails_naming_the_key(override, message):
  result = subprocess.run([sys.executable, 'launch.py', '--config=configs/exp0.py', override,
                           '--summary'], cwd=REPO, capture_output=True, text=True)
  assert result.returncode != 0
  assert message in result.stderr


def test_config_overrides_reach_the_config():
  result = subprocess.run([sys.executable, '-c', (
      'from absl import flags; import sys; from ml_collections import config_flags;'
      'c = config_flags.DEFINE_config_file("config", lock_config=True);'
      'flags.FLAGS(sys.argv); print(flags.FLAGS.config.optim.learning_rate)'),
      '--config=configs/exp9.py', '--config.optim.learning_rate=0.003'],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '0.003'
