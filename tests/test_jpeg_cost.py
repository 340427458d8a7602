"""benchmarks/jpeg_cost.py's paired comparison: per seed run on both copies, the accuracy curves
over the epochs both ran, whatever epoch each stopped at."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))

import jpeg_cost  # pylint: disable=g-import-not-at-top


def _record(seed, accuracy, val_accuracy):
  return {'seed': seed, 'history': {'epoch': list(range(1, len(accuracy) + 1)),
                                    'accuracy': accuracy, 'val_accuracy': val_accuracy}}


def test_paired_curves_compare_the_epochs_both_runs_have_seed_by_seed():
  base = [_record(0, [0.5, 0.6, 0.7, 0.9], [0.4, 0.5, 0.6, 0.9]), _record(1, [0.5], [0.5]),
          _record(2, [0.3, 0.4], [0.2, 0.3])]
  twice = [_record(2, [0.3, 0.3, 0.1], [0.2, 0.2, 0.1]), _record(0, [0.4, 0.6, 0.6], [0.4, 0.4,
                                                                                        0.6])]
  paired = jpeg_cost.paired_curves(base, twice)
  assert list(paired) == ['0', '2']  # Seed 1 ran on one copy only.
  # Seed 0: three epochs in common (the copy's fourth is left out).
  assert paired['0'] == {'epochs': 3, 'accuracy_points': 6.67, 'val_accuracy_points': 3.33}
  assert paired['2'] == {'epochs': 2, 'accuracy_points': 5.0, 'val_accuracy_points': 5.0}
