"""proyecto4 exp1, "primer modelo": three relu convs 32 / 64 / 128, each pooled; Dense 32.

    python launch.py --config=configs/proyecto4/exp1.py

Report: proyecto4.txt, "primer modelo". Reported test accuracy 72.320% (printed `> 72.320`; the
prose's 73.3% does not match the printout). 159,146 params, as printed. The code is not shown:
the layers come from the summary and from exp2's code (exp2 = exp1 + Dropout).
Conv2D(32 / 64 / 128, 3x3, same, relu) each followed by MaxPooling2D(2); Flatten - Dense(32,
relu) - Dense(10, softmax). Adam (inferred from the exp5/exp7 text: lr 1e-3), batch 64, up to 200
epochs; EarlyStopping(val_loss, 10) and (val_accuracy, 10).
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.proyecto4 import common


def get_config(name='exp1', section='"primer modelo"', reported=72.32, dropout=0.0):
  c = common.get_base(name, section, reported, batch_size=64, patience=10)
  convs = [common.conv_block(f, 1, batch_norm=False, dropout=dropout) for f in (32, 64, 128)]
  c.model.layers = tuple(layer for block in convs for layer in block) + common.classifier(
      common.dense_block(32, batch_norm=False))
  return c
