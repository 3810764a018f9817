#!/usr/bin/env bash
# GPU check: what a GPU machine should print before the paper-scale run is started there.
#
# Not run in CI, and nothing depends on it. Under 10 minutes on one GPU:
#   [1] training images/s of resnet18_cifar, batch 256, bf16 AMP (tricl and simclr),
#   [2] the tricl/simclr step-time ratio,
#   [3] the analysis time of 10,000 images on the GPU,
#   [4] whether every CUDA-only test passes (the tests that skip without CUDA; their names
#       contain "cuda"),
#   [5] images/s of the analysis's feature pass of a ResNet-50 (random weights, 2,048 features)
#       at 224 px, at the batch the memory budget picks (tricl.analysis.features.extract).
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
echo "[5] feature pass of a ResNet-50 at 224 px (analysis, batch from the memory budget):"
timeout 120 "$PYTHON" - <<'PY' || status=1
import time, torch, torchvision
from tricl.analysis.features import batch_size_for, extract

class R50(torch.nn.Module):
    """torchvision's ResNet-50 as an encoder: h = the pooled layer4 output, z = h."""
    def __init__(self):
        super().__init__()
        self.net = torchvision.models.resnet50().eval()
        self.net.fc = torch.nn.Identity()
    def forward_features(self, x):
        return self.net(x)
    def project(self, h):
        return h

dev = "cuda"
enc = R50().to(dev)
images = torch.randint(0, 256, (2048, 3, 32, 32), dtype=torch.uint8)  # upsampled per batch
def preprocess(x):
    x = torch.nn.functional.interpolate(x.float() / 255, size=224, mode="bilinear", antialias=True)
    return (x - 0.45) / 0.225
batch = batch_size_for(enc, images[:1], preprocess, device=dev)
extract(enc, images[:batch], preprocess, device=dev, batch_size=batch)  # warm-up
torch.cuda.synchronize()
t0 = time.perf_counter()
extract(enc, images, preprocess, device=dev, batch_size=batch)
torch.cuda.synchronize()
print(f"[5] ResNet-50 224 px feature pass: {len(images) / (time.perf_counter() - t0):.0f} images/s (batch {batch}, float32)")
PY
echo "gpu_check: done in $((SECONDS - start)) s"
exit "$status"
