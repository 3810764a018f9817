"""The paper's CIFAR-10 setting: ``python -m tricl.experiments.reproduce --paper-scale``.

Full CIFAR-10 (torchvision's download into ``$TRICL_DATA``, or ``--paper-dataset folder:PATH``),
ResNet-18 with the CIFAR stem, 200 epochs, LARS at lr 0.4 with 10 warm-up epochs, batch 256,
projector 512-2048-256, temperature 0.2, tau 1 (Zhang, Wang & Wang, NeurIPS 2023, Sec. 5 and
App. C). ``tricl train`` already does what the scale needs: bf16 autocast on CUDA, channels-last
weights, augmentation on the device, DDP under ``torchrun`` with features gathered across ranks,
atomic checkpoints; this module only fixes the recipe, checkpoints every ``--save-every`` epochs,
and runs the study's analysis and tables at the end.

One GPU::

    python -m tricl.experiments.reproduce --paper-scale --seeds 0 1 2

Several GPUs on one machine (every rank trains; rank 0 then analyses and writes the report)::

    torchrun --nproc_per_node 4 -m tricl.experiments.reproduce --paper-scale

A killed run is resumed by running the same command again (each run directory resumes from its
last checkpoint; finished runs and cached analyses are reused).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# The paper's CIFAR-10 recipe (RunConfig fields). weight_decay 1e-5 and warm-up 10 of 200 epochs
# follow the paper's appendix; AMP is tricl train's own bf16 autocast on CUDA.
PAPER_RECIPE: dict[str, Any] = {
    "dataset": "cifar10",
    "backbone": "resnet18_cifar",
    "epochs": 200,
    "optimizer": "lars",
    "lr": 0.4,
    "batch_size": 256,
    "proj_hidden_dim": 2048,
    "proj_dim": 256,
    "temperature": 0.2,
    "tau": 1.0,
    "warmup_epochs": 10,
    "weight_decay": 1e-5,
}
# What --smoke shrinks (CI on a CPU in well under a minute): the same code path end to end with a
# small CNN instead of ResNet-18 (whose CPU step alone would take the minute), 1 epoch, small
# widths, LARS kept.
SMOKE_CHANGES: dict[str, Any] = {
    "backbone": "small_cnn",
    "epochs": 1,
    "warmup_epochs": 0,
    "batch_size": 64,
    "proj_hidden_dim": 32,
    "proj_dim": 8,
}
PAPER_METHODS = ["simclr", "tricl"]
# An honest estimate, not a measurement: ResNet-18 at 32 px, two views of batch 256, bf16, about
# 10-20 s per epoch on one A100/H100-class GPU, so 35-70 min per 200-epoch run; 6 runs (2 methods x
# 3 seeds) take about 4-7 h on one GPU, plus ~5 min of analysis per run. benchmarks/gpu_check.sh
# measures the images/s on a given GPU, from which the time follows (100k images per epoch).
TIME_ESTIMATE = (
    "needs a GPU in practice: estimated (not measured) 35-70 min per 200-epoch run on one"
    " A100/H100-class GPU, i.e. about 4-7 h for 2 methods x 3 seeds plus ~5 min of analysis per"
    " run; on a CPU a single run would take days. benchmarks/gpu_check.sh measures a GPU's"
    " images/s (an epoch is 2 x 50,000 images)"
)


def add_arguments(p: argparse.ArgumentParser, arms: list[str]) -> None:
    """The ``--paper-scale`` options of the reproduce command."""
    p.add_argument(
        "--paper-scale",
        action="store_true",
        help="run the paper's CIFAR-10 setting instead of the small studies: full CIFAR-10,"
        " resnet18_cifar, 200 epochs, LARS lr 0.4, batch 256, projector 512-2048-256,"
        " temperature 0.2, tau 1, bf16 AMP on CUDA; one GPU or torchrun. " + TIME_ESTIMATE,
    )
    p.add_argument(
        "--paper-dataset",
        default="cifar10",
        help="--paper-scale data: cifar10 (downloaded into $TRICL_DATA on first use) or"
        " folder:PATH (an ImageFolder tree with train/ and test/, e.g. CIFAR-10 as PNGs)",
    )
    p.add_argument(
        "--paper-methods",
        nargs="+",
        default=PAPER_METHODS,
        choices=arms,
        help="--paper-scale arms (tricl-official, the official code's frozen-S recipe, costs one"
        " more run per seed)",
    )
    p.add_argument(
        "--paper-epochs", type=int, default=PAPER_RECIPE["epochs"], help="--paper-scale epochs"
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=10,
        help="--paper-scale: checkpoint every N epochs (a killed run loses at most N - 1 epochs;"
        " rerun the same command to resume)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="--paper-scale training device (auto: CUDA if present; torchrun sets the rank's GPU)",
    )


def paper_base(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields every paper-scale run shares (the smoke version with ``--smoke``)."""
    base = {
        **PAPER_RECIPE,
        "dataset": args.paper_dataset,
        "epochs": args.paper_epochs,
        "warmup_epochs": min(PAPER_RECIPE["warmup_epochs"], args.paper_epochs),
        "save_every": args.save_every,
        "device": args.device,
    }
    return {**base, **SMOKE_CHANGES} if args.smoke else base


def _train_all(args: argparse.Namespace, base: dict[str, Any], root: Path, progress: bool):
    """Train (or resume) every arm and seed; every torchrun rank takes part."""
    from tricl.experiments.arms import ARMS
    from tricl.experiments.common import train_seeds

    return {
        name: train_seeds(ARMS[name][0], args.seeds, root, progress=progress, **base)
        for name in args.paper_methods
    }


def _analyse(runs_by_arm: dict[str, list], device: str, progress: bool) -> list:
    """Analysis and seed comparison of every arm (rank 0 only), as the small studies do."""
    import pandas as pd

    from tricl.analysis import analyze, compare
    from tricl.experiments.arms import ArmResult

    results = []
    for name, runs in runs_by_arm.items():
        analyses = [analyze(r, device=device, progress=progress) for r in runs]
        pairs = compare(runs, progress=progress).pairs if len(runs) > 1 else pd.DataFrame()
        results.append(ArmResult(name, runs, analyses, pairs))
    return results


def run_paper_scale(args: argparse.Namespace, command: str) -> int:
    """Train, analyse and report the paper-scale study; returns the exit status.

    Under torchrun every rank trains; only rank 0 analyses and writes ``RESULTS.md``.
    """
    import torch

    from tricl import distributed as dist_utils
    from tricl.experiments.results import write_report
    from tricl.train import resolve_device

    if args.save_every < 1 or args.paper_epochs < 1:
        raise SystemExit("error: --save-every and --paper-epochs must be >= 1 (e.g. 10 and 200)")
    progress = not args.no_progress
    base = paper_base(args)
    root = args.runs_root / ("paper_scale_smoke" if args.smoke else "paper_scale")
    runs_by_arm = _train_all(args, base, root, progress)  # train() draws bars on rank 0 only
    if dist_utils.is_distributed():
        rank = dist_utils.rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    device = resolve_device(args.device)
    results = _analyse(runs_by_arm, str(device), progress)
    title = "CIFAR-10 paper scale (smoke)" if args.smoke else "CIFAR-10 paper scale"
    out = args.out if args.out is not None else Path("experiments/paper_scale")
    path = write_report([(title, results, base)], out, "", None, command)
    print(f"wrote {path}")
    return 0
