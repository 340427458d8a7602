"""host_cpu: the CPU a number came from, vector units included (an EPYC may or may not have
AVX-512)."""

import pytest

from cifar_jax import host_cpu

_CPUINFO = 'processor\t: {i}\nvendor_id\t: X\nmodel name\t: {model}\nflags\t\t: {flags}\n\n'


@pytest.mark.parametrize('flags, units', [
    ('fpu sse2 avx avx2 fma', 'AVX2'),
    ('fpu avx2 avx512f avx512bw avx512_vnni', 'AVX-512'),
    ('avx2 avx512f amx_bf16 amx_tile amx_int8', 'AVX-512, AMX'),
    ('fp asimd', ''),
])
def test_the_widest_vector_units_are_named(tmp_path, flags, units):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text(''.join(_CPUINFO.format(i=i, model='AMD EPYC', flags=flags)
                             for i in range(2)))
  assert host_cpu.vector_units(str(cpuinfo)) == units
  assert host_cpu.describe(str(cpuinfo)) == (f'AMD EPYC ({units})' if units else 'AMD EPYC')


def test_without_cpuinfo_the_platform_names_the_cpu(tmp_path):
  missing = str(tmp_path / 'absent')
  assert host_cpu.vector_units(missing) == ''
  assert host_cpu.describe(missing) == host_cpu.model(missing) != ''
