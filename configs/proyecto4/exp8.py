"""proyecto4 exp8: exp4's network with lower Dropout, trained on ImageDataGenerator batches.

    python launch.py --config=configs/proyecto4/exp8.py

Report: proyecto4.txt, exp8 ("similar a la utilizada en el modelo 4"). Reported test accuracy
88.430% (printed `> 88.430`). 1,709,514 params (2,048 non-trainable), as printed. exp4's layers
with Dropout 0.4 / 0.4 / 0.4 after the conv pairs and 0.5 / 0.5 in the head; Adam (stated).
ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True,
rotation_range=15, shear_range=0.1 (degrees), fill_mode='nearest').flow(x, y): fit's
batch_size=64 is ignored for a generator, so batches of 32 (flow's default), one pass per epoch.
Up to 200 epochs; EarlyStopping(val_loss, 15) and (val_accuracy, 15) (assumed as exp7/exp10).
Assumptions: validation = last 10,000 training images; pixels / 255 (see common.py).
"""

from configs.proyecto4 import common


def get_config():
  c = common.get_base('exp8', 'exp8 "modelo 4 + data augmentation"', 88.43,
                      batch_size=64, patience=15)  # flow() below makes it 32.
  c.model.layers = common.vgg_layers(dropouts=(0.4, 0.4, 0.4, 0.5, 0.5))
  common.use_flow_augmentation(c, **common.AUGMENT_EXP8)
  return c
