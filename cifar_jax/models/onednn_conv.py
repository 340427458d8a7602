"""oneDNN's convolutions (forward, input and weight gradients) inside XLA:CPU programs.

XLA:CPU runs convolutions with Eigen; the jaxlib wheels cannot route them to the oneDNN kernels
that Keras/TensorFlow and PyTorch use on CPU (benchmarks/onednn/README.md: XLA's oneDNN
rewriter only exists in source builds with ENABLE_ONEDNN_ASYNC). onednn_conv.cc is three XLA FFI
handlers over oneDNN's primitives; this module compiles it once per machine and versions (g++,
against jax's FFI headers and the oneDNN of `requirements-onednn.txt`), registers the handlers
for the CPU platform, and gives `forward`, `input_grad` and `weight_grad` over them. Config
model.conv_backend='onednn' (models/conv.py) sends every 2-D float32 channels-last convolution
here, 'tuned' each of its three parts that measured faster here than XLA's; other platforms and
dtypes keep XLA's.

It computes the same convolutions to float32 rounding (~1e-6 relative, tests/test_onednn.py), not
bit for bit: a ReLU or max-pool near-tie may then route a gradient differently, which training
does not notice and exact-equality tests would; 'xla' stays the default for that reason.

Built libraries are cached in ~/.cache/cifar_jax/onednn/ ($XDG_CACHE_HOME respected), one per
source, jaxlib version, compiler and oneDNN library. oneDNN is found under $CIFAR_JAX_ONEDNN_ROOT
(a prefix with include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so.3), else the Python environment's
prefix, where the pip wheels install it. oneDNN runs each call on CIFAR_JAX_ONEDNN_THREADS OpenMP
threads (default: every core this process may use; see default_threads).
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'onednn_conv.cc')
ROOT_ENV_VAR = 'CIFAR_JAX_ONEDNN_ROOT'
THREADS_ENV_VAR = 'CIFAR_JAX_ONEDNN_THREADS'
INSTALL = 'pip install -r requirements-onednn.txt'
TARGETS = {'onednn_conv_fwd': 'OnednnConvFwd', 'onednn_conv_bwd_data': 'OnednnConvBwdData',
           'onednn_conv_bwd_weights': 'OnednnConvBwdWeights'}

_lock = threading.Lock()
_library = None


class Unavailable(RuntimeError):
  """oneDNN's convolutions cannot be loaded here; the message says why and what to do."""


def load() -> str:
  """Builds (once per machine) and registers the handlers; returns oneDNN's version.

  Raises Unavailable with the reason and the fix. Idempotent: later calls return at once."""
  global _library
  with _lock:
    if _library is None:
      path = _built_library()
      # Read by libgomp when it loads. OpenMP's default keeps idle threads spinning, which took a
      # core from XLA's own threads: oneDNN's calls ran 1.5-5x slower on a loaded 2-core machine.
      os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
      os.environ.setdefault(THREADS_ENV_VAR, str(default_threads()))
      try:
        library = ctypes.cdll.LoadLibrary(path)
      except OSError as e:
        raise Unavailable(f'oneDNN convolutions: {path} does not load ({e}); {INSTALL}') from e
      for name, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform='cpu')
      library.OnednnConvVersion.restype = ctypes.c_char_p
      _library = library
  return version()


def loaded() -> bool:
  return _library is not None


def version() -> str:
  """oneDNN's version and commit, '' before load()."""
  return _library.OnednnConvVersion().decode() if _library is not None else ''


def default_threads() -> int:
  """Every core this process may run on.

  XLA runs independent ops (a layer's two gradients) at once, so this oversubscribes the cores
  at times; fewer threads lost more where convolutions run one after another. A quiet 2-core
  AMD EPYC Zen 4, train steps (benchmarks/onednn/step_bench.py), 2 threads against 1: exp11
  (batch 128) 1.29x against 0.75x the speed of XLA's convolutions, redes/m1 1.77x against 1.23x,
  exp0 1.34x against 1.02x, p2cnn/exp1 1.17x against 0.85x. (Under other work at the same
  priority, one thread did better: it waits less for a core.)"""
  return max(1, len(os.sched_getaffinity(0)))


# --- Building the library. -------------------------------------------------------------------

def onednn_prefix() -> str:
  return os.environ.get(ROOT_ENV_VAR) or sys.prefix


