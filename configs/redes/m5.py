"""redes m5, "Modelo con Data Aumentation": m4 trained on ImageDataGenerator batches of 32.

    python launch.py --config=configs/redes/m5.py

Report: redes.txt, "Modelo con Data Aumentation". Reported test accuracy 84.730% (printed
`> 84.730`). 3,253,834 params (2,816 non-trainable), m4's network (fresh weights, as the code
builds a new Sequential). ImageDataGenerator(rotation_range=20, width_shift_range=0.2,
height_shift_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode='nearest');
fit(datagen.flow(x_train, y_train, batch_size=32), epochs=20): batches of 32, one pass per epoch.
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5);
validation = last 10,000 training images; pixels / 255.
"""

from configs.redes import common


def get_config(name='m5', section='"Modelo con Data Aumentation"', reported=84.73, epochs=20):
  c = common.get_base(name, section, reported, epochs=epochs)
  c.model.layers = common.deep_cnn_layers()
  common.use_augmentation(c)
  return c
