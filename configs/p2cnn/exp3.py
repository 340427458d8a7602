"""p2cnn exp3, "3 - padding y Batch-Normalization": 'same' conv pairs, BN after each pair.

    python launch.py --config=configs/p2cnn/exp3.py

Report: p2cnn.txt, section "3 - padding y Batch-Normalization". Reported test accuracy 79.4%
(`Test accuracy: 0.794`; table 79). 1,030,378 params (1,029,546 trainable, 832 non-trainable),
as printed. Blocks [Conv 32, Conv 32], [Conv 64, Conv 128], [Conv 256, Conv 256] (3x3, same,
relu), each followed by one BatchNormalization and MaxPooling2D(2); Flatten - Dense(10, softmax).
Adam (lr 1e-3), batch 64, 75 epochs, validation_split 0.1; ModelCheckpoint(val_loss) mirrored by
checkpoint.monitor, never reloaded.
"""

from configs.p2cnn import common


def get_config():
  c = common.get_base('exp3', '"3 - padding y Batch-Normalization"', 79.4, batch_size=64,
                      epochs=75)
  c.model.layers = tuple(common.conv_trunk(common.FILTERS_EXP3, batch_norm=True)
                         + common.dense_head())
  common.use_checkpoint(c)
  return c
