"""entregable4 exp8 part 1, "Arquitectura mas compleja sin Data Augmentation".

    python launch.py --config=configs/exp8a.py --workdir=runs/exp8a

Report: entregable4.txt, "Experimento 8 - Parte 1 (86,2% accuracy)". Reported test accuracy
86.200%. 7,525,194 params (7,517,770 trainable: the report prints 7517778 and 590880 for two
conv layers, both conversion garbles; 7,424 non-trainable). Conv blocks 64x2, 128x2, 256x3 with
BN and Dropout 0.5, Dense 1024-1024-512 with BN and Dropout 0.5; no L2; Adam 1e-3, batch 512,
up to 150 epochs; ReduceLROnPlateau(val_loss, 0.1, patience 5, min_lr 1e-5), EarlyStopping on
val_loss and val_accuracy with patience 10.
"""

from configs import base
from configs import entregable4


def get_config(name='exp8a', section='exp8 part 1 "sin Data Augmentation"', reported=86.20,
               learning_rate=1e-3, es_patience=10, plateau_patience=5):
  c = entregable4.get_base(name, section, reported)
  c.model.layers = entregable4.vgg_large_layers()
  c.optim.learning_rate = learning_rate
  c.train.epochs = 150
  entregable4.use_plateau(c, monitor='val_loss', patience=plateau_patience, min_lr=1e-5)
  base.add_early_stopping(c, 'val_loss', 'val_loss', patience=es_patience)
  base.add_early_stopping(c, 'val_accuracy', 'val_accuracy', patience=es_patience)
  return c
