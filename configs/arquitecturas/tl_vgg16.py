"""arquitecturas TL-VGG, "Transfer Learning Fine Tuning con Data Augmentation VGG16": ImageNet
VGG16 on inputs resized to 224x224, block5 fine-tuned with a new head, with augmentation.

    python launch.py --config=configs/arquitecturas/tl_vgg16.py --workdir=runs/arquitecturas/tl_vgg16

Needs Keras's ImageNet weight file (model.backbone.weights='imagenet' reads it from
~/.keras/models, downloading it where there is internet; or give a path).

Report: arquitecturas.txt, "Transfer Learning Fine Tuning con Data Augmentation VGG16". Reported
test accuracy 87.16%. 21,173,194 params (13,537,162 trainable, 7,636,032 non-trainable).
Resizing(224, 224, bilinear) -> VGG16(include_top=False) -> Flatten, everything before
block5_conv1 frozen (the comment says "the last 30 layers", the code unfreezes from
block5_conv1: 7,079,424 trainable backbone params, which the summary confirms); head Dense 256
and 128 (HeUniform, l2(1e-4)), each with BN, ReLU, Dropout(0.5); Dense(10, softmax).
Single phase: Adam(2e-5), ImageDataGenerator(rotation_range=10, width/height_shift_range=0.1,
horizontal_flip=True, brightness_range=(0.9, 1.2), rescale=1./255).flow(batch_size=128),
steps_per_epoch=200, up to 500 epochs; EarlyStopping on val_loss and val_accuracy, patience 10,
restore_best_weights=True.
Deviations: the report feeds already-scaled arrays to a generator that rescales again (see the
extraction, §11.1); we use raw pixels and one /255, the reading that matches its accuracy.
validation_steps=200 x 128 exceeds the validation set; we evaluate it once per epoch.
Inputs are x/255 without vgg16.preprocess_input, as in the report.
Assumptions (see common.py): validation = last 10,000 training images.
"""

from configs.arquitecturas import common
from configs.arquitecturas import tl_basic

FLOW_BATCH_SIZE = 128
STEPS_PER_EPOCH = 200  # 200 x 128 = 25,600 images: part of the training set per epoch.
AUGMENT = dict(rotation_range=10.0, width_shift_range=0.1, height_shift_range=0.1,
               horizontal_flip=True, brightness_range=(0.9, 1.2))


def get_config(name='tl_vgg16',
               section='"Transfer Learning Fine Tuning con Data Augmentation VGG16"',
               reported=87.16, backbone='vgg16', freeze=None, head_dropout=0.5,
               learning_rate=2e-5, patience=10):
  c = common.get_base(name, section, reported)
  tl_basic.use_backbone(c, backbone, head_dropout)
  c.optim.learning_rate = learning_rate
  c.train.batch_size = FLOW_BATCH_SIZE
  c.train.epochs = 500
  common.use_flow_augmentation(c, **AUGMENT)
  c.train.steps_per_epoch = STEPS_PER_EPOCH
  tl_basic.use_patience(c, patience)
  # The report's loop: `if layer.name == "block5_conv1": trainable = True`.
  c.model.freeze.update(freeze or dict(trainable_from='block5_conv1'))
  return c
