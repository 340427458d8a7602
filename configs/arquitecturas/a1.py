"""arquitecturas A1, "Arquitectura 1": two HeNormal conv pairs, BN after each ReLU, Dense 256-128.

    python launch.py --config=configs/arquitecturas/a1.py

Report: arquitecturas.txt, "Arquitectura 1". Reported test accuracy 80.530% (printed `> 80.530`).
2,394,826 params (2,393,290 trainable, 1,536 non-trainable), as printed. Conv2D(64) x2 and
Conv2D(128) x2 (3x3, same, relu inside the layer, kernel_initializer=HeNormal()), each followed by
BatchNormalization; MaxPooling2D(2) and Dropout(0.3) after each pair; Flatten - Dense(256, relu)
- BN - Dropout(0.4) - Dense(128, relu) - BN - Dropout(0.4) - Dense(10, softmax); no L2.
Adam (lr 1e-3), batch 512, up to 200 epochs; EarlyStopping on val_loss and val_accuracy,
patience 10, restore_best_weights=True.
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.arquitecturas import common


def get_config():
  c = common.get_base('a1', '"Arquitectura 1"', 80.53)
  kwargs = dict(activation='relu', kernel_initializer='he_normal', activation_layer=None)
  c.model.layers = tuple(common.conv_block(64, 2, dropout=0.3, **kwargs)
                         + common.conv_block(128, 2, dropout=0.3, **kwargs)
                         + common.classifier((256, 128), 0.4, **kwargs))
  return c
