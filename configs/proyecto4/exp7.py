"""proyecto4 exp7, "un modelo diferente": relu/swish alternating, a Conv(512) block, Adam.

    python launch.py --config=configs/proyecto4/exp7.py

Report: proyecto4.txt, exp7 ("modelo 7"). Reported test accuracy 88.560% (printed `> 88.560`).
6,797,898 params (6,793,034 trainable, 4,864 non-trainable), as printed. Conv pairs 64 (swish) |
128 (relu) | 256 (swish), each conv followed by BN and Dropout, the pair's second Dropout after
MaxPooling2D(2) (rates 0.4 / 0.5 / 0.6); Conv 512 (relu) - BN - Dropout(0.6), no pooling;
Flatten - Dense(512, swish) - BN - Dropout(0.7) - Dense(512, relu) - BN - Dropout(0.7) -
Dense(10, softmax). No regularizer or initializer.
Adam (stated; lr 1e-3), up to 200 epochs; EarlyStopping(val_loss, 15) and (val_accuracy, 15).
Assumptions: batch size not shown, exp4's 128; validation = last 10,000 training images; pixels
/ 255 (see common.py).
"""

from configs.proyecto4 import common


def get_config():
  c = common.get_base('exp7', 'exp7 "un modelo diferente"', 88.56, batch_size=128, patience=15)
  c.model.layers = common.swish_relu_layers(
      (64, 128, 256, 512), dropouts=(0.4, 0.5, 0.6, 0.6), dense_units=512, dense_dropout=0.7,
      dropout_after_every_bn=True)
  return c
