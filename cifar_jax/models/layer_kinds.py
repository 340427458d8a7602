"""The layer kinds models are made of: a class per Keras layer, in one registry by name.

Two interpreters run these layers: `layer_stack.LayerStack` (a `model.layers` config, a
Sequential with Keras's auto names) and `backbone.KerasGraph` (keras.applications graphs, with
their own names and wiring). Everything about a kind is its class here:

* its fields: Keras's argument names with Keras's defaults (no default: a required argument),
  checked by `validate` when the layer is made, so a bad value fails before anything is built;
* `__call__(ctx, *inputs)`: the Flax computation. Its submodule is named `ctx.name` and lives in
  the interpreter's scope, so params read {'conv2d': {'kernel', 'bias'}, 'block1_conv1': ...};
* `keras_class` (the summary's "(Conv2D)" and the Keras layer it matches) and `weights` (each
  Flax leaf it creates and the Keras weight it is: the Keras reference copies along them, and
  the summary's parameter count of a layer is the size of these leaves);
* `keras_layer(keras, args)`: the Keras layer for the same arguments, for the parity tests and
  the benchmarks. The keras module is an argument: cifar_jax never imports Keras.

Adding a kind: a subclass named as its Keras class, with `@register(kind)`, and its case in
tests/test_layer_kinds.py (which fails for a registered kind without one, and checks it against
its Keras layer). The kinds share one file, past the usual size, so that it reads as the table
of Keras layers cifar_jax has.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import conv
from cifar_jax.models import dense
from cifar_jax.models import dropout
from cifar_jax.models import pooling

# Keras initializer names -> flax initializers (same variance-scaling maths, incl. the
# truncated-normal correction constant).
INITIALIZERS = {
    'glorot_uniform': nn.initializers.glorot_uniform(),
    'glorot_normal': nn.initializers.variance_scaling(1.0, 'fan_avg', 'truncated_normal'),
    'he_normal': nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal'),
    'he_uniform': nn.initializers.variance_scaling(2.0, 'fan_in', 'uniform'),
    'lecun_normal': nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'),
    'lecun_uniform': nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'),
}

ACTIVATIONS = ('relu', 'leaky_relu', 'swish', 'silu', 'elu', 'gelu', 'tanh', 'sigmoid', 'softmax',
               'linear')


def apply_activation(x, name, negative_slope=None):
  if name in (None, 'linear'):
    return x
  if name == 'relu':
    return nn.relu(x)
  if name == 'leaky_relu':  # keras.activations.leaky_relu defaults to 0.2 (the layer to 0.3).
    return nn.leaky_relu(x, 0.2 if negative_slope is None else negative_slope)
  if name in ('swish', 'silu'):
    return nn.swish(x)
  if name == 'elu':
    return nn.elu(x)
  if name == 'gelu':  # activation='gelu' is keras.activations.gelu: the exact erf form.
    return nn.gelu(x, approximate=False)
  if name == 'tanh':
    return jnp.tanh(x)
  if name == 'sigmoid':
    return nn.sigmoid(x)
  if name == 'softmax':
    return nn.softmax(x)
  raise ValueError(f'unknown activation {name!r}')


def keras_activation(keras, name, negative_slope=None):
  """What Keras's `activation=` argument takes for our (activation, negative_slope) pair."""
  if name == 'leaky_relu' and negative_slope is not None:
    def leaky_relu(x):
      return keras.activations.leaky_relu(x, negative_slope=negative_slope)
    return leaky_relu
  return name  # None and every other name are Keras's own activation strings.


def _activation_arguments(keras, args: Mapping[str, Any]) -> dict[str, Any]:
  """`args` with our (activation, negative_slope) as Keras's `activation` argument."""
  args = dict(args)
  negative_slope = args.pop('negative_slope', None)
  if 'activation' in args:
    args['activation'] = keras_activation(keras, args['activation'], negative_slope)
  return args


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def _stop_gradient(variables):
  return jax.tree.map(jax.lax.stop_gradient, variables)


