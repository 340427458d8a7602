"""What the proyecto4 report's experiments share (report §1, "shared protocol").

`model.fit(x_train_scaled, y_train, epochs=200, batch_size=..., validation_data=(x_val_scaled,
y_val), callbacks=[EarlyStopping(val_loss, P), EarlyStopping(val_accuracy, P)])` with
sparse_categorical_crossentropy, no restore_best_weights (test on the last-epoch weights).
Conv2D are 3x3 'same' with the activation inside, BatchNormalization right after it.

Assumptions (the report never shows its data code): the validation set is the last 10,000 of
the 50,000 training images (the course template's 40,000 / 10,000 split, as in entregable4) and
`x_*_scaled` is x / 255.
"""

from configs import layers as L
from configs import reports

REPORT = 'proyecto4 (Proyecto IV - Vision por Computador, S. E. Velasco)'
NUM_VALIDATION = 10000
# exp8-exp10: fit(data_generator.flow(x, y), batch_size=64) ignores fit's batch_size for a
# generator; flow()'s default batch_size=32 is the real one.
FLOW_BATCH_SIZE = 32
# ImageDataGenerator of exp8 and exp9 (shear_range is in degrees: 0.1 is almost no shear).
AUGMENT_EXP8 = dict(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True,
                    rotation_range=15.0, shear_range=0.1, fill_mode='nearest')


def get_base(name: str, section: str, reported_test_accuracy: float | None, *, batch_size: int,
             patience: int):
  c = reports.experiment('proyecto4', REPORT, name, section, reported_test_accuracy,
                         batch_size=batch_size, epochs=200)
  c.data.num_validation = NUM_VALIDATION
  reports.add_early_stopping(c, ('val_loss', 'val_accuracy'), patience)
  return c


def use_flow_augmentation(c, **augment):
  """fit(ImageDataGenerator(**augment).flow(x_train_scaled, y_train)) with no steps_per_epoch:
  one pass over the training split per epoch in batches of FLOW_BATCH_SIZE, the last smaller
  (what train.steps_per_epoch=0 does)."""
  c.augment.update(augment)
  c.train.batch_size = FLOW_BATCH_SIZE


def conv_block(filters, num_convs, *, activation='relu', batch_norm=True, dropout=0.0,
               dropout_after_every_bn=False, pool=True, **conv_kwargs):
  """num_convs x [Conv2D(filters, 3x3, 'same', activation) (+ BN)], MaxPooling2D(2) (unless
  pool=False), Dropout. exp7 also puts the Dropout after every BN (dropout_after_every_bn)."""
  stack = []
  for i in range(num_convs):
    stack += [L.conv(filters, padding='same', activation=activation, **conv_kwargs)]
    stack += [L.bn()] if batch_norm else []
    if dropout_after_every_bn and i < num_convs - 1:
      stack += [L.dropout(dropout)]
  stack += [L.maxpool()] if pool else []
  return stack + ([L.dropout(dropout)] if dropout else [])


def dense_block(units, *, activation='relu', batch_norm=True, dropout=0.0, **dense_kwargs):
  """Dense(units, activation) (+ BN) (+ Dropout)."""
  return ([L.dense(units, activation=activation, **dense_kwargs)]
          + ([L.bn()] if batch_norm else []) + ([L.dropout(dropout)] if dropout else []))


def classifier(*dense_blocks):
  """Flatten, the hidden dense blocks, Dense(10, softmax)."""
  return tuple([L.flatten()] + [layer for block in dense_blocks for layer in block]
               + [L.dense(10, activation='softmax')])


def vgg_layers(*, dropouts=(0.5, 0.5, 0.6, 0.65, 0.7), first_dense=128, **kwargs):
  """exp4-exp6 and exp8: relu conv pairs 64 | 128 | 256 with BN, each pair followed by
  MaxPooling2D(2) and Dropout; Flatten - Dense(first_dense) - BN - Dropout - Dense(256) -
  Dropout - Dense(10, softmax). `kwargs` (l2, kernel_initializer) go to every conv and hidden
  Dense."""
  convs = [conv_block(f, 2, dropout=rate, **kwargs) for f, rate in zip((64, 128, 256), dropouts)]
  return tuple(layer for block in convs for layer in block) + classifier(
      dense_block(first_dense, dropout=dropouts[3], **kwargs),
      dense_block(256, batch_norm=False, dropout=dropouts[4], **kwargs))


def swish_relu_layers(filters, *, dropouts, dense_units, dense_dropout, last_block_convs=1,
                      dropout_after_every_bn=False):
  """exp7, exp9, exp10: conv blocks alternating swish and relu (BN after every conv). Blocks 1-3
  are conv pairs with MaxPooling2D(2) and Dropout; block 4 (relu) has `last_block_convs` convs
  and Dropout, no pooling. Head: Dense(swish) - BN - Dropout - Dense(relu) - BN - Dropout -
  Dense(10, softmax)."""
  activations = ('swish', 'relu', 'swish', 'relu')
  stack = []
  for i, (f, activation, rate) in enumerate(zip(filters, activations, dropouts)):
    last = i == len(filters) - 1
    stack += conv_block(f, last_block_convs if last else 2, activation=activation, dropout=rate,
                        dropout_after_every_bn=dropout_after_every_bn, pool=not last)
  return tuple(stack) + classifier(
      dense_block(dense_units, activation='swish', dropout=dense_dropout),
      dense_block(dense_units, activation='relu', dropout=dense_dropout))
