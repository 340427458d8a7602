"""redes m2, "Modelo con [Dropout]": convs 32 (6x6) / 64 / 128 (3x3), Dropout, Dense 128.

    python launch.py --config=configs/redes/m2.py

Report: redes.txt, third slide ("Modelo con ..."). No exact test accuracy: the prose says "casi
un 73%" (almost 73%). 359,402 params, as printed. Conv2D(32, 6x6) - MaxPool; Conv2D(64, 3x3) -
MaxPool - Dropout; Conv2D(128, 3x3) - MaxPool - Dropout; Flatten - Dense(128, relu) - Dense(10,
softmax), convs relu and 'same'. The code is not shown: the Dropout rates 0.5 and 0.25 are m3's
(m3 is this model plus BatchNormalization, code shown). 20 epochs, batch 512.
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5);
validation = last 10,000 training images; pixels / 255.
"""

from configs.redes import common


def get_config(name='m2', section='"Modelo con [Dropout]"', batch_norm=False):
  c = common.get_base(name, section, None)
  c.model.layers = common.small_cnn_layers(batch_norm=batch_norm)
  return c
