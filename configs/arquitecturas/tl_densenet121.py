"""arquitecturas TL-DN, "Transfer Learning Fine Tuning con Data Augmentation DenseNet121": TL-VGG
with ImageNet DenseNet121, its last 30 layers fine-tuned, Adam(1e-5) and patience 30.

    python launch.py --config=configs/arquitecturas/tl_densenet121.py --workdir=runs/arquitecturas/tl_densenet121

Needs Keras's ImageNet weight file (model.backbone.weights='imagenet' reads it from
~/.keras/models, downloading it where there is internet; or give a path).

Report: arquitecturas.txt, "Transfer Learning Fine Tuning con Data Augmentation DenseNet121".
Reported test accuracy 90.370%. 19,918,538 params (13,519,882 trainable, 6,398,656
non-trainable). Resizing(224, 224, bilinear) -> DenseNet121(include_top=False) -> Flatten
(50,176-d, not global pooling); `model_prebase.layers[-30:]` trainable: the Keras layer list
counts the InputLayer and the Flatten, so the trainable part starts at conv5_block13_0_relu
(639,616 backbone params; frozen BatchNorm layers run in inference mode). Head as TL-VGG with
Dropout(0.4): the Dense(50,176 -> 256) alone has 12,845,312 params.
Single phase: Adam(1e-5), TL-VGG's augmentation and flow (batch 128, 200 steps per epoch), up to
500 epochs; EarlyStopping on val_loss and val_accuracy, patience 30, restore_best_weights=True.
Deviations as TL-VGG (one /255; validation evaluated once per epoch). No
densenet.preprocess_input, as in the report.
Assumptions (see common.py): validation = last 10,000 training images.
"""

from configs.arquitecturas import tl_vgg16

UNFROZEN_LAYERS = 30  # "Descongelamos las ultimas 30 capas".


def get_config():
  return tl_vgg16.get_config(
      'tl_densenet121', '"Transfer Learning Fine Tuning con Data Augmentation DenseNet121"',
      90.37, backbone='densenet121', freeze=dict(trainable_last=UNFROZEN_LAYERS),
      head_dropout=0.4, learning_rate=1e-5, patience=30)
