#!/usr/bin/env bash
# The GPU checks of the loss, in one run for a session lent a CUDA device.
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh        # from the repository root
#     SMOKE=1 OUT=/tmp/x bash benchmarks/gpu_check.sh      # the same code paths on a CPU machine
#
# Stages, each under a time limit cut to what is left of BUDGET_S (default 390 s, the whole
# run; a failing stage does not stop the others), with a timestamped line at each:
#   env    GPU, driver, python, torch, triton, commit;
#   tests  tests/test_triton.py (the compiled kernels on CUDA tensors: golden cases, NumPy
#          agreement, half precision, graph capture, bf16 peak memory) and tests/test_cuda.py
#          (float64 golden cases on the eager path, Triton float32/bfloat16 against eager
#          float64 at uneven shapes and on non-contiguous inputs, no host synchronisation in a
#          step, graph replay on fresh inputs), in parallel where pytest-xdist is installed;
#   bench  benchmarks/bench_loss.py --device cuda --dtype float32 bfloat16 --tune in one process:
#          every form at (T,S,B,D) = (2,12,64,65536), (2,12,256,65536), then 12 launch
#          geometries of the Triton kernels there, then (2,10,32,65536); device time behind a
#          GPU sleep, CUDA-graph replay, host enqueue time, plain time, peak memory, device ops
#          per call, one device copy of s; the JSON files are rewritten after each item;
#   train  the trainer for 200 steps on CUDA, only if 45 s are left.
# Files in $OUT (7): summary.txt (this output), checks.log (tests, trainer), bench.log,
# bench_cuda.json, bench_cuda_bfloat16.json and their .png (bench_smoke_cpu* with SMOKE=1).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_check}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-390}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
start=$(date +%s)

elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
say() { echo "[$(elapsed)s] $*" | tee -a "$SUMMARY"; }

step() {  # step NAME LIMIT_S LOG COMMAND...: run under min(LIMIT_S, time left), log, status, tail
  local name=$1 limit=$2 log=$3
  shift 3
  local room
  room=$(( $(left) - 5 ))
  [ "$room" -lt "$limit" ] && limit=$room
  if [ "$limit" -lt 10 ]; then
    say "== $name skipped: ${room}s left"
    return
  fi
  local own
  own=$(mktemp "/tmp/gpu_check_$name.XXXX")
  say "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$own" 2>&1
  local rc=$?
  say "   $name rc=$rc$([ $rc -eq 124 ] && echo ' (timed out)')"
  { echo "== $name: $*"; cat "$own"; } >>"$log"
  grep -v '^USDT:' "$own" | tail -n "${TAIL:-40}" | tee -a "$SUMMARY"
}

say "== env"
{
  echo "date: $(date -u)  budget ${BUDGET_S}s  smoke ${SMOKE}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu \
    --format=csv,noheader 2>&1 | head -n 4
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| CUDA', torch.version.cuda, '| triton', triton.__version__, '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')" 2>&1
  git log -1 --format='commit %H %s' 2>/dev/null
  echo "cores: $(nproc)"
} 2>&1 | tee -a "$SUMMARY"

# 1. tests. No --nbval (not installed there); the package's addopts name it, so they are cleared.
PYTEST=("$PY" -m pytest -p no:cacheprovider -o addopts="" -q -ra --maxfail=5 --durations=10)
"$PY" -c "import xdist" 2>/dev/null && PYTEST+=(-n 8)
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout=120)
if [ "$SMOKE" = 1 ]; then
  # CPU: tests/test_cuda.py's device-agnostic tests on CPU tensors (the kernels interpreted)
  TAIL=25 step tests 300 "$OUT/checks.log" \
    env TRITON_INTERPRET=1 DINO_REF_CUDA_TESTS_ON_CPU=1 "${PYTEST[@]}" tests/test_cuda.py -k "not 65537"
else
  TAIL=25 step tests 150 "$OUT/checks.log" "${PYTEST[@]}" tests/test_triton.py tests/test_cuda.py
fi

# 2. benchmark, both dtypes in one process (JSON and PNG straight into $OUT); its own budget
#    leaves 15 s to finish writing, the stage limit 30 s more before the kill
bench_budget=$(( $(left) - 45 ))
[ "$bench_budget" -gt 270 ] && bench_budget=270
if [ "$SMOKE" = 1 ]; then
  BENCH=(env TRITON_INTERPRET=1 "$PY" benchmarks/bench_loss.py --smoke --device cpu)
else
  BENCH=("$PY" benchmarks/bench_loss.py --device cuda)
fi
TAIL=75 step bench $(( bench_budget + 30 )) "$OUT/bench.log" \
  "${BENCH[@]}" --dtype float32 bfloat16 --tune --out "$OUT" --budget-s "$bench_budget"

# 3. the trainer on CUDA (DINOLoss "auto" takes the Triton kernels there), if there is time
if [ "$SMOKE" != 1 ] && [ "$(left)" -ge 45 ]; then
  rm -f /tmp/gpu_check_train_metrics.json
  TAIL=8 step train 40 "$OUT/checks.log" \
    "$PY" -m dino_ref.train --device cuda --steps 200 --no-progress \
    --metrics-json /tmp/gpu_check_train_metrics.json
  "$PY" - 2>&1 <<'EOF' | tee -a "$SUMMARY"
import json
try:
    m = json.load(open("/tmp/gpu_check_train_metrics.json"))
    print("train metrics:", json.dumps(m.get("final", m) if isinstance(m, dict) else m)[:800])
except Exception as e:
    print("no train metrics:", type(e).__name__, e)
EOF
else
  say "== train skipped ($(left)s left, or SMOKE)"
fi

say "== done; files in $OUT:"
ls -la "$OUT" | tee -a "$SUMMARY"
