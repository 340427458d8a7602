"""redes m4, "Modelo con Mayor Profundidad": a VGG-style net, conv pairs 64 / 128 / 256 with BN.

    python launch.py --config=configs/redes/m4.py

Report: redes.txt, "Modelo con Mayor Profundidad". Reported test accuracy 82.550% (printed
`> 82.550`). 3,253,834 params (3,251,018 trainable; the Non-trainable line is lost in conversion,
2,816 by arithmetic). Conv pairs 64 | 128 | 256 (3x3, same, relu, BN after each activation),
each with MaxPooling2D(2) and Dropout 0.2 / 0.25 / 0.35; Flatten - Dense(512, relu) - BN -
Dropout(0.5) - Dense(10, softmax). 20 epochs, batch 512 (the fit call is cut after batch_size).
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5);
validation = last 10,000 training images; pixels / 255.
"""

from configs.redes import common


def get_config():
  c = common.get_base('m4', '"Modelo con Mayor Profundidad"', 82.55)
  c.model.layers = common.deep_cnn_layers()
  return c
