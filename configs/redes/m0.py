"""redes m0, "Modelo basico, sin modificar": one 6x6 conv with 3 filters, Dense 32.

    python launch.py --config=configs/redes/m0.py

Report: redes.txt, first slide ("Modelo basico, sin ..."). Reported test accuracy 48.17% (prose:
"llegamos a un accuracy en test de 48.17%"). 98,993 params, as printed. Conv2D(3, 6x6, 'same')
- Flatten - Dense(32) - Dense(10): the kernel size comes from the printed count (327 =
6*6*3*3 + 3); the code is not shown, so the activations are assumed relu / relu / softmax, as in
the later models. 20 epochs, batch 512.
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5) for the
undefined callback_loss / callback_accuracy; validation = last 10,000 training images; pixels /
255.
"""

from configs import layers as L
from configs.redes import common


def get_config():
  c = common.get_base('m0', '"Modelo basico, sin modificar"', 48.17)
  c.model.layers = (L.conv(3, 6, padding='same', activation='relu'), L.flatten(),
                    L.dense(32, activation='relu'), L.dense(10, activation='softmax'))
  return c
