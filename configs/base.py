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
  # Seed of the training data's shuffle order; None: `seed`.
  c.data_seed = placeholder(int)
  # Train this many independent replicas, seeds seed, seed+1, ..., in one compiled program
  # (jax.vmap over the train state); each seed's files go to <workdir>/seed_<i>/ and
  # <workdir>/results.json gets their test accuracies and mean ± std. cifar_jax/train/seeds.py.
  c.num_seeds = 1
  # num_seeds > 1: True, every replica sees the batches of data_seed (default: `seed`) in the same
  # order; False, each replica shuffles with its own seed (data_seed + i if data_seed is set).
  c.seeds_share_data_order = True

  c.data = ml_collections.ConfigDict(dict(
      # Where CIFAR-10 lives: a folder holding cifar-10-batches-{bin,py} (or the files themselves, or
      # the official tarball). Empty: env var CIFAR10_DIR, then the Keras/TFDS caches, then the
      # official download into ~/.keras/datasets (cifar_jax/data/download.py).
      dir='',
      download=True,  # Allow downloading the official tarball (md5-checked) as the last resort.
      # Validation carved from the *end* of the 50,000 training images, before any shuffle
      # (Keras `validation_split`). Set at most one of the two; both 0 means no validation set.
      num_validation=0,
      validation_split=0.0,
      # 'train': the validation set (if any) is carved from the training images as above;
      # 'test': the test set validates too (Keras validation_data=(x_test, y_test)), all 50,000
      # training images train.
      validation_source='train',
      # 'rescale': x/255 (every report); 'standardize': per-channel mean/std of the training
      # split; 'none': raw 0..255 floats.
      normalization='rescale',
      num_train_examples=placeholder(int),  # Use only the first N training images (smoke runs).
      num_test_examples=placeholder(int),   # Use only the first N test images (smoke runs).
  ))

  # Data augmentation (cifar_jax/data/augment.py), in training only; all off by default.
  # Stage 1, on raw 0..255 pixels before normalisation: Keras ImageDataGenerator, same arguments.
  c.augment = ml_collections.ConfigDict(dict(
      rotation_range=0.0,        # degrees
      # Shift ranges mean what they mean in Keras, by type, so these two fields keep the type
      # they are given (`--config.augment.width_shift_range=4` stays an int): a float r draws
      # uniformly from [-r, r]; an int n one of {0, ..., n-1} times a random sign; a list one
      # of its values times a random sign. Fractions of the size if the largest value is < 1,
      # pixels otherwise. (Keras quirk, kept: height_shift_range moves columns.)
      width_shift_range=config_dict.FieldReference(0.0, field_type=object),
      height_shift_range=config_dict.FieldReference(0.0, field_type=object),
      shear_range=0.0,           # degrees
      zoom_range=(0.0, 0.0),     # (lo, hi) scale; a float z means (1-z, 1+z)
      channel_shift_range=0.0,   # 0..255 units: one U(-r, r) per image added to all channels
      # (lo, hi): one PIL brightness factor U(lo, hi) per image, e.g. (0.8, 1.2); output in whole
      # grey levels as Keras's PIL round trip gives it. None: off.
      brightness_range=placeholder(tuple),
      horizontal_flip=False,
      vertical_flip=False,
      fill_mode='nearest',       # nearest | constant | reflect | wrap (scipy's)
      cval=0.0,
      # Stage 2, on the normalised batch (what a Keras model's first layers get after
      # Rescaling(1/255)): an ordered tuple of layer dicts, e.g.
      #   (dict(type='random_flip', mode='horizontal'), dict(type='random_rotation', factor=0.1))
      # Keras preprocessing layers with their argument names and defaults: random_flip,
      # random_rotation, random_translation, random_zoom, random_contrast, random_brightness
      # (pass value_range=(0, 1) to the last two after rescaling); research augmentations:
      # pad_and_crop (pad=4, mode='reflect'), cutout (size=16, count=1, fill_value=0.0).
      layers=(),
      # airbench's alternating flip, before both stages: each training example is mirrored or
      # not by a fair bit drawn once per run, and the other way on odd epochs.
      alternating_flip=False,
      # Test-time augmentation at evaluation: 'none', 'flip' (mean logits of the image and its
      # mirror) or 'flip_translate' (airbench's tta_level=2: also 1-pixel shifts).
      tta='none',
  ))

  c.model = ml_collections.ConfigDict(dict(
      name='layer_stack',  # A key of cifar_jax.models.MODELS.
      layers=(),           # For 'layer_stack': a tuple of layer dicts (configs/layers.py builds them).
      widths=(),           # For 'airbench': its three blocks' widths; (): (64, 256, 256).
      num_classes=10,
      input_shape=(32, 32, 3),
      dtype='float32',     # Compute dtype; params stay float32.
      # Precision of float32 matmuls and convolutions (jax's default_matmul_precision): 'highest'
      # is true float32, what Keras computed on the reports' GPUs (Colab T4: no TensorFloat-32),
      # on every backend; 'default' is the platform's own (TF32 on Ampere/Hopper GPUs, bfloat16
      # passes on TPU: faster, not the reports' arithmetic). CPUs compute float32 either way.
      matmul_precision='highest',
      # The CPU convolutions' weight-gradient form (cifar_jax/models/conv.py): 'auto' (a matmul
      # for 1x1 kernels, an explicit-layout convolution otherwise), 'conv', 'matmul', 'tuned'
      # (the faster per layer shape, measured once per machine and cached), 'xla'; '' leaves
      # $CIFAR_JAX_CONV_GRAD's, else 'auto'. Dense layers follow it (cifar_jax/models/dense.py:
      # 'xla' plain, 'tuned' measured, else a transposed weight gradient where the layer narrows
      # 8x or more). Speed only: every form gives the same gradient to float32 rounding.
      # Accelerators ignore it.
      conv_grad='',
      # Whose kernels CPU programs run the 2-D float32 convolutions with: 'xla' (XLA:CPU's Eigen,
      # the default: bit-exact against Keras on jax), 'onednn' (oneDNN's forward and gradients,
      # cifar_jax/models/onednn_conv.py: 1.2-1.8x faster train steps on a 2-core Zen 4; needs
      # `pip install -r requirements-onednn.txt` and g++) or 'tuned' (per convolution and part,
      # the faster of the two on this CPU, measured at first use and cached: models/conv.py).
      # Speed only: the same convolutions to float32 rounding. Accelerators ignore it.
      conv_backend='xla',
      # Transfer learning (name 'vgg16' | 'densenet121', cifar_jax/models/backbone.py): the
      # keras.applications network as a backbone, then `layers` as the head.
      backbone=ml_collections.ConfigDict(dict(
          # '' random init (Keras weights=None); 'imagenet': Keras's file in
          # ~/.keras/models (downloaded where there is internet); else a weight file
          # (.h5 as keras.applications downloads it, .weights.h5 or .keras).
          weights='',
          include_top=False,
          pooling='',          # '' | 'avg' | 'max' (include_top=False).
          output_layer='',     # Cut after this layer: vgg.get_layer('block3_pool').output.
          flatten=False,       # Append Flatten(): Model(base.input, Flatten()(base.output)).
          # keras.applications preprocess_input on 0..255 pixels: 'caffe' (VGG16), 'torch'
          # (DenseNet), 'tf'; these need data.normalization='none'. 'none': the input as the
          # pipeline gives it (the reports' x/255).
          preprocess='none',
          resize=(),           # (H, W): keras.layers.Resizing before the backbone.
          # Resizing(interpolation=...); 'nearest' by an integer factor is UpSampling2D(size).
          resize_method='bilinear',
          # Compute the backbone's features once (cached in <workdir>/bottleneck) and train the
          # head on them (arquitecturas tl_basic).
          bottleneck=False,
      )),
      # Keras `layer.trainable = False` on backbone layers: frozen weights get no updates and
      # frozen BatchNorm runs in inference mode. Set at most one.
      freeze=ml_collections.ConfigDict(dict(
          backbone=False,      # The whole backbone (base.trainable = False).
          trainable_from='',   # Layers before this one (`if layer.name == X: trainable = True`).
          trainable_last=0,    # All but the last N layers (`model.layers[-N:]`, Keras's count).
      )),
      # Fine-tuning phases, in order: dicts with 'epochs' and optionally 'learning_rate' and
      # 'freeze' (a dict of the keys above), e.g. head-only epochs, then unfreeze with a lower
      # LR. Each phase starts a fresh optimizer (Keras recompiles); the last runs to
      # train.epochs. Empty: one phase. See cifar_jax/train/freezing.py.
      phases=(),
  ))

  c.optim = ml_collections.ConfigDict(dict(
      # adam | sgd | rmsprop | adamw, with Keras 3 update rules and defaults; sgd_torch:
      # torch.optim.SGD (weight_decay is its coupled L2 term, added to the gradient).
      name='adam',
      learning_rate=1e-3,
      beta_1=0.9, beta_2=0.999, epsilon=1e-7,  # adam / adamw
      momentum=0.0, nesterov=False,            # sgd (and rmsprop momentum)
      rho=0.9,                                 # rmsprop
      weight_decay=0.0,  # adamw: decoupled decay (not Keras l2); sgd_torch: PyTorch's L2 term
      # PyTorch-style param groups, first match wins: dicts with 'match' (a regular expression
      # searched in the param's path, e.g. 'norm.*/bias'), 'lr_multiplier',
      # 'weight_decay_multiplier' (sgd_torch) and 'train_epochs' (the group stops training after
      # that many epochs; 0: frozen). cifar_jax/train/optimizers.py.
      param_groups=(),
      # > 0: the schedule and the lookahead end after ceil(total_epochs * steps_per_epoch) steps
      # (a fractional run, e.g. airbench's 9.9 epochs; set train.max_steps to the same). 0: the
      # run's epochs.
      total_epochs=0.0,
      # airbench's lookahead: every `every` steps (0: off) the weights and BatchNorm's running
      # statistics move to an EMA of them, decay**every * (t/T)**power, and at the last step T
      # the EMA replaces them.
      lookahead=ml_collections.ConfigDict(dict(every=0, decay=0.95, power=3.0)),
      schedule=ml_collections.ConfigDict(dict(
          # constant | exponential_decay | step_decay | cosine | warmup_cosine | one_cycle |
          # triangular (initial_fraction*lr -> lr at pct_start -> alpha*lr, linear; airbench)
          name='constant',
          decay_rate=0.1,      # exponential_decay / step_decay
          decay_epochs=1.0,    # exponential_decay / step_decay: epochs per decay
          staircase=False,     # exponential_decay
          warmup_epochs=0.0,   # warmup_cosine
          alpha=0.0,           # cosine / warmup_cosine / triangular: final LR fraction
          pct_start=0.3,       # one_cycle / triangular: fraction of the steps to the peak
          initial_fraction=0.0,  # triangular: first LR as a fraction of learning_rate
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
      # Train steps dispatched between two waits for the device (results never depend on it).
      # 0: automatic, about a second each, so progress, Ctrl-C and every_steps stay responsive.
      steps_per_dispatch=0,
      # True: each dispatch's steps run as one on-device loop (one program launch per chunk, so
      # a GPU/TPU never waits on the host, and a CPU allocates the step's temporaries once per
      # chunk); False: one program per step. 'auto': True (cifar_jax/train/programs.py has the
      # measurements). Either way results do not depend on how steps are grouped; True and False
      # agree to float32 rounding (XLA compiles a loop body apart).
      device_loop=config_dict.FieldReference('auto', field_type=object),
  ))

  # Keras callbacks, evaluated on the host between epochs. Each entry of `early_stopping` is one
  # keras.callbacks.EarlyStopping (the first that fires stops training). `early_stopping_order`
  # names them in the order of fit's callbacks list (empty: by name, ConfigDict's order). It
  # matters where several restore best weights: Keras restores them in that order at the end of
  # training, so the last one's weights are evaluated, and a config with two must say which.
  c.callbacks = ml_collections.ConfigDict(dict(
      early_stopping=ml_collections.ConfigDict(),
      early_stopping_order=(),
      reduce_lr_on_plateau=ml_collections.ConfigDict(dict(
          enabled=False, monitor='val_loss', factor=0.1, patience=10, mode='auto',
          min_delta=1e-4, cooldown=0, min_lr=0.0)),
  ))

  # Checkpoints in <workdir>/checkpoints (orbax): the latest state plus the best by `monitor`
  # (Keras ModelCheckpoint(monitor, save_best_only=True, mode) semantics: saved only when the
  # monitor improves). A rerun with the same workdir resumes exactly, from however old a
  # checkpoint: the epochs after it are computed again, bit for bit.
  # The latest is saved at an epoch's end once `every_epochs` epochs or `every_minutes` minutes
  # have passed since the last save (0 turns a trigger off), and always at the run's end (last
  # epoch, early stop, max_steps), on Ctrl-C/SIGTERM (the run stops after the current step and
  # saves) and every `every_steps` steps if > 0. Why minutes by default: a save blocks training
  # while it checks the state and copies it off the device (then a thread writes it): 0.2-1.2 s
  # for exp11's 185 MB on a loaded 2-core CPU, ~20 ms of orbax's fixed cost for any model
  # (benchmarks/checkpoint_cost.py), against epochs of ~0.25 s (exp11, bf16) down to
  # milliseconds (exp0) on an H200: saving every epoch would cost as much as training or more.
  # One save per 2 minutes costs under 1% of training even at 1 s a save,
  # and a crash without a signal loses at most 2 minutes and an epoch (a preemption's SIGTERM
  # loses nothing); CPU epochs of 20 s to minutes still save every few epochs or every epoch.
  # These three change no result, so a run resumes with other values.
  c.checkpoint = ml_collections.ConfigDict(dict(
      enabled=True,
      monitor='val_accuracy',
      mode='auto',
      every_epochs=0,
      every_minutes=2.0,
      every_steps=0,
  ))

  c.log = ml_collections.ConfigDict(dict(
      verbosity=1,  # 0: silent, 1: a line per epoch and a progress bar, 2: a line per epoch only.
      # TensorBoard scalars: 'tensorboardx' (no TensorFlow needed) or 'clu' (clu.metric_writers;
      # needs the optional extra requirements-clu.txt).
      writer='tensorboardx',
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
