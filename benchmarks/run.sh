#!/usr/bin/env bash
# The benchmark suite in one command, installing what it needs on first use:
#   bash benchmarks/run.sh --data_dir=../shared/data/cifar10-jpeg --out=benchmarks/results/cpu.json
#   bash benchmarks/run.sh --quick --configs=configs/redes/m1.py --data_dir=...   # a few minutes
# (every argument goes to benchmarks/suite.py; see its --help).
#
# Two venvs under .venv-bench/, because tensorflow-cpu 2.21.0 needs h5py<3.15 and requirements.txt
# pins 3.16.0 (see requirements-bench.txt):
#   .venv-bench/jax  requirements-test.txt as pinned, plus requirements-onednn.txt (oneDNN's
#                    convolutions, compiled with g++ on first use): the cifar_jax, cifar_jax_onednn,
#                    cifar_jax_tuned and Keras/jax runs;
#   .venv-bench/tf   the same pins less h5py, plus requirements-bench.txt: the Keras/TF runs.
# BENCH_PYTHON / BENCH_TF_PYTHON: use these interpreters instead (nothing is installed then).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="$root/.venv-bench"
python="${PYTHON:-python3}"

# The flat requirement list of a venv: requirements.txt [less h5py], the test extras, [oneDNN's
# wheels for model.conv_backend='onednn' | TF].
jax_requirements() {
  cat "$root/requirements.txt"
  grep -v '^-r' "$root/requirements-test.txt"
  cat "$root/requirements-onednn.txt"
}
tf_requirements() {
  grep -v '^h5py==' "$root/requirements.txt"
  grep -v '^-r' "$root/requirements-test.txt"
  cat "$root/benchmarks/requirements-bench.txt"
}

install() {  # install <venv> <requirements function>: only when the list changed since last time.
  local venv="$1" wanted stamp="$1/.installed-requirements.txt"
  wanted="$(mktemp /tmp/bench_requirements.XXXXXX)"
  "$2" > "$wanted"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  if [ ! -f "$stamp" ] || ! cmp -s "$wanted" "$stamp"; then
    echo "Installing benchmark requirements into $venv (first run only)..." >&2
    # (A pip config may name index folders that are absent here: only noise, dropped.)
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$wanted" \
      2> >(grep -v '^WARNING: Location' >&2)
    cp "$wanted" "$stamp"
  fi
  rm -f "$wanted"
}

needs_tf() {  # Unless --frameworks=... leaves keras_tf out.
  local arg
  for arg in "$@"; do
    case "$arg" in --frameworks=*) [[ "$arg" == *keras_tf* ]] || return 1 ;; esac
  done
  return 0
}

# Every framework runs with the allocator run.sh gives cifar_jax (tcmalloc, when installed).
source "$root/scripts/preload_tcmalloc.sh"

cd "$root"
if [ -n "${BENCH_PYTHON:-}" ]; then
  jax_python="$BENCH_PYTHON"
else
  install "$bench/jax" jax_requirements
  jax_python="$bench/jax/bin/python"
fi
tf_args=()
if needs_tf "$@"; then
  if [ -n "${BENCH_TF_PYTHON:-}" ]; then
    tf_args=(--tf_python="$BENCH_TF_PYTHON")
  else
    install "$bench/tf" tf_requirements
    tf_args=(--tf_python="$bench/tf/bin/python")
  fi
fi
exec "$jax_python" benchmarks/suite.py "${tf_args[@]}" "$@"
