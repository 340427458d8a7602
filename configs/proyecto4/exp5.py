"""proyecto4 exp5: exp4's network with l2(0.0005) and he_uniform, trained with SGD.

    python launch.py --config=configs/proyecto4/exp5.py

Report: proyecto4.txt, the model after "cuarto modelo" (l2_reg = ks.regularizers.l2(0.0005)).
Reported test accuracy 85.770% (printed `> 85.770`). 1,709,514 params (2,048 non-trainable), as
printed. kernel_regularizer=l2(5e-4) and kernel_initializer='he_uniform' on all six convs and
both hidden Dense layers (not the output layer).
Assumptions: the report sets SGD's learning_rate and momentum "tal como se puede observar", in an
image lost in conversion; we take SGD(learning_rate=0.01, momentum=0.9), the course's SGD (as in
entregable4 exp6). Batch size not shown: exp4's 128. Up to 200 epochs; EarlyStopping(val_loss,
10) and (val_accuracy, 10) (patience 15 only starts at exp7). Validation = last 10,000 training
images; pixels / 255 (see common.py).
"""

from configs.proyecto4 import common


def get_config(name='exp5', section='exp5 "l2(0.0005) + he_uniform + SGD"', reported=85.77,
               l2=5e-4, **layer_kwargs):
  c = common.get_base(name, section, reported, batch_size=128, patience=10)
  c.model.layers = common.vgg_layers(l2=l2, kernel_initializer='he_uniform', **layer_kwargs)
  c.optim.name = 'sgd'
  c.optim.learning_rate = 0.01
  c.optim.momentum = 0.9
  return c
