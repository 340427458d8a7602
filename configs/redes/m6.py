"""redes m6, "Modelo Final": m5 trained for 100 epochs, the report's best (90.1%).

    python launch.py --config=configs/redes/m6.py

Report: redes.txt, "Modelo Final". Reported test accuracy 90.120% (printed `>> 90.120`).
3,253,834 params (2,816 non-trainable), m4's network. m5's ImageDataGenerator and
fit(datagen.flow(x_train, y_train, batch_size=32), epochs=100): batches of 32, one pass per
epoch. The text says it trained past epoch 60, so the callbacks did not stop it early.
Assumptions (see common.py): Adam (lr 1e-3); EarlyStopping(loss, 5) and (accuracy, 5);
validation = last 10,000 training images; pixels / 255.
"""

from configs.redes import m5


def get_config():
  return m5.get_config('m6', '"Modelo Final"', 90.12, epochs=100)
