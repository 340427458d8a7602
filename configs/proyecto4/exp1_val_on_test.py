"""proyecto4 exp1, alternative reading: all 50,000 training images train, the test set validates.

    python launch.py --config=configs/proyecto4/exp1_val_on_test.py

Report: proyecto4.txt, "primer modelo", reported test accuracy 72.320%. The report never shows
where `(x_val_scaled, y_val)` comes from; configs/proyecto4/exp1.py assumes the last 10,000
training images (40,000 train). This variant tests the other common template,
`validation_data=(x_test, y_test)`: 25% more training images, and both EarlyStoppings watch the
test set. Everything else is exp1's (same network, 159,146 params; Adam 1e-3, batch 64, up to 200
epochs, EarlyStopping(val_loss, 10) and (val_accuracy, 10), test on the last-epoch weights).
"""

from configs import reports
from configs.proyecto4 import exp1


def get_config():
  return reports.validate_on_test(
      exp1.get_config(section='"primer modelo" (validation = test set reading)'))
