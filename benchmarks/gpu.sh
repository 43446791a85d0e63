#!/usr/bin/env bash
# What a CUDA machine should check and measure, in stages that each fit a 10-minute call:
#
#   bash benchmarks/gpu.sh tests            # the kernel, bench and export tests on the GPU
#   bash benchmarks/gpu.sh kernels fp16     # benchmarks/kernels.py for these dtypes (runs add up in one table)
#   bash benchmarks/gpu.sh bench            # gantk bench, resnet_9blocks 256 px, batch 1/8/32, every GPU backend
#   bash benchmarks/gpu.sh train            # benchmarks/train_step.py --device cuda (eager, amp, compile, triton)
#   bash benchmarks/gpu.sh tests kernels fp16 bf16 fp32 bench train   # all of it, in order
#
# Works on a machine whose Python already has torch, triton, numpy, pillow, click, tqdm (no installs from
# the network): gantk is used from this checkout (nothing is installed). Results go to benchmarks/results/, and also to $OUT
# when that is set (a folder the caller collects).
set -uo pipefail
cd "$(dirname "$0")/.."
# The checkout as an importable package without installing it: gantk/ with kernels/ and export/ linked
# in as gantk.kernels and gantk.export (pyproject's package-dir mapping), all as symlinks to this tree.
SRC=build/gpu-src
rm -rf "$SRC" && mkdir -p "$SRC/gantk"
for f in "$PWD"/gantk/* "$PWD"/kernels "$PWD"/export; do ln -s "$f" "$SRC/gantk/"; done
# PYTHONSAFEPATH: the working directory must not shadow that package with the bare gantk/ (python -m).
export PYTHONPATH="$PWD/$SRC${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RES=benchmarks/results
status=0

collect() {  # copy results to $OUT (flat: the caller's collector takes at most a few files)
    [ -n "${OUT:-}" ] && for f in "$@"; do [ -f "$f" ] && cp "$f" "$OUT/"; done
    return 0
}

run() {
    echo "== $*"
    "$@" || { echo "== failed ($?): $*"; status=1; }
}

"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO GPU')"
while [ $# -gt 0 ]; do
    stage=$1
    shift
    case $stage in
    tests)
        run "$PY" -m pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_bench.py tests/test_export.py
        ;;
    kernels)
        dtypes=()
        while [ $# -gt 0 ] && [[ $1 == fp* || $1 == bf* ]]; do dtypes+=("$1"); shift; done
        run "$PY" benchmarks/kernels.py ${dtypes:+--dtypes "${dtypes[@]}"}
        collect "$RES"/kernels_*.json "$RES"/kernels_*.md
        ;;
    bench)
        run "$PY" -m gantk bench --netG resnet_9blocks --ngf 64 --sizes 256 --batches 1,8,32 --device cuda \
            --budget_s 10 --out "$RES/bench_cuda_resnet9_256" \
            --backends eager,amp,amp-bf16,channels_last,compile,triton,amp+compile+triton,amp-bf16+compile+triton,amp-bf16+channels_last+compile,compile-max-autotune,aoti,ort-cuda,ort-trt,trt-fp16
        collect "$RES"/bench_cuda_resnet9_256.*
        ;;
    train)
        run "$PY" benchmarks/train_step.py --device cuda --iters 10 --iter-timeout 120 \
            --configs eager amp compile amp+compile triton amp+triton amp+compile+triton amp+channels_last+compile
        collect "$RES"/train_step_cuda.*
        ;;
    *)
        echo "unknown stage $stage (expected tests, kernels [dtypes], bench, train)" >&2
        exit 2
        ;;
    esac
done
exit $status
