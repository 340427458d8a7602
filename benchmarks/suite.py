"""The benchmark suite: cifar_jax (with XLA's convolutions, and with oneDNN's) against Keras 3
(jax and TensorFlow backends), same machine, same run, same architectures, optimizers and
augmentation.

    bash benchmarks/run.sh --data_dir=../shared/data/cifar10-jpeg --out=benchmarks/results/cpu.json
    python benchmarks/suite.py --quick --configs=configs/redes/m1.py --data_dir=...  # a few minutes

(benchmarks/run.sh installs the venvs; run directly, suite.py needs --tf_python for keras_tf.)

Per (framework, config), each in a process of its own (Keras's backend is fixed at import, and
each process's peak RSS is its own). cifar_jax_onednn is the cifar_jax child with
model.conv_backend='onednn' (cifar_jax/models/onednn_conv.py), cifar_jax_tuned with 'tuned' (each
convolution's parts on oneDNN or XLA, whichever measured faster here: its row lists the choices);
cifar_jax runs 'xla', whatever the config says. Where oneDNN's convolutions cannot run (no oneDNN,
no g++, not a CPU host), those children record status 'skipped' and the reason instead of numbers:

* train step: the jitted `cifar_jax.train.train_step` (with the config's on-device augmentation)
  on one fixed batch of the config's batch size, or a Keras `fit` on rescaled arrays timed per
  batch (augmentation is the host pipeline's, outside Keras's step); median seconds over
  --step_reps steps (fewer, at least 2, once --step_budget seconds are spent: an exp11 step
  takes ~25 s on 2 cores) after a warm-up one, and the fastest. compile_seconds: jax's lower +
  compile of the step for cifar_jax, first step minus median step for Keras.
* epoch: the production path, timed like the reports' training: cifar_jax's
  `train.loop.Run(config).fit()` (its history's epoch `time`, epoch 1 = compilation left out);
  Keras's `model.fit(x / 255 or ImageDataGenerator(rescale=1/255, **config.augment).flow(x, y),
  validation_data=...)`, timed per epoch by a callback after a short warm-up fit that compiles
  the same batch shapes. Both include the data pipeline and validation. Medians over
  --epoch_reps epochs. The small models (--full_epoch_configs) run real full epochs; the others
  a documented subset: --subset_steps training steps or more, enough to train for about
  --subset_seconds (from the measured step time), and --subset_validation validation images,
  extrapolated to a full epoch as train_seconds x full_steps / subset_steps + validation_seconds
  x full_validation / subset_validation (labelled 'subset' / 'extrap' in the JSON and table).
* FLOPs per training image: XLA's cost analysis of cifar_jax's compiled train step / batch size
  (the cifar_jax_onednn child's own count leaves out the convolutions, custom calls to XLA).
  Achieved FLOP/s of every framework = that x its train-step images/s, also as a fraction of
  this machine's dense float32 matmul peak, measured in the same run (at its start and end, the
  best of numpy and XLA). A fraction above 1 means the peak was taken while other work slowed
  the machine more, or that the framework computes fewer FLOPs than XLA counts.
* peak host memory: ru_maxrss of each child process.
* malloc: the cifar_jax children run glibc's malloc on transparent huge pages, as launch.py runs
  (cifar_jax/huge_pages.py); --huge_pages=all gives the Keras children the same, =none nobody.
  Each row records its GLIBC_TUNABLES.

Keras gets the config's optimizer (Keras Adam / SGD / RMSprop / AdamW with its settings, the
schedule's initial LR), sparse categorical cross-entropy on the softmax output and the layers'
L2 penalties (cifar_jax/testing/keras_reference.py builds the same model from the config; on jax it starts
from cifar_jax's initial weights), Keras's default jit_compile (XLA on jax, off for TensorFlow
on a CPU), and validates in batches of train.batch_size (Keras's default for fit on arrays).
The reports' callbacks (EarlyStopping, ReduceLROnPlateau) are left out: end-of-epoch host work
that cifar_jax's epoch time leaves out too. cifar_jax validates in train.eval_batch_size
batches, as it trains. The load average is recorded at the start, the end and per child: a run
that started with other work on the cores is marked 'loaded'. On a GPU host, run the suite in
a venv with jax[cuda12] (and `tensorflow` instead of tensorflow-cpu for keras_tf): every
child reports the device it ran on.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config as read_config_file, use_conv_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ('cifar_jax', 'cifar_jax_onednn', 'cifar_jax_tuned', 'keras_jax', 'keras_tf')
KERAS_BACKENDS = {'keras_jax': 'jax', 'keras_tf': 'tensorflow'}
# The cifar_jax children: the same code path, each with its model.conv_backend.
CONV_BACKENDS = {'cifar_jax': 'xla', 'cifar_jax_onednn': 'onednn', 'cifar_jax_tuned': 'tuned'}
# The summary's throughput ratios: key -> (whose, over whom). The cifar_jax row is cifar_jax with
# XLA's convolutions, so onednn_speedup['cifar_jax'] is oneDNN's convolutions over XLA's.
SPEEDUPS = {'speedup': ('cifar_jax', ('keras_jax', 'keras_tf')),
            'onednn_speedup': ('cifar_jax_onednn', ('cifar_jax', 'keras_jax', 'keras_tf')),
            'tuned_speedup': ('cifar_jax_tuned', ('cifar_jax', 'cifar_jax_onednn', 'keras_jax',
                                                  'keras_tf'))}
DEFAULT_CONFIGS = ('configs/redes/m1.py', 'configs/p2cnn/exp1.py', 'configs/exp0.py',
                   'configs/exp8b.py', 'configs/exp11.py', 'configs/proyecto4/exp10.py')
# Small enough on a 2-core CPU for real full epochs (about a minute each or less).
FULL_EPOCH_CONFIGS = ('configs/redes/m1.py', 'configs/p2cnn/exp1.py', 'configs/exp0.py')
SCHEMA = 'cifar_jax-benchmark-suite/1'


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one child measures."""
  step_reps: int           # Timed train steps (after a warm-up one), at most...
  step_budget: float       # ...or fewer (at least 2) once this many seconds are spent.
  epoch_reps: int          # Timed epochs (after the warm-up).
  full_epoch: bool         # A real epoch, or the subset below extrapolated to one.
  subset_steps: int        # Training steps of a subset epoch, at least...
  subset_seconds: float    # ...and enough for about this long (from the measured step time).
  subset_validation: int   # Validation images of a subset epoch.


