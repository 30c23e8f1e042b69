#!/usr/bin/env bash
# The GPU checks of the Triton backend, in one run for a session lent a CUDA device.
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh        # from the repository root
#
# Steps, each under its own time limit (about 8 minutes at most in all; a failing step does not
# stop the others): the environment; the test suite's Triton/CUDA tests (compiled kernels on CUDA
# tensors: golden cases, NumPy agreement, bf16/fp16, CUDA-graph capture and replay, bf16 peak
# memory); benchmarks/bench_loss.py --device cuda in float32 and bfloat16 (device time behind a
# GPU sleep, CUDA-graph replay, host enqueue time, plain CUDA-event time, peak memory, against the
# einsum form eager and compiled, and one device copy of s; plus a few launch geometries); the
# trainer for 200 steps on CUDA. Writes 8 files to $OUT: summary.txt, tests.log, bench.log,
# train.log, bench_cuda.json/.png, bench_cuda_bfloat16.json/.png.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
start=$(date +%s)

step() {  # step NAME LIMIT_S LOG COMMAND...: run, append the exit status and the log's tail
  local name=$1 limit=$2 log=$3
  shift 3
  local own="/tmp/gpu_check_$name.log"
  echo "== $name (limit ${limit}s, at $(( $(date +%s) - start ))s)" | tee -a "$SUMMARY"
  timeout --kill-after=10 "$limit" "$@" >"$own" 2>&1
  local rc=$?
  echo "   rc=$rc$([ $rc -eq 124 ] && echo ' (timed out)')" | tee -a "$SUMMARY"
  { echo "== $name"; cat "$own"; } >>"$log"
  tail -n "${TAIL:-40}" "$own" >>"$SUMMARY"
}

{
  echo "date: $(date -u)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| CUDA', torch.version.cuda, '| triton', triton.__version__, '|', torch.cuda.get_device_name(0))" 2>&1
  git log -1 --format='commit %H %s' 2>/dev/null
} >>"$SUMMARY"
cat "$SUMMARY"

# 1. tests: the Triton tests run the compiled kernels on CUDA (no interpreter on a GPU machine);
#    the suite's other tests that mention CUDA, if any. No --nbval here (not installed there).
#    pytest-xdist, where installed, compiles the kernel variants in 4 processes at once.
XDIST=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 4")
# shellcheck disable=SC2086
TAIL=25 step tests 150 "$OUT/tests.log" \
  "$PY" -m pytest -p no:cacheprovider -o addopts="" -ra -q --durations=10 $XDIST tests/test_triton.py
TAIL=10 step tests_cuda_other 30 "$OUT/tests.log" \
  "$PY" -m pytest -p no:cacheprovider -o addopts="" -ra -q tests -k "cuda and not test_triton" \
  --ignore=tests/test_notebooks_hygiene.py

# 2. benchmark, float32 then bfloat16 (JSON and PNG straight into $OUT)
TAIL=30 step bench_float32 130 "$OUT/bench.log" \
  "$PY" benchmarks/bench_loss.py --device cuda --dtype float32 --tune --out "$OUT"
TAIL=30 step bench_bfloat16 130 "$OUT/bench.log" \
  "$PY" benchmarks/bench_loss.py --device cuda --dtype bfloat16 --tune --out "$OUT"

# 3. the trainer on CUDA (DINOLoss "auto" takes the Triton kernels there)
TAIL=15 step train 50 "$OUT/train.log" \
  "$PY" -m dino_ref.train --device cuda --steps 200 --no-progress --metrics-json /tmp/train_metrics.json
"$PY" - >>"$SUMMARY" 2>&1 <<'EOF'
import json
try:
    m = json.load(open("/tmp/train_metrics.json"))
    print("train metrics keys:", sorted(m) if isinstance(m, dict) else type(m).__name__)
    print(json.dumps(m)[-1500:])
except Exception as e:
    print("no train metrics:", type(e).__name__, e)
EOF

echo "== done in $(( $(date +%s) - start ))s; files in $OUT:" | tee -a "$SUMMARY"
ls -la "$OUT" | tee -a "$SUMMARY"
