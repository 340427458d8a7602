"""The benchmarks' one way to read a config: `load_config('configs/exp11.py')` is that file's
get_config(). A relative path is the repository's (benchmarks run from anywhere)."""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str):
  if REPO not in sys.path:  # Config files import `configs.base`.
    sys.path.insert(0, REPO)
  spec = importlib.util.spec_from_file_location('benchmarked_config', os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
