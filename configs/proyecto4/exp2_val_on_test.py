"""proyecto4 exp2, alternative reading: all 50,000 training images train, the test set validates.

    python launch.py --config=configs/proyecto4/exp2_val_on_test.py

Report: proyecto4.txt, "segundo modelo", reported test accuracy 77.43%. exp2 (exp1 + Dropout(0.4)
after each pooling; 159,146 params) with exp1_val_on_test.py's reading of the data:
`validation_data=(x_test, y_test)` instead of the last 10,000 training images
(docs/reproduction.md: on exp1 that reading was 2.5 points higher, 71.29 +- 1.28 over 3 seeds).
Adam 1e-3, batch 64, up to 200 epochs, EarlyStopping(val_loss, 10) and (val_accuracy, 10).
"""

from configs import reports
from configs.proyecto4 import exp2


def get_config():
  return reports.validate_on_test(exp2.get_config(section='"segundo modelo" (validation = test set reading)'))
