#!/usr/bin/env bash
# The GPU runbook of docs/gpu.md as one script: correctness on CUDA first, then the tiny
# workflow with gpu slots, then the benchmarks. Each step runs under its own time limit and
# writes LOGS/NN-step.log; this script prints each step's exit status, seconds and last lines.
#
#   benchmarks/gpu_check.sh [LOGS]     (default results/gpu_check; exit 1 if a step failed)
#
# Environment: PY the interpreter (.venv/bin/python); ONLY the steps to run, e.g. "03 05"
# (all); SCALE the kernel benchmark's models (4000: 4.8 GB of fabricated logits, written
# in about a minute); RESNET_STEPS the Lanczos steps on ResNet-18 (80: about 3 minutes).
#
# Run from the repository root on a machine with a GPU. On a CPU machine the CUDA variants
# of the tests do not exist (pytest selects only test_gpus.py's three tests that name CUDA)
# and the benchmarks stop at `--device cuda`.
set -u
PY=${PY:-.venv/bin/python}
LOGS=${1:-results/gpu_check}
SCALE=${SCALE:-4000}
STEPS="00 01 02 03 04 05"
ONLY=${ONLY:-$STEPS}
for n in $ONLY; do
  [[ " $STEPS " == *" $n "* ]] || { echo "ONLY: no step $n (steps: $STEPS)" >&2; exit 2; }
done
mkdir -p "$LOGS"
WORK=$(mktemp -d)  # step 02's workflow runs here, not in this checkout's results/
trap 'rm -rf "$WORK"' EXIT
FAILED=""
export PYTHONUNBUFFERED=1 MULTIRUN_TEST_COLD=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME LIMIT_S COMMAND...: run it, its output in LOGS/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  [[ " $ONLY " == *" ${name%%-*} "* ]] || return 0
  start=$(date +%s)
  echo "== $name (limit ${limit} s): $*"
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  [[ $rc == 0 ]] || FAILED="$FAILED $name"
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
--directory $WORK --configfile $PWD/configs/test.yaml --config gpu=1 2>&1 | tail -n 3 && \
grep -h 'gpu slot' $WORK/results/logs/*/*.log | sed 's/ at [0-9T:.-]*:/:/' | sort | uniq -c && \
cat $WORK/results/summary/*.csv"
step 03-train 120 "$PY" benchmarks/bench_train.py --device cuda --airbench-seeds 8 \
  --airbench-steps 10 --repeats 3
step 04-kernel 180 "$PY" benchmarks/bench_kernel.py --skip-default --scale --scale-models "$SCALE" \
  --train 50000 --test 10000 --device cuda --precision tf32,bf16,fp32
step 05-hessian 240 "$PY" benchmarks/bench_hessian.py --resnet18 --device cuda \
  --resnet-steps "${RESNET_STEPS:-80}"
[[ -z $FAILED ]] || { echo "== failed:$FAILED" >&2; exit 1; }
