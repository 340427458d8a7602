"""airbench94's network (K. Jordan, arXiv:2404.00498; `legacy/airbench94.py` of
KellerJordan/cifar10-airbench), as a Flax module, and the data-dependent init of its first conv.

    whiten   conv 2x2, 3 -> 24, VALID, bias; kernel frozen (set from the data); GELU
    block1   conv 3x3 24 -> 64 -> maxpool 2 -> BN -> GELU -> conv 3x3 64 -> 64 -> BN -> GELU
    block2   conv 3x3 64 -> 256 -> ... (the same, 256 wide)
    block3   conv 3x3 256 -> 256 -> ... (the same)
    head     maxpool 3 -> flatten -> dense 256 -> 10 (no bias) -> x 1/9

The block convs have no bias.

32x32 inputs: 31 after the 2x2 VALID conv, then 15, 7, 3 after the pools (floor), 1 after the
last. BatchNorm has no scale (PyTorch's weight, frozen at 1 there), a trained bias, momentum 0.6
in Flax's convention (PyTorch momentum=0.4) and eps 1e-12. GELU is the exact (erf) form, as
torch.nn.GELU(); Flax's default is the tanh approximation. Convs start from PyTorch's default
init (U(+-1/sqrt(fan_in))) and then, as airbench does, the first min(in, out) filters become the
identity (`torch.nn.init.dirac_`): every block's second conv starts as the identity.

The network itself knows nothing of data or training. The whitening kernel comes from the
training images through `whitening_kernel`, called once after init by
`apply_data_dependent_init`: the eigenvectors V of the (uncentred) covariance of the 2x2 patches of 5,000 normalised training
images, scaled by 1/sqrt(eigenvalue + 5e-4), as 12 filters followed by their 12 negations, so
the first 12 channels see the patches whitened. The kernel is frozen (`trainable_mask`, read
through stop_gradient); its bias trains (airbench trains it for 3 epochs, an optimizer param
group: cifar_jax/train/optimizers.py).

Parameters: 1,971,640 in the Flax tree (1,972,792 in PyTorch's, which also holds the 1,152
frozen BatchNorm scales), 1,971,352 of them trained in both (not the whitening kernel's 288).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.models import conv
from cifar_jax.models import dense
from cifar_jax.models import pooling

WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4         # airbench's init_whitening_conv eps.
WHITEN_IMAGES = 5000      # airbench whitens with the first 5,000 training images.
FROZEN = frozenset({('whiten', 'kernel')})


def torch_conv_init(key, shape, dtype=jnp.float32):
  """PyTorch's Conv2d default (kaiming_uniform with a=sqrt(5): U(+-1/sqrt(fan_in))), then the
  identity in the first min(in, out) filters (torch.nn.init.dirac_), for an HWIO kernel."""
  kh, kw, cin, cout = shape
  bound = 1.0 / np.sqrt(kh * kw * cin)
  kernel = jax.random.uniform(key, shape, dtype, -bound, bound)
  n = min(cin, cout)
  # dirac_ zeros the whole filter, then sets its centre tap (k // 2) on the matching channel.
  kernel = kernel.at[:, :, :, :n].set(0.0)
  return kernel.at[kh // 2, kw // 2, jnp.arange(n), jnp.arange(n)].set(1.0)


def torch_linear_init(key, shape, dtype=jnp.float32):
  """PyTorch's Linear default weight init, U(+-1/sqrt(fan_in)), for a [in, out] kernel."""
  bound = 1.0 / np.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def gelu(x):
  return nn.gelu(x, approximate=False)  # torch.nn.GELU() is the erf form.


class ConvGroup(nn.Module):
  """conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU (airbench's ConvGroup)."""
  width: int
  bn_momentum: float
  bn_epsilon: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    def conv3x3(name):
      return nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False,
                     kernel_init=torch_conv_init, dtype=self.dtype,
                     conv_general_dilated=conv.conv_general_dilated, name=name)

    def norm(name):
      # Statistics in float32 whatever the compute dtype (airbench keeps its BN in fp32).
      return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                          epsilon=self.bn_epsilon, use_scale=False, use_bias=True,
                          dtype=self.dtype, name=name)

    x = conv3x3('conv1')(x)
    x = pooling.max_pool(x, (2, 2), (2, 2), 'VALID')
    x = gelu(norm('norm1')(x))
    x = conv3x3('conv2')(x)
    return gelu(norm('norm2')(x))


class Whiten(nn.Module):
  """The 2x2 patch-whitening conv (VALID, with bias) and its GELU. The kernel is read through
  stop_gradient: it is set from the data (`whitening_kernel`) and never trained."""
  channels_in: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = 2 * self.channels_in * WHITEN_KERNEL ** 2
    kernel = self.param('kernel', torch_conv_init,
                        (WHITEN_KERNEL, WHITEN_KERNEL, self.channels_in, width))
    bias = self.param('bias', nn.initializers.zeros, (width,))
    kernel = jax.lax.stop_gradient(kernel).astype(self.dtype)
    y = conv.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return gelu(y + bias.astype(self.dtype))


