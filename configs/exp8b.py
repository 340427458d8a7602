"""entregable4 exp8 part 2, "Arquitectura mas compleja con Data Augmentation".

    python launch.py --config=configs/exp8b.py --workdir=runs/exp8b

Report: entregable4.txt, "Experimento 8 - Parte 2 (86,0% accuracy)". Reported test accuracy
86.040%. 7,525,194 params (exp8a's network, trained from scratch). Adam 1e-3;
ImageDataGenerator(rescale=1/255, horizontal_flip, rotation_range=20, width/height_shift 0.1,
fill_mode='nearest'), batch 512, 78 steps per epoch, up to 200 epochs; EarlyStopping on
val_loss and val_accuracy with patience 15; ReduceLROnPlateau(val_loss, 0.1, 5, min_lr 1e-5).
"""

from configs import entregable4
from configs import exp8a


def get_config():
  c = exp8a.get_config('exp8b', 'exp8 part 2 "con Data Augmentation"', 86.04, es_patience=15)
  c.train.epochs = 200
  entregable4.use_augmentation(c, **entregable4.AUGMENT_EXP8B)
  return c
