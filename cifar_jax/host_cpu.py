"""The host CPU, named as records and benchmarks report it: its model and widest vector units.

Sessions land on different CPUs whose XLA:CPU speeds differ by 2x or more, and the model name
alone does not tell them apart (an "AMD EPYC" may or may not have AVX-512), so every number
that depends on the CPU says `describe()`: e.g. "AMD EPYC (AVX-512)".
"""

import platform

# /proc/cpuinfo flags -> the name given, widest first.
_VECTOR_UNITS = (('amx_tile', 'AVX-512, AMX'), ('avx512f', 'AVX-512'), ('avx2', 'AVX2'))


CPUINFO = '/proc/cpuinfo'


def _cpuinfo_field(name: str, cpuinfo: str) -> str:
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.split(':', 1)[0].strip() == name:
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return ''


def model(cpuinfo: str = CPUINFO) -> str:
  """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), else what platform knows."""
  return _cpuinfo_field('model name', cpuinfo) or platform.processor() or platform.machine()


def vector_units(cpuinfo: str = CPUINFO) -> str:
  """'AVX-512, AMX', 'AVX-512', 'AVX2', or '' (not x86, or no /proc/cpuinfo)."""
  flags = set(_cpuinfo_field('flags', cpuinfo).split())
  return next((name for flag, name in _VECTOR_UNITS if flag in flags), '')


def describe(cpuinfo: str = CPUINFO) -> str:
  """model() and, where known, vector_units(): "AMD EPYC (AVX-512)"."""
  units = vector_units(cpuinfo)
  return f'{model(cpuinfo)} ({units})' if units else model(cpuinfo)