@dataclasses.dataclass(frozen=True)
class Weight:
  """A layer's weight: its Flax leaf, and the Keras layer's attribute and initializer argument."""
  collection: str         # 'params' or 'batch_stats'.
  leaf: str               # e.g. 'kernel', 'scale', 'mean'.
  keras_attribute: str    # e.g. 'kernel', 'gamma', 'moving_mean'.
  keras_initializer: str  # e.g. 'kernel_initializer', 'gamma_initializer'.


KERNEL_AND_BIAS = (Weight('params', 'kernel', 'kernel', 'kernel_initializer'),
                   Weight('params', 'bias', 'bias', 'bias_initializer'))


@dataclasses.dataclass(frozen=True)
class Context:
  """What a layer's computation needs from the interpreter that runs it."""
  owner: nn.Module      # The interpreter: the layer's submodule and sown values go in its scope.
  name: str             # The layer's Keras name, its submodule's name too.
  train: bool
  dtype: Any
  frozen: bool = False  # Keras trainable=False: weights read through stop_gradient (XLA skips
                        # their gradient) and BatchNorm in inference mode, as in Keras 3.
  logits: bool = False  # The model's output: a softmax here is left out (the loss applies
                        # log-softmax, the same function, computed stably).

  def module(self, cls):
    """`cls`, or for a frozen layer `cls` whose weights are read through stop_gradient."""
    if self.frozen:
      return nn.map_variables(cls, 'params', trans_in_fn=_stop_gradient,
                              init=self.owner.is_initializing())
    return cls

  def activation(self, name):
    return None if self.logits and name == 'softmax' else name


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layer:
  """A layer: its Keras arguments as fields; `__call__(ctx, *inputs)` computes it."""
  kind: ClassVar[str]          # The registry name: a config's 'type' (set by `register`).
  keras_class: ClassVar[str]   # The keras.layers class: the class's own name.
  weights: ClassVar[tuple[Weight, ...]] = ()
  in_stack: ClassVar[bool] = True  # False: graph wiring, not a `model.layers` entry.

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ValueError('why') for a bad field."""

  def __call__(self, ctx: Context, *inputs):
    raise NotImplementedError

  @classmethod
  def keras_arguments(cls, keras, args: Mapping[str, Any]) -> dict[str, Any]:
    """The Keras constructor's arguments for `args` (ours are Keras's names, by default)."""
    del keras
    return dict(args)

  @classmethod
  def keras_layer(cls, keras, args: Mapping[str, Any], **overrides):
    """The Keras layer for `args`: only those are passed, so what they leave out takes Keras's
    default (tests thereby check our defaults); `overrides` replace or add Keras arguments."""
    return getattr(keras.layers, cls.keras_class)(**{**cls.keras_arguments(keras, args),
                                                     **overrides})


LAYERS: dict[str, type[Layer]] = {}


def register(kind: str):
  """Class decorator: the layer of `kind`, a frozen keyword-only dataclass named as its Keras
  class."""
  def decorate(cls: type[Layer]) -> type[Layer]:
    cls = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
    cls.kind, cls.keras_class = kind, cls.__name__
    LAYERS[kind] = cls
    return cls
  return decorate


def _tuples(value):
  """Lists (from a command line or JSON) become tuples: layers are hashable, as module
  attributes end up in jit cache keys."""
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  return value


def create(kind: str, args: Mapping[str, Any], where: str, *, in_stack: bool = False) -> Layer:
  """`LAYERS[kind](**args)`; errors name `where` (e.g. 'model.layers[3]'). `in_stack`: refuse
  the kinds that only wire graphs."""
  known = sorted(k for k, cls in LAYERS.items() if cls.in_stack or not in_stack)
  if kind not in known:
    raise ValueError(f'{where}: unknown layer type {kind!r}; known: {known}')
  cls = LAYERS[kind]
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(args) - set(fields)
  if unknown:
    raise ValueError(f'{where} ({kind}): unknown argument(s) {sorted(unknown)}; '
                     f'known: {sorted(fields)}')
  missing = [name for name, f in fields.items()
             if name not in args and f.default is dataclasses.MISSING]
  if missing:
    raise ValueError(f'{where} ({kind}): missing required argument(s) {missing}')
  try:
    return cls(**{k: _tuples(v) for k, v in args.items()})
  except ValueError as e:
    raise ValueError(f'{where} ({kind}): {e}') from None


def _check_activation(name) -> None:
  if name not in (None, *ACTIVATIONS):
    raise ValueError(f'unknown activation {name!r}; known: {list(ACTIVATIONS)}')


def _check_padding(padding) -> None:
  if str(padding).lower() not in ('valid', 'same'):
    raise ValueError("padding must be 'valid' or 'same'")


# --- Layers with weights. ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class _KernelLayer(Layer):
  """Conv2D and Dense: kernel and bias, an activation, and an L2 penalty on the kernel."""
  activation: str | None = None
  use_bias: bool = True
  kernel_initializer: str = 'glorot_uniform'
  l2: float = 0.0  # kernel_regularizer=L2(l2): l2·Σw² is sown into 'losses' (model.losses).
  negative_slope: float | None = None  # activation='leaky_relu''s (Keras's function default: 0.2).
  weights = KERNEL_AND_BIAS

  def validate(self):
    _check_activation(self.activation)
    if self.kernel_initializer not in INITIALIZERS:
      raise ValueError(f'unknown kernel_initializer {self.kernel_initializer!r}; '
                       f'known: {sorted(INITIALIZERS)}')

  def module(self, ctx: Context) -> nn.Module:
    raise NotImplementedError

  def __call__(self, ctx: Context, x):
    module = self.module(ctx)
    x = apply_activation(module(x), ctx.activation(self.activation), self.negative_slope)
    if self.l2:
      kernel = module.variables['params']['kernel'].astype(jnp.float32)
      ctx.owner.sow('losses', f'{ctx.name}_l2', self.l2 * jnp.sum(jnp.square(kernel)))
    return x

  @classmethod
  def keras_arguments(cls, keras, args):
    args = _activation_arguments(keras, args)
    l2 = args.pop('l2', 0.0)
    if l2:
      args['kernel_regularizer'] = keras.regularizers.L2(l2)
    return args


@register('conv2d')
class Conv2D(_KernelLayer):
  filters: int
  kernel_size: Any
  strides: Any = 1
  padding: str = 'valid'

  def validate(self):
    super().validate()
    _check_padding(self.padding)

  def module(self, ctx):
    return ctx.module(nn.Conv)(
        self.filters, _pair(self.kernel_size), strides=_pair(self.strides),
        padding=self.padding.upper(), use_bias=self.use_bias,
        kernel_init=INITIALIZERS[self.kernel_initializer], dtype=ctx.dtype,
        conv_general_dilated=conv.conv_general_dilated, name=ctx.name)


@register('dense')
class Dense(_KernelLayer):
  units: int

  def module(self, ctx):
    return ctx.module(nn.Dense)(self.units, use_bias=self.use_bias,
                                kernel_init=INITIALIZERS[self.kernel_initializer],
                                dtype=ctx.dtype, dot_general=dense.dot_general, name=ctx.name)


@register('batch_normalization')
class BatchNormalization(Layer):
  weights = (Weight('params', 'scale', 'gamma', 'gamma_initializer'),
             Weight('params', 'bias', 'beta', 'beta_initializer'),
             Weight('batch_stats', 'mean', 'moving_mean', 'moving_mean_initializer'),
             Weight('batch_stats', 'var', 'moving_variance', 'moving_variance_initializer'))
  momentum: float = 0.99
  epsilon: float = 1e-3
  center: bool = True
  scale: bool = True

  def __call__(self, ctx, x):
    # Keras computes the batch variance as mean((x - mean)^2), not E[x^2] - E[x]^2. A frozen
    # BatchNorm runs in inference mode, as in Keras 3 (`training and self.trainable`).
    return ctx.module(nn.BatchNorm)(
        use_running_average=not ctx.train or ctx.frozen, momentum=self.momentum,
        epsilon=self.epsilon, use_bias=self.center, use_scale=self.scale,
        use_fast_variance=False, dtype=ctx.dtype, name=ctx.name)(x)


# --- Activations. -----------------------------------------------------------------------------

@register('activation')
class Activation(Layer):
  activation: str | None = None
  negative_slope: float | None = None  # Of activation='leaky_relu', as on Conv2D and Dense.

  def validate(self):
    _check_activation(self.activation)

  def __call__(self, ctx, x):
    return apply_activation(x, ctx.activation(self.activation), self.negative_slope)

  @classmethod
  def keras_arguments(cls, keras, args):
    return _activation_arguments(keras, args)


@register('leaky_re_lu')
class LeakyReLU(Layer):
  negative_slope: float = 0.3

  def __call__(self, ctx, x):
    return nn.leaky_relu(x, self.negative_slope)


@register('re_lu')
class ReLU(Layer):
  """keras.layers.ReLU() (arquitecturas puts it after BatchNormalization)."""

  def __call__(self, ctx, x):
    return nn.relu(x)


# --- Pooling and reshaping. -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class _Pooling2D(Layer):
  pool_size: Any = 2
  strides: Any = None  # None: pool_size, as in Keras.
  padding: str = 'valid'

  def validate(self):
    _check_padding(self.padding)

  def window(self):
    """(window, strides, padding) as flax's pooling takes them."""
    strides = self.strides if self.strides is not None else self.pool_size
    return _pair(self.pool_size), _pair(strides), self.padding.upper()


