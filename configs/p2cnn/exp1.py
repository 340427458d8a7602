"""p2cnn exp1, "1 - Naive (Adam)": three valid-padded convs and a single Dense(10).

    python launch.py --config=configs/p2cnn/exp1.py

Report: p2cnn.txt, section "1 - Naive (Adam)". Reported test accuracy 68.5% (`Test accuracy:
0.685`; the conclusion table rounds to 69). 128,074 params, computed from the code (the report
prints no summary for this model).
Conv2D(32, 3) - MaxPooling2D(2) - Conv2D(64, 4) - MaxPooling2D(2) - Conv2D(128, 3) - Flatten -
Dense(10, softmax), relu, 'valid' padding. The text says every kernel is 3x3 but the code has
kernel_size=4 on the second conv; the code (what ran) wins.
Adam (lr 1e-3), batch 64, 50 epochs, validation_split 0.1; ModelCheckpoint(val_loss,
save_best_only) is mirrored by checkpoint.monitor but, as in the report, never reloaded.
"""

from configs import layers as L
from configs.p2cnn import common


def get_config():
  c = common.get_base('exp1', '"1 - Naive (Adam)"', 68.5, batch_size=64, epochs=50)
  c.model.layers = (L.conv(32, 3, activation='relu'), L.maxpool(),
                    L.conv(64, 4, activation='relu'), L.maxpool(),
                    L.conv(128, 3, activation='relu'), L.flatten(),
                    L.dense(10, activation='softmax'))
  common.use_checkpoint(c)
  return c
