"""The test-set confusion matrix, as a picture and as per-class precision/recall tables."""

import numpy as np

from cifar_jax.report import figures
from cifar_jax.report import tables
from cifar_jax.report.run_files import Predictions

SIZE = (9.0, 8.0)  # Inches; see figures.pixel_size.


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """counts[true, predicted]."""
  flat = np.bincount(np.asarray(labels) * num_classes + np.asarray(predicted),
                     minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes)


def per_class_metrics(matrix: np.ndarray) -> dict[str, np.ndarray]:
  """Per class: images, correct, recall (= the class's accuracy), precision and F1.

  A class never predicted has no precision (NaN), rather than sklearn's silent 0.
  """
  correct = np.diag(matrix).astype(float)
  support = matrix.sum(axis=1)
  predicted = matrix.sum(axis=0)
  with np.errstate(divide='ignore', invalid='ignore'):
    recall = correct / support
    precision = correct / predicted
    f1 = 2 * precision * recall / (precision + recall)
  return dict(support=support, correct=correct.astype(int), recall=recall, precision=precision,
              f1=f1)


def per_class_table(matrix: np.ndarray, class_names) -> tables.Table:
  """One row per class, then the test accuracy and the macro averages."""
  m = per_class_metrics(matrix)
  rows = [[name, tables.count(m['support'][i]), tables.count(m['correct'][i]),
           tables.percent(m['recall'][i]), tables.percent(m['precision'][i]),
           tables.percent(m['f1'][i])] for i, name in enumerate(class_names)]
  total = int(matrix.sum())
  rows.append(['all (test accuracy)', tables.count(total), tables.count(np.trace(matrix)),
               tables.percent(np.trace(matrix) / total), tables.MISSING, tables.MISSING])
  # A class never predicted counts as precision 0 here, so the average does not flatter.
  rows.append(['macro average', tables.MISSING, tables.MISSING] + [
      tables.percent(np.nan_to_num(m[key]).mean()) for key in ('recall', 'precision', 'f1')])
  return tables.Table(['class', 'test images', 'correct', 'accuracy = recall (%)',
                       'precision (%)', 'F1 (%)'], rows)


def plot_confusion(matrix: np.ndarray, class_names, title: str, path: str) -> str:
  """Counts in the cells, colour by share of the true class (rows sum to 1)."""
  with np.errstate(invalid='ignore'):
    shares = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
  figure = figures.new_figure(*SIZE)
  ax = figure.subplots()
  image = ax.imshow(shares, cmap='Blues', vmin=0.0, vmax=1.0)
  for (true, pred), value in np.ndenumerate(matrix):
    ax.text(pred, true, str(value), ha='center', va='center', fontsize='small',
            color='white' if shares[true, pred] > 0.5 else ('black' if value else 'lightgray'))
  ticks = np.arange(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=45, ha='right', rotation_mode='anchor')
  ax.set_yticks(ticks, class_names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  figure.colorbar(image, ax=ax, shrink=0.8, label='share of the true class (row-normalised)')
  return figures.save(figure, path)


def confusion_of(predictions: Predictions) -> np.ndarray:
  return confusion_matrix(predictions.labels, predictions.predicted,
                          len(predictions.class_names))
