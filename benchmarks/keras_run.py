"""A report's whole training in the real Keras 3, on our data: what Keras itself reaches where a
config's records fall short of the report.

    bash benchmarks/run.sh --help     # installs .venv-bench/tf (Keras 3 on TensorFlow) once
    .venv-bench/tf/bin/python benchmarks/keras_run.py --config=configs/arquitecturas/a2.py \\
        --data_dir=../shared/data/cifar10-jpeg --seed=0 \\
        --out=benchmarks/results/keras_runs/arquitecturas_a2_seed0.json
    # later, beside the records that landed since:
    .venv-bench/tf/bin/python benchmarks/keras_run.py --refresh \\
        --out=benchmarks/results/keras_runs/arquitecturas_a2_seed0.json

The parity tests check cifar_jax against Keras a few steps at a time; this checks a whole run.
It builds the config's model in Keras (cifar_jax/testing/keras_reference.py, as the benchmark
suite does), compiles it with the config's optimizer, and calls `model.fit` the way the reports
do: the config's split of the same data, pixels rescaled, batch size, epochs, shuffling, and its
callbacks as Keras objects (every `callbacks.early_stopping` entry as an EarlyStopping,
`reduce_lr_on_plateau` as ReduceLROnPlateau). Then `model.evaluate` on the test set. Keras draws
its own initial weights, dropout masks and batch order from `--seed`
(keras.utils.set_random_seed), so a run is one more seed of the report's code, not a replay of
a cifar_jax run.

The JSON holds the history, the epoch each EarlyStopping fired at, the test accuracy, the
versions, the CPU and the commit; it ends with the config's cifar_jax records in results/ side
by side (stop epoch, test accuracy and the mean absolute distance of each History curve, per
seed), so one file answers "does Keras train and stop as we do?". Configs whose training a
plain fit cannot express (a learning-rate schedule, param groups or lookahead, a model other
than a layer stack, a fixed steps_per_epoch) are refused before the data loads.
"""

import argparse
import json
import os
import statistics
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
import suite  # The Keras model, optimizer and input of a config, as the suite builds them.

REPO = suite.REPO
if REPO not in sys.path:  # cifar_jax, when this runs as a script from any folder.
  sys.path.insert(0, REPO)
SCHEMA = 'cifar_jax-keras-run/1'


def refusal(config) -> str:
  """Why `config`'s training is not the plain fit this script runs ('' when it is)."""
  if config.optim.schedule.name != 'constant':
    return f'optim.schedule.name={config.optim.schedule.name!r} (only constant learning rates)'
  if config.optim.param_groups or config.optim.lookahead.every:
    return 'optim.param_groups / optim.lookahead'
  if config.model.name != 'layer_stack':
    return f'model.name={config.model.name!r} (only layer_stack models have a Keras twin)'
  if config.train.steps_per_epoch:
    return 'train.steps_per_epoch (fit here passes over the split once an epoch)'
  return ''


def keras_callbacks(config) -> list:
  """The config's callbacks as Keras objects: its EarlyStoppings in fit's list order (which
  one's best weights the test sees), then ReduceLROnPlateau."""
  import keras  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import callbacks as callbacks_lib  # pylint: disable=g-import-not-at-top
  callbacks = [keras.callbacks.EarlyStopping(**entry.to_dict())
               for _, entry in callbacks_lib.early_stopping_entries(config.callbacks)]
  plateau = config.callbacks.reduce_lr_on_plateau
  if plateau.enabled:
    callbacks.append(keras.callbacks.ReduceLROnPlateau(
        **{k: v for k, v in plateau.to_dict().items() if k != 'enabled'}))
  return callbacks


def config_as_run(config_path: str, data_dir: str, seed: int, epochs: int = 0):
  """The config a run trains: the file's, with `seed` and at most `epochs` epochs (0: the
  config's)."""
  config = suite.load_config(config_path, data_dir)
  config.seed = seed
  config.train.epochs = epochs or config.train.epochs
  return config


