"""GPU benchmark behind benchmarks/gpu_check.sh; prints numbers, asserts nothing.

1. training images/s of resnet18_cifar at batch 256 with AMP (bf16 autocast, channels-last), for
   tricl and simclr: the real training step of ``tricl train`` (augmentation on the device, two
   views, forward, loss, backward, LARS step) on a CIFAR-format image folder it writes (random
   32x32 RGB PNGs), a few hundred timed steps after warm-up;
2. the tricl / simclr step-time ratio from 1 (measured in alternating rounds, so drift hits both);
3. ``tricl analyze`` of a one-epoch resnet18_cifar run (k = 64) on the folder's 10,000 training
   images on the device: seconds for the whole analysis, and for the cached read.

Usage::

    python benchmarks/bench_gpu.py                                  # on a GPU (a few minutes)
    python benchmarks/bench_gpu.py --device cpu --steps 3 --batch-size 32 --images 400  # CPU check
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tricl.config import RunConfig
from tricl.train import Session, amp_context, setup, train, train_step


def write_cifar_folder(root: Path, n_train: int, n_test: int) -> Path:
    """A CIFAR-10-format ImageFolder: 10 classes of random 32x32 RGB PNGs, train/ and test/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            folder = root / split / f"class{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(s: Session, steps: int, warmup: int) -> list[float]:
    """Seconds per training step of session ``s`` (after ``warmup`` untimed steps)."""
    perm = torch.randperm(len(s.train_x)).to(s.device)
    amp = amp_context(s.device, s.cfg.precision)
    s.model.train()
    times = []
    for i in range(warmup + steps):
        _sync(s.device)
        t0 = time.perf_counter()
        train_step(s, 0, i % s.steps_per_epoch, perm, amp)
        _sync(s.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def paper_config(method: str, data: str, args: argparse.Namespace, **changes) -> RunConfig:
    """The paper's CIFAR-10 recipe (tricl.experiments.paper_scale) on ``data``."""
    from tricl.experiments.paper_scale import PAPER_RECIPE

    recipe = {**PAPER_RECIPE, "dataset": data, "batch_size": args.batch_size}
    return RunConfig(**{**recipe, "method": method, "device": args.device, **changes})


def bench_training(data: str, root: Path, args: argparse.Namespace) -> dict[str, float]:
    """[1] and [2]: median step time of tricl and simclr, in alternating rounds."""
    sessions = {
        m: setup(paper_config(m, data, args), runs_root=root / "steps", progress=False)
        for m in ("tricl", "simclr")
    }
    rounds = 4
    times: dict[str, list[float]] = {m: [] for m in sessions}
    for r in range(rounds):
        for m, s in sessions.items():
            warmup = args.warmup if r == 0 else 2
            times[m] += time_steps(s, max(1, args.steps // rounds), warmup)
    return {m: statistics.median(t) for m, t in times.items()}


def bench_analysis(data: str, root: Path, args: argparse.Namespace) -> tuple[float, float]:
    """[3]: seconds of ``analyze`` on the train split of a one-epoch run, computed and cached."""
    from tricl.analysis import analyze

    cfg = paper_config("tricl", data, args, epochs=1, warmup_epochs=0, proj_dim=64)
    run = train(cfg, runs_root=root / "analysis", progress=False)
    t0 = time.perf_counter()
    analyze(run, split="train", device=args.device, progress=False)
    computed = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyze(run, split="train", device=args.device, progress=False)
    return computed, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (to try the script)")
    p.add_argument("--steps", type=int, default=300, help="timed training steps per method")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (cudnn autotune)")
    p.add_argument("--batch-size", type=int, default=256, help="global batch (paper: 256)")
    p.add_argument("--images", type=int, default=10_000, help="training images (analysis: all)")
    args = p.parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        folder = write_cifar_folder(root / "cifar", args.images, max(10, args.images // 5))
        data = f"folder:{folder}"
        print(f"wrote {args.images} CIFAR-format images in {time.perf_counter() - t0:.1f}s")
        step = bench_training(data, root, args)
        precision = "bf16 AMP" if args.device.startswith("cuda") else "fp32 (no AMP on a CPU)"
        for m, t in step.items():
            print(
                f"[1] training {m} resnet18_cifar, batch {args.batch_size}, {precision}: "
                f"{args.batch_size / t:,.0f} img/s ({t * 1e3:.1f} ms/step, two views each)"
            )
        ratio = step["tricl"] / step["simclr"]
        print(f"[2] step time ratio tricl/simclr = {ratio:.3f} (target <= 1.05)")
        epoch_min = 50_000 / args.batch_size * step["tricl"] / 60  # CIFAR-10: 50,000 images
        hours = epoch_min * 200 / 60
        print(f"    => a CIFAR-10 epoch ~{epoch_min:.1f} min, 200 epochs ~{hours:.1f} h per run")
        computed, cached = bench_analysis(data, root, args)
        print(
            f"[3] analyze (k=64) of {args.images} images on {args.device}: {computed:.1f}s"
            f" computed, {cached:.2f}s cached"
        )


if __name__ == "__main__":
    main()
