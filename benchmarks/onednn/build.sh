#!/usr/bin/env bash
# Builds benchmarks/onednn/libonednn_conv.so, the prototype's XLA FFI handlers over oneDNN.
#
#   DNNL_ROOT=/path/with/include+lib bash benchmarks/onednn/build.sh [python]
#
# DNNL_ROOT: a prefix with include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so (oneDNN 3.x, CPU,
# OpenMP runtime). Default: the Python environment's prefix, where
# `pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0` puts them (the PyPI
# wheels install into <prefix>/lib and <prefix>/include). The XLA FFI headers are jax's
# (jax.ffi.include_dir()), so the library matches the installed jaxlib.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-python}"
ffi_include="$("$python" -c 'import jax.ffi; print(jax.ffi.include_dir())')"
dnnl_root="${DNNL_ROOT:-$("$python" -c 'import sys; print(sys.prefix)')}"
if [[ ! -f "$dnnl_root/include/oneapi/dnnl/dnnl.hpp" || ! -e "$dnnl_root/lib/libdnnl.so" ]]; then
  echo "error: no oneDNN under $dnnl_root (need include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so);" \
       "pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0, or set DNNL_ROOT" >&2
  exit 2
fi
g++ -O2 -std=c++17 -shared -fPIC -fopenmp \
  -I"$ffi_include" -I"$dnnl_root/include" \
  "$here/onednn_conv.cc" -o "$here/libonednn_conv.so" \
  -L"$dnnl_root/lib" -ldnnl -Wl,-rpath,"$dnnl_root/lib"
echo "built $here/libonednn_conv.so against $dnnl_root"
