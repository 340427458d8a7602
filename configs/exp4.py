"""entregable4 exp4, "Dropout 30%": exp3 + Dropout(0.3) after each pooling and after Dense-BN.

    python launch.py --config=configs/exp4.py --workdir=runs/exp4

Report: entregable4.txt, "Experimento 4 - Dropout 30% (81,2% accuracy)". Reported test accuracy
81.250%. 965,034 params. Callbacks now watch validation metrics: ReduceLROnPlateau(val_loss,
0.1, patience 5, min_lr 1e-4), EarlyStopping(val_loss, 5) and (val_accuracy, 5). Adam 1e-3,
batch 512, up to 300 epochs.
"""

from configs import base
from configs import entregable4


def get_config(dropout_rate=0.3, patience=5, min_lr=1e-4):
  c = entregable4.get_base('exp4', 'exp4 "Dropout 30%"', 81.25)
  c.model.layers = entregable4.vgg_small_layers(batch_norm=True, dropout_rate=dropout_rate)
  c.train.epochs = 300
  entregable4.use_plateau(c, monitor='val_loss', patience=5, min_lr=min_lr)
  base.add_early_stopping(c, 'val_loss', 'val_loss', patience=patience)
  base.add_early_stopping(c, 'val_accuracy', 'val_accuracy', patience=patience)
  return c
