"""entregable4 exp3, "Batch Normalization": exp2 with BN after every activation.

    python launch.py --config=configs/exp3.py --workdir=runs/exp3

Report: entregable4.txt, "Experimento 3 - Batch Normalization (76,3% accuracy)". Reported test
accuracy 76.290%. 965,034 params (963,370 trainable, 1,664 non-trainable). Callbacks, optimizer
and epochs as exp2.
"""

from configs import exp2
from configs import entregable4


def get_config():
  c = exp2.get_config()
  c.name = 'exp3'
  c.report = f'{entregable4.REPORT}, exp3 "Batch Normalization"'
  c.reported_test_accuracy = 76.29
  c.model.layers = entregable4.vgg_small_layers(batch_norm=True)
  return c
