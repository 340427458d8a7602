"""entregable4 exp9, "Aumento del learning rate y Data Augmentation": exp8b with Adam(0.01)
and more patience.

    python launch.py --config=configs/exp9.py --workdir=runs/exp9

Report: entregable4.txt, "Experimento 9 (89,5%)". Reported test accuracy 89.490%. 7,525,194
params (the code listing's fourth Conv2D(256) is not in the printed summary, which we follow).
Adam(0.01); exp8b's augmentation, batch 512, 78 steps per epoch, up to 200 epochs;
EarlyStopping on val_loss and val_accuracy with patience 30; ReduceLROnPlateau(val_loss, 0.1,
patience 20, min_lr 1e-5).
"""

from configs import entregable4
from configs import exp8a


def get_config():
  c = exp8a.get_config('exp9', 'exp9 "Aumento del learning rate y Data Augmentation"', 89.49,
                       learning_rate=0.01, es_patience=30, plateau_patience=20)
  c.train.epochs = 200
  entregable4.use_augmentation(c, **entregable4.AUGMENT_EXP8B)
  return c
