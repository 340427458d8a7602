"""entregable4 exp11, "Mas convoluciones y Data Augmentation": the report's best model.

    python launch.py --config=configs/exp11.py --workdir=runs/exp11

An accelerator run: about 1h25 on the report's Colab GPU; on a 2-core CPU one epoch takes
tens of minutes.

Report: entregable4.txt, "Experimento 11 (90,7% accuracy)". Reported test accuracy 90.740%.
15,448,842 params (15,438,986 trainable, 9,856 non-trainable). Conv blocks 64x3, 128x3, 256x3
(each with MaxPooling) and 512x2 (no pooling), BN after every activation, Dropout 0.5 after
each block; Dense 1024-1024-512 with BN and Dropout 0.5. Adam(0.01); exp8b's augmentation,
batch 512, 78 steps per epoch, up to 200 epochs; EarlyStopping on val_loss and val_accuracy
with patience 30; ReduceLROnPlateau(val_loss, 0.1, patience 20, min_lr 1e-5).
"""

from configs import entregable4
from configs import exp9


def get_config():
  c = exp9.get_config()
  c.name = 'exp11'
  c.report = f'{entregable4.REPORT}, exp11 "Mas convoluciones y Data Augmentation"'
  c.reported_test_accuracy = 90.74
  c.model.layers = entregable4.vgg_large_layers(
      conv_blocks=((64, 3), (128, 3), (256, 3), (512, 2, False)))
  return c
