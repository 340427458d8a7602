"""arquitecturas A2, "Arquitectura 2": a lighter net, one HeNormal conv per block, no pooling
after the fourth.

    python launch.py --config=configs/arquitecturas/a2.py

Report: arquitecturas.txt, "Arquitectura 2". Reported test accuracy 81.770% (printed `>81.770`).
802,506 params (801,034 trainable, 1,472 non-trainable), as printed. Conv -> BN -> ReLU with
HeNormal and no L2: Conv 32 - MaxPool - Dropout(0.25); Conv 64 - MaxPool - Dropout(0.3);
Conv 128 - MaxPool - Dropout(0.3); Conv 128 - Dropout(0.4) (no pooling); Flatten - Dense 256 -
BN - ReLU - Dropout(0.4) - Dense 128 - BN - ReLU - Dropout(0.4) - Dense(10, softmax).
Adam (lr 1e-3), batch 512, up to 200 epochs; EarlyStopping on val_loss and val_accuracy,
patience 10, restore_best_weights=True.
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.arquitecturas import common


def get_config(name='a2', section='"Arquitectura 2"', reported=81.77,
               activation_layer=common.RELU, dense_batch_norm=True):
  c = common.get_base(name, section, reported)
  kwargs = dict(kernel_initializer='he_normal', activation_layer=activation_layer)
  convs = [common.conv_block(f, 1, dropout=rate, pool=pool, **kwargs)
           for f, rate, pool in ((32, 0.25, True), (64, 0.3, True), (128, 0.3, True),
                                 (128, 0.4, False))]
  c.model.layers = tuple(layer for block in convs for layer in block) + tuple(
      common.classifier((256, 128), 0.4, batch_norm=dense_batch_norm, **kwargs))
  return c
