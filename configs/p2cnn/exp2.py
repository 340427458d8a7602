"""p2cnn exp2, "2 - RMS Prop": a five-conv net with mixed kernels and 'same' pooling, RMSprop.

    python launch.py --config=configs/p2cnn/exp2.py

Report: p2cnn.txt, section "2 - RMS Prop". Reported test accuracy 65.8% (`Test accuracy:
0.658`; table 66). 1,831,840 params, computed from the code (no summary printed).
Conv2D(10, 3) - MaxPool(2) - Conv2D(50, 3, same) - MaxPool(3, same) - Conv2D(100, 4) -
MaxPool(2, same) - Conv2D(300, 2, same) - MaxPool(2, same) - Conv2D(600, 3, same) - Flatten -
Dense(10, softmax), all convs relu.
optimizer="RMSProp": Keras defaults (lr 1e-3, rho 0.9, momentum 0, epsilon 1e-7). Batch 64,
20 epochs, validation_split 0.1, no callbacks.
"""

from configs import layers as L
from configs.p2cnn import common


def get_config():
  c = common.get_base('exp2', '"2 - RMS Prop"', 65.8, batch_size=64, epochs=20)
  c.model.layers = (
      L.conv(10, 3, activation='relu'), L.maxpool(2),
      L.conv(50, 3, padding='same', activation='relu'), L.maxpool(3, padding='same'),
      L.conv(100, 4, activation='relu'), L.maxpool(2, padding='same'),
      L.conv(300, 2, padding='same', activation='relu'), L.maxpool(2, padding='same'),
      L.conv(600, 3, padding='same', activation='relu'),
      L.flatten(), L.dense(10, activation='softmax'))
  c.optim.name = 'rmsprop'
  return c
