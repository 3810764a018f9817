"""Real-scale benchmark of the analysis on this machine; prints figures, asserts nothing.

1. ``tricl analyze --split train`` of a ``resnet18_cifar`` run (random weights, imported from a
   solo-learn-format checkpoint with a 2048-128 projector) over N CIFAR-10 train images (default
   all 50,000 of ``folder:/work/shared/data/cifar10-full``): wall time, peak resident memory
   (target < 4 GiB), the size of the feature store; then ``--basis spectral`` (the spectral
   basis: 4 passes x 2 augmented views of at most ``spectral.MAX_IMAGES`` = 5,000 of the N
   images, a seeded subsample, and its artifacts): wall time, peak memory; then both bases on the
   test split (the dashboard's), which read the train split's store instead of a second pass.
2. An imported torchvision ResNet-50 (random weights, ``torch.save`` of
   ``torchvision.models.resnet50().state_dict()`` with a ``module.`` prefix) read at 224 px over
   M of those images (default 5,000, upsampled from 32 px per batch by the model's preprocessing):
   images/s of the feature pass at the batch the memory budget picks, then ``tricl analyze
   --split train``: wall time, peak memory, stored features.
3. The dashboard on the runs of 1. and 2. (``benchmarks/bench_app.py --run`` each run made): first
   page, every page warm (target <= 1 s), server memory (target < 700 MiB), the model worker's.

Each analysis runs as a child process (``tricl`` CLI); its peak resident memory is the child's
``ru_maxrss`` from ``os.wait4``. Every measured step appends its figures to ``WORK/results.jsonl``;
called again with the same ``--work`` it prints the recorded steps and runs only the others (a
run cut short resumes where it stopped; the stores and artifacts already written are reused).
N < 50,000 and M < 5,000 use a folder of symlinks to the first
N / 10 (M / 10) train images of each class, and the 2,000 test images.

Usage::

    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/bench_scale.py --work /tmp/bench_scale
                                                                            # 50,000 / 5,000
    python benchmarks/bench_scale.py --train-images 1000 --r50-images 200   # a 2-core check
    python benchmarks/bench_scale.py --only r50 --r50-images 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIFAR_FULL = Path("/work/shared/data/cifar10-full")
MEMORY_TARGET_GIB = 4.0

_R18_CKPT = r"""
import sys, torch
from tricl.models import Encoder
torch.manual_seed(0)
enc = Encoder("resnet18_cifar", 3, proj_hidden_dim=2048, proj_dim=128)
sd = enc.state_dict()
sd = {k: v for k, v in sd.items() if k.startswith(("backbone.", "projector."))}
torch.save({"state_dict": sd, "epoch": 0}, sys.argv[1])
"""

_R50_WEIGHTS = r"""
import sys, torch, torchvision
torch.manual_seed(0)
sd = torchvision.models.resnet50().state_dict()
torch.save({f"module.{k}": v for k, v in sd.items()}, sys.argv[1])
"""

# images/s of the feature pass: the run's encoder on the first images, at the budget's batch
_FEATURE_PASS = r"""
import sys, time, torch
from tricl.analysis.features import batch_size_for, extract
from tricl.runs import Run
run = Run.load(sys.argv[1])
data = run.input_data(run.load_data())
x = data.train_x[: int(sys.argv[2])]
enc = run.encoder("cpu")
batch = batch_size_for(enc, x[:1], data.preprocess)
extract(enc, x[:2], data.preprocess, batch_size=2)  # warm-up
t0 = time.perf_counter()
z, h = extract(enc, x, data.preprocess, batch_size=batch)
dt = time.perf_counter() - t0
print(f"{len(x) / dt:.2f} {batch} {h.shape[1]}")
"""


def subset(n: int, work: Path) -> Path:
    """A folder with the first n / 10 train images of each class (symlinks) and every test image;
    the full folder itself for n = 50,000."""
    if n >= 50_000:
        return CIFAR_FULL
    root = work / f"cifar10-{n}"
    if root.is_dir():  # made by an earlier call on the same --work
        return root
    for split, per_class in (("train", n // 10), ("test", None)):
        for cls in sorted(p.name for p in (CIFAR_FULL / split).iterdir()):
            out = root / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted((CIFAR_FULL / split / cls).iterdir())[:per_class]:
                (out / f.name).symlink_to(f)
    return root


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """``(wall s, peak resident GiB, stdout)`` of a child process; raises with the end of its
    stderr if it fails."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read().decode() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{tail}")
    return wall, usage.ru_maxrss / 2**20, out  # ru_maxrss is in KiB on Linux


class Results:
    """Figures of the measured steps, one JSON line each in ``WORK/results.jsonl``."""

    def __init__(self, work: Path) -> None:
        self.path = work / "results.jsonl"
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        self.done = {d["step"]: d for d in map(json.loads, lines)}

    def measure(self, step: str, cmd: list[str]) -> dict:
        """``{wall, peak, out}`` of the step: recorded, or run now and recorded."""
        if step in self.done:
            print("  (recorded earlier)", end="")
            return self.done[step]
        wall, peak, out = run_child(cmd)
        return self.record(step, wall=wall, peak=peak, out=out)

    def record(self, step: str, **figures: object) -> dict:
        self.done[step] = {"step": step, **figures}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(self.done[step]) + "\n")
        return self.done[step]


def tricl(*args: str) -> list[str]:
    return [sys.executable, "-m", "tricl", *args]


