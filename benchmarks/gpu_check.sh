#!/usr/bin/env bash
# GPU check: what a GPU machine should print before the paper-scale run is started there.
#
# Not run in CI, and nothing depends on it. Under 10 minutes on one GPU:
#   [1] training images/s of resnet18_cifar, batch 256, bf16 AMP (tricl and simclr),
#   [2] the tricl/simclr step-time ratio,
#   [3] the analysis time of 10,000 images on the GPU,
#   [4] whether every CUDA-only test passes (the tests that skip without CUDA; their names
#       contain "cuda").
# Usage (from anywhere; PYTHON defaults to python):  benchmarks/gpu_check.sh [bench_gpu.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
then
    echo "gpu_check: no CUDA GPU visible to torch in $PYTHON (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
fi

start=$SECONDS
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 420 "$PYTHON" benchmarks/bench_gpu.py --device cuda "$@"

echo "[4] CUDA-only tests (pytest -k cuda):"
if timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda tests; then
    echo "[4] CUDA-only tests: all passed"
    status=0
else
    echo "[4] CUDA-only tests: FAILED (see above)"
    status=1
fi
echo "gpu_check: done in $((SECONDS - start)) s"
exit "$status"
