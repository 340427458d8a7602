"""entregable4 exp6, "Weight Decay": exp5 + kernel_regularizer=l2(0.01), SGD(0.01, momentum 0.9).

    python launch.py --config=configs/exp6.py --workdir=runs/exp6

Report: entregable4.txt, "Experimento 6 - Weight Decay (86,9%)". Reported test accuracy 86.970%.
965,034 params. l2(0.01) is Keras's loss penalty 0.01*sum(w^2) on every Conv2D kernel and the
Dense(256) kernel (not the output layer, not biases), not decoupled weight decay.
Deviation note: the report's code listing shows four Conv2D(128) in block 3 but its printed
model.summary() (what ran) has three and matches 965,034; we follow the summary.
Callbacks: ReduceLROnPlateau(val_loss, 0.1, patience 5, min_lr 1e-5), EarlyStopping(val_loss,
10) and (val_accuracy, 50). Batch 512, up to 300 epochs.
"""

from configs import base
from configs import entregable4


def get_config():
  c = entregable4.get_base('exp6', 'exp6 "Weight Decay"', 86.97)
  c.model.layers = entregable4.vgg_small_layers(batch_norm=True, dropout_rate=0.5, l2=0.01)
  c.optim.name = 'sgd'
  c.optim.learning_rate = 0.01
  c.optim.momentum = 0.9
  c.train.epochs = 300
  entregable4.use_plateau(c, monitor='val_loss', patience=5, min_lr=1e-5)
  base.add_early_stopping(c, 'val_loss', 'val_loss', patience=10)
  base.add_early_stopping(c, 'val_accuracy', 'val_accuracy', patience=50)
  return c
