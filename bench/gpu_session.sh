#!/usr/bin/env bash
# Everything a lent GPU (H100 / H200) is needed for, in one command that fits the device tool's
# 10-minute call (see /work/.library/device): build the CUDA module for sm_90, run the tests that
# only a GPU can run, then take the GPU figures issues 3, 4 and 5 ask for.
#
#   make gpu-wheels                                         # here: wheels the device lacks (gymnasium, gymnax), into .whl
#   bash bench/gpu_session.sh [all|build|check|bench]      # there (carry .whl); default: all
#   bash bench/gpu_session.sh sanitize                      # a second call: compute-sanitizer over every GPU kernel
#
# Writes at most 8 files under $OUT (the device tool brings them back; default bench-out/gpu):
#   build.log, check.log      the build and the pytest run on the device
#   gpu-envs.json             metakern bench --device cuda --only envs/  (issue 4: Krazy World at 2^20 envs)
#   gpu-synapse.json          python -m metakern.bench.synapse --device cuda (issue 5: B=256, N=64, S=2,
#                             T=500 vs the naive loop, achieved FLOP/s against a measured matmul peak)
#   gpu-kernels.json          metakern bench --device cuda for the scan, estimator, policy and oracle families
#   summary.txt               the tables of the three bench runs (the call's reply shows its tail)
#   sanitize-*.log            (sanitize) tests/gpu_sanitize.py under compute-sanitizer's memcheck,
#                             initcheck and racecheck (SANITIZE_TOOLS), each kernel once at odd sizes
# Order: build, the two benchmarks the issues' GPU targets name (envs, synapse), the tests, then the
# other kernels' benchmarks; so a call cut off at its limit still brings back the target figures
# (files under $OUT come back even then). Each step has its own time limit (STEP_LIMIT_S, seconds;
# default 240), so one that hangs cannot take the rest of the call with it.
# Steps that fail are reported and the rest still run; the exit status is the first failure's.
# A dry run of the plumbing without a GPU: DEVICE=cpu QUICK=1 bash bench/gpu_session.sh bench
set -uo pipefail

phase=${1:-all}
case "$phase" in all | build | check | bench | sanitize) ;; *)
    echo "usage: $0 [all|build|check|bench|sanitize]" >&2
    exit 2
    ;;
esac
OUT=${OUT:-bench-out/gpu}
mkdir -p "$OUT"
export METAKERN_CUDA_ARCHS=${METAKERN_CUDA_ARCHS:-90}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:+--quick}
status=0
LIMIT=${STEP_LIMIT_S:-240}
step() { # step NAME CMD...: run (at most LIMIT seconds), keep the first failure's status
    local name=$1
    shift
    local t0=$SECONDS
    timeout --kill-after=10 "$LIMIT" "$@"
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "== $name: stopped at the ${LIMIT} s step limit" | tee -a "$OUT/summary.txt"; fi
    echo "== $name: rc=$rc, $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
    return 0
}

# The carried wheels go to /tmp/site (the build phase), on the path of every later step and call.
use_site() {
    case ":${PYTHONPATH:-}:" in
    *:/tmp/site:*) ;;
    *) if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi ;;
    esac
}
use_site

built() { "$PY" -c "import torch, metakern._backend as b; assert torch.cuda.is_available() and b.cuda_module()" 2>/dev/null; }
build_once() { # the CUDA module, unless this machine already has it
    if built; then
        echo "== build: already built" | tee -a "$OUT/summary.txt"
    else
        step build bash -c "'$PY' -m pip install --no-build-isolation --no-deps -e . >>'$OUT/build.log' 2>&1 || { tail -40 '$OUT/build.log'; exit 1; }"
    fi
}

if [ "$phase" = all ] || [ "$phase" = build ]; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >"$OUT/summary.txt" 2>&1
    if [ -d .whl ]; then # `make gpu-wheels` here, then carry .whl: what the device's python lacks
        step wheels bash -c "'$PY' -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>'$OUT/build.log' 2>&1"
    fi
    use_site
    build_once
fi

if [ "$phase" = all ] || [ "$phase" = bench ]; then # the figures the issues' GPU targets name
    step bench-envs bash -c "'$PY' -m metakern.cli bench $QUICK --device $DEVICE --only envs/ --json '$OUT/gpu-envs.json' -q >>'$OUT/summary.txt' 2>&1"
    step bench-synapse bash -c "'$PY' -m metakern.bench.synapse $QUICK --device $DEVICE --json '$OUT/gpu-synapse.json' -q >>'$OUT/summary.txt' 2>&1"
fi

if [ "$phase" = all ] || [ "$phase" = check ]; then
    # the CUDA-marked tests, and the Triton tests that run compiled kernels on a GPU
    step check bash -c "'$PY' -m pytest -q -x -p no:cacheprovider -m cuda tests >'$OUT/check.log' 2>&1; rc=\$?;
        '$PY' -m pytest -q -p no:cacheprovider tests/test_synapse_triton.py tests/test_synapse.py >>'$OUT/check.log' 2>&1 || rc=\$((rc ? rc : \$?));
        tail -3 '$OUT/check.log'; exit \$rc"
fi

if [ "$phase" = all ] || [ "$phase" = bench ]; then
    step bench-kernels bash -c "'$PY' -m metakern.cli bench $QUICK --device $DEVICE --only scan/ --only estimators/ --only policy/ --only oracle/ --json '$OUT/gpu-kernels.json' -q >>'$OUT/summary.txt' 2>&1"
fi

if [ "$phase" = sanitize ]; then # its own call: the sanitizers slow every kernel down many times
    build_once
    # SANITIZER=none runs the driver alone: a dry run of the plumbing (DEVICE=cpu SANITIZER=none).
    SAN=${SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
    for tool in ${SANITIZE_TOOLS:-memcheck initcheck racecheck}; do
        run=("$SAN" --tool "$tool" --error-exitcode 9)
        if [ "$SAN" = none ]; then run=(); fi
        step "sanitize-$tool" bash -c '"$@" >"$0" 2>&1; rc=$?; tail -5 "$0"; exit $rc' \
            "$OUT/sanitize-$tool.log" "${run[@]}" "$PY" tests/gpu_sanitize.py --device "$DEVICE"
    done
fi

tail -60 "$OUT/summary.txt"
exit $status
