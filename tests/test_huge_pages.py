"""launch.py's restart with glibc's malloc on transparent huge pages (cifar_jax/huge_pages.py)."""

import json
import os
import subprocess
import sys

import pytest

from cifar_jax import huge_pages
from tests.conftest import REPO

GLIBC = (2, 36)


@pytest.mark.parametrize('environ, expected', [
    ({}, 'glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'},
     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, None),  # The user's own choice stays.
    ({'CIFAR_JAX_MALLOC': 'system'}, None),
    ({'LD_PRELOAD': '/usr/lib/libtcmalloc_minimal.so.4'}, None),  # It caches the blocks.
])
def test_the_tunable_is_added_only_where_nothing_decided_otherwise(environ, expected):
  assert huge_pages.tunables_with_huge_pages(environ, GLIBC, kernel_on=True) == expected


def test_nothing_changes_without_glibc_2_35_or_the_kernels_huge_pages():
  assert huge_pages.tunables_with_huge_pages({}, (2, 34), kernel_on=True) is None
  assert huge_pages.tunables_with_huge_pages({}, (), kernel_on=True) is None  # Not glibc.
  assert huge_pages.tunables_with_huge_pages({}, GLIBC, kernel_on=False) is None


def test_the_kernel_setting_is_read_from_its_bracketed_choice(tmp_path):
  for text, on in (('always [madvise] never', True), ('[always] madvise never', True),
                   ('always madvise [never]', False)):
    (tmp_path / 'enabled').write_text(text + '\n')
    assert huge_pages._kernel_huge_pages_on(str(tmp_path / 'enabled')) is on  # pylint: disable=protected-access
  assert not huge_pages._kernel_huge_pages_on(str(tmp_path / 'absent'))  # pylint: disable=protected-access


# A child that restarts itself as launch.py does, then page-faults in a 64 MiB malloc block five
# times (ctypes: numpy asks for huge pages on its own arrays) and prints what it saw.
CHILD = r'''
import ctypes, json, os, resource, sys
sys.path.insert(0, sys.argv[1])
from cifar_jax import huge_pages
pid = os.getpid()
huge_pages.reexec_with_huge_pages()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
size, faults = 64 << 20, 0
for _ in range(5):
  block = libc.malloc(size)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  ctypes.memset(block, 1, size)
  faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  libc.free(ctypes.c_void_p(block))
print(json.dumps({'pid_before': pid, 'pid': os.getpid(), 'argv': sys.argv[1:],
                  'tunables': os.environ.get('GLIBC_TUNABLES'), 'faults': faults}))
'''


def run_child(folder, env_extra, *how):
  """CHILD run as `python [how...] child.py REPO`."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'CIFAR_JAX_MALLOC', 'LD_PRELOAD')}
  env.update(env_extra)
  script = folder / 'child.py'
  script.write_text(CHILD)
  out = subprocess.run([sys.executable, *how, str(script), str(REPO)], env=env,
                       capture_output=True, text=True, timeout=120, check=True)
  return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(huge_pages.tunables_with_huge_pages({}) is None,
                    reason='no glibc >= 2.35 with the kernel giving huge pages on request')
def test_the_restarted_process_keeps_its_id_and_arguments_and_faults_far_less(tmp_path):
  restarted = run_child(tmp_path, {}, '-u')  # Interpreter options are kept too.
  assert restarted['tunables'] == 'glibc.malloc.hugetlb=1'
  assert restarted['pid'] == restarted['pid_before'] and restarted['argv'] == [str(REPO)]
  system = run_child(tmp_path, {'CIFAR_JAX_MALLOC': 'system'})
  assert system['tunables'] is None
  # 4 KiB pages: 5 x 16,384 faults; 2 MiB pages: a few hundred at most.
  assert system['faults'] >= 5 * 16384 * 0.9
  assert restarted['faults'] < system['faults'] / 10


def test_a_script_run_in_process_by_another_command_is_not_restarted(tmp_path):
  """A harness that sets sys.argv and runs launch.py with runpy (tests/test_reliability.py)
  would restart as itself: it goes on unchanged instead."""
  (tmp_path / 'child.py').write_text(CHILD)
  harness = (f'import runpy, sys; sys.argv = [{str(tmp_path / "child.py")!r}, {str(REPO)!r}]; '
             'runpy.run_path(sys.argv[0], run_name="__main__")')
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'CIFAR_JAX_MALLOC')}
  out = subprocess.run([sys.executable, '-c', harness], env=env, capture_output=True, text=True,
                       timeout=120, check=True)
  assert json.loads(out.stdout.splitlines()[-1])['tunables'] is None
