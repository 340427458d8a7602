"""redes m3, "Modelo con Batch [Normalization]": m2 + BatchNormalization after each conv.

    python launch.py --config=configs/redes/m3.py

Report: redes.txt, fourth slide ("Modelo con Batch"). No test accuracy is reported; the text says
BatchNormalization did not improve on m2's almost 73%. 360,298 params (359,850 trainable, 448
non-trainable), as printed; the code is shown: Conv2D(32, 6x6) - BN - MaxPool; Conv2D(64, 3x3) -
BN - MaxPool - Dropout(0.5); Conv2D(128, 3x3) - BN - MaxPool - Dropout(0.25) (relu inside the
convs, so BN after it); Flatten - Dense(128, relu) - Dense(10, softmax).
The fit call is not shown: m2's (20 epochs, batch 512) assumed.
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5);
validation = last 10,000 training images; pixels / 255.
"""

from configs.redes import m2


def get_config():
  return m2.get_config('m3', '"Modelo con Batch Normalization"', batch_norm=True)
