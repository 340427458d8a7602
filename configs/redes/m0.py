"""redes m0, "Modelo basico, sin modificar": one linear 6x6 conv with 3 filters, Dense 32.

    python launch.py --config=configs/redes/m0.py --config.num_seeds=3

Report: redes.txt, first slide ("Modelo basico, sin ..."). Reported test accuracy 48.17% (prose:
"llegamos a un accuracy en test de 48.17%"). 98,993 params, as printed. Conv2D(3, 6x6, 'same')
without an activation - Flatten - Dense(32, relu) - Dense(10, softmax): the kernel size comes
from the printed count (327 = 6*6*3*3 + 3). The code is not shown, so the activations are a
reading. This one, "the base template, unmodified", with a linear convolution, gave 47.31 +-
1.12 over 3 seeds (results/, 20 epochs, the JPEG copy). The other reading, relu as in the later
models (configs/redes/m0_relu_conv.py), gave 38.70 +- 10.11: with 3 filters a seed can lose some
of them to dead units (seed 0: 27.03%), and the other two seeds stopped near 44.5%
(docs/reproduction.md).
20 epochs, batch 512.
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5) for the
undefined callback_loss / callback_accuracy; validation = last 10,000 training images; pixels /
255.
"""

from configs import layers as L
from configs.redes import common


def get_config(name='m0', section='"Modelo basico, sin modificar"', conv_activation=None):
  c = common.get_base(name, section, 48.17)
  activation = {'activation': conv_activation} if conv_activation else {}  # Keras's default: linear
  c.model.layers = (L.conv(3, 6, padding='same', **activation), L.flatten(),
                    L.dense(32, activation='relu'), L.dense(10, activation='softmax'))
  return c
