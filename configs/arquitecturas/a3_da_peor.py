"""arquitecturas A3-DAw, "Arquitectura 3 con Data Augmentation peor": A3 on augmented batches
with shifts.

    python launch.py --config=configs/arquitecturas/a3_da_peor.py

Report: arquitecturas.txt, "Arquitectura 3 con Data Augmentation peor". Reported test accuracy
86.1% (printed `> 86.1`, digits lost in conversion). 1,118,154 params (1,116,106 trainable,
2,048 non-trainable; the printed 2,848 is OCR). A3's network, compile and callbacks, trained on
ImageDataGenerator(rotation_range=5, horizontal_flip=True, width_shift_range=0.1,
height_shift_range=0.1, brightness_range=(0.9, 1.2), rescale=1./255).flow(x_train, y_train,
batch_size=512) with steps_per_epoch=80: one pass per epoch (see common.use_flow_augmentation).
Validation on ImageDataGenerator(rescale=1./255) batches: the validation set, not augmented.
Assumptions (see common.py): validation = last 10,000 training images.
"""

from configs.arquitecturas import common


def get_config(name='a3_da_peor', section='"Arquitectura 3 con Data Augmentation peor"',
               reported=86.1, shift=0.1):
  c = common.get_base(name, section, reported)
  c.model.layers = common.a3_layers()
  common.use_flow_augmentation(c, rotation_range=5.0, horizontal_flip=True,
                               width_shift_range=shift, height_shift_range=shift,
                               brightness_range=(0.9, 1.2))
  return c
