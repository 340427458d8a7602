"""entregable4 exp2, "Reduccion progresiva del learning rate": exp1 + ReduceLROnPlateau.

    python launch.py --config=configs/exp2.py --workdir=runs/exp2

Report: entregable4.txt, "Experimento 2 (76,9% accuracy)". Reported test accuracy 76.880%.
961,706 params (exp1's network). The callbacks deliberately monitor *training* metrics:
ReduceLROnPlateau(loss, factor 0.1, patience 3, min_lr 1e-4) (one reduction, then a
one-ulp second one: Keras compares float32 1e-4 + ulp > min_lr, faithfully kept) and
EarlyStopping(accuracy, patience 5); the EarlyStopping(loss, 10) the report defines is not
passed to fit, so it is left out. Adam 1e-3, batch 512, up to 200 epochs.
"""

from configs import base
from configs import entregable4


def get_config():
  c = entregable4.get_base('exp2', 'exp2 "Reduccion progresiva del learning rate"', 76.88)
  c.model.layers = entregable4.vgg_small_layers()
  c.train.epochs = 200
  entregable4.use_plateau(c, monitor='loss', patience=3, min_lr=1e-4)
  base.add_early_stopping(c, 'accuracy', 'accuracy', patience=5)
  return c
