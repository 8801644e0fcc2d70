#!/usr/bin/env bash
# Everything the speed issue needs from one GPU lease, in two commands of under 10 minutes each, run from the
# repository root on a machine that already has torch, torchvision and timm (no pip install: the package is used
# from the source tree through PYTHONPATH; pytest is needed for `check`).
#
#   bash benchmarks/gpu_session.sh check    # CUDA tests, then the four headline targets   (about 5 minutes)
#   bash benchmarks/gpu_session.sh matrix   # the full table of docs/performance.md         (about 8 minutes)
#
# Files go to $OUT (the device tool's result folder) or benchmarks/results/gpu. MODEL, SIZE and PYTHON can be set.
set -uo pipefail

out="${OUT:-benchmarks/results/gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
model="${MODEL:-sparseinst_r50_giam}"
size="${SIZE:-640x853}"
bench=("$python" -m sparseinst_zoo.commands.benchmark "$model" --device cuda --size "$size" --min-size 640)
fast=(--fold-bn --channels-last --precision bf16 --compile max-autotune-no-cudagraphs --cuda-graphs)
status=0

run() {  # run NAME ARGS...: one benchmark, its JSON kept, a failure noted but not fatal
    local name=$1
    shift
    echo "== $name"
    "${bench[@]}" "$@" --json "$out/$name.json" || { echo "!! $name failed"; status=1; }
}

case "${1:-check}" in
check)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/env.txt"
    "$python" -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())" | tee -a "$out/env.txt"
    # the CUDA-only tests (graphs, sync count, GPU vs CPU) and the modules they build on
    "$python" -m pytest -q -p no:cacheprovider -rs tests/test_optimize.py tests/test_sync_points.py \
        tests/test_transforms.py tests/test_postprocess.py 2>&1 | tee "$out/tests.log" || status=1
    run predict-b1-fastest --what predict "${fast[@]}"                                     # target <= 2.5 ms
    run predict-b1-fp32 --what predict --fold-bn --channels-last --cuda-graphs             # target <= 8 ms
    run forward-b32-bf16 --batch-size 32 "${fast[@]}"                                      # target >= 1200 img/s
    run predict-b32-fastest --batch-size 32 --what predict "${fast[@]}"                    # target >= 900 img/s
    ;;
matrix)
    "$python" benchmarks/run_matrix.py "$model" --device cuda --size "$size" --min-size 640 --batch-sizes 1 8 32 \
        --what forward predict --out "$out/matrix.md" --json-out "$out/matrix.json" || status=1
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh check|matrix" >&2
    exit 2
    ;;
esac
exit $status
