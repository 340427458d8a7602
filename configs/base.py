"""Base config: every field a cifar_jax run reads, with Keras defaults.

Experiment configs import this, override a few fields and document where they come from.
The returned config is locked: a misspelt key in an experiment config or on the command line
(`--config.optim.lerning_rate=...`) fails at once with the key's name.

    python launch.py --config=configs/base.py --workdir=runs/base
"""

import ml_collections
from ml_collections import config_dict

placeholder = config_dict.placeholder


def get_config():
  c = ml_collections.ConfigDict()
  c.name = 'base'
  c.report = ''  # Which report and section this config reproduces.
  c.reported_test_accuracy = placeholder(float)  # Percent, as printed in the report.
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      # Where CIFAR-10 lives: a folder holding cifar-10-batches-{bin,py} (or the files themselves, or
      # the official tarball). Empty: env var CIFAR10_DIR, then the Keras/TFDS caches, then TFDS.
      dir='',
      download=True,  # Allow a TFDS download as the last resort.
      # Validation carved from the *end* of the 50,000 training images, before any shuffle
      # (Keras `validation_split`). Set at most one of the two; both 0 means no validation set.
      num_validation=0,
      validation_split=0.0,
      # 'rescale': x/255 (every report); 'standardize': per-channel mean/std of the training
      # split; 'none': raw 0..255 floats.
      normalization='rescale',
      num_train_examples=placeholder(int),  # Use only the first N training images (smoke runs).
      num_test_examples=placeholder(int),   # Use only the first N test images (smoke runs).
  ))

  # Keras ImageDataGenerator semantics (see cifar_jax/data/augment.py); all off by default.
  c.augment = ml_collections.ConfigDict(dict(
      rotation_range=0.0,        # degrees
      width_shift_range=0.0,     # fraction of width (<1) or pixels (>=1)
      height_shift_range=0.0,    # fraction of height (<1) or pixels (>=1)
      shear_range=0.0,           # degrees
      zoom_range=(0.0, 0.0),     # (lo, hi) scale; a float z means (1-z, 1+z)
      horizontal_flip=False,
      vertical_flip=False,
      fill_mode='nearest',       # nearest | constant | reflect | wrap
      cval=0.0,
  ))

  c.model = ml_collections.ConfigDict(dict(
      name='layer_stack',  # A key of cifar_jax.models.MODELS.
      layers=(),           # For 'layer_stack': a tuple of layer dicts (configs/layers.py builds them).
      num_classes=10,
      input_shape=(32, 32, 3),
      dtype='float32',     # Compute dtype; params stay float32.
  ))

  c.optim = ml_collections.ConfigDict(dict(
      name='adam',  # adam | sgd | rmsprop | adamw, with Keras 3 update rules and defaults.
      learning_rate=1e-3,
      beta_1=0.9, beta_2=0.999, epsilon=1e-7,  # adam / adamw
      momentum=0.0, nesterov=False,            # sgd (and rmsprop momentum)
      rho=0.9,                                 # rmsprop
      weight_decay=0.0,                        # adamw only: decoupled decay (not Keras l2)
      schedule=ml_collections.ConfigDict(dict(
          # constant | exponential_decay | step_decay | cosine | warmup_cosine | one_cycle
          name='constant',
          decay_rate=0.1,      # exponential_decay / step_decay
          decay_epochs=1.0,    # exponential_decay / step_decay: epochs per decay
          staircase=False,     # exponential_decay
          warmup_epochs=0.0,   # warmup_cosine
          alpha=0.0,           # cosine / warmup_cosine: final LR fraction
          pct_start=0.3,       # one_cycle
      )),
  ))

  c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.0))

  c.train = ml_collections.ConfigDict(dict(
      epochs=1,
      batch_size=32,  # Keras fit() default.
      # Steps per epoch: 0 means ceil(N / batch_size) with a smaller last batch (Keras fit on
      # arrays); N > 0 takes N full batches from a fresh shuffle each epoch (Keras fit on a
      # generator with steps_per_epoch).
      steps_per_epoch=0,
      eval_batch_size=1000,
      max_steps=0,  # Stop after this many steps in total (0: no limit); for smoke runs.
  ))

  # Keras callbacks, evaluated on the host between epochs. Each entry of `early_stopping` is one
  # keras.callbacks.EarlyStopping (the first that fires stops training).
  c.callbacks = ml_collections.ConfigDict(dict(
      early_stopping=ml_collections.ConfigDict(),
      reduce_lr_on_plateau=ml_collections.ConfigDict(dict(
          enabled=False, monitor='val_loss', factor=0.1, patience=10, mode='auto',
          min_delta=1e-4, cooldown=0, min_lr=0.0)),
  ))

  c.log = ml_collections.ConfigDict(dict(
      verbosity=1,  # 0: silent, 1: a line per epoch and a progress bar, 2: a line per epoch only.
  ))

  c.lock()
  return c


def early_stopping(monitor, patience, **kwargs):
  """One keras.callbacks.EarlyStopping entry; arguments as in Keras."""
  spec = dict(monitor=monitor, patience=patience, min_delta=0.0, mode='auto', baseline=placeholder(float),
              restore_best_weights=False, start_from_epoch=0)
  unknown = set(kwargs) - set(spec)
  if unknown:
    raise KeyError(f'early_stopping: unknown argument(s) {sorted(unknown)}; known: {sorted(spec)}')
  spec.update(kwargs)
  return ml_collections.ConfigDict(spec)


def add_early_stopping(config, name, monitor, patience, **kwargs):
  """Adds an EarlyStopping entry called `name` (override with --config.callbacks.early_stopping.NAME.x)."""
  with config.callbacks.early_stopping.unlocked():
    config.callbacks.early_stopping[name] = early_stopping(monitor, patience, **kwargs)
