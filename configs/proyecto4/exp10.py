"""proyecto4 exp10, "nuestro modelo ganador": conv pairs 128-1024, Dense 1024 x2, stronger
augmentation.

    python launch.py --config=configs/proyecto4/exp10.py

An accelerator run (36.6M params, batches of 32).

Report: proyecto4.txt, exp10. Reported test accuracy 91.35% (prose only: "AUC de 91.35% sobre el
dataset de test"; the author's "AUC" is accuracy). 36,595,850 params (36,584,074 trainable,
11,776 non-trainable), as printed. Conv pairs 128 (swish) | 256 (relu) | 512 (swish) with BN,
MaxPooling2D(2) and Dropout 0.3 / 0.4 / 0.5; Conv 1024 - BN - Conv 1024 - BN (relu) -
Dropout(0.5), no pooling; Flatten - Dense(1024, swish) - BN - Dropout(0.4) - Dense(1024, relu) -
BN - Dropout(0.4) - Dense(10, softmax).
compile(optimizer='Adam') (lr 1e-3); ImageDataGenerator(width/height_shift_range=0.2,
horizontal_flip, rotation_range=20, shear_range=0.15, zoom_range=0.2, fill_mode='nearest') (the
code, wider than the prose's "same plus 20% zoom") through flow(): batches of 32, one pass per
epoch; up to 200 epochs; EarlyStopping(val_loss, 15) and (val_accuracy, 15).
Assumptions: validation = last 10,000 training images; pixels / 255 (see common.py).
"""

from configs.proyecto4 import common


def get_config():
  c = common.get_base('exp10', 'exp10 "nuestro modelo ganador"', 91.35,
                      batch_size=64, patience=15)  # flow() below makes it 32.
  c.model.layers = common.swish_relu_layers(
      (128, 256, 512, 1024), dropouts=(0.3, 0.4, 0.5, 0.5), dense_units=1024, dense_dropout=0.4,
      last_block_convs=2)
  common.use_flow_augmentation(c, width_shift_range=0.2, height_shift_range=0.2,
                               horizontal_flip=True, rotation_range=20.0, shear_range=0.15,
                               zoom_range=(0.8, 1.2), fill_mode='nearest')  # zoom_range=0.2.
  return c
