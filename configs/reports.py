"""What the per-report shared modules (configs/<report>/common.py) build on: one experiment of
one report as a base config, and the reports' pairs of EarlyStopping callbacks."""

from configs import base


def experiment(folder: str, report: str, name: str, section: str,
               reported_test_accuracy: float | None, *, batch_size: int, epochs: int):
  """base.get_config() named '<folder>/<name>', with the report's section and accuracy, trained
  like `compile(optimizer='adam')` (Keras defaults: lr 1e-3, epsilon 1e-7) + `fit(batch_size,
  epochs)`."""
  c = base.get_config()
  c.name = f'{folder}/{name}'
  c.report = f'{report}, {section}'
  c.reported_test_accuracy = reported_test_accuracy
  c.optim.name = 'adam'
  c.optim.learning_rate = 1e-3
  c.train.batch_size = batch_size
  c.train.epochs = epochs
  return c


def add_early_stopping(c, monitors, patience: int, **kwargs):
  """One keras.callbacks.EarlyStopping(monitor, patience, **kwargs) per monitor, each named
  after its monitor (the first to fire stops training)."""
  for monitor in monitors:
    base.add_early_stopping(c, monitor, monitor, patience=patience, **kwargs)


def validate_on_test(c):
  """The other reading of a report's unseen `(x_val_scaled, y_val)`: `validation_data=(x_test,
  y_test)`, so all 50,000 training images train and the callbacks watch the test set. Named
  '<name>_val_on_test'."""
  c.name += '_val_on_test'
  c.data.num_validation = 0
  c.data.validation_source = 'test'
  return c
