"""proyecto4 exp2, "segundo modelo": exp1 + Dropout(0.4) after each pooling.

    python launch.py --config=configs/proyecto4/exp2.py

Report: proyecto4.txt, "segundo modelo". Reported test accuracy 77.43% (prose only, no
printout). 159,146 params, as printed. Adam (inferred), batch 64, up to 200 epochs;
EarlyStopping(val_loss, 10) and (val_accuracy, 10).
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.proyecto4 import exp1


def get_config(section='"segundo modelo"'):
  return exp1.get_config('exp2', section, 77.43, dropout=0.4)