def _built_library() -> str:
  """The compiled onednn_conv.cc for this machine's oneDNN, jaxlib and compiler (built if new)."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  prefix = onednn_prefix()
  header = os.path.join(prefix, 'include', 'oneapi', 'dnnl', 'dnnl.hpp')
  library = os.path.join(prefix, 'lib', 'libdnnl.so.3')
  if not (os.path.isfile(header) and os.path.isfile(library)):
    raise Unavailable(f'oneDNN convolutions need oneDNN 3 (include/oneapi/dnnl/dnnl.hpp and '
                      f'lib/libdnnl.so.3) under {prefix}: {INSTALL}, or set {ROOT_ENV_VAR} to '
                      'a prefix that has them')
  compiler = shutil.which(os.environ.get('CXX', 'g++'))
  if compiler is None:
    raise Unavailable(f"oneDNN convolutions are compiled on first use and need a C++ compiler: "
                      f"no {os.environ.get('CXX', 'g++')!r} on PATH (apt-get install g++, or set "
                      'CXX)')
  with open(SOURCE, 'rb') as f:
    source = f.read()
  key = hashlib.sha256(b'\0'.join([
      source, jaxlib.__version__.encode(), os.path.realpath(compiler).encode(),
      os.path.realpath(library).encode(), str(os.stat(library).st_mtime_ns).encode(),
  ])).hexdigest()[:16]
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  folder = os.path.join(cache, 'cifar_jax', 'onednn')
  path = os.path.join(folder, f'onednn_conv_{key}.so')
  if os.path.isfile(path):
    return path
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.onednn_conv_', suffix='.so')
  os.close(fd)
  command = [compiler, '-O2', '-std=c++17', '-shared', '-fPIC', '-fopenmp',
             f'-I{jax.ffi.include_dir()}', f'-I{os.path.join(prefix, "include")}', SOURCE,
             '-o', tmp, library, f'-Wl,-rpath,{os.path.dirname(os.path.realpath(library))}']
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    os.unlink(tmp)
    errors = [line for line in done.stderr.splitlines() if 'error' in line] or [done.stderr]
    raise Unavailable(f'oneDNN convolutions: compiling {os.path.basename(SOURCE)} failed: '
                      f'{errors[0].strip()[:300]}')
  os.replace(tmp, path)  # Atomic: processes building at once each leave a whole library.
  return path


# --- The convolution. -----------------------------------------------------------------------

def covers(lhs, rhs, padding, preferred_element_type=None) -> bool:
  """Whether oneDNN takes this channels-last convolution (2-D, float32, explicit `padding` with
  no negative (cropping) side); else XLA's does."""
  return (lhs.ndim == 4 and rhs.ndim == 4 and lhs.dtype == jnp.float32
          and rhs.dtype == jnp.float32 and preferred_element_type in (None, jnp.float32)
          and all(side >= 0 for pair in padding for side in pair))


def forward(lhs, rhs, strides, padding):
  """y = conv(lhs [N,H,W,C], rhs [KH,KW,C,O]), `padding` explicit ((low, high) per dim), in
  oneDNN: a custom call that only CPU programs can run (models/conv.py picks, per platform and
  per part, where it runs)."""
  strides, padding = _static(strides, padding)
  out_spatial = tuple((size + low + high - k) // s + 1 for size, k, s, (low, high)
                      in zip(lhs.shape[1:3], rhs.shape[:2], strides, padding))
  return _call('onednn_conv_fwd', (lhs.shape[0], *out_spatial, rhs.shape[3]), strides, padding,
               lhs, rhs)


def input_grad(dy, rhs, lhs_shape, strides, padding):
  """dL/dlhs of `forward` from dL/dy, in oneDNN."""
  strides, padding = _static(strides, padding)
  return _call('onednn_conv_bwd_data', lhs_shape, strides, padding, dy, rhs)


def weight_grad(lhs, dy, rhs_shape, strides, padding):
  """dL/drhs of `forward` from dL/dy, in oneDNN."""
  strides, padding = _static(strides, padding)
  return _call('onednn_conv_bwd_weights', rhs_shape, strides, padding, lhs, dy)


def _static(strides, padding):
  return (tuple(int(s) for s in strides),
          tuple((int(low), int(high)) for low, high in padding))


def _call(target: str, out_shape, strides, padding, a, b):
  """One handler: float32 result of out_shape. Under vmap (seeds stacked in one program) it runs
  once per batch entry, in turn."""
  (top, bottom), (left, right) = padding
  out = jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32)
  return jax.ffi.ffi_call(target, out, vmap_method='sequential')(
      a, b, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
      pad_top=np.int64(top), pad_bottom=np.int64(bottom), pad_left=np.int64(left),
      pad_right=np.int64(right))


def implementation(kind: str, lhs_shape, rhs_shape, strides, padding) -> str:
  """oneDNN's kernel for kind 'f' (forward), 'd' (input gradient) or 'w' (weight gradient) of
  this convolution on this CPU (e.g. 'brg_conv_fwd:avx512_core'); '' before load()."""
  if _library is None:
    return ''
  f = _library.OnednnConvImplInfo
  f.restype = ctypes.c_char_p
  f.argtypes = [ctypes.c_char] + [ctypes.c_int64] * 13
  (top, bottom), (left, right) = padding
  n, h, w, c = lhs_shape
  kh, kw, _, o = rhs_shape
  return f(kind.encode(), n, h, w, c, kh, kw, o, strides[0], strides[1], top, bottom, left,
           right).decode()
