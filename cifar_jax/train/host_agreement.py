"""What the processes of a multi-process run must decide alike, decided once for all of them.

Each process (one per host under jax.distributed) has its own signals, its own clock and its
own timing of the device, but every step, evaluation and checkpoint save is a collective: if
one process stops (its SIGTERM), ends a chunk of steps, or saves a checkpoint where another
does not, the others wait in a collective that never completes, or the processes write a
checkpoint of two different steps. So wherever the host decides something from such a local
input, the processes first exchange their inputs (one all-gather of a few int32 over the
devices: on a pod's interconnect microseconds, once per ~1 s chunk of steps or per epoch) and
all take the same decision:

  stop       if any process was asked to stop (the first such process's signal names it),
  num_steps  process 0's choice of the next chunk's length (dispatch.DispatchSizer),
  save       process 0's answer to "is a time-based checkpoint due" (its clock).

With one process nothing is exchanged and nothing waits: `agree` returns its arguments.
"""

import dataclasses
import signal

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Decision:
  num_steps: int = 0
  stop_signal: int = 0  # The signal number that stops the run, 0 if none.
  stop_process: int = 0  # The process that received it.
  save: bool = False

  @property
  def stop(self) -> bool:
    return self.stop_signal != 0

  def stop_reason(self) -> str:
    """'SIGTERM', or 'SIGTERM (process 1)' on several processes: the same text on each."""
    name = signal.Signals(self.stop_signal).name if self.stop else 'no signal'
    return f'{name} (process {self.stop_process})' if jax.process_count() > 1 else name


def agree(*, num_steps: int = 0, stop_signal: int = 0, save: bool = False) -> Decision:
  """The decision every process takes, from this process's inputs: the only place the
  processes' host-side choices meet. Called by every process at the same point of the loop."""
  if jax.process_count() == 1:
    return Decision(num_steps, stop_signal, 0, save)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  rows = np.asarray(multihost_utils.process_allgather(
      np.array([num_steps, stop_signal, save], np.int32)))  # [process, 3], process order.
  stopping = np.flatnonzero(rows[:, 1])
  first = int(stopping[0]) if stopping.size else 0
  return Decision(num_steps=int(rows[0, 0]), stop_signal=int(rows[first, 1]),
                  stop_process=first, save=bool(rows[0, 2]))
