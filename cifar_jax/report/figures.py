"""Matplotlib figures written straight to PNG files, with no display and no pyplot state.

`Figure` objects are used directly (not pyplot), so rendering many runs in one process neither
needs a GUI backend nor keeps every figure alive in pyplot's registry.
"""

import matplotlib
from matplotlib.figure import Figure

matplotlib.use('Agg')  # Files only: works on headless machines.

DPI = 100  # PNG pixels = figure inches x DPI (layout='constrained' keeps the size exact).
TRAIN_COLOUR = 'tab:blue'  # The reports' Keras plots: blue train, orange validation.
VALIDATION_COLOUR = 'tab:orange'
LR_COLOUR = 'tab:gray'
BEST_COLOUR = 'tab:green'
STOP_COLOUR = 'tab:red'
REPORTED_COLOUR = 'tab:purple'
CORRECT_COLOUR = 'darkgreen'  # Darker than tab:green: it colours small caption text.
WRONG_COLOUR = 'tab:red'


def new_figure(width: float, height: float) -> Figure:
  """A figure `width` x `height` inches, i.e. (width x DPI, height x DPI) pixels."""
  return Figure(figsize=(width, height), dpi=DPI, layout='constrained')


def pixel_size(width: float, height: float) -> tuple[int, int]:
  """The (width, height) in pixels of the PNG that `save` writes for such a figure."""
  return round(width * DPI), round(height * DPI)


def save(figure: Figure, path: str) -> str:
  figure.savefig(path, dpi=DPI, facecolor='white')
  return path
