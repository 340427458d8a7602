"""entregable4 exp12, "Transfer Learning + Data Augmentation": ImageNet VGG16 cut at block3_pool,
blocks 1-2 frozen, a new conv and exp11's classifier on top.

    python launch.py --config=configs/exp12.py --workdir=runs/exp12

Needs Keras's ImageNet weight file (model.backbone.weights='imagenet' reads it from
~/.keras/models, downloading it where there is internet; or give a path).

Report: entregable4.txt, "Experimento 12 - Transfer Learning + Data Augmentation (85,9%
accuracy)". Reported test accuracy 85.910%. `VGG16(include_top=False, weights='imagenet',
input_shape=(32, 32, 3))` up to block3_pool (no resizing), + Conv2D(512, 3x3, 'same', relu):
2,915,648 params, 260,160 frozen (every layer before block3_conv1, the report's loop).
Single phase: Adam(0.01), exp8b's augmentation, batch 512, 78 steps per epoch, up to 200
epochs, EarlyStopping on val_loss and val_accuracy (patience 30), ReduceLROnPlateau(val_loss,
0.1, patience 20, min_lr 1e-5), as exp11.
Assumption: the report does not show the head. We take the extraction's candidate that mirrors
exp11 after the new conv: BN, Dropout 0.5, Flatten, Dense 1024-1024-512 each with BN and
Dropout 0.5, Dense(10, softmax): 12,897,098 params (12,630,794 trainable, 266,304
non-trainable).
Inputs are x/255 without vgg16.preprocess_input, as in the report (the ImageNet weights expect
'caffe' inputs: --config.model.backbone.preprocess=caffe --config.data.normalization=none).
Weights: ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, fetched from Keras's
URL where there is internet, or --config.model.backbone.weights=PATH.
"""

from configs import entregable4
from configs import exp11


def get_config():
  c = exp11.get_config()
  c.name = 'exp12'
  c.report = f'{entregable4.REPORT}, exp12 "Transfer Learning + Data Augmentation"'
  c.reported_test_accuracy = 85.91
  c.model.name = 'vgg16'
  c.model.backbone.weights = 'imagenet'
  c.model.backbone.output_layer = 'block3_pool'
  c.model.freeze.trainable_from = 'block3_conv1'
  # The new Conv2D(512) (+BN, Dropout) is a conv block without pooling; then exp11's classifier.
  c.model.layers = entregable4.vgg_large_layers(conv_blocks=((512, 1, False),))
  return c
