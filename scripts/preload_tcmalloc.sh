# Sourced by run.sh and benchmarks/run.sh (bash): sets LD_PRELOAD to tcmalloc if it is installed.
# A caching malloc where the system has one: XLA:CPU allocates a step's temporaries each step,
# and glibc hands large blocks back to the kernel, so every step page-faults them in again
# (exp0: 136 MiB of faults per step; tcmalloc: none, steps ~15% faster). CIFAR_JAX_MALLOC=system
# keeps glibc's. Debian/Ubuntu: apt-get install libtcmalloc-minimal4.
if [ "${CIFAR_JAX_MALLOC:-tcmalloc}" = tcmalloc ] && [[ "${LD_PRELOAD:-}" != *tcmalloc* ]]; then
  tcmalloc="$(/sbin/ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 /{print $NF; exit}')"
  if [ -n "$tcmalloc" ]; then
    export LD_PRELOAD="$tcmalloc${LD_PRELOAD:+:$LD_PRELOAD}"
    # tcmalloc prints a note per allocation above this size; XLA's big temporaries are expected.
    export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD="${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-68719476736}"
  fi
fi
