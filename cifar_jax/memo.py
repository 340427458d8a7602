"""A small least-recently-used memo for builders of pure functions.

jax caches a jitted program by its static arguments, which include the functions a TrainState
holds (the model's apply, the optimizer's update, the augmentation): compared by identity. A
process that builds them afresh for an identical config (its second run, a test file's next
test, a notebook cell run again) traces and compiles every program again. Builders whose output
is a pure function of their key hand out the same object instead, so no result changes.
"""

import collections
from typing import Any, Callable, Hashable


class Memo:
  """Up to `max_size` built values by key, the least recently used dropped first. A key that is
  None or cannot be hashed is not memoised: its value is built every time."""

  def __init__(self, max_size: int = 16):
    self._values: collections.OrderedDict = collections.OrderedDict()
    self._max_size = max_size

  def get(self, key: Hashable | None, build: Callable[[], Any]) -> Any:
    try:
      hash(key)
    except TypeError:  # e.g. a list inside a layer's settings
      key = None
    if key is None:
      return build()
    if key in self._values:
      self._values.move_to_end(key)
      return self._values[key]
    value = self._values[key] = build()
    if len(self._values) > self._max_size:
      self._values.popitem(last=False)
    return value
