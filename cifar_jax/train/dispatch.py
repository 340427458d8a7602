"""How many train steps the host dispatches between two waits for the device: "when" logic
for `run_epoch`.

Steps are dispatched back to back without waiting (`steps.train_steps_on_device`); the host
waits only at the end of a chunk, to update the progress bar, check Ctrl-C/SIGTERM and take
mid-epoch checkpoints. Long chunks keep the device queue full; short ones keep those
responsive. By default a chunk aims at about a second of device time.

With train.device_loop a chunk is one dispatch (an on-device loop, steps.loop_steps), so the
host's cost per chunk is one program launch, however many steps it runs.

Each process times its own device, so on several processes the sizers' choices differ; every
process runs process 0's (host_agreement.agree in run_epoch): a chunk's steps are collectives,
and a device loop's trip count must be the same everywhere.
"""

import time

import jax


class DispatchSizer:
  """Picks the next dispatch's step count from the measured time per step.

  fixed: if > 0, always this many steps per chunk (config train.steps_per_dispatch).
  target_seconds: otherwise, aim each dispatch at about this long.
  """

  def __init__(self, fixed: int = 0, target_seconds: float = 1.0, growth: int = 8):
    if fixed < 0:
      raise ValueError(f'train.steps_per_dispatch={fixed} must be >= 0 (0: automatic)')
    self.fixed = fixed
    self.target_seconds = target_seconds
    self.growth = growth  # Grow at most this factor per dispatch: the first timing has compiles.
    self._steps = 1

  def next_steps(self, limit: int) -> int:
    """Steps for the next dispatch, at most `limit` (the distance to the next boundary)."""
    return max(1, min(limit, self.fixed or self._steps))

  def run(self, dispatch, num_steps: int):
    """Calls `dispatch(num_steps)`, waits for it, and learns from its duration."""
    start = time.perf_counter()
    outputs = jax.block_until_ready(dispatch(num_steps))
    seconds_per_step = max(time.perf_counter() - start, 1e-6) / num_steps
    wanted = int(self.target_seconds / seconds_per_step)
    self._steps = max(1, min(wanted, num_steps * self.growth))
    return outputs
