"""glibc's malloc on transparent huge pages, for XLA:CPU's per-call temporaries.

XLA:CPU allocates a program's temporaries at every call (one block: 151 MiB for an exp0 train
step, 1.8 GiB for airbench94's) and frees them after it. glibc serves blocks that large with a
fresh mmap and unmaps them on free, so every call page-faults its temporaries in again, 4 KiB at
a time: on a quiet 2-core AMD EPYC Zen 4, a third of exp0's step and an eighth of airbench94's.
With the glibc tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent
huge pages on those blocks (madvise), which cuts the faults 512-fold: exp0 113 -> 72 ms a step,
airbench94 4.03 -> 3.56 s, with the same memory (`python benchmarks/xla_cpu_flags.py
--mallocs=glibc,glibc_hugepages`). A caching malloc (tcmalloc, which run.sh preloads where it is
installed) keeps the blocks instead and needs none of this.

glibc reads its tunables when a process starts, so `launch.py` starts itself again with the
tunable added (`reexec_with_huge_pages`, before it imports jax): one exec, the same process id
and arguments. Scripts that import cifar_jax can set `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
themselves. CIFAR_JAX_MALLOC=system keeps glibc's defaults. Nothing changes where it would not
help: another libc, a preloaded tcmalloc, or a kernel whose huge pages are off.
"""

import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb'
THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'


def _glibc_version() -> tuple[int, ...]:
  name, version = platform.libc_ver()
  if name != 'glibc':
    return ()
  try:
    return tuple(int(part) for part in version.split('.'))
  except ValueError:
    return ()


def _kernel_huge_pages_on(setting_file: str = THP_SETTING) -> bool:
  """Whether the kernel gives transparent huge pages to memory that asks ('always' or 'madvise'
  is the bracketed choice)."""
  try:
    with open(setting_file) as f:
      return '[never]' not in f.read()
  except OSError:
    return False


def tunables_with_huge_pages(environ, glibc_version=None, kernel_on=None) -> str | None:
  """The GLIBC_TUNABLES value to start with, or None to leave the environment as it is."""
  glibc_version = _glibc_version() if glibc_version is None else glibc_version
  kernel_on = _kernel_huge_pages_on() if kernel_on is None else kernel_on
  tunables = environ.get('GLIBC_TUNABLES', '')
  if (environ.get('CIFAR_JAX_MALLOC', '') == 'system' or TUNABLE in tunables
      or 'tcmalloc' in environ.get('LD_PRELOAD', '') or glibc_version < (2, 35)
      or not kernel_on):
    return None
  return f'{tunables}:{TUNABLE}=1' if tunables else f'{TUNABLE}=1'


def reexec_with_huge_pages() -> None:
  """Replaces this process by the same command with the tunable set, where it helps (see the
  module docstring); returns only where it does not. Only a process started as `python
  [options] script [args]`, with sys.argv as it was, restarts: running its command again is
  running the same thing (not so for `python -c`, `-m`, or a harness that set sys.argv and
  runs the script in-process)."""
  tunables = tunables_with_huge_pages(os.environ)
  started_as_script = sys.orig_argv[-len(sys.argv):] == sys.argv and sys.argv[0] not in ('-c', '')
  if tunables is None or not started_as_script:
    return
  before = os.environ.get('GLIBC_TUNABLES')
  os.environ['GLIBC_TUNABLES'] = tunables
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execv(sys.executable, sys.orig_argv)
  except OSError:  # Then this process goes on as it is: slower steps, the same results.
    if before is None:
      del os.environ['GLIBC_TUNABLES']
    else:
      os.environ['GLIBC_TUNABLES'] = before
