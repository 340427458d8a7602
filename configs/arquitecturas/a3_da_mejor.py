"""arquitecturas A3-DAb, "Arquitectura 3 con Data Augmentation mejor": A3-DAw without the shifts.

    python launch.py --config=configs/arquitecturas/a3_da_mejor.py

Report: arquitecturas.txt, "Arquitectura 3 con Data Augmentation mejor". Reported test accuracy
87.170% (printed "> 87 170"; the text confirms 87.17). 1,118,154 params (1,116,106 trainable,
2,048 non-trainable). A3's network, compile and callbacks, trained on
ImageDataGenerator(rotation_range=5, horizontal_flip=True, brightness_range=(0.9, 1.2),
rescale=1./255).flow(x_train, y_train, batch_size=512), steps_per_epoch=80: one pass per epoch
(see common.use_flow_augmentation).
Assumptions (see common.py): validation = last 10,000 training images.
"""

from configs.arquitecturas import a3_da_peor


def get_config():
  return a3_da_peor.get_config('a3_da_mejor', '"Arquitectura 3 con Data Augmentation mejor"',
                               87.17, shift=0.0)
