"""entregable4 exp1, "Anadir profundidad": a VGG-like stack of 7 convs in 3 blocks.

    python launch.py --config=configs/exp1.py --workdir=runs/exp1

Report: entregable4.txt, "Experimento 1 - Anadir profundidad (74,8% accuracy)". Reported test
accuracy 74.760% (the text's "76,2%" repeats the validation accuracy). 961,706 params.
Adam (lr 1e-3), batch 512, up to 100 epochs, EarlyStopping(val_loss, patience 5) only (the
report's `earllystop_loss` typo means exp0's val_loss callback).
"""

from configs import base
from configs import entregable4


def get_config():
  c = entregable4.get_base('exp1', 'exp1 "Anadir profundidad"', 74.76)
  c.model.layers = entregable4.vgg_small_layers()
  c.train.epochs = 100
  base.add_early_stopping(c, 'val_loss', 'val_loss', patience=5)
  return c
