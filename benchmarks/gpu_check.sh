#!/usr/bin/env bash
# One command for a machine with one NVIDIA GPU (and ~16 CPU cores, only package registries
# reachable), done in under 9 minutes: install, the tests that matter on a GPU, the real loop's
# throughput, then one full-fidelity run in the time left; everything as JSON under --out.
#
#   bash benchmarks/gpu_check.sh --data_dir=shared/data/cifar10-jpeg --out="$OUT"
#   bash benchmarks/gpu_check.sh --dry_run --python=.venv/bin/python --data_dir=... --out=/tmp/g
#
# --data_dir   CIFAR-10 in the official binary layout (a folder or the tarball); the GPU machine
#              may not have ../shared beside the repository, so it is given.
# --out        where the JSON goes (default: $OUT, else benchmarks/results/gpu_check).
# --budget_s   wall-time budget of the whole check (default 530); each stage gets what is left.
# --python     an interpreter that already has the requirements (nothing is installed then);
#              default: .venv-gpu/bin/python, created with requirements.txt and jax[cuda12] at
#              requirements.txt's pinned jax version.
# --full_config  the full-fidelity run's config (default configs/p2cnn/exp1.py: 50 epochs, 704
#              steps each, whose report printed its per-epoch log; ~10 s of float32 device time
#              on an H200 by its FLOPs, so it finishes). configs/exp11.py (the report's best
#              model) is ~15 PFLOP: ~1 min in bf16 but ~12 min in true float32, more than the
#              budget; a run the time limit stops saves a checkpoint and full_run.json keeps its
#              history so far.
# --dry_run    small caps for a CPU rehearsal: one config, 2-step chunks, a few tests, a
#              3-step full run.
#
# Outputs: summary.json (stages, seconds, device, what ran), tests.json, throughput_float32.json,
# throughput_bfloat16.json (benchmarks/loop_throughput.py: images/s, achieved TFLOP/s, host
# dispatch share, epoch and evaluation seconds, both dispatch modes), full_run.json (the run's
# results.json and history, or how far it got).
set -uo pipefail
start=$(date +%s)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

data_dir='' out="${OUT:-$root/benchmarks/results/gpu_check}" budget=530 python='' dry=0
full_config='configs/p2cnn/exp1.py'
for arg in "$@"; do
  case "$arg" in
    --data_dir=*) data_dir="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --budget_s=*) budget="${arg#*=}" ;;
    --python=*) python="${arg#*=}" ;;
    --full_config=*) full_config="${arg#*=}" ;;
    --dry_run) dry=1 ;;
    *) echo "gpu_check.sh: unknown argument $arg (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [[ -z "$data_dir" || ! -e "$data_dir" ]]; then
  echo "gpu_check.sh: --data_dir=PATH must name the CIFAR-10 folder or tarball" \
    "(got '$data_dir')" >&2
  exit 2
fi
data_dir="$(cd "$(dirname "$data_dir")" && pwd)/$(basename "$data_dir")"
mkdir -p "$out"
left() { echo $(( budget - ($(date +%s) - start) )); }
stages="$out/stages.jsonl"
: > "$stages"
stage() {  # stage NAME RC SECONDS [NOTE]
  printf '{"stage": "%s", "rc": %s, "seconds": %s, "note": "%s"}\n' "$1" "$2" "$3" "${4:-}" \
    >> "$stages"
}
run_stage() {  # run_stage NAME SECONDS_CAP COMMAND...: runs it under `timeout`, logs, records.
  local name="$1" cap="$2" t0 rc
  shift 2
  if (( cap < 20 )); then stage "$name" null 0 "skipped: no time left"; return 1; fi
  t0=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$cap" "$@" > "$out/$name.log" 2>&1
  rc=$?
  stage "$name" "$rc" $(( $(date +%s) - t0 )) "$([[ $rc == 124 ]] && echo "timed out at ${cap}s")"
  return $rc
}

# --- Install ---------------------------------------------------------------------------------
jax_version="$(sed -n 's/^jax\[cpu\]==\([0-9.]*\).*/\1/p' requirements.txt)"
if [[ -z "$python" ]]; then
  python="$root/.venv-gpu/bin/python"
  install() {
    set -e
    [[ -x "$python" ]] || python3 -m venv "$root/.venv-gpu"
    "$python" -m pip install -q --upgrade pip
    grep -v '^jax\[cpu\]' requirements.txt > "$out/requirements-gpu.txt"
    echo "jax[cuda12]==$jax_version" >> "$out/requirements-gpu.txt"
    grep -v '^-r' requirements-test.txt | grep -v '^jax' >> "$out/requirements-gpu.txt" || true
    "$python" -m pip install -q -r "$out/requirements-gpu.txt"
  }
  if ! "$python" -c "import jax; assert jax.__version__ == '$jax_version' and \
      jax.devices()[0].platform == 'gpu'" 2>/dev/null; then
    run_stage install $(( $(left) - 330 )) bash -c "$(declare -f install); \
      python='$python' root='$root' out='$out' jax_version='$jax_version' install" || {
      echo "gpu_check.sh: install failed, see $out/install.log" >&2; }
  fi
