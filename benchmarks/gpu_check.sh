#!/usr/bin/env bash
# The checks to run on a lent GPU machine, in one go and in under 8 minutes:
#   1. the GPU as nvidia-smi and torch see it, and that taa imports;
#   2. benchmarks/device_check.py --device cuda, when the script is there;
#   3. the tests marked gpu, when pyproject.toml declares that marker;
#   4. benchmarks/gpu_train.py: gpt2-small at context 1024 in bfloat16, eager, then --compile
#      (graph breaks and recompilations logged), then, time permitting, compiled with nanoGPT's
#      vocabulary padded to 50304; before that last one, benchmarks/device_train.py: copy,
#      translation and the char GPT, 30 steps each on the CPU and on the GPU.
# Everything is written to $OUT/gpu.log (./gpu-check/gpu.log when OUT is unset).
#
# The machine has no internet: Python packages come only from wheels already in .whl/ or
# wheels/ (installed with --no-index). The Python is $PYTHON, else the carried .venv, else
# python3: the first whose torch sees a GPU. taa is imported from ./src.
#
#   bash benchmarks/gpu_check.sh
#
# Exit status: the number of checks that failed (0 when all passed).

set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
out="${OUT:-$PWD/gpu-check}"
mkdir -p "$out"
log="$out/gpu.log"

budget_s=460  # every check's time limit is cut to what is left of this
start_s=$(date +%s)
failures=0

elapsed() { echo $(( $(date +%s) - start_s )); }

# check NAME LIMIT_S COMMAND...: runs COMMAND under the smaller of LIMIT_S and the time left.
check() {
    local name=$1 limit=$2 left rc began
    shift 2
    left=$(( budget_s - $(elapsed) ))
    if [ "$left" -lt 20 ]; then
        echo "=== $name: skipped (${left} s left of ${budget_s} s)"
        failures=$(( failures + 1 ))
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo
    echo "=== $name (limit ${limit} s): $*"
    began=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "=== $name: ok in $(( $(date +%s) - began )) s"
    else
        [ "$rc" -eq 124 ] && echo "=== $name: stopped at its limit of ${limit} s"
        echo "=== $name: FAILED (exit $rc) in $(( $(date +%s) - began )) s"
        failures=$(( failures + 1 ))
    fi
}

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

checks() {
    echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -m), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        check "nvidia-smi" 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
    fi

    local py
    if ! py=$(pick_python); then
        echo "gpu_check: no Python here has a torch that sees a GPU (tried \$PYTHON, .venv/bin/python, python3, python)"
        return 1
    fi
    echo "gpu_check: python $py ($("$py" --version 2>&1))"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

    local wheels=()
    shopt -s nullglob
    wheels=(.whl/*.whl wheels/*.whl)
    shopt -u nullglob
    if [ "${#wheels[@]}" -gt 0 ]; then
        check "wheels" 120 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/taa-wheels "${wheels[@]}"
        export PYTHONPATH="/tmp/taa-wheels:$PYTHONPATH"
    fi

    check "torch and taa" 60 "$py" -c '
import torch, taa, taa.torch
from taa.tasks.language_model import language_model_loss
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"{p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB; taa from {taa.__file__}")'

    if [ -f benchmarks/device_check.py ]; then
        check "device_check" 90 "$py" benchmarks/device_check.py --device cuda
    else
        echo "=== device_check: benchmarks/device_check.py is not here, not run"
    fi

    if grep -Eq '^[[:space:]]*"gpu[:"]' pyproject.toml; then
        check "tests marked gpu" 90 "$py" -m pytest -q -m gpu -p no:cacheprovider tests
    else
        echo "=== tests marked gpu: pyproject.toml declares no gpu marker, none run"
    fi

    check "gpu_train eager" 90 "$py" benchmarks/gpu_train.py
    check "gpu_train compiled" 200 env TORCH_LOGS=graph_breaks,recompiles "$py" benchmarks/gpu_train.py --compile
    check "device_train" 150 env TAA_DATA="${TAA_DATA:-$PWD/shared/data}" "$py" benchmarks/device_train.py --steps 30
    if [ $(( budget_s - $(elapsed) )) -ge 100 ]; then
        check "gpu_train compiled, vocabulary 50304" 120 "$py" benchmarks/gpu_train.py --compile --vocab-size 50304
    else
        echo "=== gpu_train compiled, vocabulary 50304: skipped for time"
    fi

    echo
    echo "gpu_check: $failures check(s) failed, $(elapsed) s in all"
    return "$failures"
}

checks 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