class Airbench(nn.Module):
  """airbench94's net; logits [B, num_classes] from normalised images [B, 32, 32, 3]."""
  widths: Sequence[int] = (64, 256, 256)
  num_classes: int = 10
  bn_momentum: float = 0.6   # Flax convention: new = 0.6 * old + 0.4 * batch.
  bn_epsilon: float = 1e-12
  scaling_factor: float = 1 / 9
  dtype: Any = jnp.float32
  # Parameters (paths) the optimizer must leave alone: cifar_jax/train/freezing.py reads this.
  frozen: frozenset = FROZEN

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    x = Whiten(x.shape[-1], self.dtype, name='whiten')(x)
    for i, width in enumerate(self.widths):
      x = ConvGroup(width, self.bn_momentum, self.bn_epsilon, self.dtype,
                    name=f'block{i + 1}')(x, train)
    x = pooling.max_pool(x, (3, 3), (3, 3), 'VALID')
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_linear_init,
                 dtype=self.dtype, dot_general=dense.dot_general, name='head')(x)
    return (x * self.scaling_factor).astype(jnp.float32)

  def trainable_mask(self, params):
    """False for the frozen whitening kernel, True for every other parameter."""
    def trainable(path, _):
      keys = tuple(getattr(k, 'key', k) for k in path)
      return keys[-2:] not in self.frozen
    return jax.tree_util.tree_map_with_path(trainable, params)


def build(model_config) -> Airbench:
  """config.model -> Airbench; `widths` (default airbench94's 64/256/256) may be overridden."""
  widths = tuple(model_config.get('widths', ()) or Airbench.widths)
  return Airbench(widths=widths, num_classes=model_config.num_classes,
                  dtype=jnp.dtype(model_config.dtype))


# --- Data-dependent init: the whitening kernel. -------------------------------------------------

def patch_covariance(images, patch: int = WHITEN_KERNEL, chunk: int = 500) -> np.ndarray:
  """The uncentred covariance E[p p^T] (float64, [k*k*C, k*k*C]) of every k x k patch (stride 1,
  no padding) of float images [N, H, W, C], the patch flattened in HWC order (an HWIO kernel's
  first three axes). airbench's get_patches + X^T X / n, accumulated in chunks of images."""
  images = np.asarray(images, np.float32)
  n, height, width, channels = images.shape
  dim = patch * patch * channels
  total, count = np.zeros((dim, dim)), 0
  for start in range(0, n, chunk):
    x = images[start:start + chunk]
    views = [x[:, dy:height - patch + 1 + dy, dx:width - patch + 1 + dx]
             for dy in range(patch) for dx in range(patch)]
    flat = np.stack(views, axis=3).reshape(-1, dim).astype(np.float64)  # [(n h w), (dy dx c)]
    total += flat.T @ flat
    count += len(flat)
  return total / count


def whitening_kernel(images, patch: int = WHITEN_KERNEL, eps: float = WHITEN_EPS) -> np.ndarray:
  """airbench's whitening filters for normalised images [N, H, W, C]: HWIO [k, k, C, 2*k*k*C].

  With C = E[p p^T] = V diag(l) V^T (eigenvalues in decreasing order), filter i < k*k*C is
  v_i / sqrt(l_i + eps) and filter k*k*C + i its negation; so the first half of the outputs has
  covariance diag(l / (l + eps)): the identity up to eps.
  """
  images = np.asarray(images)
  channels = images.shape[-1]
  eigenvalues, eigenvectors = np.linalg.eigh(patch_covariance(images, patch))
  order = np.argsort(eigenvalues)[::-1]
  eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
  filters = eigenvectors / np.sqrt(eigenvalues + eps)  # Columns are filters.
  kernel = np.concatenate([filters, -filters], axis=1)
  return kernel.reshape(patch, patch, channels, -1).astype(np.float32)


def apply_data_dependent_init(config, params, batch_stats, train_images, normalise):
  """(params, batch_stats) with the data-dependent parts of config.model's init filled in: for
  'airbench', the whitening kernel from the first 5,000 `train_images` (uint8 [N, H, W, C], the
  run's training split in its stored order), as `normalise(images)` gives them to the model
  (the run's input pipeline without augmentation: the model knows nothing of data pipelines).
  Other models come back unchanged. Pure: the inputs are not modified.

  Call it after init and before the optimizer's state is made (tx.init), so that an optimizer
  holding a copy of the weights (the lookahead) starts from these.
  """
  if config.model.name not in DATA_DEPENDENT_INIT:
    return params, batch_stats
  return DATA_DEPENDENT_INIT[config.model.name](config, params, batch_stats, train_images,
                                                normalise)


def _airbench_init(config, params, batch_stats, train_images, normalise):
  del config
  images = np.asarray(normalise(np.asarray(train_images)[:WHITEN_IMAGES]))
  kernel = whitening_kernel(images)
  old = params['whiten']['kernel']
  if kernel.shape != old.shape:
    raise ValueError(f'whitening kernel {kernel.shape} does not fit the model\'s {old.shape}')
  whiten = dict(params['whiten'], kernel=jnp.asarray(kernel, old.dtype))
  return dict(params, whiten=whiten), batch_stats


DATA_DEPENDENT_INIT = {'airbench': _airbench_init}