# --- Shared by every child: config, data, the epoch subset -------------------------------------

def load_config(config_path: str, data_dir: str):
  """The config's get_config(), reading CIFAR-10 from `data_dir`, quiet, without checkpoints."""
  config = read_config_file(config_path)
  config.data.dir = data_dir
  config.data.download = False
  config.checkpoint.enabled = False  # Checkpoint writes are no part of either framework's epoch.
  config.log.verbosity = 0
  return config


@dataclasses.dataclass(frozen=True)
class EpochShape:
  """An epoch's size: training steps and images, validation images."""
  steps: int
  train_images: int
  validation_images: int


def full_epoch_shape(config, splits) -> EpochShape:
  """The config's real epoch on its data (`splits`: the config's, before any subset)."""
  batch_size, num_train = config.train.batch_size, len(splits.train)
  num_validation = len(splits.validation) if splits.validation else 0
  if config.train.steps_per_epoch:
    steps = config.train.steps_per_epoch
    return EpochShape(steps, steps * batch_size, num_validation)
  return EpochShape(-(-num_train // batch_size), num_train, num_validation)


def subset_steps(plan: Plan, step_seconds: float) -> int:
  """Training steps of a subset epoch: at least plan.subset_steps, and enough to last about
  plan.subset_seconds, so that an epoch's fixed costs (fit's set-up, the input pipeline's first
  batch) are not multiplied by full / subset steps in the extrapolation."""
  return max(plan.subset_steps, math.ceil(plan.subset_seconds / step_seconds))


def use_subset(config, steps: int, validation: int, full: EpochShape) -> EpochShape:
  """Shrinks `config`'s data to a subset epoch: `steps` full batches, then `validation` images
  (carved off the end, as the config's own split is). Returns the subset's shape."""
  batch_size = config.train.batch_size
  validation = min(validation, full.validation_images)
  config.data.num_train_examples = steps * batch_size + validation
  config.data.validation_split = 0.0
  config.data.num_validation = validation
  config.train.steps_per_epoch = steps
  return EpochShape(steps, steps * batch_size, validation)


def epoch_data(config, plan: Plan, full: EpochShape, splits, step_seconds: float):
  """(shape, splits) of the epochs to time: the config's own, or a subset (`config` is shrunk to
  it: the cifar_jax Run loads its data from the config). A subset that would be as long as the
  full epoch is the full epoch."""
  from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  steps = subset_steps(plan, step_seconds)
  if plan.full_epoch or steps >= full.steps:
    return full, splits
  measured = use_subset(config, steps, plan.subset_validation, full)
  return measured, pipeline.make_splits(config.data)


def median(values):
  return statistics.median(values) if values else None


def timed_steps(run_step, reps: int, budget: float) -> list:
  """Seconds of `reps` calls of run_step(), or fewer (at least 2) once `budget` seconds are
  spent: a big model's steps take tens of seconds on a CPU, and a few of them tell as much."""
  seconds = []
  while len(seconds) < reps and (len(seconds) < 2 or sum(seconds) < budget):
    start = time.perf_counter()
    run_step()
    seconds.append(time.perf_counter() - start)
  return seconds


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.


def extrapolate(train_seconds: float, validation_seconds: float, measured: EpochShape,
                full: EpochShape) -> float:
  """A full epoch's seconds from a subset epoch's training and validation parts."""
  seconds = train_seconds * full.steps / measured.steps
  if measured.validation_images:
    seconds += validation_seconds * full.validation_images / measured.validation_images
  return seconds


def epoch_summary(epoch_seconds, validation_seconds, measured: EpochShape,
                  full: EpochShape) -> dict:
  """The 'epoch' entry of a result row."""
  full_epoch = measured == full
  total, validation = median(epoch_seconds), median(validation_seconds) or 0.0
  full_seconds = total if full_epoch else extrapolate(max(total - validation, 0.0), validation,
                                                      measured, full)
  return {'mode': 'full' if full_epoch else 'subset', 'measured': dataclasses.asdict(measured),
          'full': dataclasses.asdict(full), 'epoch_seconds': epoch_seconds,
          'validation_seconds': validation_seconds, 'median_epoch_seconds': total,
          'median_validation_seconds': validation, 'full_epoch_seconds': full_seconds,
          'extrapolated': not full_epoch,
          'images_per_second': full.train_images / full_seconds if full_seconds else None}


# --- cifar_jax ---------------------------------------------------------------------------------

def cost_flops(compiled) -> float | None:
  """FLOPs of a compiled jax computation (cost_analysis is a dict, or a list of them)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get('flops')
  return float(flops) if flops is not None else None


def cifar_jax_train_step(config, splits, plan: Plan) -> dict:
  """Compile time, FLOPs and steady images/s of the jitted train_step on one fixed batch."""
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import create_train_state_from_config, steps  # pylint: disable=g-import-not-at-top

  batch_size = config.train.batch_size
  images, labels = splits.train.images, splits.train.labels
  state, _ = create_train_state_from_config(config, splits)  # What the run starts from.
  batch = jax.device_put({'image': images[:batch_size], 'label': labels[:batch_size]})
  start = time.perf_counter()
  compiled = jax.jit(steps.train_step, donate_argnums=0).lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  flops = cost_flops(compiled)

  def run_step():
    nonlocal state
    state, sums = compiled(state, batch)
    jax.block_until_ready(sums)

  # The first run is a warm-up (allocations, caches).
  seconds = timed_steps(run_step, 1, 0) + timed_steps(run_step, plan.step_reps, plan.step_budget)
  return step_summary(batch_size, seconds, compile_seconds,
                      flops_per_image=flops / batch_size if flops else None)


def step_summary(batch_size, seconds, compile_seconds, **extra) -> dict:
  """The 'train_step' entry: seconds[0] is the first (warm-up) step, the rest are timed."""
  step = median(seconds[1:])
  # The fastest step too: on a loaded machine the median swings with the others' work.
  return {'batch_size': batch_size, 'first_step_seconds': seconds[0],
          'step_seconds': seconds[1:], 'median_step_seconds': step,
          'images_per_second': batch_size / step,
          'best_images_per_second': batch_size / min(seconds[1:]),
          'compile_seconds': compile_seconds, **extra}


def cifar_jax_validation_seconds(run, reps: int = 2) -> float | None:
  """Seconds of one (compiled) validation pass of the Run: the validation part of its epoch
  time, which the loop does not report apart."""
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import loop  # pylint: disable=g-import-not-at-top
  if not run.splits.validation:
    return 0.0
  batches = run.eval_batches(run.splits.validation)
  seconds = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(loop.evaluate_split(run.state, batches, run.data_sharding))
    seconds.append(time.perf_counter() - start)
  return median(seconds)


def cifar_jax_epochs(config, plan: Plan, measured: EpochShape, full: EpochShape) -> dict:
  """Epoch times of the production loop: Run(config).fit(), epoch 1 (compilation) left out."""
  from cifar_jax.train import loop  # pylint: disable=g-import-not-at-top
  config.train.epochs = 1 + plan.epoch_reps
  workdir = tempfile.mkdtemp(prefix='bench_suite_cifar_jax_')
  try:
    run = loop.Run(config, workdir)
    try:
      run.fit()
      times = [row['time'] for row in run.replicas[0].record.history]
      try:
        validation = cifar_jax_validation_seconds(run)
      except (AttributeError, TypeError):  # The loop's internals moved: no split of the time.
        validation = None
    finally:
      run.close()
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  summary = epoch_summary(times[1:], [validation] * len(times[1:]) if validation is not None
                          else [], measured, full)
  summary['first_epoch_seconds'] = times[0]
  # The validation part comes from a separate pass of loop.evaluate_split.
  summary['validation_timed_apart'] = validation is not None
  return summary


def cifar_jax_info() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  return {'device': f'{jax.devices()[0].platform} x{jax.device_count()}',
          'versions': {'jax': jax.__version__, 'flax': flax.__version__}}


def measure_cifar_jax(config, splits, full: EpochShape, plan: Plan) -> dict:
  """The train step, then the epochs (the step's time sizes a subset epoch)."""
  step = cifar_jax_train_step(config, splits, plan)
  row = {'flops_per_image': step.pop('flops_per_image'), **cifar_jax_info()}
  measured, splits = epoch_data(config, plan, full, splits, step['median_step_seconds'])
  return {'train_step': step, 'epoch': cifar_jax_epochs(config, plan, measured, full), **row}


# --- Keras 3 (backend chosen by KERAS_BACKEND before import) ----------------------------------

def keras_optimizer(optim):
  """The Keras optimizer of `config.optim` (schedules start at their initial LR)."""
  import keras  # pylint: disable=g-import-not-at-top
  lr = optim.learning_rate
  if optim.name == 'adam':
    return keras.optimizers.Adam(lr, beta_1=optim.beta_1, beta_2=optim.beta_2,
                                 epsilon=optim.epsilon)
  if optim.name == 'adamw':
    return keras.optimizers.AdamW(lr, weight_decay=optim.weight_decay, beta_1=optim.beta_1,
                                  beta_2=optim.beta_2, epsilon=optim.epsilon)
  if optim.name == 'sgd':
    return keras.optimizers.SGD(lr, momentum=optim.momentum, nesterov=optim.nesterov)
  if optim.name == 'rmsprop':
    return keras.optimizers.RMSprop(lr, rho=optim.rho, momentum=optim.momentum,
                                    epsilon=optim.epsilon)
  raise ValueError(f'no Keras optimizer for optim.name={optim.name!r}')


def keras_augment_layers(layer_dicts):
  """config.augment.layers as Keras preprocessing layers (random_flip -> RandomFlip)."""
  import keras  # pylint: disable=g-import-not-at-top
  layers = []
  for spec in layer_dicts:
    class_name = ''.join(word.capitalize() for word in spec['type'].split('_'))
    if not hasattr(keras.layers, class_name):
      raise ValueError(f"augment layer {spec['type']!r} has no Keras counterpart")
    layers.append(getattr(keras.layers, class_name)(
        **{k: v for k, v in spec.items() if k != 'type'}))
  return layers


def initial_variables(config):
  """cifar_jax's initial weights as numpy, so that Keras starts from the same point (and skips
  its per-shape random-init compiles on the jax backend)."""
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from cifar_jax.train.state import init_variables  # pylint: disable=g-import-not-at-top
  params, batch_stats = init_variables(create_model(config.model), config.model.input_shape,
                                       config.seed)
  return jax.device_get({'params': params, 'batch_stats': batch_stats})


def build_keras(config, backend: str):
  """The config's model as a compiled keras.Sequential (softmax output)."""
  import keras  # pylint: disable=g-import-not-at-top
  from cifar_jax.testing import keras_reference  # pylint: disable=g-import-not-at-top
  if config.model.name != 'layer_stack':
    raise ValueError(f'Keras runs need a layer_stack model, not {config.model.name!r}')
  input_shape = tuple(config.model.input_shape)
  # On TensorFlow, Keras initialises quickly by itself; this keeps jax computations out of the
  # TF process (its peak RSS would count jax's runtime too).
  variables = initial_variables(config) if backend == 'jax' else None
  model = keras_reference.build_keras_model(config.model.layers, input_shape, variables=variables)
  if config.augment.layers:
    model = keras.Sequential([keras.Input(shape=input_shape),
                              *keras_augment_layers(config.augment.layers), model])
  model.compile(optimizer=keras_optimizer(config.optim),
                loss='sparse_categorical_crossentropy', metrics=['accuracy'])
  return model


def keras_scale(config, train_images):
  """(mean, std) scalars of the config's normalisation, as ImageDataGenerator's rescale can
  apply them: every report divides by 255."""
  from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  mean, std = pipeline.normalization_constants(config.data.normalization, train_images)
  if len(set(mean)) != 1 or len(set(std)) != 1 or mean[0] != 0:
    raise ValueError(f'data.normalization={config.data.normalization!r}: the Keras runs only '
                     'do a rescale')
  return 1.0 / std[0]


def image_data_generator_settings(config) -> dict:
  """The ImageDataGenerator arguments the config sets (its non-default stage-1 keys)."""
  from cifar_jax.data import augment  # pylint: disable=g-import-not-at-top
  given = config.augment.to_dict()
  return {k: given[k] for k in augment.IMAGE_DATA_GENERATOR_KEYS
          if given[k] != augment.DEFAULTS[k]}


def keras_train_input(config, images, labels, rescale):
  """What the report's fit() trains on: the rescaled arrays, or ImageDataGenerator.flow when
  the config augments. Returns (x, y, fit arguments)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  settings = image_data_generator_settings(config)
  if settings:
    from keras.src.legacy.preprocessing import image as keras_image  # pylint: disable=g-import-not-at-top
    generator = keras_image.ImageDataGenerator(rescale=rescale, **settings)
    flow = generator.flow(images, labels, batch_size=config.train.batch_size, seed=config.seed)
    return flow, None, {}
  return (images.astype(np.float32) * np.float32(rescale), labels,
          {'batch_size': config.train.batch_size})


class EpochTimer:
  """A Keras callback (built lazily: keras is imported in the child only) that records each
  epoch's seconds and its validation part."""

  @staticmethod
  def create():
    import keras  # pylint: disable=g-import-not-at-top

    class _Timer(keras.callbacks.Callback):

      def __init__(self):
        super().__init__()
        self.epoch_seconds, self.validation_seconds = [], []

      def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.validation = time.perf_counter(), 0.0

      def on_test_begin(self, logs=None):
        # On jax, fit dispatches train steps asynchronously: wait for the epoch's last update
        # (fit has just synced the weights into the variables), or validation would be charged
        # for the end of training. Validation needs those weights anyway.
        if keras.backend.backend() == 'jax':
          import jax  # pylint: disable=g-import-not-at-top
          jax.block_until_ready([v.value for v in self.model.variables])
        self.validation_start = time.perf_counter()

      def on_test_end(self, logs=None):
        self.validation = time.perf_counter() - self.validation_start

      def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)
        self.validation_seconds.append(self.validation)

    return _Timer()


def keras_fit(model, config, x, y, fit_args, validation, epochs, steps, callbacks=()):
  """model.fit as the reports call it, `steps` batches an epoch."""
  model.fit(x, y, epochs=epochs, steps_per_epoch=steps, validation_data=validation,
            validation_batch_size=config.train.batch_size, callbacks=list(callbacks), verbose=0,
            shuffle=True, **fit_args)


def warm_up_sizes(num: int, batch_size: int) -> int:
  """A sample size whose batches have every shape a pass over `num` images in `batch_size`
  batches has (a full batch and the smaller last one), so a fit on it compiles them all."""
  return min(num, batch_size + num % batch_size)


def keras_epochs(model, config, splits, plan: Plan, measured: EpochShape, full: EpochShape,
                 rescale) -> dict:
  """Epoch times of model.fit after a short warm-up fit with the same batch shapes."""
  batch_size = config.train.batch_size
  train, val = splits.train, splits.validation
  train_n = len(train)  # A subset epoch's split is already its steps' batches.
  n_warm = warm_up_sizes(train_n, batch_size)
  v_warm = warm_up_sizes(len(val), batch_size) if val else 0

  def validation_data(n):
    return (val.images[:n].astype('float32') * rescale, val.labels[:n]) if val else None

  x, y, fit_args = keras_train_input(config, train.images[:n_warm], train.labels[:n_warm],
                                     rescale)
  keras_fit(model, config, x, y, fit_args, validation_data(v_warm), epochs=1,
            steps=-(-n_warm // batch_size))
  x, y, fit_args = keras_train_input(config, train.images[:train_n], train.labels[:train_n],
                                     rescale)
  timer = EpochTimer.create()
  keras_fit(model, config, x, y, fit_args, validation_data(len(val) if val else 0),
            epochs=plan.epoch_reps, steps=measured.steps, callbacks=[timer])
  return epoch_summary(timer.epoch_seconds, timer.validation_seconds, measured, full)


class BatchTimer:
  """A Keras callback (built lazily, like EpochTimer) that times each training batch of a fit,
  waiting for the step's results on jax, and stops the fit after a warm-up batch and `reps`
  timed ones (fewer, at least 2, past `budget` seconds)."""

  @staticmethod
  def create(reps: int, budget: float):
    import keras  # pylint: disable=g-import-not-at-top

    class _Timer(keras.callbacks.Callback):

      def __init__(self):
        super().__init__()
        self.seconds = []

      def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

      def on_train_batch_end(self, batch, logs=None):
        if keras.backend.backend() == 'jax':  # Dispatch is asynchronous: wait for the step.
          import jax  # pylint: disable=g-import-not-at-top
          jax.block_until_ready(logs)
        self.seconds.append(time.perf_counter() - self.start)
        timed = self.seconds[1:]
        if len(timed) >= reps or (len(timed) >= 2 and sum(timed) >= budget):
          self.model.stop_training = True

    return _Timer()


def keras_train_step(model, config, splits, plan: Plan, rescale) -> dict:
  """Seconds per training batch inside model.fit on rescaled arrays (no augmentation): Keras's
  train step as fit runs it, its per-batch input handling included. (train_on_batch would add
  a per-call overhead that fit does not have: ~0.2 s on TensorFlow.) The first batch compiles."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  batch_size = config.train.batch_size
  # Whole batches for the warm-up and every timed step (a subset split may be shorter: wrap).
  index = np.arange(batch_size * (plan.step_reps + 1)) % len(splits.train)
  x = splits.train.images[index].astype(np.float32) * np.float32(rescale)
  timer = BatchTimer.create(plan.step_reps, plan.step_budget)
  model.fit(x, splits.train.labels[index], batch_size=batch_size, epochs=1, shuffle=False,
            callbacks=[timer], verbose=0)
  step = median(timer.seconds[1:])
  return step_summary(batch_size, timer.seconds, timer.seconds[0] - step)


def keras_versions(backend: str) -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  versions = {'keras': keras.__version__}
  if backend == 'tensorflow':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    versions['tensorflow'] = tf.__version__
  else:
    import jax  # pylint: disable=g-import-not-at-top
    versions['jax'] = jax.__version__
  return versions


def keras_device(backend: str) -> str:
  if backend == 'tensorflow':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    gpus = tf.config.list_physical_devices('GPU')
    return f'gpu x{len(gpus)}' if gpus else 'cpu'
  import jax  # pylint: disable=g-import-not-at-top
  return f'{jax.devices()[0].platform} x{jax.device_count()}'


def measure_keras(config, backend: str, splits, full: EpochShape, plan: Plan) -> dict:
  """The train step, then the epochs (the step's time sizes a subset epoch)."""
  rescale = keras_scale(config, splits.train.images)
  model = build_keras(config, backend)
  step = keras_train_step(model, config, splits, plan, rescale)
  row = {'jit_compile': bool(model.jit_compile), 'device': keras_device(backend),
         'versions': keras_versions(backend)}
  measured, splits = epoch_data(config, plan, full, splits, step['median_step_seconds'])
  return {'train_step': step,
          'epoch': keras_epochs(model, config, splits, plan, measured, full, rescale), **row}


# --- The child process -------------------------------------------------------------------------

def measure(framework: str, config_path: str, data_dir: str, plan: Plan) -> dict:
  """Runs in the child: one framework on one config. A cifar_jax backend that cannot run here
  gives a 'skipped' row (before the data loads) rather than an error."""
  load_start = os.getloadavg()
  config = load_config(config_path, data_dir)
  backend_fields = {}
  if framework in CONV_BACKENDS:
    from cifar_jax.models import onednn_conv  # pylint: disable=g-import-not-at-top
    try:
      backend_fields = use_conv_backend(config, CONV_BACKENDS[framework])
    except onednn_conv.Unavailable as e:
      return {'framework': framework, 'config': config_path, 'status': 'skipped',
              'reason': str(e)}
  from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  splits = pipeline.make_splits(config.data)
  full = full_epoch_shape(config, splits)
  if framework in CONV_BACKENDS:
    row = measure_cifar_jax(config, splits, full, plan)
    if CONV_BACKENDS[framework] == 'tuned':
      from cifar_jax.models import conv_tuning  # pylint: disable=g-import-not-at-top
      row['conv_choices'] = conv_tuning.choices()
  else:
    row = measure_keras(config, KERAS_BACKENDS[framework], splits, full, plan)
  return {'framework': framework, 'config': config_path, 'status': 'ok', **row,
          **backend_fields, 'peak_rss_mib': peak_rss_mib(),
          'load_average_start': list(load_start), 'load_average_end': list(os.getloadavg())}


def measure_matmul_peak(size: int, reps: int) -> dict:
  """Runs in the child: dense float32 matmul FLOP/s of numpy (BLAS) and of XLA, best of both."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
  flops = 2.0 * size ** 3

  def best_rate(fn):
    fn()  # Warm-up (and compilation).
    seconds = []
    for _ in range(reps):
      start = time.perf_counter()
      fn()
      seconds.append(time.perf_counter() - start)
    return flops / median(seconds)

  x = jax.device_put(a)
  matmul = jax.jit(jnp.matmul)
  rates = {'numpy_flops_per_second': best_rate(lambda: a @ a),
           'jax_flops_per_second': best_rate(lambda: matmul(x, x).block_until_ready())}
  return {'size': size, 'reps': reps, 'dtype': 'float32', **rates,
          'peak_flops_per_second': max(rates.values()),
          'device': f'{jax.devices()[0].platform} x{jax.device_count()}'}


# --- The parent: children, summary, table -----------------------------------------------------

def run_child(python: str, args: list, env_extra: dict, timeout: float) -> dict:
  """Runs this file as a child; its last stdout line is its JSON result."""
  env = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '2', **env_extra}
  start = time.perf_counter()
  try:
    done = subprocess.run([python, os.path.abspath(__file__), '--child', *args], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'status': 'error', 'error': f'timed out after {timeout:.0f} s'}
  lines = done.stdout.strip().splitlines()
  if done.returncode or not lines:
    return {'status': 'error', 'error': f'exit {done.returncode}: {done.stderr[-3000:]}'}
  result = json.loads(lines[-1])
  result['child_seconds'] = time.perf_counter() - start
  return result


def config_file(name: str) -> str:
  """A config path as given, or a short name: 'redes/m1' -> 'configs/redes/m1.py'."""
  if os.path.exists(os.path.join(REPO, name)) or os.path.isabs(name):
    return name
  return os.path.join('configs', name if name.endswith('.py') else f'{name}.py')


def plan_for(config_path: str, args) -> Plan:
  full = not args.quick and os.path.normpath(config_path) in map(os.path.normpath,
                                                                  args.full_epoch_configs)
  return Plan(step_reps=args.step_reps, step_budget=args.step_budget,
              epoch_reps=args.epoch_reps, full_epoch=full,
              subset_steps=args.subset_steps, subset_seconds=args.subset_seconds,
              subset_validation=args.subset_validation)


def flops_fields(row: dict, flops_per_image, peak) -> dict:
  """Achieved FLOP/s of a row's train step, from cifar_jax's FLOPs per image."""
  if row.get('status') != 'ok' or not flops_per_image:
    return {}
  achieved = flops_per_image * row['train_step']['images_per_second']
  return {'achieved_flops_per_second': achieved,
          'fraction_of_peak': achieved / peak if peak else None}


def speedups(ours: dict, by_framework: dict, others) -> dict:
  """`ours`'s throughput over each of `others` that ran (> 1: ours is faster), step and epoch."""
  if ours.get('status') != 'ok':
    return {}
  ratios = {}
  for framework in others:
    row = by_framework.get(framework, {})
    if row.get('status') == 'ok':
      ratios[framework] = {
          'train_step': (ours['train_step']['images_per_second']
                         / row['train_step']['images_per_second']),
          'epoch': row['epoch']['full_epoch_seconds'] / ours['epoch']['full_epoch_seconds']}
  return ratios


def summarize(rows: list, peak) -> list:
  """Per config: FLOPs per image, each framework's headline numbers and the SPEEDUPS."""
  summary = []
  for config in dict.fromkeys(row['config'] for row in rows):
    by_framework = {row['framework']: row for row in rows if row['config'] == config}
    flops = by_framework.get('cifar_jax', {}).get('flops_per_image')
    entry = {'config': config, 'flops_per_image': flops, 'frameworks': {}}
    for framework, row in by_framework.items():
      if row.get('status') != 'ok':
        entry['frameworks'][framework] = {key: row.get(key) for key in ('status', 'error', 'reason')
                                          if key in row}
        continue
      entry['frameworks'][framework] = {
          'step_images_per_second': row['train_step']['images_per_second'],
          'best_step_images_per_second': row['train_step']['best_images_per_second'],
          'epoch_seconds': row['epoch']['full_epoch_seconds'],
          'epoch_mode': row['epoch']['mode'],
          'compile_seconds': row['train_step']['compile_seconds'],
          'peak_rss_mib': row['peak_rss_mib'], **flops_fields(row, flops, peak)}
    for key, (ours, others) in SPEEDUPS.items():
      entry[key] = speedups(by_framework.get(ours, {}), by_framework, others)
    summary.append(entry)
  return summary


def short_name(config_path: str) -> str:
  """'configs/redes/m1.py' -> 'redes/m1' (the table's config column)."""
  name = config_path[:-3] if config_path.endswith('.py') else config_path
  return name[len('configs/'):] if name.startswith('configs/') else name


def cell(value, width: int, digits: int = 1, scale: float = 1.0) -> str:
  """A right-aligned number, or '-' where there is none."""
  return f'{value * scale:{width}.{digits}f}' if value is not None else f'{"-":>{width}s}'


def format_table(summary: list, loaded: bool) -> str:
  header = (f'{"config":18s} {"framework":16s} {"step img/s":>10s} {"GFLOP/s":>8s} {"%peak":>6s} '
            f'{"epoch s":>8s} {"kind":>6s} {"compile s":>9s} {"RSS MiB":>8s} '
            f'{"step x":>7s} {"epoch x":>7s} {"1dnn st x":>9s} {"1dnn ep x":>9s} '
            f'{"tuned st x":>10s} {"tuned ep x":>10s}')
  lines = [header, '-' * len(header)]
  for entry in summary:
    for framework, row in entry['frameworks'].items():
      name = short_name(entry['config'])
      if 'step_images_per_second' not in row:
        why = (row.get('error') or row.get('reason') or '').strip().splitlines()[-1:]
        lines.append(f'{name:18s} {framework:16s} {row["status"]}: {" ".join(why)}')
        continue
      speedup = entry['speedup'].get(framework, {})
      onednn = entry['onednn_speedup'].get(framework, {})
      tuned = entry['tuned_speedup'].get(framework, {})
      lines.append(
          f'{name:18s} {framework:16s} {cell(row["step_images_per_second"], 10)} '
          f'{cell(row.get("achieved_flops_per_second"), 8, scale=1e-9)} '
          f'{cell(row.get("fraction_of_peak"), 6, scale=100)} '
          f'{cell(row["epoch_seconds"], 8)} '
          f'{"full" if row["epoch_mode"] == "full" else "extrap":>6s} '
          f'{cell(row["compile_seconds"], 9)} {cell(row["peak_rss_mib"], 8, 0)} '
          f'{cell(speedup.get("train_step"), 7, 2)} {cell(speedup.get("epoch"), 7, 2)} '
          f'{cell(onednn.get("train_step"), 9, 2)} {cell(onednn.get("epoch"), 9, 2)} '
          f'{cell(tuned.get("train_step"), 10, 2)} {cell(tuned.get("epoch"), 10, 2)}')
  lines.append('step x / epoch x: cifar_jax images/s over that framework\'s (> 1: cifar_jax '
               'faster); 1dnn st x / 1dnn ep x: the same for cifar_jax_onednn\n(on the '
               'cifar_jax row: oneDNN\'s convolutions over XLA\'s), tuned st x / tuned ep x for '
               'cifar_jax_tuned; kind "extrap": a subset\nepoch extrapolated to a full one.')
  if loaded:
    lines.append('LOADED: other work shared the cores during this run (see load_average).')
  return '\n'.join(lines)


def machine_info() -> dict:
  return {'cpu_model': json_out.cpu(), 'cpu_count': os.cpu_count(), 'platform': platform.platform(),
          'python': platform.python_version(), **json_out.code_version()}


def is_loaded(load_averages, cpu_count: int) -> bool:
  """Whether anything but this suite kept the cores busy: a 1-minute load average at start
  (before our children run) above a quarter of the cores."""
  return load_averages[0] > 0.25 * cpu_count


def portable_argv(argv: list) -> list:
  """argv with absolute paths made relative to the repo (or cut to their file name outside it),
  so a results file names no machine's folders."""
  def portable(arg: str) -> str:
    key, sep, value = arg.partition('=')
    if not sep or not os.path.isabs(value):
      return arg
    inside = os.path.commonpath([REPO, os.path.abspath(value)]) == REPO
    return f'{key}={os.path.relpath(value, REPO) if inside else os.path.basename(value)}'
  return [portable(arg) for arg in argv]


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(DEFAULT_CONFIGS),
                      help="comma-separated config files, or short names: 'redes/m1,exp11'")
  parser.add_argument('--frameworks', default=','.join(FRAMEWORKS),
                      help=f'comma-separated, of {",".join(FRAMEWORKS)} (cifar_jax_onednn and '
                      'cifar_jax_tuned are skipped where oneDNN cannot load)')
  parser.add_argument('--data_dir', default='', help="CIFAR-10 folder (the config's data.dir)")
  parser.add_argument('--out', default='benchmarks/results/suite.json')
  parser.add_argument('--step_reps', type=int, default=5, help='timed train steps, at most')
  parser.add_argument('--step_budget', type=float, default=40,
                      help='seconds after which fewer (>= 2) timed steps do')
  parser.add_argument('--epoch_reps', type=int, default=1,
                      help='timed epochs after the warm-up (a full one averages hundreds of '
                      'steps already)')
  parser.add_argument('--full_epoch_configs', default=','.join(FULL_EPOCH_CONFIGS),
                      help='configs timed on real full epochs; the others on a subset')
  parser.add_argument('--subset_steps', type=int, default=2,
                      help='training steps of a subset epoch, at least')
  parser.add_argument('--subset_seconds', type=float, default=30,
                      help='a subset epoch trains for about this long (more steps if needed)')
  parser.add_argument('--subset_validation', type=int, default=512,
                      help='validation images of a subset epoch')
  parser.add_argument('--matmul_size', type=int, default=2048)
  parser.add_argument('--quick', action='store_true',
                      help='a smoke run: subset epochs everywhere, 2 steps, 1 epoch')
  parser.add_argument('--tf_python', default=sys.executable,
                      help='the interpreter (venv) with tensorflow for keras_tf')
  parser.add_argument('--child_timeout', type=float, default=1800)
  parser.add_argument('--huge_pages', choices=('cifar_jax', 'all', 'none'), default='cifar_jax',
                      help="which children run glibc's malloc on transparent huge pages: "
                           "cifar_jax's, as launch.py gives them (cifar_jax/huge_pages.py), "
                           "every framework's, or none")
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--framework', default='', help=argparse.SUPPRESS)
  parser.add_argument('--config', default='', help=argparse.SUPPRESS)
  parser.add_argument('--plan', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.configs = [config_file(c) for c in args.configs.split(',') if c]
  args.frameworks = [f for f in args.frameworks.split(',') if f]
  args.full_epoch_configs = [config_file(c) for c in args.full_epoch_configs.split(',') if c]
  unknown = set(args.frameworks) - set(FRAMEWORKS)
  if unknown:
    parser.error(f'unknown frameworks {sorted(unknown)}; known: {list(FRAMEWORKS)}')
  if args.quick:
    args.step_reps, args.epoch_reps = min(args.step_reps, 2), 1
    args.subset_validation = min(args.subset_validation, 250)
    args.subset_seconds = 0
    args.matmul_size = min(args.matmul_size, 1024)
  return args


def child_main(args) -> None:
  if args.framework == 'matmul_peak':
    print(json.dumps(measure_matmul_peak(args.matmul_size, reps=5)))
    return
  plan = Plan(**json.loads(args.plan))
  print(json.dumps(measure(args.framework, args.config, args.data_dir, plan)))


def child_args(framework, config_path, args, plan) -> list:
  return [f'--framework={framework}', f'--config={config_path}', f'--data_dir={args.data_dir}',
          f'--plan={json.dumps(dataclasses.asdict(plan))}']


def measure_one(framework: str, config_path: str, plan: Plan, args) -> dict:
  """One child: a result row, printed as a progress line."""
  python = args.tf_python if framework == 'keras_tf' else sys.executable
  env = {'KERAS_BACKEND': KERAS_BACKENDS.get(framework, 'jax')}
  if args.huge_pages == 'all' or (args.huge_pages == 'cifar_jax'
                                  and framework.startswith('cifar_jax')):
    tunables = json_out.glibc_tunables_with_huge_pages(os.environ)
    if tunables:
      env['GLIBC_TUNABLES'] = tunables
  print(f'{config_path} / {framework} ({"full" if plan.full_epoch else "subset"} epochs)...',
        end=' ', flush=True)
  row = {'framework': framework, 'config': config_path, 'plan': dataclasses.asdict(plan),
         'glibc_tunables': env.get('GLIBC_TUNABLES', os.environ.get('GLIBC_TUNABLES', '')),
         **run_child(python, child_args(framework, config_path, args, plan), env,
                     args.child_timeout)}
  print(outcome(row), flush=True)
  return row


def outcome(row: dict) -> str:
  """A result row's progress line: its numbers, or its status (and a skip's reason)."""
  if row['status'] == 'ok':
    return (f"{row['train_step']['images_per_second']:.1f} img/s step, "
            f"{row['epoch']['full_epoch_seconds']:.1f} s epoch ({row['child_seconds']:.0f} s)")
  return f"{row['status']}: {row['reason']}" if row.get('reason') else row['status']


def measure_peak(args, when: str) -> dict:
  """The matmul peak, in a child of its own."""
  peak = run_child(sys.executable, ['--framework=matmul_peak', f'--matmul_size={args.matmul_size}'],
                   {}, args.child_timeout)
  if peak.get('peak_flops_per_second'):
    print(f'dense float32 matmul peak at the {when}: {peak["peak_flops_per_second"] / 1e9:.1f} '
          'GFLOP/s', flush=True)
  return {**peak, 'measured_at': [when]}


def best_peak(first: dict, second: dict) -> dict:
  """The higher of two peak measurements (taken at the start and the end of the run: on a
  shared machine either may have been slowed), keeping both figures."""
  rates = [p.get('peak_flops_per_second') or 0 for p in (first, second)]
  best = dict(first if rates[0] >= rates[1] else second)
  best['measurements'] = [first, second]
  return best


def results_document(args, rows, peak, started, load_start, start_time, complete) -> dict:
  """The JSON document (see the README's benchmark section for its fields)."""
  return {'schema': SCHEMA, 'complete': complete, 'started': started.isoformat(timespec='seconds'),
          'wall_seconds': time.perf_counter() - start_time, 'argv': portable_argv(sys.argv[1:]),
          'machine': {**machine_info(), 'load_average_start': list(load_start),
                      'load_average_end': list(os.getloadavg()),
                      'loaded': is_loaded(load_start, os.cpu_count() or 1)},
          'settings': {k: getattr(args, k) for k in (
              'step_reps', 'step_budget', 'epoch_reps', 'subset_steps', 'subset_seconds',
              'subset_validation',
              'quick', 'full_epoch_configs')},
          'matmul_peak': peak, 'summary': summarize(rows, peak.get('peak_flops_per_second')),
          'results': rows}


def write_json(path: str, document: dict) -> None:
  json_out.write(path, document)


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.child:
    child_main(args)
    return {}
  json_out.check(args.out)
  started, load_start = datetime.datetime.now().astimezone(), os.getloadavg()
  start_time = time.perf_counter()
  print(f'load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} '
        f'on {os.cpu_count()} cores', flush=True)
  peak = measure_peak(args, 'start')
  rows = []
  for config_path in args.configs:
    plan = plan_for(config_path, args)
    for framework in args.frameworks:
      rows.append(measure_one(framework, config_path, plan, args))
      # After every child, so that a run cut short still leaves its numbers.
      write_json(args.out, results_document(args, rows, peak, started, load_start, start_time,
                                            complete=False))
  peak = best_peak(peak, measure_peak(args, 'end'))
  document = results_document(args, rows, peak, started, load_start, start_time, complete=True)
  print(format_table(document['summary'], document['machine']['loaded']))
  write_json(args.out, document)
  if args.out:
    print(f'wrote {args.out}')
  return document


if __name__ == '__main__':
  main()
