"""The faster of several forms of one op on this CPU, measured once per problem and cached on disk.

Which CPU weight gradient of `conv` is faster (an explicit-layout convolution or a matmul per
kernel tap) depends on the layer's shape and on the CPU: a constant rule ('auto': a matmul for
1x1 kernels) is right on most shapes of the machines it was measured on. CIFAR_JAX_CONV_GRAD=tuned
measures instead, like cuDNN's autotuning: the first trace of a problem (operand shapes and
dtypes, kernel size, strides, padding, precision) times each form on random operands of its
shapes, as a train loop runs it (jitted inside a 2-step `lax.fori_loop`: XLA:CPU compiles loop
bodies differently), on the CPU device, and keeps the faster. The forms compute the same
gradient to float32 rounding (tests/test_conv_grad.py), so the choice changes speed only. Dense
layers' weight gradients (models/dense.py) are tuned the same way, under the same mode.

Choices are kept for the process (`choices()` lists them, to record with a run's results) and in
a JSON file, keyed by the machine (`machine_key()`: host_cpu.describe(), jax and jaxlib
versions, XLA_FLAGS), so that the next process on the same machine and versions reads them
instead of measuring: ~/.cache/cifar_jax/conv_grad_<hash of the key>.json ($XDG_CACHE_HOME
respected), or the path in CIFAR_JAX_CONV_GRAD_CACHE ('' keeps choices in memory only). An
unreadable or corrupt file is ignored (one warning) and rewritten; it never fails a run.
"""

import hashlib
import json
import logging
import os
import tempfile
import time
from typing import Callable, Mapping

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from cifar_jax import host_cpu

CACHE_ENV_VAR = 'CIFAR_JAX_CONV_GRAD_CACHE'
# The fastest of this many calls of each compiled form counts, after a warm-up call: other
# processes on the machine (a shared CPU) only ever add time.
TIMED_CALLS = 5
LOOP_STEPS = 2

_log = logging.getLogger(__name__)
_choices: dict[str, dict] = {}  # Problem key -> {'form', 'seconds'}: this process's memo, record.
measured: list[str] = []  # Problem keys measured in this process, in order (tests count them).


def machine_key() -> str:
  """What a measured choice depends on besides the problem: CPU, versions, XLA's flags."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  return (f'{host_cpu.describe()} | jax {jax.__version__} | jaxlib {jaxlib.__version__} | '
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")


def cache_path() -> str:
  """The cache file ('' for none): $CIFAR_JAX_CONV_GRAD_CACHE if set, else one per machine key."""
  if CACHE_ENV_VAR in os.environ:
    return os.environ[CACHE_ENV_VAR]
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  digest = hashlib.sha256(machine_key().encode()).hexdigest()[:16]
  return os.path.join(root, 'cifar_jax', f'conv_grad_{digest}.json')


def choices() -> dict[str, str]:
  """{problem key: form} of every choice made (measured or read) in this process so far."""
  return {key: entry['form'] for key, entry in _choices.items()}


def entries() -> dict[str, dict]:
  """{problem key: {'form': ..., 'seconds': {form: per loop step}}} (seconds where measured)."""
  return {key: dict(entry) for key, entry in _choices.items()}


def problem_key(lhs, dy, kernel_size, strides, padding, precision) -> str:
  """One line naming a weight-gradient problem: what its forms' speeds depend on."""
  return (f'lhs {tuple(lhs.shape)} {jnp.dtype(lhs.dtype).name}, dy {tuple(dy.shape)} '
          f'{jnp.dtype(dy.dtype).name}, kernel {tuple(kernel_size)}, strides {tuple(strides)}, '
          f'padding {tuple(tuple(p) for p in padding)}, precision {precision}')


def conv_problem(lhs, rhs, strides, padding, precision) -> str:
  """One line naming a convolution (models/conv.py's backend 'tuned' keys its parts on it)."""
  return (f'conv lhs {tuple(lhs.shape)} {jnp.dtype(lhs.dtype).name}, rhs {tuple(rhs.shape)} '
          f'{jnp.dtype(rhs.dtype).name}, strides {tuple(strides)}, '
          f'padding {tuple(tuple(p) for p in padding)}, precision {precision}')


def fastest(key: str, forms: Mapping[str, Callable], *operands) -> str:
  """The name of the fastest of `forms` (each `form(*operands)`) for problem `key`.

  The operands give only shapes and dtypes (tracers are fine): the process's memo, else the
  cache file, else a measurement on random operands, which is then stored in both.
  """
  if key in _choices:
    return _choices[key]['form']
  path, machine = cache_path(), machine_key()
  entry = _read(path).get(machine, {}).get(key) if path else None
  if isinstance(entry, dict) and entry.get('form') in forms:
    _choices[key] = entry
    return entry['form']
  seconds = _measure(forms, operands)
  choice = min(seconds, key=seconds.get)
  measured.append(key)
  _choices[key] = {'form': choice, 'seconds': seconds}
  _log.info('fastest form of %s: %s -> %s', key,
            ', '.join(f'{name} {1e3 * s:.2f} ms' for name, s in seconds.items()), choice)
  if path:
    _store(path, machine, key, _choices[key])
  return choice


def _measure(forms: Mapping[str, Callable], like) -> dict[str, float]:
  """Least seconds per loop step of each form, on the CPU device (the platform it is for), on
  random operands shaped `like`."""
  # The caller may be tracing (a custom VJP's backward pass): evaluate here, do not stage.
  with jax.ensure_compile_time_eval():
    cpu = jax.devices('cpu')[0]
    rng = np.random.default_rng(0)
    operands = [jax.device_put(rng.standard_normal(x.shape).astype(x.dtype), cpu) for x in like]
    compiled = {name: jax.jit(_in_loop(form)).lower(*operands).compile()
                for name, form in forms.items()}
    times = {name: [] for name in forms}
    for call in range(TIMED_CALLS + 1):
      for name, fn in compiled.items():  # Interleaved: load changes hit every form alike.
        start = time.perf_counter()
        jax.block_until_ready(fn(*operands))
        if call:  # The first call warms up.
          times[name].append(time.perf_counter() - start)
  return {name: min(t) / LOOP_STEPS for name, t in times.items()}


def _in_loop(form: Callable) -> Callable:
  def looped(*operands):
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(form, *operands))
    return lax.fori_loop(0, LOOP_STEPS, lambda _, acc: acc + form(*operands), zeros)
  return looped


def _read(path: str, warn: bool = True) -> dict:
  """The cache file's {machine key: {problem key: entry}}, or {} if missing or unreadable."""
  try:
    with open(path) as f:
      data = json.load(f)
    if not isinstance(data, dict):
      raise ValueError('not a JSON object')
    return {machine: entries for machine, entries in data.items() if isinstance(entries, dict)}
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError.
    if warn:
      _log.warning('Ignoring the conv gradient cache %s (%s); it will be rewritten.', path, e)
    return {}


def _store(path: str, machine: str, key: str, entry: dict) -> None:
  """Adds an entry to the cache file, written whole to a temporary file then renamed over it
  (a concurrent reader sees the old file or the new one). Failing to write only logs."""
  data = _read(path, warn=False)  # Read again: another process may have added choices.
  data.setdefault(machine, {})[key] = entry
  try:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.conv_grad_', suffix='.json')
    try:
      with os.fdopen(fd, 'w') as f:
        json.dump(data, f, indent=1, sort_keys=True)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  except OSError as e:
    _log.warning('Could not write the conv gradient cache %s: %s', path, e)
