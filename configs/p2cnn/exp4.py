"""p2cnn exp4, "4 - coste en la norma l2": exp3's convs without BN, l2(1e-3), Dense(100).

    python launch.py --config=configs/p2cnn/exp4.py

Report: p2cnn.txt, section "4 - coste en la norma l2". Reported test accuracy 74.3% (`Test
accuracy: 0.743`; table 74). 1,398,454 params, as printed. Conv blocks 32-32 | 64-128 | 256-256
(3x3, same, relu, kernel_regularizer=l2(1e-3) on every conv), MaxPooling2D(2) after each;
Flatten - Dense(100, relu) - Dense(10, softmax).
Adam (lr 1e-3), batch 64, up to 50 epochs (stopped at 17), validation_split 0.1;
EarlyStopping(val_loss, patience 5, start_from_epoch 5), no restore.
"""

from configs.p2cnn import common


def get_config():
  c = common.get_base('exp4', '"4 - coste en la norma l2"', 74.3, batch_size=64, epochs=50)
  c.model.layers = tuple(common.conv_trunk(common.FILTERS_EXP3, l2=common.L2)
                         + common.dense_head(100))
  common.use_early_stopping(c, patience=5, start_from_epoch=5)
  return c