fi
"$python" - > "$out/device.json" 2> "$out/device.log" <<'EOF'
import json, jax
d = jax.devices()[0]
print(json.dumps({'platform': d.platform, 'device_kind': d.device_kind,
                  'device_count': jax.device_count(), 'jax_version': jax.__version__}))
EOF
platform="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["platform"])' \
  "$out/device.json" 2>/dev/null || echo none)"
if [[ "$platform" != gpu && $dry == 0 ]]; then
  echo "gpu_check.sh: no GPU visible to $python (platform: $platform); see $out/device.log" >&2
fi

# --- Tests (precision pinned: tests/conftest.py sets JAX_DEFAULT_MATMUL_PRECISION=highest) -----
tests=(tests/test_precision.py tests/test_chunks.py tests/test_train.py)
test_args=(-q -p no:cacheprovider)
(( dry )) && tests=(tests/test_chunks.py) && test_args+=(-k auto)
# Deterministic GPU reductions: the chunking tests compare bits. No preallocation: some tests
# launch runs in subprocesses beside the pytest process.
tests_cap=$(( $(left) - 250 )) && (( tests_cap > 90 )) && tests_cap=90
run_stage tests $tests_cap \
  env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_deterministic_ops=true" \
  XLA_PYTHON_CLIENT_PREALLOCATE=false \
  "$python" -m pytest "${tests[@]}" "${test_args[@]}" --junitxml="$out/tests.xml"
"$python" - "$out" <<'EOF' || true
import json, sys, xml.etree.ElementTree as ET
out = sys.argv[1]
try:
  suite = ET.parse(f'{out}/tests.xml').getroot().find('testsuite')
  result = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
  result['failed'] = [c.get('classname') + '::' + c.get('name') for c in suite.iter('testcase')
                      if c.find('failure') is not None or c.find('error') is not None]
except (OSError, ET.ParseError, AttributeError) as e:
  result = {'error': f'no junit xml: {e}'}
json.dump(result, open(f'{out}/tests.json', 'w'), indent=2)
EOF

# --- Throughput: the real loop's programs, fp32 and bf16 --------------------------------------
configs='configs/exp0.py,configs/redes/m1.py,configs/exp11.py,configs/proyecto4/exp10.py'
# Small to large, each written as it finishes: a stage the time limit stops keeps the others.
bench=(--steps=100 --repeats=2 --num_examples=50000 --epoch_steps=100000 --eval_examples=10000)
if (( dry )); then
  configs='configs/exp0.py'
  bench=(--steps=2 --repeats=1 --num_examples=1100 --epoch_steps=3 --eval_examples=1000)
fi
for dtype in float32 bfloat16; do
  share=1 && [[ $dtype == float32 ]] && share=2  # Half of what is left, then all of it.
  run_stage "throughput_$dtype" $(( ($(left) - 120) / share )) \
    "$python" benchmarks/loop_throughput.py --configs="$configs" "${bench[@]}" \
    --dtype="$dtype" --out="$out/throughput_$dtype.json"
done

# --- One full-fidelity run in the time left ---------------------------------------------------
workdir="$(mktemp -d /tmp/gpu_check_run.XXXXXX)"  # Checkpoints stay out of $OUT.
full_args=(--config="$full_config" --config.data.dir="$data_dir" --workdir="$workdir")
if (( dry )); then
  full_config=configs/exp0.py
  full_args=(--config="$full_config" --config.data.dir="$data_dir" --workdir="$workdir"
             --config.train.max_steps=3)
fi
run_stage full_run $(( $(left) - 15 )) "$python" launch.py "${full_args[@]}"
"$python" - "$out" "$workdir" "$full_config" <<'EOF' || true
import json, os, sys
out, workdir, config = sys.argv[1:]
result = {'config': config, 'workdir': workdir}
for name in ('results.json', 'history.json'):
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    result[name.split('.')[0]] = json.load(open(path))
json.dump(result, open(f'{out}/full_run.json', 'w'), indent=2)
EOF

# --- Summary -----------------------------------------------------------------------------------
"$python" - "$out" "$start" "$dry" <<'EOF'
import json, sys, time
out, start, dry = sys.argv[1], float(sys.argv[2]), sys.argv[3] == '1'
summary = {'seconds': round(time.time() - start, 1), 'dry_run': dry,
           'stages': [json.loads(l) for l in open(f'{out}/stages.jsonl') if l.strip()]}
try:
  summary['device'] = json.load(open(f'{out}/device.json'))
except (OSError, ValueError):
  summary['device'] = None
json.dump(summary, open(f'{out}/summary.json', 'w'), indent=2)
print(json.dumps(summary, indent=2))
EOF
