"""Benchmark of tricl.analysis on this machine; prints numbers, asserts nothing.

1. ``analyze`` of a small_cnn run on about 10,000 images, seconds per stage (and the cached call).
   Default images: the shared CIFAR-10 subset's 10,000 training images
   (``folder:/work/shared/data/cifar10-subset``, ``--split train``) when present, else mnist5k.
2. ``analyze`` of small_cnn runs with k = 64 on mnist5k (4000 train / 1000 test), per stage: the
   leave-one-out ablation (importance) plus the few-feature curves (downstream) should take well
   under a minute together.
3. Peak memory of the streaming top-k over 1,000,000 x 256 synthetic activations against a full
   sort, each in a fresh subprocess (tracemalloc peak of NumPy allocations, and peak RSS from
   /proc/self/status VmHWM in a second run without tracemalloc).
4. ``compare`` of 6 runs (the runs of 2.), computed and cached.
5. The spectral basis of one shipped run (a copy, its cached basis and spectral artifacts
   removed): estimating the basis, then its artifacts (``analyze --basis spectral``), then the
   cached read (target: basis + artifacts under 20 s on the 2-core CPU).
6. Saliency: the three maps (integrated gradients, saliency, Grad-CAM) of one feature of a
   small_cnn on one 28x28 image, best of 3 after a warm-up (target: under 1 s; the dashboard
   draws them on demand).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_analysis.py            # everything (~10 min, 2 cores)
    python benchmarks/bench_analysis.py --only topk                  # one part
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_CIFAR = Path("/work/shared/data/cifar10-subset")

_TOPK_CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np

def status_mb(field):
    # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS into ru_maxrss across fork+exec
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
mode, rows, k, n, chunk, trace = sys.argv[1], *map(int, sys.argv[2:])
from tricl.analysis.activations import StreamingTopK
rng = np.random.default_rng(0)
base = status_mb("VmRSS")
if trace:
    tracemalloc.start()
t0 = time.perf_counter()
if mode == "streaming":
    top, bottom = StreamingTopK(k, n), StreamingTopK(k, n, largest=False)
    for start in range(0, rows, chunk):
        b = min(chunk, rows - start)
        x = rng.standard_normal((b, k), dtype=np.float32)  # (B, k) activations of one batch
        idx = np.arange(start, start + b)
        top.update(x, idx)
        bottom.update(x, idx)
    top_idx, bottom_idx = top.result()[1], bottom.result()[1]
else:
    z = np.empty((rows, k), dtype=np.float32)  # the whole (N, k) matrix, as a full sort needs
    for start in range(0, rows, chunk):
        b = min(chunk, rows - start)
        z[start : start + b] = rng.standard_normal((b, k), dtype=np.float32)
    order = np.argsort(z, axis=0)  # (N, k)
    top_idx, bottom_idx = order[::-1][:n].T, order[:n].T
seconds = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1] if trace else 0
print(json.dumps({"mode": mode, "seconds": seconds, "tracemalloc_peak_mb": peak / 2**20,
                  "peak_rss_mb": status_mb("VmHWM"),
                  "rss_after_imports_mb": base, "checksum": int(top_idx[0, 0] + bottom_idx[0, 0])}))
"""


def _print_stages(title: str, analysis, seconds: float) -> None:
    n = len(analysis.features.z)
    m = len(analysis.features.train_z)
    print(f"\n## {title}: {n} evaluation images, {m} train images, k = {analysis.k}")
    for stage, s in analysis.timings.items():
        print(f"  {stage:<12} {s:7.2f} s")
    print(f"  {'total':<12} {seconds:7.2f} s (incl. model load)")
    print(
        f"  linear probe {analysis.linear_acc:.3f}, k-NN {analysis.knn_acc:.3f},"
        f" backbone probe {analysis.full['backbone_linear_acc']:.3f}"
    )


