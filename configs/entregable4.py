"""What the entregable4 report's experiments share (report §1, "common setup").

40,000 training / 10,000 validation images out of the 50,000 (the report uses
`40000 // batch_size` steps and `10000 // batch_size_val`; which 10,000 it held out is not
shown, so we take the last 10,000 like Keras's validation_split), pixels scaled by 1/255,
`sparse_categorical_crossentropy`, batch 512, Keras defaults everywhere else. Test accuracy is
measured on the in-memory model right after fit (no restore_best_weights), as the report does.
"""

from configs import base
from configs import layers as L

REPORT = 'entregable4 (Entregable 4 - Vision por Computador, CIFAR10)'
NUM_TRAIN = 40000
BATCH_SIZE = 512

# ImageDataGenerator of exp8b/exp9/exp11 (exp7 adds shear and a wider rotation).
AUGMENT_EXP8B = dict(horizontal_flip=True, rotation_range=20.0, width_shift_range=0.1,
                     height_shift_range=0.1, fill_mode='nearest')


def get_base(name: str, section: str, reported_test_accuracy: float):
  c = base.get_config()
  c.name = name
  c.report = f'{REPORT}, {section}'
  c.reported_test_accuracy = reported_test_accuracy
  c.data.num_validation = 50000 - NUM_TRAIN
  c.train.batch_size = BATCH_SIZE
  c.optim.name = 'adam'  # compile(optimizer='Adam'): lr 1e-3, epsilon 1e-7.
  c.optim.learning_rate = 1e-3
  return c


def use_augmentation(c, **augment):
  """fit(train_datagen.flow(x, y, batch_size=512), steps_per_epoch=40000 // 512, ...)."""
  for key, value in augment.items():
    c.augment[key] = value
  c.train.steps_per_epoch = NUM_TRAIN // BATCH_SIZE


def use_plateau(c, monitor: str, patience: int, min_lr: float, factor: float = 0.1):
  c.callbacks.reduce_lr_on_plateau.update(dict(enabled=True, monitor=monitor, factor=factor,
                                               patience=patience, min_lr=min_lr))


def vgg_small_layers(*, batch_norm=False, dropout_rate=0.0, l2=0.0):
  """exp1-exp7: conv blocks 32x2, 64x2, 128x3 (+BN after each activation, +Dropout after each
  pooling), Flatten, Dense 256 (+BN, +Dropout), Dense 10 softmax."""
  reg = dict(l2=l2) if l2 else {}
  blocks = [(32, 2), (64, 2), (128, 3)]
  stack = []
  for filters, num_convs in blocks:
    stack += L.conv_block(filters, num_convs, batch_norm=batch_norm, dropout_rate=dropout_rate,
                          **reg)
  stack += [L.flatten()]
  stack += L.dense_block(256, batch_norm=batch_norm, dropout_rate=dropout_rate, **reg)
  return tuple(stack + [L.dense(10, activation='softmax')])


def vgg_large_layers(*, conv_blocks=((64, 2), (128, 2), (256, 3))):
  """exp8-exp11: conv blocks with BN after each activation and Dropout 0.5 after each pooling,
  Flatten, Dense 1024-1024-512 each with BN and Dropout 0.5, Dense 10 softmax."""
  stack = []
  for filters, num_convs, *pool in conv_blocks:
    stack += L.conv_block(filters, num_convs, batch_norm=True, dropout_rate=0.5,
                          pool=pool[0] if pool else True)
  stack += [L.flatten()]
  for units in (1024, 1024, 512):
    stack += L.dense_block(units, batch_norm=True, dropout_rate=0.5)
  return tuple(stack + [L.dense(10, activation='softmax')])
