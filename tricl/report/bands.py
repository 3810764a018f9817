"""The Feature detail page's activation ranges: one row per activation band, bottom to top.

Shaped from the stored ``activation_bands`` stage
(:class:`tricl.analysis.split_stages.activation_bands.ActivationBands`, read as
``analysis.values["activation_bands"]``); nothing here reads a model, a dataset or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STAGE = "activation_bands"  # the stage's name in Analysis.values and params
MIX_TOP = 3  # classes named in a band's class mix


@dataclass(frozen=True)
class BandRow:
    """One activation band of one feature.

    Attributes:
        band: its number, 1 = the bottom band.
        low: its lower edge.
        high: its upper edge.
        count: evaluation images in it.
        share: their share of the split.
        class_mix: its most frequent classes with their shares (``""`` without labels).
        samples: dataset indices of its sampled images (no padding). Shape: (<= S,).
    """

    band: int
    low: float
    high: float
    count: int
    share: float
    class_mix: str
    samples: np.ndarray


def class_mix(counts: np.ndarray, classes: Sequence[Any], top: int = MIX_TOP) -> str:
    """``3 52% · 8 20% · 5 11%``: the ``top`` most frequent classes of ``counts`` (C,) with their
    shares; ``""`` when there are no labelled images."""
    counts = np.asarray(counts)
    total = int(counts.sum())
    if total == 0:
        return ""
    order = np.argsort(-counts, kind="stable")[:top]
    return " · ".join(f"{classes[c]} {counts[c] / total:.0%}" for c in order if counts[c] > 0)


def band_rows(bands: Any, feature: int, classes: Sequence[Any]) -> list[BandRow]:
    """The bands of feature ``feature`` (its raw index), bottom to top."""
    counts = bands.counts[feature]  # (B,)
    total = max(int(counts.sum()), 1)
    edges = bands.edges[feature]  # (B + 1,)
    rows = []
    for j, n in enumerate(counts):
        samples = bands.samples[feature, j]  # (S,), -1 padded
        mix = bands.class_counts[feature, j] if len(classes) else np.zeros(0)
        rows.append(
            BandRow(
                band=j + 1,
                low=float(edges[j]),
                high=float(edges[j + 1]),
                count=int(n),
                share=int(n) / total,
                class_mix=class_mix(mix, classes),
                samples=samples[samples >= 0],
            )
        )
    return rows


def near_zero_caption(analysis: Any, feature: int) -> str:
    """The near-zero fraction of feature ``feature`` (raw index) and the rule behind it, read off
    the stage's stored parameters."""
    bands = analysis.values[STAGE]
    rule = analysis.params[STAGE]["near_zero"]
    frac, thr = float(bands.near_zero[feature]), float(bands.near_zero_threshold[feature])
    return (
        f"Near zero on **{frac:.0%}** of the evaluation images ({rule}: |a| ≤ {thr:.3g}). The "
        f"range from its minimum to its maximum is cut into {len(bands.counts[feature])} "
        "equal-width bands; each shows a few images drawn at random from it (the same ones every "
        "time), so you see what the feature does below its top images too."
    )


def not_computed(run_name: str, basis: str) -> str:
    """What a run analysed before the stage existed shows instead of its bands."""
    return (
        f"Activation ranges not computed yet for this run: run `tricl analyze {run_name} "
        f"--basis {basis}` (only the missing bands are computed, in about a second)."
    )
