"""The Runs page's view-models: each run's importance spectrum and what the chart's caption
says about it, shaped from stored analyses (or their summaries); nothing here reads a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tricl.methods import method_label
from tricl.runs import Run

# zero_shot key -> (Runs page column, help); the keys are load_text_analysis's zero_shot dict's
ZERO_SHOT_COLUMNS = {
    "zero_shot_acc": (
        "zero-shot acc",
        "image-text runs: accuracy of classifying each evaluation image by its most similar "
        "class-name prompt (prompts averaged per class), the method's own similarity",
    ),
    "i2t_r1": (
        "image→text R@1",
        "image-text runs: share of evaluation images whose own caption "
        "is the most similar caption (a caption with the same text counts)",
    ),
    "i2t_r5": ("image→text R@5", "the same within the 5 most similar captions"),
    "t2i_r1": (
        "text→image R@1",
        "share of evaluation captions whose own image is the most similar image",
    ),
    "t2i_r5": ("text→image R@5", "the same within the 5 most similar images"),
}


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


def spectrum_summary(runs: Sequence[Run], found: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per method and order, in the order of their first run, mean over its analysed runs: the
    share of importance held by the 8 most important features, the share an even spread gives,
    the number of features and the ratio of the largest to the smallest importance.

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
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["order"]), []).append(row)
    values = ("k", "top8_share", "even_share", "max_over_min")
    return [
        {"method": m, "order": o, **{v: float(np.mean([r[v] for r in rs])) for v in values}}
        for (m, o), rs in groups.items()
    ]


def spectrum_caption(summary: Sequence[Mapping[str, Any]]) -> str:
    """What the importance chart shows, measured: how much of the importance the top 8 hold per
    method against an even spread, and how far the largest importance is from the smallest."""
    if not summary:
        return "No analysed run yet: analyse the runs to see their importance spectra."
    parts = [
        f"{row['method']} ({row['order']}) {row['top8_share']:.0%}, largest/smallest"
        f" {row['max_over_min']:.1f}x"
        for row in summary
    ]
    even = summary[0]["even_share"]
    return (
        "Each run's importance scores, sorted and divided by their sum: a steep curve means a "
        "few features carry most of the importance, a flat one that importance is spread "
        f"evenly. Share held by the 8 most important features (an even spread gives {even:.0%}"
        f" at k = {int(summary[0]['k'])}), mean over seeds: " + "; ".join(parts) + ". "
        "The order is what the pages rank features by; a flat curve only says the scores are "
        "close, not that the order is meaningless (see Few features)."
    )