def store_mib(run: Path, split: str) -> float:
    """MiB of the split's feature store (``RUN/analysis/<split>/store``)."""
    folder = run / "analysis" / split / "store"
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def report(what: str, wall: float, peak: float) -> None:
    flag = "ok" if peak < MEMORY_TARGET_GIB else f"OVER {MEMORY_TARGET_GIB} GiB"
    print(f"  {what}: {wall:.0f} s, peak resident {peak:.2f} GiB   {flag}")


def bench_r18(n: int, work: Path, root: Path, results: Results) -> str:
    folder = subset(n, work)
    ckpt = work / "r18.ckpt"
    if not ckpt.is_file():
        run_child([sys.executable, "-c", _R18_CKPT, str(ckpt)])
    name = f"r18-cifar-{n}"
    dataset = f"folder:{folder}"
    run = root / name
    if not run.is_dir():  # a second call on the same --work reads the cached analyses
        import_ = tricl("import", str(ckpt), "--dataset", dataset, "--name", name)
        run_child([*import_, "--runs-root", str(root)])
    print(f"\n[1] resnet18_cifar (random weights, k=128, h=512) over {n} train images ({dataset})")
    got = results.measure(
        "r18 train", tricl("analyze", str(run), "--split", "train", "--no-progress")
    )
    report("tricl analyze --split train", got["wall"], got["peak"])
    size = store_mib(run, "train")
    print(f"  feature store (train: float16 z, float32 h, labels): {size:.1f} MiB")
    print(f"  per image: {size * 2**20 / n:.0f} bytes")
    got = results.measure(
        "r18 train spectral",
        tricl("analyze", str(run), "--split", "train", "--basis", "spectral", "--no-progress"),
    )
    report(
        "tricl analyze --split train --basis spectral (basis: 4 x 2 views of <= 5,000 images)",
        got["wall"],
        got["peak"],
    )
    # the dashboard reads the test split (2,000 images): its store, and the N train images' store
    for basis in ("trained", "spectral"):
        cmd = tricl("analyze", str(run), "--basis", basis, "--no-progress")
        got = results.measure(f"r18 test {basis}", cmd)
        report(
            f"tricl analyze --basis {basis} (test split, the dashboard's)", got["wall"], got["peak"]
        )
    return name


def bench_r50(m: int, work: Path, root: Path, results: Results, test: bool = True) -> str:
    folder = subset(m, work)
    weights = work / "resnet50_module.pth"
    if not weights.is_file():
        run_child([sys.executable, "-c", _R50_WEIGHTS, str(weights)])
    name = f"r50-224-{m}"
    run = root / name
    if not run.is_dir():
        source = (
            "torchvision:resnet50",
            "--weights",
            str(weights),
            "--dataset",
            f"folder:{folder}",
        )
        run_child(tricl("import", *source, "--name", name, "--runs-root", str(root)))
    print(f"\n[2] torchvision ResNet-50 (random weights, 2,048 features) at 224 px over {m} images")
    n_pass = min(m, 64)
    if "r50 pass" not in results.done:
        _, peak, out = run_child([sys.executable, "-c", _FEATURE_PASS, str(run), str(n_pass)])
        rate, batch, dim = out.split()
        results.record("r50 pass", rate=float(rate), batch=int(batch), dim=int(dim), peak=peak)
    got = results.done["r50 pass"]
    print(
        f"  feature pass: {got['rate']:.2f} images/s on this CPU ({n_pass} images, batch"
        f" {got['batch']} from the memory budget, {got['dim']} features; peak resident"
        f" {got['peak']:.2f} GiB)"
    )
    got = results.measure(
        "r50 train", tricl("analyze", str(run), "--split", "train", "--no-progress")
    )
    report("tricl analyze --split train", got["wall"], got["peak"])
    print(f"  feature store (train): {store_mib(run, 'train'):.1f} MiB")
    if not test:  # the 2,000 test images at 224 px: ~30 min at 1 image/s
        return name
    got = results.measure("r50 test", tricl("analyze", str(run), "--no-progress"))
    report(
        "tricl analyze (test split, the dashboard's; reads the train store)",
        got["wall"],
        got["peak"],
    )
    return name


def bench_app(root: Path, name: str) -> None:
    print(f"\n[3] the dashboard on {root} (benchmarks/bench_app.py --run {name})", flush=True)
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_app.py"),
        "--runs-root",
        str(root),
        "--run",
        name,
        "--repeats",
        "2",
        "--load",
        "0",
    ]
    subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--train-images", type=int, default=50_000, help="images of part 1 (50,000: all)"
    )
    parser.add_argument("--r50-images", type=int, default=5_000, help="images of part 2")
    parser.add_argument(
        "--skip-r50-test",
        action="store_true",
        help="skip the ResNet-50's test-split analysis (2,000 images at 224 px)",
    )
    parser.add_argument("--only", choices=["r18", "r50", "app"], default=None, help="one part")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for runs and subsets (default: a temp dir)"
    )
    args = parser.parse_args()
    if not CIFAR_FULL.is_dir():
        raise SystemExit(f"{CIFAR_FULL} is missing: it holds the CIFAR-10 ImageFolder this needs")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "runs"
    print(f"work folder: {work}; cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"torch threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    results = Results(work)
    r18 = None
    if args.only in (None, "r18", "app"):
        r18 = bench_r18(args.train_images, work, root, results)
    if args.only in (None, "r50"):
        bench_r50(args.r50_images, work, root, results, test=not args.skip_r50_test)
    if args.only in (None, "app") and r18 is not None:
        for name in sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()):
            bench_app(root, name)  # the resnet18_cifar run, and the ResNet-50 run if made
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
