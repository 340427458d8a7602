"""entregable4 exp5, "Dropout 50%": exp4 with Dropout 0.5, patience 10, min_lr 1e-5.

    python launch.py --config=configs/exp5.py --workdir=runs/exp5

Report: entregable4.txt, "Experimento 5 - Dropout 50% (84,9% accuracy)". Reported test accuracy
84.940%. 965,034 params. ReduceLROnPlateau(val_loss, 0.1, patience 5, min_lr 1e-5),
EarlyStopping(val_loss, 10) and (val_accuracy, 10). Adam 1e-3, batch 512, up to 300 epochs.
"""

from configs import entregable4
from configs import exp4


def get_config():
  c = exp4.get_config(dropout_rate=0.5, patience=10, min_lr=1e-5)
  c.name = 'exp5'
  c.report = f'{entregable4.REPORT}, exp5 "Dropout 50%"'
  c.reported_test_accuracy = 84.94
  return c
