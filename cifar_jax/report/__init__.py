"""Reports on finished runs: learning curves, confusion matrices, sample grids, results tables.

    python -m cifar_jax.report runs/exp0 [runs/exp1 ...] [--out DIR] [--table]

A report reads only the files a run writes (cifar_jax/train/outputs.py) and, for the sample
grid, the test images of the data the run used; it never builds or runs a model.
"""

from cifar_jax.report.run_files import Run, RunFilesError, load_run
from cifar_jax.report.writer import write_comparison, write_run_report

__all__ = ['Run', 'RunFilesError', 'load_run', 'write_comparison', 'write_run_report']
