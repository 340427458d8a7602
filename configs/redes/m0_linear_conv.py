"""redes m0, alternative reading: the same network with a linear (activation-less) convolution.

    python launch.py --config=configs/redes/m0_linear_conv.py

Report: redes.txt, first slide ("Modelo basico, sin ..."), reported test accuracy 48.17%. The
report prints the summary but not the code, so m0's activations are unknown (configs/redes/m0.py
assumes relu / relu / softmax, as the later models have). With relu, 3 filters are few enough
that a seed can lose some of them to dead units (seed 0 ended at 27% test accuracy). This
variant tests the other plausible reading of "the base template, unmodified": Conv2D(3, 6x6,
'same') without an activation - Flatten - Dense(32, relu) - Dense(10, softmax). Same parameter
count (98,993), same training (20 epochs, batch 512, Adam 1e-3, see common.py).
"""

from configs import layers as L
from configs.redes import common


def get_config():
  c = common.get_base('m0_linear_conv', '"Modelo basico, sin modificar" (linear conv reading)',
                      48.17)
  c.model.layers = (L.conv(3, 6, padding='same'), L.flatten(),
                    L.dense(32, activation='relu'), L.dense(10, activation='softmax'))
  return c
