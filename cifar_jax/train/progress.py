"""Console output like Keras's fit(verbose=1|2): a progress bar within an epoch (on a terminal),
then one line per epoch."""

import sys
import time
from typing import Mapping

EPOCH_LINE_KEYS = ('loss', 'accuracy', 'val_loss', 'val_accuracy')


def format_epoch_line(epoch: int, num_epochs: int, logs: Mapping[str, float], seconds: float) -> str:
  parts = [f'Epoch {epoch}/{num_epochs}', f'{seconds:.1f}s']
  parts += [f'{k}: {logs[k]:.4f}' for k in EPOCH_LINE_KEYS if k in logs]
  if 'learning_rate' in logs:
    parts.append(f"learning_rate: {logs['learning_rate']:.4g}")
  return ' - '.join(parts)


class ProgressBar:
  """`step/total [=====>....] ETA` on stderr, redrawn at most every `interval` seconds.

  Reading metrics would block on the device, so the bar shows only step counts and times.
  """

  def __init__(self, total_steps: int, enabled: bool, interval: float = 0.5, width: int = 30):
    self.total = total_steps
    self.enabled = enabled and sys.stderr.isatty()
    self.interval = interval
    self.width = width
    self.start = time.perf_counter()
    self._last_draw = 0.0

  def update(self, step: int) -> None:
    if not self.enabled:
      return
    now = time.perf_counter()
    if now - self._last_draw < self.interval and step < self.total:
      return
    self._last_draw = now
    elapsed = now - self.start
    done = int(self.width * step / self.total)
    eta = elapsed / step * (self.total - step) if step else 0.0
    bar = '=' * max(done - 1, 0) + ('>' if done < self.width else '=') + '.' * (self.width - done)
    sys.stderr.write(f'\r{step}/{self.total} [{bar}] {elapsed:.0f}s elapsed, ETA {eta:.0f}s ')
    sys.stderr.flush()

  def close(self) -> None:
    if self.enabled:
      sys.stderr.write('\r' + ' ' * (self.width + 50) + '\r')
      sys.stderr.flush()
