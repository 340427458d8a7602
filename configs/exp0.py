"""entregable4 exp0, "Arquitectura base": the tutors' one-conv network, unchanged.

    python launch.py --config=configs/exp0.py --workdir=runs/exp0

Report: entregable4.txt, "Experimento 0 - Arquitectura base (60,6% accuracy)". Reported test
accuracy 60.580% (1 min of training in Colab). 263,402 params.
Conv2D(32, 3x3, same, relu) - MaxPooling2D(2) - Flatten - Dense(32, relu) - Dense(10, softmax);
Adam (lr 1e-3), batch 512, up to 500 epochs, EarlyStopping on val_loss and on val_accuracy,
both patience 5 (the first to fire stops).
"""

from configs import base
from configs import entregable4
from configs import layers as L


def get_config():
  c = entregable4.get_base('exp0', 'exp0 "Arquitectura base"', 60.58)
  c.model.layers = (L.conv(32, padding='same', activation='relu'), L.maxpool(), L.flatten(),
                    L.dense(32, activation='relu'), L.dense(10, activation='softmax'))
  c.train.epochs = 500
  base.add_early_stopping(c, 'val_loss', 'val_loss', patience=5)
  base.add_early_stopping(c, 'val_accuracy', 'val_accuracy', patience=5)
  return c
