"""entregable4 exp7, "Arquitectura sencilla y Data Augmentation": exp6's network and optimizer
trained on ImageDataGenerator batches.

    python launch.py --config=configs/exp7.py --workdir=runs/exp7

Report: entregable4.txt, "Experimento 7 (82,3% accuracy)". Reported test accuracy 82.300%.
965,034 params (the code listing's fourth Conv2D(128) is not in the printed summary; see exp6).
ImageDataGenerator(rescale=1/255, horizontal_flip, rotation_range=40, shear_range=0.2 (degrees,
as Keras reads it), width/height_shift_range=0.1, fill_mode='nearest'), batch 512,
steps_per_epoch = 40000 // 512 = 78, up to 200 epochs; callbacks as exp6. Validation runs on all
10,000 images (the report's generator saw 78 x 128 = 9,984 of them).
"""

from configs import entregable4
from configs import exp6


def get_config():
  c = exp6.get_config()
  c.name = 'exp7'
  c.report = f'{entregable4.REPORT}, exp7 "Arquitectura sencilla y Data Augmentation"'
  c.reported_test_accuracy = 82.30
  c.train.epochs = 200
  entregable4.use_augmentation(c, horizontal_flip=True, rotation_range=40.0, shear_range=0.2,
                               width_shift_range=0.1, height_shift_range=0.1, fill_mode='nearest')
  return c
