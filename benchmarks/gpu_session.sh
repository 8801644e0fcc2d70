#!/usr/bin/env bash
# Everything the speed issue needs from one GPU lease, in two commands of under 10 minutes each, run from the
# repository root on a machine that already has torch, torchvision and timm (no pip install: the package is used
# from the source tree through PYTHONPATH; pytest is needed for `check`).
#
#   bash benchmarks/gpu_session.sh wheels   # HERE, before the lease: wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_session.sh check    # CUDA tests, then the four headline targets   (about 4 minutes)
#   bash benchmarks/gpu_session.sh matrix   # the table of docs/performance.md, cut at 7 minutes (DEADLINE)
#
# The device tool's call: run(command="bash benchmarks/gpu_session.sh check", carry=[".whl"], timeout_s=420).
# Files go to $OUT (the device tool's result folder) or benchmarks/results/gpu; each benchmark's JSON and the matrix
# table are written as soon as they exist, so what ran comes back even when the command is cut.
# MODEL, SIZE, PYTHON, DEADLINE (seconds for `matrix`) and LIMIT (seconds per benchmark in `check`) can be set.
set -uo pipefail

out="${OUT:-benchmarks/results/gpu}"
python="${PYTHON:-python3}"
model="${MODEL:-sparseinst_r50_giam}"
size="${SIZE:-640x853}"
limit="${LIMIT:-100}"
# The GPU image (docs: the device tool's KINDS.md) has torch, timm, numpy, scipy, safetensors, huggingface_hub,
# filelock, pillow, pyyaml, tqdm and pytest, but not pycocotools (a core dependency: masks are RLE-encoded with it).
wheels=(pycocotools==2.0.11)

install_wheels() {  # on the GPU machine: the carried .whl/ into /tmp/site, first on PYTHONPATH
    if "$python" -c "import pycocotools" 2>/dev/null; then
        return
    fi
    [ -d .whl ] || { echo "!! pycocotools is missing and no .whl/ was carried: run 'bash $0 wheels' here first" >&2; exit 3; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
        exit 3
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
}

run() {  # run NAME ARGS...: one benchmark (at most $limit s), its JSON kept, a failure noted but not fatal
    local name=$1
    shift
    echo "== $name"
    timeout "$limit" "${bench[@]}" "$@" --out "$out/$name.json" || { echo "!! $name failed or timed out"; status=1; }
}

case "${1:-check}" in
wheels | check | matrix) ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh wheels|check|matrix" >&2
    exit 2
    ;;
esac

case "${1:-check}" in
wheels)  # here, with pip and the package registry: Python 3.12 x86-64 wheels, as the GPU image's python3
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
        platforms+=(--platform "$p")
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .whl "${wheels[@]}" && ls -l .whl
    exit $?
    ;;
esac

mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
install_wheels
bench=("$python" -m sparseinst_zoo.commands.benchmark "$model" --device cuda --size "$size" --min-size 640)
# inductor's default mode: max-autotune's kernel search takes minutes per batch size, more than a lease allows
fast=(--fold-bn --channels-last --precision bf16 --compile default --cuda-graphs)
status=0

case "${1:-check}" in
check)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/env.txt"
    "$python" -c "import torch, torchvision, timm, pycocotools; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())" | tee -a "$out/env.txt"
    # the CUDA tests only (graphs, sync count, GPU resize and pinned uploads, postprocess vs the CPU); CI runs the rest
    "$python" -m pytest -q -p no:cacheprovider -rs -m "not slow" -k "cuda" tests/test_optimize.py \
        tests/test_sync_points.py tests/test_transforms.py tests/test_postprocess.py 2>&1 | tee "$out/tests.log" ||
        status=1
    run predict-b1-fp32 --what predict --fold-bn --channels-last --cuda-graphs             # target <= 8 ms
    run predict-b1-fastest --what predict "${fast[@]}"                                     # target <= 2.5 ms
    run forward-b32-bf16 --batch-size 32 "${fast[@]}"                                      # target >= 1200 img/s
    run predict-b32-fastest --batch-size 32 --what predict "${fast[@]}"                    # target >= 900 img/s
    ;;
matrix)  # mode by mode, the compiled one last; rows past the deadline are listed as skipped
    "$python" benchmarks/run_matrix.py "$model" --device cuda --size "$size" --min-size 640 --batch-sizes 1 32 \
        --what forward predict --modes fp32 fp32-fold-cl fp32-fold-cl-graphs fp16-cl bf16-cl bf16-cl-compile-graphs \
        --compile-mode default --timeout 120 --deadline "${DEADLINE:-420}" --out "$out/matrix.md" --json-out "$out/matrix.json" || status=1
    ;;
esac
exit $status
