"""Shorthands for `model.layers` entries (Keras argument names), shared by every config.

An entry is `dict(type=kind, **keras_arguments)` for any kind of cifar_jax/models/layer_kinds.py
(e.g. `dict(type='re_lu')`); these builders only shorten the common ones, so a new kind needs
none. Configs stay plain data: nothing here imports cifar_jax.
"""


def conv(filters, kernel_size=3, **kwargs):
  return dict(type='conv2d', filters=filters, kernel_size=kernel_size, **kwargs)


def dense(units, **kwargs):
  return dict(type='dense', units=units, **kwargs)


def bn(**kwargs):
  return dict(type='batch_normalization', **kwargs)


def maxpool(pool_size=2, **kwargs):
  return dict(type='max_pooling2d', pool_size=pool_size, **kwargs)


def dropout(rate):
  return dict(type='dropout', rate=rate)


def flatten():
  return dict(type='flatten')


def conv_block(filters, num_convs, *, batch_norm=False, pool=True, dropout_rate=0.0, **conv_kwargs):
  """`num_convs` x [Conv2D(filters, 3x3, 'same', relu) (+ BN after the activation)], then
  MaxPooling2D(2) and Dropout: the VGG-like block the entregable4 report stacks."""
  layers = []
  for _ in range(num_convs):
    layers.append(conv(filters, padding='same', activation='relu', **conv_kwargs))
    if batch_norm:
      layers.append(bn())
  if pool:
    layers.append(maxpool())
  if dropout_rate:
    layers.append(dropout(dropout_rate))
  return layers


def dense_block(units, *, batch_norm=False, dropout_rate=0.0, **dense_kwargs):
  """Dense(units, relu) (+ BN after the activation) (+ Dropout)."""
  layers = [dense(units, activation='relu', **dense_kwargs)]
  if batch_norm:
    layers.append(bn())
  if dropout_rate:
    layers.append(dropout(dropout_rate))
  return layers
