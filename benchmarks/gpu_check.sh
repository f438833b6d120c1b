#!/usr/bin/env bash
# The GPU runbook of docs/gpu.md as one script: correctness on CUDA first, then the tiny
# workflow with gpu slots, then the benchmarks. Each step runs under its own time limit and
# writes LOGS/NN-step.log; this script prints each step's exit status, seconds and last lines.
#
#   benchmarks/gpu_check.sh [LOGS]     (default results/gpu_check; PY: the interpreter,
#                                       default .venv/bin/python; SCALE: kernel models, 500)
#
# Run from the repository root on a machine with a GPU. On a CPU machine the CUDA tests do
# not exist (pytest selects none) and the benchmarks stop at `--device cuda`.
set -u
PY=${PY:-.venv/bin/python}
LOGS=${1:-results/gpu_check}
SCALE=${SCALE:-500}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 MULTIRUN_TEST_COLD=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME LIMIT_S COMMAND...: run it, its output in LOGS/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit} s): $*"
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - start)) s"
  tail -n "${TAIL:-30}" "$LOGS/$name.log"
}

step 00-info 30 bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, \
torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))'; \
nproc; free -g"
# the fused CPU loops are never used on CUDA: their [fused-cuda] test variants skip
MULTIRUN_KERNEL_FUSED=0 step 01-correctness 150 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
  tests/test_kernel.py tests/test_train.py tests/test_hessian.py tests/test_gpus.py
TAIL=25 step 02-workflow 150 bash -o pipefail -c "$PY -m snakemake --cores 4 --resources gpu=2 \
--configfile configs/test.yaml --config gpu=1 2>&1 | tail -n 3 && grep -h 'gpu slot' \
results/logs/*/*.log | sed 's/ at [^:]*:/:/' | sort | uniq -c && cat results/summary/*.csv"
step 03-train 120 "$PY" benchmarks/bench_train.py --device cuda --airbench-seeds 8 --repeats 3
# tf32 and bf16 at SCALE models; plain fp32 (no tensor cores) at a fifth of them
step 04-kernel 120 bash -c "for p in tf32:$SCALE bf16:$SCALE fp32:$((SCALE / 5)); do \
$PY benchmarks/bench_kernel.py --skip-default --scale --scale-models \${p#*:} --train 50000 \
--test 10000 --device cuda --precision \${p%:*} || exit; done"
step 05-hessian 90 "$PY" benchmarks/bench_hessian.py --resnet18 --device cuda
