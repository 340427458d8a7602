"""p2cnn exp6, "6 - l2 y dropout v2" (model_12): Dropout 0.1 after every pooling, Dense 512.

    python launch.py --config=configs/p2cnn/exp6.py

Report: p2cnn.txt, section "6 - l2 y dropout v2". Reported test accuracy 81.2% (`Test accuracy:
0.812`; table 81). 3,137,718 params, as printed. Conv blocks 32-32 | 64-128 | 256-256 (3x3,
same, relu, l2(1e-3)), each with MaxPooling2D(2) and Dropout(0.1); Flatten - Dense(512, relu) -
Dropout(0.2) - Dense(100, relu) - Dense(10, softmax).
Adam (lr 1e-3), batch 256, up to 75 epochs (stopped at 24), validation_split 0.1;
EarlyStopping(val_loss, patience 5, start_from_epoch 5), no restore.
"""

from configs.p2cnn import common


def get_config():
  c = common.get_base('exp6', '"6 - l2 y dropout v2"', 81.2, batch_size=256, epochs=75)
  c.model.layers = tuple(
      common.conv_trunk(common.FILTERS_EXP3, l2=common.L2, dropout_rates=(0.1, 0.1, 0.1))
      + common.dense_head((512, 0.2), 100))
  common.use_early_stopping(c, patience=5, start_from_epoch=5)
  return c
