"""proyecto4 exp9: exp7-style relu/swish network with less Dropout, plus exp8's augmentation.

    python launch.py --config=configs/proyecto4/exp9.py

Report: proyecto4.txt, exp9. Reported test accuracy 90.45% (prose only: "hemos logrado arribar al
90.45% de accuracy"). 6,797,898 params (4,864 non-trainable), as printed. Conv pairs 64 (swish)
| 128 (relu) | 256 (swish) with BN after each conv, MaxPooling2D(2) and Dropout 0.3 / 0.4 / 0.5;
Conv 512 (relu) - BN - Dropout(0.4); Flatten - Dense(512, swish) - BN - Dropout(0.4) - Dense(512,
relu) - BN - Dropout(0.4) - Dense(10, softmax). Adam; exp8's ImageDataGenerator through flow():
batches of 32, one pass per epoch; up to 200 epochs; EarlyStopping(val_loss, 15) and
(val_accuracy, 15) (assumed).
Assumptions: validation = last 10,000 training images; pixels / 255 (see common.py).
"""

from configs.proyecto4 import common


def get_config():
  c = common.get_base('exp9', 'exp9 "modelo 7 + data augmentation"', 90.45,
                      batch_size=64, patience=15)  # flow() below makes it 32.
  c.model.layers = common.swish_relu_layers(
      (64, 128, 256, 512), dropouts=(0.3, 0.4, 0.5, 0.4), dense_units=512, dense_dropout=0.4)
  common.use_flow_augmentation(c, **common.AUGMENT_EXP8)
  return c
