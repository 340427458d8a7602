"""arquitecturas TL0, "Basic Transfer Learning" ("Transfer Learning Basic con resizing"): a dense
head trained on ImageNet VGG16 bottleneck features of images resized to 224x224.

    python launch.py --config=configs/arquitecturas/tl_basic.py --workdir=runs/arquitecturas/tl_basic

Needs Keras's ImageNet weight file (model.backbone.weights='imagenet' reads it from
~/.keras/models, downloading it where there is internet; or give a path).

Report: arquitecturas.txt, "Basic Transfer Learning". Reported test accuracy 75.19%.
Resizing(224, 224, bilinear) -> VGG16(include_top=False, weights='imagenet') -> Flatten:
14,714,688 params, used only through `predict` to precompute 25,088-d features once
(model.backbone.bottleneck: cached in <workdir>/bottleneck). Head: Dense 256 and 128
(HeUniform, l2(1e-4)), each with BN, ReLU, Dropout(0.6); Dense(10, softmax): 6,458,506 params
(the report prints no head summary). The summary shows the whole model with the backbone frozen:
21,173,194 params, 6,457,738 trainable.
Adam (lr 1e-3), batch 256, up to 500 epochs; EarlyStopping on val_loss and val_accuracy,
patience 30, restore_best_weights=True. No augmentation. Test accuracy on the test features
(the report's evaluate line names x_test_scaled, a copy-paste slip: the head takes features).
Inputs are x/255 without vgg16.preprocess_input, as in the report.
Assumptions (see common.py): validation = last 10,000 training images.
"""

from configs.arquitecturas import common

HEAD_L2 = dict(kernel_initializer='he_uniform', l2=1e-4)


def use_backbone(c, name: str, head_dropout: float):
  """`name` (ImageNet weights, include_top=False) on inputs resized to 224x224, then Flatten:
  the report's `Model(base.input, Flatten()(base.output))`; then its head, Dense 256 and 128
  (HeUniform, l2) each with BN, ReLU, Dropout(head_dropout), and Dense(10, softmax)."""
  c.model.name = name
  c.model.backbone.weights = 'imagenet'
  c.model.backbone.resize = (224, 224)
  c.model.backbone.flatten = True
  # The report's classifier without its leading Flatten (the backbone already flattens).
  c.model.layers = tuple(common.classifier((256, 128), head_dropout, **HEAD_L2)[1:])


def use_patience(c, patience: int):
  for stopper in c.callbacks.early_stopping.values():
    stopper.patience = patience


def get_config():
  c = common.get_base('tl_basic', '"Basic Transfer Learning"', 75.19)
  use_backbone(c, 'vgg16', head_dropout=0.6)
  c.model.backbone.bottleneck = True
  c.model.freeze.backbone = True  # Only ever used through predict.
  c.train.batch_size = 256
  c.train.epochs = 500
  use_patience(c, 30)
  return c
