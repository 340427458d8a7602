"""proyecto4 exp4, "cuarto modelo": conv pairs 64 / 128 / 256 with BN, heavy Dropout, batch 128.

    python launch.py --config=configs/proyecto4/exp4.py

Report: proyecto4.txt, "cuarto modelo". No test accuracy is printed for this model (exp8's text
implies about 85%). 1,709,514 params (1,707,466 trainable, 2,048 non-trainable), as printed (the
text's "1.709.519" is a typo). Conv pairs 64 | 128 | 256 (relu, BN after each), each with
MaxPooling2D(2) and Dropout 0.5 / 0.5 / 0.6; Flatten - Dense(128, relu) - BN - Dropout(0.65) -
Dense(256, relu) - Dropout(0.7) - Dense(10, softmax).
Adam (inferred), batch 128 (stated in the text), up to 200 epochs; EarlyStopping(val_loss, 10) and
(val_accuracy, 10) (assumed unchanged: the fit call is not shown).
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.proyecto4 import common


def get_config():
  c = common.get_base('exp4', '"cuarto modelo"', None, batch_size=128, patience=10)
  c.model.layers = common.vgg_layers()
  return c
