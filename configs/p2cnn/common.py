"""What the p2cnn report's experiments share (report §1, "shared pipeline").

`keras.datasets.cifar10` divided by 255, one-hot labels with CategoricalCrossentropy (the same
loss as our sparse cross-entropy), `model.fit(x_train, y_train, validation_split=0.1, ...)`: the
last 5,000 of the unshuffled 50,000 training images validate (exp8: 0.3, the last 15,000).
Optimizer "adam" (Keras defaults, lr 1e-3) unless an experiment says otherwise. Every Conv2D is
3x3 with the activation inside the layer (so BatchNormalization comes after the ReLU);
`regularizers.l2(1e-3)` goes on conv kernels only. Test accuracy is taken from the last-epoch
weights: the ModelCheckpoint of exp1/3/5 is never reloaded, and only exp8 restores best weights.
"""

from configs import layers as L
from configs import reports

REPORT = 'p2cnn (P2_CNN_HfaJrc, Practica 1.2 - CNNs, Aprendizaje Profundo, UDC 2024-2025)'
L2 = 1e-3  # regularizers.l2(1e-3) of exp4-exp8.


def get_base(name: str, section: str, reported_test_accuracy: float | None, *, batch_size: int,
             epochs: int):
  c = reports.experiment('p2cnn', REPORT, name, section, reported_test_accuracy,
                         batch_size=batch_size, epochs=epochs)
  c.data.validation_split = 0.1
  return c


def use_checkpoint(c):
  """ModelCheckpoint(save_best_only=True, monitor="val_loss"); the report never reloads it."""
  c.checkpoint.monitor = 'val_loss'


def use_early_stopping(c, patience: int, start_from_epoch: int, **kwargs):
  """keras.callbacks.EarlyStopping(monitor="val_loss", patience, start_from_epoch, ...)."""
  reports.add_early_stopping(c, ('val_loss',), patience, start_from_epoch=start_from_epoch,
                             **kwargs)


def conv_trunk(blocks, *, l2=0.0, batch_norm=False, dropout_rates=None):
  """Blocks of Conv2D(f, 3x3, 'same', relu) for each f of a block, then (exp3) one
  BatchNormalization after the block's convs, MaxPooling2D(2) and (exp5-exp8) Dropout.

  Args:
    blocks: per block, the filters of its convs, e.g. ((32, 32), (64, 128), (256, 256)).
    l2: kernel_regularizer=l2(l2) on every conv (0: none).
    batch_norm: one BatchNormalization after the last conv of each block.
    dropout_rates: per block, the Dropout rate after its pooling (0: no Dropout layer).
  """
  reg = dict(l2=l2) if l2 else {}
  stack = []
  for filters, rate in zip(blocks, dropout_rates or (0.0,) * len(blocks)):
    stack += [L.conv(f, padding='same', activation='relu', **reg) for f in filters]
    stack += [L.bn()] if batch_norm else []
    stack += [L.maxpool()]
    stack += [L.dropout(rate)] if rate else []
  return stack


def dense_head(*units_and_dropout):
  """Flatten, then Dense(units, relu) (+ Dropout(rate) when given as (units, rate)), then
  Dense(10, softmax)."""
  stack = [L.flatten()]
  for entry in units_and_dropout:
    units, rate = entry if isinstance(entry, tuple) else (entry, 0.0)
    stack += [L.dense(units, activation='relu')] + ([L.dropout(rate)] if rate else [])
  return stack + [L.dense(10, activation='softmax')]


# exp3-exp6's conv filters: 32-32 | 64-128 | 256-256.
FILTERS_EXP3 = ((32, 32), (64, 128), (256, 256))


def exp7_layers():
  """exp7 and exp8: conv blocks 64-64 | 128-128 | 256-256 | 512 with l2(1e-3), Dropout 0.1 /
  0.15 / 0.15 / 0.1 after the poolings; Dense 256 - Dropout(0.15) - Dense 64 - Dense 10."""
  return tuple(conv_trunk(((64, 64), (128, 128), (256, 256), (512,)), l2=L2,
                          dropout_rates=(0.1, 0.15, 0.15, 0.1))
               + dense_head((256, 0.15), 64))
