#!/usr/bin/env bash
# One prepared check of hepml on a machine with one NVIDIA GPU, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh               # venv active, or PYTHON=/path/to/python
#   bash benchmarks/gpu_check.sh --allow-cpu   # smoke test of the code paths on the CPU
#
# Runs the steps of benchmarks/gpu_check.py (see its docstring) one after the other, each
# timed, logged under a temporary directory and stopped after a time limit; a failing step
# does not stop the others. Writes benchmarks/results/gpu.md and gpu.json, and exits
# non-zero if any step failed. GPU_CHECK_ROC_N sets the number of ROC scores (default 1e8).
# Without a CUDA device (and without --allow-cpu) it checks nothing and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -z ${VIRTUAL_ENV:-} && -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python; fi

[[ ${1:-} == --allow-cpu ]] && export GPU_CHECK_DEVICE=cpu
if [[ ${GPU_CHECK_DEVICE:-} == cpu ]]; then
  export CUDA_VISIBLE_DEVICES=""  # every step and its subprocesses on the CPU
else
  cuda=$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>&1 | tail -n 1)
  if [[ $cuda == False ]]; then
    echo "gpu_check: no CUDA device ($PY: torch.cuda.is_available() is False); nothing was checked"
    exit 0
  elif [[ $cuda != True ]]; then
    echo "gpu_check: cannot ask $PY for a CUDA device: $cuda" >&2
    exit 1
  fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/hepml-gpu-check.XXXXXX")
mkdir -p "$TMP/logs"
: >"$TMP/status.tsv"
failed=0

step() {  # step NAME LIMIT_S [OPTIONS...]: one step of gpu_check.py, timed and logged
  local name=$1 limit=$2 t0 t1 rc status
  shift 2
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$PY" benchmarks/gpu_check.py "$name" --tmp "$TMP" \
    --json "$TMP/$name.json" "$@" >"$TMP/logs/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$t0" "$t1" >>"$TMP/status.tsv"
  status=ok
  ((rc == 0)) || { status="FAILED (exit $rc; see $TMP/logs/$name.log)"; failed=1; }
  printf '%-12s %6.1f s  %s\n' "$name" "$(awk "BEGIN { print $t1 - $t0 }")" "$status"
}

step tests 240
step workflows 480
step roc 300 ${GPU_CHECK_ROC_N:+--n "$GPU_CHECK_ROC_N"}
step throughput 180
step consistency 180
step calogan 120
step torchrun 240
step syncs 120

"$PY" benchmarks/gpu_check.py report --tmp "$TMP" --out benchmarks/results || failed=1
echo "logs: $TMP/logs"
exit "$failed"