@register('max_pooling2d')
class MaxPooling2D(_Pooling2D):

  def __call__(self, ctx, x):
    return pooling.max_pool(x, *self.window())


@register('average_pooling2d')
class AveragePooling2D(_Pooling2D):

  def __call__(self, ctx, x):
    # Keras (like TF) leaves the padding out of the average.
    return nn.avg_pool(x, *self.window(), count_include_pad=False)


@register('global_average_pooling2d')
class GlobalAveragePooling2D(Layer):

  def __call__(self, ctx, x):
    return jnp.mean(x, axis=(1, 2))


@register('global_max_pooling2d')
class GlobalMaxPooling2D(Layer):

  def __call__(self, ctx, x):
    return jnp.max(x, axis=(1, 2))


@register('zero_padding2d')
class ZeroPadding2D(Layer):
  padding: Any = (1, 1)  # Keras's forms: n, (rows, cols), or ((top, bottom), (left, right)).

  def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(self.padding, int):
      return (self.padding,) * 2, (self.padding,) * 2
    rows, cols = self.padding
    return _pair(rows), _pair(cols)

  def validate(self):
    try:
      pads = self.pads()
    except (TypeError, ValueError):
      pads = None
    if pads is None or len(pads[0]) != 2 or len(pads[1]) != 2:
      raise ValueError(f'padding={self.padding!r} must be n, (rows, cols) or '
                       '((top, bottom), (left, right))')

  def __call__(self, ctx, x):
    (top, bottom), (left, right) = self.pads()
    return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


@register('dropout')
class Dropout(Layer):
  rate: float

  def __call__(self, ctx, x):
    return dropout.Dropout(self.rate, deterministic=not ctx.train, name=ctx.name)(x)


@register('flatten')
class Flatten(Layer):

  def __call__(self, ctx, x):
    return x.reshape((x.shape[0], -1))


# --- Graph wiring (keras.applications models; not `model.layers` entries). --------------------

@register('input')
class InputLayer(Layer):
  """The InputLayer that opens a functional model's `layers` (counted as Keras counts)."""
  in_stack = False

  def __call__(self, ctx, x):
    return x


@register('concatenate')
class Concatenate(Layer):
  in_stack = False
  axis: int = -1

  def __call__(self, ctx, *inputs):
    return jnp.concatenate(inputs, axis=self.axis)