def run(config_path: str, data_dir: str, seed: int, epochs: int = 0):
  """(the config as run, the run's JSON document)."""
  config = config_as_run(config_path, data_dir, seed, epochs)
  reason = refusal(config)
  if reason:  # Before Keras and its backend load (seconds).
    raise SystemExit(f'error: {config_path}: {reason}; this script runs a plain Keras fit')
  os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from cifar_jax.report import records as records_lib  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import callbacks as callbacks_lib  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  splits = pipeline.make_splits(config.data)
  rescale = suite.keras_scale(config, splits.train.images)
  model = suite.build_keras(config, keras.backend.backend())
  x, y, fit_args = suite.keras_train_input(config, splits.train.images, splits.train.labels,
                                           rescale)

  def scaled(split):
    return split.images.astype(np.float32) * np.float32(rescale), split.labels

  callbacks = keras_callbacks(config)
  start = time.perf_counter()
  validation = scaled(splits.validation) if splits.validation else None
  history = model.fit(x, y, epochs=config.train.epochs, validation_data=validation,
                      callbacks=callbacks, shuffle=True, verbose=2, **fit_args)
  train_seconds = time.perf_counter() - start
  test_loss, test_accuracy = model.evaluate(*scaled(splits.test), verbose=0,
                                            batch_size=config.train.batch_size)
  values = {k: [float(v) for v in vs] for k, vs in history.history.items()}
  best = int(np.argmax(values['val_accuracy'])) if 'val_accuracy' in values else None
  early_stopping = [{'name': name, 'monitor': entry.monitor,
                     'stopped_epoch': cb.stopped_epoch + 1 if cb.stopped_epoch else None,
                     'best_epoch': cb.best_epoch + 1}
                    for (name, entry), cb in zip(
                        callbacks_lib.early_stopping_entries(config.callbacks), callbacks)]
  return config, {
      'schema': SCHEMA, 'config': config.name, 'config_file': os.path.relpath(
          os.path.join(REPO, config_path), REPO), 'seed': seed, 'epochs_limit': epochs,
      'backend': keras.backend.backend(),
      'versions': suite.keras_versions(keras.backend.backend()),
      'data': {'source': records_lib.relative_source(splits.source),
               'checksum': records_lib.source_checksum(splits.source),
               'train': len(splits.train),
               'validation': len(splits.validation) if splits.validation else 0,
               'test': len(splits.test)},
      'machine': suite.machine_info(),
      'epochs_run': len(values['loss']), 'early_stopping': early_stopping,
      'test_accuracy': float(test_accuracy), 'test_loss': float(test_loss),
      'best_val_accuracy': None if best is None else values['val_accuracy'][best],
      'best_val_accuracy_epoch': None if best is None else best + 1,
      'train_seconds': round(train_seconds, 1), 'history': values,
  }


CURVES = ('loss', 'accuracy', 'val_loss', 'val_accuracy')


def curve_differences(history: dict, record: dict) -> dict:
  """Mean absolute difference of each History column between Keras's run and a record, over
  the epochs both ran."""
  from cifar_jax.report import records as records_lib  # pylint: disable=g-import-not-at-top
  return records_lib.history_difference(history, record['history'], CURVES, absolute=True)


def records_side_by_side(config, history: dict, results_dir: str, checksum: str) -> dict:
  """The cifar_jax records of the config Keras ran (its settings as run, so a shortened smoke
  run matches none) on the same data: per seed, the epochs run, the test accuracy and the
  curves' distance to Keras's `history`; and the mean test accuracy."""
  from cifar_jax.report import records as records_lib  # pylint: disable=g-import-not-at-top
  chosen, older = records_lib.choose_records(records_lib.load_records(results_dir), config.name,
                                             json.loads(config.to_json_best_effort()))
  same = [r for r in chosen if r['data']['checksum'] == checksum and not older]
  rows = [{'seed': r['seed'], 'commit': r['commit'][:10], 'epochs_run': r['epochs_run'],
           'test_accuracy': r['test_accuracy'],
           'mean_abs_difference': curve_differences(history, r)} for r in same]
  accuracies = [r['test_accuracy'] for r in same]
  return {'records': rows, 'mean_test_accuracy': statistics.mean(accuracies) if same else None}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', help='a config file, e.g. configs/exp0.py')
  parser.add_argument('--data_dir')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--epochs', type=int, default=0,
                      help="at most this many epochs (a smoke run); 0: the config's")
  parser.add_argument('--results', default=os.path.join(REPO, 'results'),
                      help="the cifar_jax records to set beside Keras's run")
  parser.add_argument('--out', required=True, help='the JSON to write (local or gs://)')
  parser.add_argument('--refresh', action='store_true',
                      help="only set --out's run beside the records in --results as they are now")
  args = parser.parse_args(argv)
  if args.refresh:
    from cifar_jax import paths  # pylint: disable=g-import-not-at-top
    document = json.loads(paths.read_text(args.out))
    config = config_as_run(document['config_file'], '', document['seed'],
                           document.get('epochs_limit', 0))
  else:
    if not args.config or not args.data_dir:
      parser.error('--config and --data_dir are needed (unless --refresh)')
    json_out.check(args.out)
    config, document = run(args.config, args.data_dir, args.seed, args.epochs)
  document['cifar_jax'] = records_side_by_side(config, document['history'], args.results,
                                               document['data']['checksum'])
  json_out.write(args.out, document)
  print(json.dumps({k: document[k] for k in ('config', 'seed', 'epochs_run', 'early_stopping',
                                              'test_accuracy', 'best_val_accuracy')}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
