"""p2cnn exp5, "5 - l2 y dropout" (model_11): exp4 + Dropout(0.05) in blocks 2-3 + Dense(500).

    python launch.py --config=configs/p2cnn/exp5.py

Report: p2cnn.txt, section "5 - l2 y dropout". Reported test accuracy 75.5% (`Test accuracy:
0.755`; table 75). 3,087,354 params, as printed. exp4's l2 conv blocks with Dropout(0.05) after
the 2nd and 3rd pooling (none after the 1st); Flatten - Dense(500, relu) - Dense(100, relu) -
Dense(10, softmax).
Deviation note: the code says batch_size=128 but the printed log runs 704 steps per epoch, which
is batch 64 (ceil(45000 / 64)); the log is what ran, so batch 64. Adam (lr 1e-3), 75 epochs,
validation_split 0.1; ModelCheckpoint(val_loss) mirrored by checkpoint.monitor, never reloaded.
"""

from configs.p2cnn import common


def get_config():
  c = common.get_base('exp5', '"5 - l2 y dropout"', 75.5, batch_size=64, epochs=75)
  c.model.layers = tuple(
      common.conv_trunk(common.FILTERS_EXP3, l2=common.L2, dropout_rates=(0.0, 0.05, 0.05))
      + common.dense_head(500, 100))
  common.use_checkpoint(c)
  return c