def bench_analyze_10k(root: Path, dataset: str, split: str, epochs: int) -> None:
    from tricl.analysis import analyze
    from tricl.config import RunConfig
    from tricl.train import train

    t0 = time.perf_counter()
    cfg = RunConfig(dataset=dataset, backbone="small_cnn", epochs=epochs, warmup_epochs=0)
    run = train(cfg, runs_root=root / "big", progress=False)
    print(f"\n(trained {run.name} for {epochs} epoch(s) in {time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    a = analyze(run, split=split, progress=False)
    _print_stages(f"analyze {dataset} --split {split}", a, time.perf_counter() - t0)
    t0 = time.perf_counter()
    again = analyze(run, split=split, progress=False)
    print(f"  cached call  {time.perf_counter() - t0:7.3f} s (recomputed: {again.recomputed})")


def train_mnist_runs(root: Path, n: int, epochs: int) -> list:
    from tricl.config import RunConfig
    from tricl.train import train

    runs = []
    for i in range(n):
        method = "tricl" if i % 2 == 0 else "simclr"
        cfg = RunConfig(method=method, dataset="mnist5k", proj_dim=64, epochs=epochs, seed=i // 2)
        runs.append(train(cfg, runs_root=root / "mnist", progress=False))
    return runs


def bench_analyze_mnist(runs: list) -> None:
    from tricl.analysis import analyze

    for i, run in enumerate(runs):
        t0 = time.perf_counter()
        a = analyze(run, progress=False)
        seconds = time.perf_counter() - t0
        if i < 2:
            _print_stages(f"analyze {run.name}", a, seconds)
            both = a.timings["importance"] + a.timings["downstream"]
            print(f"  ablation + curves: {both:.1f} s")
        else:
            print(f"  analyze {run.name}: {seconds:.1f} s")


def _topk_child(mode: str, rows: int, k: int, n: int, chunk: int, trace: bool) -> dict | None:
    out = subprocess.run(
        [sys.executable, "-c", _TOPK_CHILD, mode, *map(str, (rows, k, n, chunk, int(trace)))],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        print(f"  {mode}: failed ({out.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_topk(rows: int, k: int, n: int, chunk: int) -> None:
    """Each mode runs twice: tracemalloc inflates RSS, so RSS is measured in a run without it."""
    print(f"\n## top-{n} and bottom-{n} of {rows:,} x {k} float32 activations (chunks of {chunk})")
    for mode in ("streaming", "full_sort"):
        traced = _topk_child(mode, rows, k, n, chunk, trace=True)
        plain = _topk_child(mode, rows, k, n, chunk, trace=False)
        if traced is None or plain is None:
            continue
        print(
            f"  {mode:<10} {plain['seconds']:6.1f} s"
            f"  NumPy peak (tracemalloc) {traced['tracemalloc_peak_mb']:7.1f} MB"
            f"  peak RSS {plain['peak_rss_mb']:7.1f} MB"
            f" (of which {plain['rss_after_imports_mb']:.0f} MB after imports)"
        )


def bench_compare(runs: list, root: Path) -> None:
    from tricl.analysis import compare

    t0 = time.perf_counter()
    comp = compare(runs, out_root=root / "_compare", force=True, progress=False)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    compare(runs, out_root=root / "_compare", progress=False)
    warm = time.perf_counter() - t0
    print(f"\n## compare {len(runs)} runs ({len(comp.pairs)} pairs), analyses cached")
    print(f"  computed {cold:.2f} s, cached {warm:.3f} s")
    print(comp.pairs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def bench_spectral(root: Path) -> None:
    import shutil

    from tricl.analysis import analyze, load_analysis
    from tricl.analysis.spectral import spectral_basis

    shipped = Path(__file__).resolve().parent.parent / "checkpoints"
    src = shipped / "tricl_mnist5k_small_cnn_k64_seed0"
    run = root / src.name
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("spectral", "spectral.npz"))
    load_analysis(run)  # the trained analysis it builds on is shipped: read it (not timed)
    t0 = time.perf_counter()
    basis = spectral_basis(run)
    t_basis = time.perf_counter() - t0
    t0 = time.perf_counter()
    a = analyze(run, basis="spectral", progress=False)
    t_art = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_analysis(run, basis="spectral")
    t_read = time.perf_counter() - t0
    print(f"\n## spectral basis of {src.name} ({basis.pairs} pairs, rank {basis.rank})")
    print(f"  basis {t_basis:.1f} s, artifacts {t_art:.1f} s ({', '.join(a.recomputed)}),")
    print(f"  total {t_basis + t_art:.1f} s (target < 20 s); cached read {t_read:.3f} s")


def bench_saliency() -> None:
    import torch

    from tricl.analysis.saliency import saliency_maps
    from tricl.models import Encoder

    enc = Encoder("small_cnn", 1, proj_hidden_dim=64, proj_dim=16)
    enc.learn_importance(0.1 * torch.randn(16))
    x = torch.randn(1, 28, 28)
    saliency_maps(enc, x, 0)  # warm-up: captum's imports, the first autograd graph
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        saliency_maps(enc, x, 3)
        seconds.append(time.perf_counter() - t0)
    print(f"[6] saliency: three maps of one feature in {min(seconds):.3f} s (target < 1 s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_ds = f"folder:{SHARED_CIFAR}" if SHARED_CIFAR.is_dir() else "mnist5k"
    p.add_argument("--dataset", default=default_ds, help="images for part 1")
    p.add_argument("--split", default="train" if SHARED_CIFAR.is_dir() else "test")
    p.add_argument("--epochs", type=int, default=1, help="training epochs of the benchmark runs")
    p.add_argument("--runs", type=int, default=6, help="mnist5k runs for parts 2 and 4")
    p.add_argument("--topk-rows", type=int, default=1_000_000)
    p.add_argument(
        "--only",
        choices=["analyze", "mnist", "topk", "compare", "spectral", "saliency"],
        default=None,
    )
    args = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped to a file

    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.only in (None, "analyze"):
            bench_analyze_10k(root, args.dataset, args.split, args.epochs)
        if args.only in (None, "mnist", "compare"):
            runs = train_mnist_runs(root, args.runs if args.only != "mnist" else 2, args.epochs)
            bench_analyze_mnist(runs)
            if args.only in (None, "compare"):
                bench_compare(runs, root)
        if args.only in (None, "topk"):
            bench_topk(args.topk_rows, 256, 32, 4096)
        if args.only in (None, "spectral"):
            bench_spectral(root)
        if args.only in (None, "saliency"):
            bench_saliency()


if __name__ == "__main__":
    main()
