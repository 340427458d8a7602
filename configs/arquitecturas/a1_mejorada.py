"""arquitecturas A1M, "Arquitectura 1 mejorada": A1 with Conv -> BN -> ReLU, l2(1e-4), more
Dropout.

    python launch.py --config=configs/arquitecturas/a1_mejorada.py

Report: arquitecturas.txt, "Arquitectura 1 mejorada". Reported test accuracy 81.890% (printed
`>81.890`). 2,394,826 params (2,393,290 trainable, 1,536 non-trainable): the printed summary lost
its "Total" line and shows 2,394,826 under "Trainable"; A1's counts, since ReLU, Dropout and L2
add no weights. Convs and hidden Dense without activation, HeNormal, l2(1e-4), each followed by
BatchNormalization and a ReLU layer: Conv 64 - Dropout(0.3) - Conv 64 - MaxPool - Dropout(0.3);
Conv 128 - Conv 128 - MaxPool - Dropout(0.4); Flatten - Dense 256 - Dropout(0.5) - Dense 128 -
Dropout(0.5) - Dense(10, softmax).
Adam (lr 1e-3), batch 512, up to 200 epochs; EarlyStopping on val_loss and val_accuracy,
patience 10, restore_best_weights=True.
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.arquitecturas import common


def get_config():
  c = common.get_base('a1_mejorada', '"Arquitectura 1 mejorada"', 81.89)
  kwargs = dict(kernel_initializer='he_normal', l2=1e-4)
  c.model.layers = tuple(common.conv_block(64, 2, inner_dropout=0.3, dropout=0.3, **kwargs)
                         + common.conv_block(128, 2, dropout=0.4, **kwargs)
                         + common.classifier((256, 128), 0.5, **kwargs))
  return c
