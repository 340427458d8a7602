"""arquitecturas A3, "Arquitectura 3": three HeUniform + l2 conv pairs ("bicapas"), the report's
best network.

    python launch.py --config=configs/arquitecturas/a3.py

Report: arquitecturas.txt, "Arquitectura 3". Reported test accuracy 86.390% (printed `>86.390`).
1,118,154 params (1,116,106 trainable: the printed 1,116,186 is an OCR 0->8; 2,048
non-trainable). Conv -> BN -> ReLU, kernel_initializer=HeUniform() and l2(1e-4) on every conv
and hidden Dense: Conv 64 - Dropout(0.3) - Conv 64 - MaxPool - Dropout(0.3); the same with 128
and Dropout 0.3 / 0.4, twice; Flatten - Dense 256 - Dropout(0.5) - Dense 128 - Dropout(0.5) -
Dense(10, softmax).
Adam (lr 1e-3), batch 512, up to 200 epochs; EarlyStopping on val_loss and val_accuracy,
patience 10, restore_best_weights=True.
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.arquitecturas import common


def get_config():
  c = common.get_base('a3', '"Arquitectura 3"', 86.39)
  c.model.layers = common.a3_layers()
  return c
