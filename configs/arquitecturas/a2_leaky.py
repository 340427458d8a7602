"""arquitecturas A2L, "Arquitectura 2 con LeakyReLu": A2 with LeakyReLU(0.1), no BN in the head.

    python launch.py --config=configs/arquitecturas/a2_leaky.py

Report: arquitecturas.txt, "Arquitectura 2 con LeakyReLu". No test accuracy is printed (the code
block ends at the print; the text says it stays below 80%, validation peaking near 70%).
800,970 params (800,266 trainable, 704 non-trainable; the printed "784" is an OCR garble of 704).
Deviation note: the code is A2 with every ReLU replaced by LeakyReLU(alpha=0.1), but the printed
model.summary() (what ran) has no BatchNormalization after the two Dense layers, and only that
model gives 800,970; we follow the summary: Dense 256 - LeakyReLU - Dropout(0.4) - Dense 128 -
LeakyReLU - Dropout(0.4). alpha is Keras 3's deprecated alias of negative_slope.
Adam (lr 1e-3), batch 512, up to 200 epochs; EarlyStopping on val_loss and val_accuracy,
patience 10, restore_best_weights=True.
Assumptions (see common.py): validation = last 10,000 training images; pixels / 255.
"""

from configs.arquitecturas import a2


def get_config():
  return a2.get_config('a2_leaky', '"Arquitectura 2 con LeakyReLu"', None,
                       activation_layer=dict(type='leaky_re_lu', negative_slope=0.1),
                       dense_batch_norm=False)
