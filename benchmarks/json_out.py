"""A benchmark's --out: its JSON results, written to a local file or a gs:// URL through
cifar_jax.paths, so that a Cloud TPU VM can keep its numbers in the runs' bucket.

`check(path)` runs before any measurement: a gs:// path without gcsfs is one `error:` line naming
the install (exit code 2) at once, not after the hour the measurements took. A local file is
replaced atomically (a run stopped while writing keeps the previous numbers) and its folder made.

`cpu()` names the CPU every benchmark's JSON records (cifar_jax.host_cpu: model and vector units).

cifar_jax's modules are imported without cifar_jax's XLA:CPU defaults (which importing cifar_jax
adds to XLA_FLAGS) staying in this process's environment: the parents of suite.py and
xla_cpu_flags.py hand their environment to children whose XLA flags are part of what is measured.
"""

import importlib

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cifar_jax_module(name: str):
  """cifar_jax.<name>, this process's XLA_FLAGS left as they were."""
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  saved = os.environ.get('XLA_FLAGS')
  module = importlib.import_module(f'cifar_jax.{name}')
  if saved is None:
    os.environ.pop('XLA_FLAGS', None)
  else:
    os.environ['XLA_FLAGS'] = saved
  return module


def use_cifar_jax_xla_flags() -> str:
  """Adds cifar_jax's XLA:CPU defaults to this process's XLA_FLAGS (importing cifar_jax through
  this module left them out) and returns them: a benchmark that times cifar_jax as it trains
  calls this before its first jax computation, when XLA reads the flags."""
  _cifar_jax_module('xla_cpu').apply_cpu_defaults()
  return os.environ.get('XLA_FLAGS', '')


def _paths():
  return _cifar_jax_module('paths')


def code_version() -> dict:
  """{'commit': HEAD, 'dirty': changes outside results/} of the cifar_jax checkout that ran (the
  zoo's check), or {} outside a git checkout: which code a results file measured."""
  zoo = _cifar_jax_module('zoo')
  try:
    commit, dirty = zoo.git_state('results')
  except zoo.ZooError:
    return {}
  return {'commit': commit, 'dirty': dirty}


def glibc_tunables_with_huge_pages(environ) -> str | None:
  """GLIBC_TUNABLES that put glibc's malloc on huge pages as launch.py does, or None where it
  would not (cifar_jax.huge_pages.tunables_with_huge_pages)."""
  return _cifar_jax_module('huge_pages').tunables_with_huge_pages(environ)


def cpu() -> str:
  """This machine's CPU, e.g. "AMD EPYC (AVX-512)" (cifar_jax.host_cpu.describe)."""
  return _cifar_jax_module('host_cpu').describe()


def check(path: str) -> None:
  """Exits with one error line (code 2) if `path` is a URL this machine cannot write."""
  if not path:
    return
  paths = _paths()
  try:
    paths.check_usable(path)
  except paths.MissingExtraError as e:
    print(f'error: --out: {e}', file=sys.stderr)
    sys.exit(2)


def write(path: str, document) -> None:
  """`document` as indented JSON at `path` (local or gs://); nothing for an empty path."""
  if not path:
    return
  paths = _paths()
  if not paths.is_url(path):
    paths.makedirs(os.path.dirname(os.path.abspath(path)))
  paths.write_text(path, json.dumps(document, indent=2))
