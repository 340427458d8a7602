"""proyecto4 exp6: l2 lowered to 0.0001, a Dense(256) first head layer, Dropout 0.7.

    python launch.py --config=configs/proyecto4/exp6.py

Report: proyecto4.txt, the model after exp5 (l2_reg = ks.regularizers.l2(0.0001)). Reported test
accuracy 84.650% (printed `> 84.650`). 2,267,210 params (2,264,906 trainable, 2,304
non-trainable), as printed. exp5's conv part with l2(1e-4) and he_uniform; Flatten -
Dense(256) - BN - Dropout(0.7) - Dense(256) - Dropout(0.7) - Dense(10, softmax).
Assumptions: SGD(learning_rate=0.01, momentum=0.9) as in exp5 (the report implies SGD but shows
no values); batch 128 (exp4's); up to 200 epochs, EarlyStopping patience 10 on val_loss and
val_accuracy; validation = last 10,000 training images; pixels / 255 (see common.py).
"""

from configs.proyecto4 import exp5


def get_config():
  return exp5.get_config('exp6', 'exp6 "l2(0.0001), Dense 256-256"', 84.65, l2=1e-4,
                         first_dense=256, dropouts=(0.5, 0.5, 0.6, 0.7, 0.7))
