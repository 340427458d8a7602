"""p2cnn exp7, "7 - l2 y dropout v3" (model_13): the report's best completed model.

    python launch.py --config=configs/p2cnn/exp7.py

Report: p2cnn.txt, section "7 - l2 y dropout v3". Reported test accuracy 82.7% (`Test accuracy:
0.827`; table 83). 2,867,210 params, as printed. Conv blocks 64-64 | 128-128 | 256-256 | 512
(3x3, same, relu, l2(1e-3)), each with MaxPooling2D(2) and Dropout 0.1 / 0.15 / 0.15 / 0.1;
Flatten - Dense(256, relu) - Dropout(0.15) - Dense(64, relu) - Dense(10, softmax).
Adam (lr 1e-3), batch 1024, up to 75 epochs (stopped at 52), validation_split 0.1;
EarlyStopping(val_loss, patience 10, start_from_epoch 10), no restore.
"""

from configs.p2cnn import common


def get_config():
  c = common.get_base('exp7', '"7 - l2 y dropout v3"', 82.7, batch_size=1024, epochs=75)
  c.model.layers = common.exp7_layers()
  common.use_early_stopping(c, patience=10, start_from_epoch=10)
  return c
