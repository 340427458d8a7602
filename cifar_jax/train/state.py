"""The TrainState: everything a train or eval step needs, as one pytree."""

import contextlib
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax.training import train_state

from cifar_jax.data.pipeline import InputPipeline
from cifar_jax.models import conv
from cifar_jax.train import fast_optim


class TrainState(train_state.TrainState):
  """flax's TrainState (step, params, opt_state, apply_fn, tx) plus:

  batch_stats: BatchNorm moving statistics (Keras's non-trainable weights).
  rng: the run's base PRNG key (uint32[2]); each step folds in its step number, so dropout and
    augmentation randomness is a pure function of (seed, step) and a resumed run repeats it.
  input_pipeline: static; turns uint8 batches into (augmented) normalised floats on the device.
  label_smoothing: static; Keras CategoricalCrossentropy(label_smoothing=...) semantics.
  tta: static; test-time augmentation of eval and predict ('none' | 'flip' | 'flip_translate').
  """
  batch_stats: Any
  rng: jax.Array
  input_pipeline: InputPipeline = flax.struct.field(pytree_node=False, default=None)
  label_smoothing: float = flax.struct.field(pytree_node=False, default=0.0)
  tta: str = flax.struct.field(pytree_node=False, default='none')  # Eval-time augmentation.
  # Static: jax's default precision of the steps' float32 matmuls and convolutions (config
  # model.matmul_precision). 'default' leaves the platform's choice: full float32 on CPU,
  # TensorFloat-32 on recent NVIDIA GPUs, bfloat16 passes on TPU.
  matmul_precision: str = flax.struct.field(pytree_node=False, default='default')
  # Static: the CPU convolutions' weight-gradient form (config model.conv_grad, models/conv.py's
  # modes); '' leaves $CIFAR_JAX_CONV_GRAD's, else 'auto'. Speed only: same values to rounding.
  conv_grad: str = flax.struct.field(pytree_node=False, default='')
  # Static: whose convolution kernels CPU programs run (config model.conv_backend): 'xla',
  # 'onednn' (models/onednn_conv.py) or 'tuned' (per part, models/conv.py). Speed only: the same
  # values to float32 rounding.
  conv_backend: str = flax.struct.field(pytree_node=False, default='xla')

  @contextlib.contextmanager
  def arithmetic(self):
    """The context the steps trace in: this state's matmul precision ('default': no change, so
    a process-wide setting such as JAX_DEFAULT_MATMUL_PRECISION still applies), conv_grad and
    conv_backend."""
    with contextlib.ExitStack() as stack:
      if self.matmul_precision != 'default':
        stack.enter_context(jax.default_matmul_precision(self.matmul_precision))
      stack.enter_context(conv.grad_mode(self.conv_grad))
      stack.enter_context(conv.backend(self.conv_backend))
      yield


# Values of model.matmul_precision: jax's default_matmul_precision names.
MATMUL_PRECISIONS = ('default', 'high', 'highest', 'bfloat16', 'tensorfloat32', 'float32')


# XLA:CPU spends most of init's compile in LLVM optimising the random-bit code (threefry) of
# every initializer; init runs once, so it is compiled without: exp11 7.7 -> 1.8 s of compile
# for 1 s more of run time, redes/m1 4.8 -> 0.6 s. Integer and IEEE float ops: same values.
CPU_INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0,
                             'xla_llvm_disable_expensive_passes': True}


def _init_fn(model, input_shape):
  """model's init as a function of its key, jitted."""
  x = jnp.zeros((1, *input_shape), jnp.float32)

  @jax.jit
  def init(key):
    params_key, dropout_key = jax.random.split(key)
    variables = model.init({'params': params_key, 'dropout': dropout_key}, x, train=False)
    return variables['params'], variables.get('batch_stats', {})

  return init


@functools.lru_cache(maxsize=16)
def _compiled_init(model, model_repr, input_shape, key, options, trace_settings):
  """The compiled init of `model`: a process initialising the same model again (another run
  or seed of a config, a test's second run) reuses it. Flax modules are equal, and hash alike,
  when their fields are; `model_repr` tells apart fields equal in value but not in type (1 and
  1.0). `key`: the key's shape, type and placement. `trace_settings`: the jax settings that
  change what init traces to, as in jit's own cache key. The seed is the compiled program's
  argument, so the values are unchanged."""
  del model_repr, trace_settings
  return _init_fn(model, input_shape).lower(key).compile(
      compiler_options=dict(options) if options is not None else None)


def init_variables(model, input_shape, seed: int):
  """Initialises params and batch_stats (jitted, so big models initialise fast)."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), INIT_STREAM)
  if isinstance(key, jax.core.Tracer):  # Traced (e.g. jax.eval_shape of a state): no compile.
    return _init_fn(model, tuple(input_shape))(key)
  options = CPU_INIT_COMPILER_OPTIONS if jax.default_backend() == 'cpu' else None
  options = tuple(sorted(options.items())) if options is not None else None
  key_spec = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=key.sharding)
  args = (model, repr(model), tuple(input_shape), key_spec, options,
          (jax.config.jax_default_matmul_precision, jax.config.jax_enable_x64))
  try:
    compiled = _compiled_init(*args)
  except TypeError:  # A model with an unhashable field: compiled for this call only.
    compiled = _compiled_init.__wrapped__(*args)
  return compiled(key)


def create_train_state(config, model, tx, input_pipeline: InputPipeline,
                       input_shape=None) -> TrainState:
  """A fresh state for `model`, whose inputs are `input_shape` (default config.model's)."""
  params, batch_stats = init_variables(model, input_shape or config.model.input_shape,
                                       config.seed)
  state = TrainState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats,
                            rng=jax.random.PRNGKey(config.seed), input_pipeline=input_pipeline,
                            label_smoothing=float(config.loss.label_smoothing),
                            tta=config.augment.tta,
                            # A run's config.json from before the key (predict): jax's default.
                            matmul_precision=config.model.get('matmul_precision', 'default'),
                            conv_grad=config.model.get('conv_grad', ''),
                            conv_backend=config.model.get('conv_backend', 'xla'))
  return state.replace(opt_state=fast_optim.with_stats(state.opt_state, batch_stats))


# Independent random streams folded out of the run's base key.
INIT_STREAM, TRAIN_STREAM, DATA_STREAM, FLIP_STREAM = 0, 1, 2, 3
