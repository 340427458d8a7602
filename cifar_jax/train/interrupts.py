"""SIGTERM/SIGINT handling: the first signal asks the loop to stop after the current step and
save a checkpoint; a second one exits at once.

The request is this process's own; on several processes the loop acts on it only once every
process has agreed to stop at the same step (host_agreement.agree, at each chunk boundary), so
a signal to one host stops them all after the same step, with one consistent checkpoint."""

import contextlib
import os
import signal
import sys
import threading

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Set by a signal handler; read by the loop between chunks of steps (a plain host flag)."""

  def __init__(self):
    self.signal_name = None

  @property
  def requested(self) -> bool:
    return self.signal_name is not None


def requested_signal(request) -> int:
  """The number of the signal that set `request` (a StopRequest, or None), 0 if none did."""
  if request is None or not request.requested:
    return 0
  return int(signal.Signals[request.signal_name])


class Interrupted(Exception):
  """Training stopped on a signal after saving a checkpoint."""


@contextlib.contextmanager
def stop_on_signals():
  """Yields a StopRequest that SIGTERM/SIGINT set; a second signal exits immediately."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request  # Signal handlers can only be installed from the main thread.
    return

  def handler(signum, frame):
    del frame
    if request.requested:
      sys.stderr.write(f'\n{signal.Signals(signum).name} again: exiting now, without saving.\n')
      sys.stderr.flush()
      os._exit(128 + signum)  # pylint: disable=protected-access
    request.signal_name = signal.Signals(signum).name
    sys.stderr.write(f'\n{request.signal_name}: stopping after this step and saving a '
                     'checkpoint (send it again to exit at once).\n')
    sys.stderr.flush()

  previous = {s: signal.signal(s, handler) for s in _SIGNALS}
  try:
    yield request
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
