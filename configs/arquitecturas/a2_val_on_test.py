"""arquitecturas A2, alternative reading: all 50,000 training images train, the test set validates.

    python launch.py --config=configs/arquitecturas/a2_val_on_test.py

Report: arquitecturas.txt, "Arquitectura 2", reported test accuracy 81.770%. The report never
shows where `(x_val_scaled, y_val)` comes from; configs/arquitecturas/a2.py assumes the last
10,000 training images (40,000 train). This variant tests the other common template,
`validation_data=(x_test, y_test)`: 25% more training images (98 steps an epoch instead of 79),
and both EarlyStoppings (val_loss and val_accuracy, patience 10, restore_best_weights) watch
the test set. Everything else is a2's (802,506 params; Adam 1e-3, batch 512, up to 200 epochs).
"""

from configs import reports
from configs.arquitecturas import a2


def get_config():
  return reports.validate_on_test(
      a2.get_config(section='"Arquitectura 2" (validation = test set reading)'))
