"""redes m1: three 6x6 convs (16 / 32 / 64), each max-pooled, Dense 32.

    python launch.py --config=configs/redes/m1.py

Report: redes.txt, second slide ("Modelo ...", heading cut). Reported test accuracy 66.47%
(prose). 127,130 params, as printed. Three Conv2D(f, 6x6, 'same') with f = 16, 32, 64, each
followed by MaxPooling2D(2); Flatten - Dense(32) - Dense(10). All kernels are 6x6 (only the
printed counts say so: 1,744 / 18,464 / 73,792); the code is not shown, so the activations are
assumed relu / relu / softmax. 20 epochs, batch 512.
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5);
validation = last 10,000 training images; pixels / 255.
"""

from configs import layers as L
from configs.redes import common


def get_config():
  c = common.get_base('m1', '"Modelo" (three convolutions)', 66.47)
  convs = [[L.conv(f, 6, padding='same', activation='relu'), L.maxpool()] for f in (16, 32, 64)]
  c.model.layers = tuple(layer for block in convs for layer in block) + (
      L.flatten(), L.dense(32, activation='relu'), L.dense(10, activation='softmax'))
  return c
