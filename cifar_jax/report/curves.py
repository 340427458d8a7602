"""Learning curves in the reports' style: "Cross Entropy Loss" and "Classification Accuracy".

One run: train vs validation, the learning rate on a second (log) axis, the best and the
early-stopping epochs marked, and the report's own per-epoch log where it printed one
(report_logs.py). Several runs: one colour per run (validation solid, train dashed) and a third
panel with each run's learning rate.
"""

import dataclasses
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cifar_jax.report import figures
from cifar_jax.report import report_logs
from cifar_jax.report.run_files import Run

RUN_SIZE = (13.0, 5.0)  # Inches; see figures.pixel_size.
OVERLAY_SIZE = (18.0, 5.5)


@dataclasses.dataclass(frozen=True)
class Panel:
  metric: str  # History column; validation is 'val_' + metric.
  title: str
  ylabel: str
  scale: float = 1.0  # Accuracies are plotted in percent, as the tables print them.


LOSS = Panel('loss', 'Cross Entropy Loss', 'loss')
ACCURACY = Panel('accuracy', 'Classification Accuracy', 'accuracy (%)', scale=100.0)
PANELS = (LOSS, ACCURACY)


def plot_run_curves(run: Run, path: str) -> str:
  figure = figures.new_figure(*RUN_SIZE)
  for ax, panel in zip(figure.subplots(1, len(PANELS)), PANELS):
    _plot_metric(ax, run, panel, dict(color=figures.TRAIN_COLOUR, marker='.', label='train'),
                 dict(color=figures.VALIDATION_COLOUR, marker='.', label='validation'))
    _plot_report_log(ax, run, panel)
    if panel is ACCURACY:
      _mark_test_accuracies(ax, run)
    _mark_epochs(ax, run)
    _decorate(ax, panel)
    lr_ax = ax.twinx()
    _plot_learning_rate(lr_ax, run, color=figures.LR_COLOUR, linewidth=1, linestyle='-.',
                        label='learning rate (right axis)')
    lr_ax.set_ylabel('learning rate (log scale)', color=figures.LR_COLOUR)
    lr_ax.tick_params(axis='y', colors=figures.LR_COLOUR)
    # The metrics stay in front of the learning rate (a twin axes is drawn on top otherwise).
    ax.set_zorder(lr_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
  handles = _unique_handles(figure)
  figure.legend(handles=handles, loc='outside lower center', ncols=len(handles), frameon=False)
  figure.suptitle(_run_title(run), fontsize='x-large')
  return figures.save(figure, path)


def plot_overlaid_curves(runs: Sequence[Run], path: str) -> str:
  figure = figures.new_figure(*OVERLAY_SIZE)
  *metric_axes, lr_ax = figure.subplots(1, len(PANELS) + 1)
  # Runs often share a learning rate; thinner lines on top leave the ones below visible.
  lr_widths = np.linspace(min(1.5 + 0.75 * (len(runs) - 1), 6.0), 1.5, len(runs))
  for run, colour, lr_width in zip(runs, _colours(len(runs)), lr_widths):
    for ax, panel in zip(metric_axes, PANELS):
      _plot_metric(ax, run, panel, dict(color=colour, linestyle='--', alpha=0.6),
                   dict(color=colour))
    best = run.best_epoch()
    metric_axes[PANELS.index(ACCURACY)].plot(
        [best.epoch], [ACCURACY.scale * best.value], marker='*', markersize=12, color=colour,
        markeredgecolor='black', linestyle='none')
    _plot_learning_rate(lr_ax, run, color=colour, linewidth=lr_width)
  for ax, panel in zip(metric_axes, PANELS):
    _decorate(ax, panel)
  _decorate(lr_ax, Panel('learning_rate', 'Learning Rate', 'learning rate (log scale)'))
  run_handles = [Line2D([], [], color=c, label=f'{r.label} ({r.test_accuracy_percent:.2f}%)')
                 for r, c in zip(runs, _colours(len(runs)))]
  style_handles = [
      Line2D([], [], color='black', label='validation'),
      Line2D([], [], color='black', linestyle='--', alpha=0.6, label='train'),
      Line2D([], [], color='black', marker='*', markersize=12, linestyle='none',
             label='best epoch')]
  figure.legend(handles=run_handles + style_handles, loc='outside right upper',
                title='run (test accuracy)', frameon=False)
  figure.suptitle(f'Learning curves of {len(runs)} runs', fontsize='x-large')
  return figures.save(figure, path)


def _plot_metric(ax, run: Run, panel: Panel, train_style: dict, validation_style: dict) -> None:
  ax.plot(run.epochs, panel.scale * run.column(panel.metric), **train_style)
  if run.has(f'val_{panel.metric}'):
    ax.plot(run.epochs, panel.scale * run.column(f'val_{panel.metric}'), **validation_style)


def _plot_report_log(ax, run: Run, panel: Panel) -> None:
  """The report's own per-epoch log of this config, where it printed one (report_logs.py), in
  the run's colours but thin and dashed: how far our curves are from what the report saw."""
  log = report_logs.log_of(run.name)
  if log is None:
    return
  ours = report_logs.OURS_FOR_REPORTS[panel.metric]
  if run.has(ours):  # The report's train column is this statistic, not History's mean.
    ax.plot(run.epochs, panel.scale * run.column(ours), color=figures.TRAIN_COLOUR,
            linestyle=':', linewidth=1.5, label="train, as the report's Keras printed it")
  epochs = log.column('epoch')
  for key, colour, label in ((panel.metric, figures.TRAIN_COLOUR, 'train'),
                             (f'val_{panel.metric}', figures.VALIDATION_COLOUR, 'validation')):
    ax.plot(epochs, [panel.scale * v for v in log.column(key)], color=colour, linestyle='--',
            linewidth=1, alpha=0.7, label=f"report's log: {label}")


def _mark_epochs(ax, run: Run) -> None:
  best = run.best_epoch()
  ax.axvline(best.epoch, color=figures.BEST_COLOUR, linestyle=':', linewidth=2,
             label=f'best {best.monitor} (epoch {best.epoch})')
  if run.stopped_epoch is not None:
    ax.axvline(run.stopped_epoch, color=figures.STOP_COLOUR, linestyle='--', linewidth=1.5,
               label=f'early stopping on {run.results["stopped_by"]} (epoch {run.stopped_epoch})')


def _mark_test_accuracies(ax, run: Run) -> None:
  """cifar_jax's test accuracy, and the report's where the config names one."""
  ax.axhline(run.test_accuracy_percent, color='black', linestyle=':', linewidth=1,
             label=f'test accuracy ({run.test_accuracy_percent:.2f}%)')
  reported = run.results.get('reported_test_accuracy')
  if reported is not None:
    ax.axhline(reported, color=figures.REPORTED_COLOUR, linestyle=(0, (5, 5)), linewidth=1,
               label=f'reported test accuracy ({reported:.2f}%)')


def _decorate(ax, panel: Panel) -> None:
  ax.set_title(panel.title, fontsize='large')
  ax.set_xlabel('epoch')
  ax.set_ylabel(panel.ylabel)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)


def _plot_learning_rate(ax, run: Run, **style) -> None:
  # A step per epoch: each epoch trains with one rate, so a sloped line would mislead.
  ax.plot(run.epochs, run.column('learning_rate'), drawstyle='steps-mid', **style)
  ax.set_yscale('log')


def _unique_handles(figure) -> list:
  """Every labelled line of the figure once: the panels share their legend."""
  by_label = {}
  for ax in figure.axes:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      by_label.setdefault(label, handle)
  return list(by_label.values())


def _colours(count: int) -> list:
  cmap = matplotlib.colormaps['tab10' if count <= 10 else 'tab20']
  return [cmap(i % cmap.N) for i in range(count)]


def _run_title(run: Run) -> str:
  return (f'{run.description}: test accuracy {run.test_accuracy_percent:.2f}% after '
          f'{len(run.history)} epochs')
