"""A grid of test images with the predicted and the true class; mistakes framed in red."""

import math

import numpy as np

from cifar_jax.report import figures
from cifar_jax.report.run_files import Predictions

COLUMNS = 8
CELL_INCHES = (1.6, 1.9)  # Room for a 32x32 image shown 4x and two lines of caption.
TITLE_INCHES = 0.6


def figure_size(num_images: int) -> tuple[float, float]:
  rows = math.ceil(num_images / COLUMNS)
  return COLUMNS * CELL_INCHES[0], rows * CELL_INCHES[1] + TITLE_INCHES


def plot_samples(images: np.ndarray, predictions: Predictions, title: str, path: str) -> str:
  """The first len(images) test images, in test-set order (no cherry-picking)."""
  count = len(images)
  figure = figures.new_figure(*figure_size(count))
  axes = figure.subplots(math.ceil(count / COLUMNS), COLUMNS, squeeze=False).ravel()
  names = predictions.class_names
  for i, ax in enumerate(axes):
    ax.set_xticks([])
    ax.set_yticks([])
    if i >= count:
      ax.set_axis_off()
      continue
    predicted, true = int(predictions.predicted[i]), int(predictions.labels[i])
    colour = figures.CORRECT_COLOUR if predicted == true else figures.WRONG_COLOUR
    ax.imshow(images[i], interpolation='nearest')
    confidence = 100.0 * float(predictions.probabilities[i, predicted])
    ax.set_title(f'{names[predicted]} {confidence:.0f}%\ntrue: {names[true]}', color=colour,
                 fontsize='medium', fontweight='normal' if predicted == true else 'bold')
    for spine in ax.spines.values():
      spine.set_edgecolor(colour)
      spine.set_linewidth(1 if predicted == true else 4)
  wrong = int(np.sum(predictions.predicted[:count] != predictions.labels[:count]))
  figure.suptitle(f'{title}\nfirst {count} test images: predicted class (probability) and '
                  f'true class; {wrong} misclassified, framed in red', fontsize='large')
  return figures.save(figure, path)
