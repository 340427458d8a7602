#!/usr/bin/env bash
# The two commands of cifar_jax, each installing what it needs on first use:
#   ./run.sh --config=configs/exp0.py [--workdir=runs/exp0] [--config.x=y ...]   train one config
#   ./run.sh test [pytest args]                                                  run the test suite
# Installs into .venv next to this script (override with CIFAR_JAX_VENV); python3 >= 3.11 needed (the
# pinned stack is built for it; PYTHON=python3.11 picks another interpreter).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${CIFAR_JAX_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

# The pins (jax 0.10, numpy 2.4...) have no wheels for older Pythons: say so before pip does.
if [ ! -x "$venv/bin/python" ] && ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $python is not Python 3.11+ (the pinned requirements need it); install python3.11 and run PYTHON=python3.11 $0 $*" >&2
  exit 2
fi

install() {  # install <requirements file>: only when it changed since the last install.
  local req="$root/$1" stamp="$venv/.installed-$1"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp" || { [ "$1" = requirements-test.txt ] && ! cmp -s "$root/requirements.txt" "$venv/.installed-requirements.txt"; }; then
    echo "Installing $1 into $venv (first run only)..." >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
    # (An `if`, not `[ ] && cp`: as the function's last command a false test would be its exit
    # status, and `set -e` would end a first `./run.sh --config=...` right after installing.)
    if [ "$1" = requirements-test.txt ]; then
      cp "$root/requirements.txt" "$venv/.installed-requirements.txt"
    fi
  fi
}

source "$root/scripts/preload_tcmalloc.sh"  # A caching malloc, if installed (see there).

cd "$root"
if [ "${1:-}" = test ]; then
  shift
  install requirements-test.txt
  exec "$venv/bin/python" -m pytest "$@"
fi
install requirements.txt
# model.conv_backend=onednn or tuned: oneDNN's convolutions, compiled against its wheels on first use.
case " $* " in
  *conv_backend=onednn*|*conv_backend\ onednn*|*conv_backend=tuned*|*conv_backend\ tuned*)
    install requirements-onednn.txt ;;
esac
exec "$venv/bin/python" launch.py "$@"
