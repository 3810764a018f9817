"""The arms of the studies: each a named recipe (a :class:`Variant`) and its colour in figures.

:func:`run_arm` trains every seed of an arm (``tricl train``'s own function), analyses each run
(``tricl analyze``) and compares the seeds (``tricl compare``); the reproduce, paper-scale and
plateau studies all draw their recipes from :data:`ARMS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tricl.experiments.common import Variant, train_seeds
from tricl.methods import method_color

# Each arm: a label, a colour and the recipe. "tricl" follows the paper (S learned, on every
# similarity); "tricl-official" reproduces the official code (S on view 1 only, never optimised).
# An arm that is a plain method takes the method's colour (tricl.methods); recipe variants of a
# method have their own.
ARMS: dict[str, tuple[Variant, str]] = {
    "simclr": (Variant("simclr", {"method": "simclr"}), method_color("simclr")),
    "tricl": (Variant("tricl", {"method": "tricl"}), method_color("tricl")),
    "tricl-official": (
        Variant(
            "tricl-official", {"method": "tricl", "s_placement": "first_view", "s_frozen": True}
        ),
        "#ff9896",
    ),
    "tricl-geometric": (
        Variant(
            "tricl-geometric",
            {"method": "tricl", "s_init": "geometric", "s_init_spread": 1.0},
            note="S starts spread from 1 to 0.1 (distinct values from the first step)",
        ),
        "#8c564b",
    ),
    "tricl-whiten": (
        Variant(
            "tricl-whiten",
            {"method": "tricl", "decorrelation": "whiten", "s_lr_mult": 10.0},
            note="a whitening decorrelation the features can meet, and 10x learning rate on S:"
            " the recipe that orders the synthetic factors",
        ),
        "#e377c2",
    ),
    "spectral": (Variant("spectral", {"method": "spectral"}), method_color("spectral")),
    "tri-spectral": (
        Variant("tri-spectral", {"method": "tri-spectral"}),
        method_color("tri-spectral"),
    ),
    "tri-eigen": (
        Variant(
            "tri-eigen",
            {"method": "tri-eigen"},
            note="triCL whose last rotation and S are solved in closed form from running"
            " covariances each step (tricl.heads.EigenHead), the backbone trained through them",
        ),
        method_color("tri-eigen"),
    ),
    "neuralef": (
        Variant(
            "neuralef",
            {"method": "neuralef"},
            note="NeuralEF-CLR (Deng et al. 2023): the peer method that orders its outputs by a"
            " stop-gradient penalty; features in index order",
        ),
        method_color("neuralef"),
    ),
}


# The paper's pair and the spectral pair; the variants are opt-in (each adds about 3 minutes).
DEFAULT_METHODS = ["simclr", "tricl", "spectral", "tri-spectral"]


@dataclass
class ArmResult:
    """Everything measured for one arm on one dataset."""

    name: str
    runs: list
    analyses: list
    pairs: pd.DataFrame


def run_arm(
    name: str,
    seeds: list[int],
    root: Path,
    base: dict[str, Any],
    progress: bool,
    reuse: Path | None = None,
) -> ArmResult:
    """Train (or reuse) every seed of arm ``name``, analyse each run and compare the seeds.

    Args:
        name: a key of :data:`ARMS`.
        seeds: the training seeds.
        root: where the arm's runs are kept (reused and resumed).
        base: the RunConfig fields every run shares (dataset, epochs, ...).
        progress: draw progress bars.
        reuse: a folder of finished runs of the same recipe to use instead of training.

    Returns:
        The arm's runs, their analyses and the comparison of every seed pair (empty for one seed).
    """
    from tricl.analysis import analyze, compare

    variant, _ = ARMS[name]
    runs = train_seeds(variant, seeds, root, progress=progress, reuse=reuse, **base)
    analyses = [analyze(r, progress=progress) for r in runs]
    pairs = compare(runs, progress=progress).pairs if len(runs) > 1 else pd.DataFrame()
    return ArmResult(name, runs, analyses, pairs)
