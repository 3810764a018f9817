"""The Runs page's view-models: each run's importance spectrum and what the chart's caption
says about it, shaped from stored analyses (or their summaries); nothing here reads a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tricl.methods import method_label
from tricl.runs import Run


def sorted_importance(analysis: Any) -> tuple[str, np.ndarray]:
    """A run's importance scores in its default order, largest first.

    Args:
        analysis: an ``Analysis`` or ``AnalysisSummary`` (its ``importance``).

    Returns:
        (the order's name, the scores sorted in decreasing order). Shape: (k,).
    """
    order = analysis.importance.default
    scores = np.sort(np.asarray(analysis.importance.scores[order], dtype=float))[::-1]
    return order, scores


def spectrum_summary(runs: Sequence[Run], found: Mapping[str, Any]) -> pd.DataFrame:
    """Per method, mean over its analysed runs: the order used, the share of importance held by
    the 8 most important features, and the ratio of the largest to the smallest importance.

    Args:
        runs: the runs, in the page's order.
        found: their stored analyses (or summaries) by run name; runs without one are skipped.
    """
    rows = []
    for r in runs:
        if (a := found.get(r.name)) is None:
            continue
        order, scores = sorted_importance(a)
        if scores.sum() <= 0 or scores[-1] <= 0:
            continue
        share = scores / scores.sum()
        head = min(8, len(share))
        rows.append(
            {
                "method": method_label(r.config.method),
                "order": order,
                "k": len(share),
                "top8_share": share[:head].sum(),
                "even_share": head / len(share),
                "max_over_min": scores[0] / scores[-1],
            }
        )
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby(["method", "order"], sort=False).mean().reset_index()


def spectrum_caption(summary: pd.DataFrame) -> str:
    """What the importance chart shows, measured: how much of the importance the top 8 hold per
    method against an even spread, and how far the largest importance is from the smallest."""
    if summary.empty:
        return "No analysed run yet: analyse the runs to see their importance spectra."
    parts = [
        f"{row.method} ({row.order}) {row.top8_share:.0%}, largest/smallest {row.max_over_min:.1f}x"
        for row in summary.itertuples()
    ]
    even = summary["even_share"].iloc[0]
    return (
        "Each run's importance scores, sorted and divided by their sum: a steep curve means a "
        "few features carry most of the importance, a flat one that importance is spread "
        f"evenly. Share held by the 8 most important features (an even spread gives {even:.0%}"
        f" at k = {int(summary['k'].iloc[0])}), mean over seeds: " + "; ".join(parts) + ". "
        "The order is what the pages rank features by; a flat curve only says the scores are "
        "close, not that the order is meaningless (see Few features)."
    )
