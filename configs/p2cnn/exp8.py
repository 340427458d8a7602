"""p2cnn exp8, "8 - Data augmentation" (model2): exp7's network behind in-model augmentation.

    python launch.py --config=configs/p2cnn/exp8.py

Report: p2cnn.txt, section "2 Data augmentation" / "8 - Data augmentation". No test accuracy
was reported: the Colab GPU quota ran out in epoch 96 and the weights were lost (the conclusion
table's 81 is the last validation accuracy, 0.8123). 2,867,210 params, as printed (the
augmentation Sequential adds none).
keras.Sequential([RandomFlip('horizontal'), RandomRotation(0.1)]) right after the Input (active in
fit only; RandomRotation's defaults: fill_mode 'reflect', bilinear, factor 0.1 = +-36 degrees),
then exp7's layers. Adam (lr 1e-3), batch 1024, up to 200 epochs, validation_split 0.3 (35,000
train / 15,000 validation); EarlyStopping(val_loss, patience 15, start_from_epoch 5,
restore_best_weights=True).
"""

from configs.p2cnn import common


def get_config():
  c = common.get_base('exp8', '"8 - Data augmentation"', None, batch_size=1024, epochs=200)
  c.data.validation_split = 0.3
  c.model.layers = common.exp7_layers()
  # The model's inputs are already x / 255: the layers see what augment.layers gets.
  c.augment.layers = (dict(type='random_flip', mode='horizontal'),
                      dict(type='random_rotation', factor=0.1))
  common.use_early_stopping(c, patience=15, start_from_epoch=5, restore_best_weights=True)
  return c
