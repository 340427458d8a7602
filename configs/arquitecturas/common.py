"""What the arquitecturas report's experiments share (report §0, "global facts").

`model.compile(optimizer='Adam', loss='sparse_categorical_crossentropy')` (lr 1e-3),
`model.fit(x_train_scaled, y_train, epochs=200, batch_size=512, validation_data=(x_val_scaled,
y_val), callbacks=[EarlyStopping(val_loss, 10, restore_best_weights=True),
EarlyStopping(val_accuracy, 10, restore_best_weights=True)])`. Convs are 3x3 'same'; from
"Arquitectura 1 mejorada" on the activation is its own layer after BatchNormalization
(Conv -> BN -> ReLU).

Assumptions (the report never shows its data code): the validation set is the last 10,000 of
the 50,000 training images (the course template's 40,000 / 10,000 split, as in entregable4) and
`x_*_scaled` is x / 255 (what the DA sections' `rescale=1./255` on raw images implies).
"""

from configs import layers as L
from configs import reports

REPORT = 'arquitecturas (Arquitecturas CNN sobre CIFAR-10, M. Kovylina Zabyako)'
NUM_VALIDATION = 10000
BATCH_SIZE = 512
RELU = dict(type='re_lu')  # keras.layers.ReLU()


def get_base(name: str, section: str, reported_test_accuracy: float | None):
  c = reports.experiment('arquitecturas', REPORT, name, section, reported_test_accuracy,
                         batch_size=BATCH_SIZE, epochs=200)
  c.data.num_validation = NUM_VALIDATION
  reports.add_early_stopping(c, ('val_loss', 'val_accuracy'), 10, restore_best_weights=True)
  # callbacks=[callback_val_loss, callback_val_accuracy]: both restore at the end, so the test
  # sees val_accuracy's best weights.
  c.callbacks.early_stopping_order = ('val_loss', 'val_accuracy')
  return c


def unit(layer, activation_layer=RELU, *, batch_norm=True, dropout=0.0):
  """`layer`, BatchNormalization, `activation_layer` (None when the activation is inside
  `layer`, which puts BN after it), Dropout."""
  stack = [layer] + ([L.bn()] if batch_norm else [])
  stack += [activation_layer] if activation_layer else []
  return stack + ([L.dropout(dropout)] if dropout else [])


def conv_block(filters, num_convs, *, dropout, inner_dropout=0.0, pool=True,
               activation_layer=RELU, **conv_kwargs):
  """`num_convs` units of Conv2D(filters, 3x3, 'same'), Dropout(inner_dropout) after each but
  the last, then MaxPooling2D(2) (unless pool=False) and Dropout(dropout)."""
  stack = []
  for i in range(num_convs):
    stack += unit(L.conv(filters, padding='same', **conv_kwargs), activation_layer,
                  dropout=inner_dropout if i < num_convs - 1 else 0.0)
  return stack + ([L.maxpool()] if pool else []) + [L.dropout(dropout)]


def classifier(units, dropout, *, activation_layer=RELU, batch_norm=True, **dense_kwargs):
  """Flatten, a unit of Dense(u) with Dropout(dropout) for each u in `units`, Dense(10,
  softmax) (default initializer, no regularizer)."""
  stack = [L.flatten()]
  for u in units:
    stack += unit(L.dense(u, **dense_kwargs), activation_layer, batch_norm=batch_norm,
                  dropout=dropout)
  return stack + [L.dense(10, activation='softmax')]


def a3_layers():
  """"Arquitectura 3": three conv pairs 64 | 128 | 128, Conv -> BN -> ReLU, Dropout(0.3) after
  each pair's first conv, MaxPooling2D(2) and Dropout 0.3 / 0.4 / 0.4 after the second;
  Dense 256 and 128 (BN, ReLU, Dropout 0.5); HeUniform and l2(1e-4) on every conv and hidden
  Dense."""
  kwargs = dict(kernel_initializer='he_uniform', l2=1e-4)
  convs = [conv_block(f, 2, inner_dropout=0.3, dropout=rate, **kwargs)
           for f, rate in ((64, 0.3), (128, 0.4), (128, 0.4))]
  return tuple(layer for block in convs for layer in block) + tuple(
      classifier((256, 128), 0.5, **kwargs))


def use_flow_augmentation(c, **augment):
  """fit(ImageDataGenerator(**augment, rescale=1./255).flow(x_train, y_train, batch_size=512),
  steps_per_epoch=80, validation_steps=80).

  80 x 512 asks for more than the 40,000 training images hold (79 batches, the last of 64); a
  Keras 3 PyDataset then ends the epoch after its 79 batches ("Your input ran out of data",
  without stopping fit) and starts a fresh pass: one pass per epoch, what steps_per_epoch=0
  does. validation_steps=80 likewise covers the validation set once.
  """
  c.augment.update(augment)
  c.train.steps_per_epoch = 0
