"""proyecto4 exp3, "tercer modelo": doubled convs with BN, and a stray fourth pooling.

    python launch.py --config=configs/proyecto4/exp3.py

Report: proyecto4.txt, "tercer modelo". Reported test accuracy 80.360% (printed `> 80.360`).
305,546 params (304,650 trainable, 896 non-trainable), as printed. Conv 32-32 (BN after each
activation) - MaxPool - Dropout(0.4); Conv 64 - BN - MaxPool (the extra pooling, no Dropout, in
the code and the summary); Conv 64 - BN - MaxPool - Dropout(0.4); Conv 128-128 (BN) - MaxPool -
Dropout(0.4); Flatten(512) - Dense(32, relu) - Dense(10, softmax).
Adam (inferred), batch 64, up to 200 epochs; EarlyStopping(val_loss, 10) and (val_accuracy, 10).
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.proyecto4 import common


def get_config():
  c = common.get_base('exp3', '"tercer modelo"', 80.36, batch_size=64, patience=10)
  c.model.layers = tuple(
      common.conv_block(32, 2, dropout=0.4) + common.conv_block(64, 1)
      + common.conv_block(64, 1, dropout=0.4) + common.conv_block(128, 2, dropout=0.4)
  ) + common.classifier(common.dense_block(32, batch_norm=False))
  return c
