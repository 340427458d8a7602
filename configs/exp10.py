"""entregable4 exp10, "Aumento learning rate sin Data Augmentation": exp9 without augmentation.

    python launch.py --config=configs/exp10.py --workdir=runs/exp10

Report: entregable4.txt, "Experimento 10 (87,7% accuracy)". Reported test accuracy 87.710%, the
report's best result without augmentation. 7,525,194 params. Adam(0.01), batch 512 over the
40,000 arrays, up to 200 epochs; EarlyStopping on val_loss and val_accuracy with patience 30;
ReduceLROnPlateau(val_loss, 0.1, patience 20, min_lr 1e-5).
"""

from configs import exp8a


def get_config():
  c = exp8a.get_config('exp10', 'exp10 "Aumento learning rate sin Data Augmentation"', 87.71,
                       learning_rate=0.01, es_patience=30, plateau_patience=20)
  c.train.epochs = 200
  return c
