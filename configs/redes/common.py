"""What the redes report's models share, and what it never shows.

Shown: `model.fit(x_train, y_train, epochs=20, batch_size=512, validation_data=(x_val, y_val),
callbacks=[callback_loss, callback_accuracy])` (m5/m6: `datagen.flow(x_train, y_train,
batch_size=32)`), and `model.evaluate(x_test, y_test)` for the test accuracy, on the last-epoch
weights (nothing suggests restored weights).

Never shown, so assumed (override any of them from the command line):
* compile: optimizer='adam' with Keras defaults (lr 1e-3), the optimizer of every other report of
  the same course, and sparse categorical cross-entropy (the loss cifar_jax computes; with one-hot
  labels CategoricalCrossentropy is the same function).
* callback_loss / callback_accuracy: EarlyStopping(monitor='loss', patience=5) and
  EarlyStopping(monitor='accuracy', patience=5). The names carry no "val_" (the course's
  proyecto4 calls its validation stoppers callback_val_loss / callback_val_accuracy); patience 5
  as the course template (entregable4 exp0). The report's curves suggest they hardly ever fired.
* (x_val, y_val): the last 10,000 of the 50,000 training images (the course template's split).
* Pixels scaled by 1/255.
"""

from configs import layers as L
from configs import reports

REPORT = 'redes (CIFAR 10 Redes Neuronales, A. Navarro Barrero)'
NUM_VALIDATION = 10000
EARLY_STOPPING_PATIENCE = 5  # Assumed; see the module docstring.


def get_base(name: str, section: str, reported_test_accuracy: float | None, *, epochs=20):
  c = reports.experiment('redes', REPORT, name, section, reported_test_accuracy, batch_size=512,
                         epochs=epochs)
  c.data.num_validation = NUM_VALIDATION
  reports.add_early_stopping(c, ('loss', 'accuracy'), EARLY_STOPPING_PATIENCE)
  return c


def small_cnn_layers(*, batch_norm):
  """m2 and m3: Conv2D(32, 6x6) - MaxPool; Conv2D(64, 3x3) - MaxPool - Dropout(0.5); Conv2D(128,
  3x3) - MaxPool - Dropout(0.25) (relu, 'same'; m3 adds BatchNormalization after each conv);
  Flatten - Dense(128, relu) - Dense(10, softmax)."""
  stack = []
  for filters, kernel, rate in ((32, 6, 0.0), (64, 3, 0.5), (128, 3, 0.25)):
    stack += [L.conv(filters, kernel, padding='same', activation='relu')]
    stack += [L.bn()] if batch_norm else []
    stack += [L.maxpool()] + ([L.dropout(rate)] if rate else [])
  return tuple(stack + [L.flatten(), L.dense(128, activation='relu'),
                        L.dense(10, activation='softmax')])


def deep_cnn_layers():
  """m4-m6: conv pairs 64 | 128 | 256 (3x3, same, relu, BN after each activation), each with
  MaxPooling2D(2) and Dropout 0.2 / 0.25 / 0.35; Flatten - Dense(512, relu) - BN - Dropout(0.5)
  - Dense(10, softmax)."""
  stack = []
  for filters, rate in ((64, 0.2), (128, 0.25), (256, 0.35)):
    stack += L.conv_block(filters, 2, batch_norm=True, dropout_rate=rate)
  stack += [L.flatten()] + L.dense_block(512, batch_norm=True, dropout_rate=0.5)
  return tuple(stack + [L.dense(10, activation='softmax')])


def use_augmentation(c):
  """m5/m6: ImageDataGenerator(rotation_range=20, width_shift_range=0.2,
  height_shift_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode='nearest'), then
  fit(datagen.flow(x_train, y_train, batch_size=32)): batches of 32, one pass per epoch (no
  steps_per_epoch). `datagen.fit(x_train)` changes nothing without featurewise options."""
  c.augment.update(dict(rotation_range=20.0, width_shift_range=0.2, height_shift_range=0.2,
                        zoom_range=(0.8, 1.2),  # zoom_range=0.2 is [1 - 0.2, 1 + 0.2].
                        horizontal_flip=True, fill_mode='nearest'))
  c.train.batch_size = 32
