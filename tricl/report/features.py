"""The Features and Feature detail pages' view-models: which axes a feature number names, the
unresolved groups, the class facts of a feature, and the notes on image-text captions.

Shaped from a stored :class:`tricl.analysis.Analysis` (its importance, class statistics and
groups); nothing here reads a model or a dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tricl.bases import get_basis
from tricl.methods import METHODS

ORDER_LABELS = {
    "S": "learned importance S = softplus(s)",
    "variance": "variance of the normalised feature",
    "ablation": "leave-one-out linear-probe accuracy drop",
    "index": "the feature's own position (NeuralEF-CLR: feature 0 is the first eigenfunction)",
    "eigenvalue": "eigenvalue of the run's spectral basis (augmentation invariance, 1 = unchanged "
    "by every augmentation), estimated on train pairs",
}
# What every class view shows instead of classes when the image set has none.
NO_LABELS = (
    "**No labels**: these images have no classes (an image folder without class subfolders, or "
    "shards without `cls`), so there are no class views, probes or few-feature accuracies. "
    "Features, importance, top images, the embedding, the spectral basis and the seed "
    "comparisons need no labels."
)
# A feature's top images "belong" to a class only this far above the chance share 1/C.
SELECTIVE_OVER_CHANCE = 2.0
CAPTIONS_NOTE = (
    "Top captions and words are ranked by the **text encoder's** feature #i (g_i of the caption), "
    "a different network from the image encoder whose feature #i ranks the top images: the two "
    "agree only as far as training aligned image i with caption i, so a feature's captions can "
    "name another digit or style than its images."
)


TABLE_HEADER_PX = 38  # a table's header row


def table_height(rows: int, row_height: int) -> int:
    """A table's height in pixels with every row on the page (no scrolling inside the table,
    where rows past the first screen were easy to miss). Rows are ``row_height`` + 1 px border."""
    return TABLE_HEADER_PX + (row_height + 1) * max(rows, 1)


def order_caption(analysis: Any, order: str) -> str:
    """One sentence naming the importance order the page uses, and why if it is a fallback."""
    what = ORDER_LABELS.get(order, order)
    spec = METHODS.get(getattr(analysis, "method", ""))
    if order == "S" and spec is not None and spec.head:  # S solved from statistics, not learned
        what = "importance S = eigenvalues solved by the run's head (cross-view correlation)"
    note = ""
    orders = analysis.importance.orders
    # the fallback note only where variance stands in for a missing S (not for an index order)
    trained = not get_basis(analysis.basis).fixed_order
    if trained and order == "variance" and not {"S", "index"} & set(orders):
        note = " (this run has no learned S, so the dashboard orders its features by variance)"
    return f"Features ordered by **{order}**: {what}{note}."


def basis_note(analysis: Any, order: str) -> str:
    """Which axes a feature number refers to: ``spectral basis`` or ``trained axes, S order``."""
    return get_basis(analysis.basis).feature_ref(order)


def feature_name(analysis: Any, rank: int, order: str) -> str:
    """``feature #3 (spectral basis)`` or ``feature #3 (trained axes, S order)``."""
    return f"feature #{rank} ({basis_note(analysis, order)})"


def group_label(group: Sequence[int]) -> str:
    """A 0-based inclusive rank range as pages name it: ``(2, 4)`` -> ``#3-#5``."""
    return f"#{group[0] + 1}-#{group[1] + 1}"


def group_of(groups: Iterable[Sequence[int]], rank: int) -> tuple[int, int] | None:
    """The unresolved group holding 0-based ``rank``, or None."""
    return next(((g[0], g[1]) for g in groups if g[0] <= rank <= g[1]), None)


def ranges_label(ranks: Iterable[int]) -> str:
    """Sorted 0-based ranks as 1-based ranges: ``[0, 1, 2, 5]`` -> ``#1-#3, #6``."""
    parts: list[list[int]] = []
    for r in sorted(int(r) for r in ranks):
        if parts and r == parts[-1][-1] + 1:
            parts[-1].append(r)
        else:
            parts.append([r])
    return ", ".join(f"#{p[0] + 1}" if len(p) == 1 else group_label((p[0], p[-1])) for p in parts)


def groups_markdown(groups: Sequence[Sequence[int]], k: int) -> str:
    """The unresolved groups of a spectral basis, and the ranks safe to compare across seeds."""
    if not groups:
        return (
            f"Every eigenvalue gap is larger than its estimation noise: all {k} ranks are "
            "identifiable from the data and safe to compare across seeds."
        )
    lines = [f"- **{group_label(g)}**: order not identifiable from the data" for g in groups]
    grouped = {r for g in groups for r in range(g[0], g[1] + 1)}
    safe = [r for r in range(k) if r not in grouped]
    return (
        "Neighbouring eigenvalues closer than their split-half estimation noise form one "
        "unresolved group: inside it the order (and the single features) may differ between "
        "seeds, only the group's span is defined.\n\n"
        + "\n".join(lines)
        + f"\n\n**Safe to compare across seeds:** {ranges_label(safe) or 'none'}."
    )


@dataclass(frozen=True)
class ClassFacts:
    """What one feature says about the classes, read off its stored statistics.

    Attributes:
        strongest: index of the class whose mean activation is furthest from the overall mean
            (largest |class mean - mean|): what the class charts highlight.
        strongest_mean: that class's mean activation.
        top_class: the most frequent class among the feature's top images.
        top_share: its share of those images.
        chance: 1 / number of classes, the share of a feature blind to the class.
        selective: the top images lean to ``top_class`` (share at least
            :data:`SELECTIVE_OVER_CHANCE` times chance).
    """

    strongest: int
    strongest_mean: float
    top_class: int
    top_share: float
    chance: float
    selective: bool


def class_text(analysis: Any, row: int) -> str:
    """The class of evaluation row ``row`` as shown: ``class 7``, or ``no label``."""
    label = int(analysis.features.labels[row])
    return f"class {analysis.classes[label]}" if 0 <= label < len(analysis.classes) else "no label"


def class_facts(analysis: Any, feature: int) -> ClassFacts:
    """The :class:`ClassFacts` of raw feature index ``feature`` of ``analysis`` (which must have
    labels: see ``analysis.has_labels``)."""
    stats = analysis.stats
    means = np.asarray(stats.class_means[feature], dtype=float)  # (C,)
    if means.size == 0:
        raise ValueError("an analysis without labels has no class facts; show NO_LABELS instead")
    centre = float(stats.mean[feature])
    strongest = int(np.argmax(np.abs(means - centre)))
    share = float(stats.dominant_share[feature])
    chance = 1.0 / len(means)
    return ClassFacts(
        strongest=strongest,
        strongest_mean=float(means[strongest]),
        top_class=int(stats.dominant_class[feature]),
        top_share=share,
        chance=chance,
        selective=share >= SELECTIVE_OVER_CHANCE * chance,
    )


def top_class_label(facts: ClassFacts, classes: Sequence[Any]) -> str:
    """The top images' class as a metric value: ``8``, or ``none`` near chance."""
    return str(classes[facts.top_class]) if facts.selective else "none"


def class_facts_caption(facts: ClassFacts, classes: Sequence[Any]) -> str:
    """One sentence on the two class readings, so they cannot seem to disagree silently."""
    strongest = f"class {classes[facts.strongest]} (mean {facts.strongest_mean:+.2f})"
    top = f"class {classes[facts.top_class]}"
    if not facts.selective:
        return (
            f"Its top-100 images are spread over the classes (at most {facts.top_share:.0%} "
            f"{top}, chance {facts.chance:.0%}): no class dominates them. The class whose mean "
            f"activation lies furthest from the overall mean is {strongest}."
        )
    same = facts.strongest == facts.top_class
    return (
        f"{facts.top_share:.0%} of its top-100 images are {top} (chance {facts.chance:.0%}); "
        + (
            f"{strongest} also has the most extreme mean activation."
            if same
            else f"the most extreme mean activation is {strongest}: the feature separates that "
            "class by its sign or spread, not by its top images."
        )
    )


def pair_corr(comp: Any, i: int, j: int) -> np.ndarray:
    """Signed correlations of run i's features (rows) with run j's in a stored comparison.

    Returns:
        Shape: (k_i, k_j), each run in its comparison order.
    """
    return comp.corr[(i, j)] if (i, j) in comp.corr else comp.corr[(j, i)].T


def matched_partner(comp: Any, i: int, j: int, rank: int) -> tuple[int, int, float]:
    """Run j's Hungarian partner of run i's feature at 0-based ``rank`` (comparison order).

    Read off the stored correlation matrix of the pair (a k x k assignment, milliseconds), so one
    stored comparison per seed group serves the page of every run in it.

    Returns:
        ``(rank_b, feature_b, corr)``: the partner's rank and raw index in run j, and the
        signed correlation.
    """
    from tricl.analysis.identifiability import hungarian_match

    m = hungarian_match(pair_corr(comp, i, j))
    pos = int(np.flatnonzero(m.rows == rank)[0])
    rank_b = int(m.cols[pos])
    return rank_b, int(comp.orders[j][rank_b]), float(m.corr[pos])


def same_rank_corrs(comp: Any, run: str, others: Sequence[str], rank: int) -> dict[str, float]:
    """Signed corr of ``run``'s rank ``rank`` (1-based) with the same rank of each other run,
    read off a stored comparison holding them all (runs with fewer ranks are left out)."""
    i = comp.runs.index(run)
    out = {}
    for other in others:
        c = pair_corr(comp, i, comp.runs.index(other))  # (k_i, k_j)
        if rank <= min(c.shape):
            out[other] = float(c[rank - 1, rank - 1])
    return out


def matched_caption(rank: int) -> str:
    """What the other seeds' matched features show (trained axes)."""
    return (
        "For each other seed: the Hungarian match of this feature (best one-to-one pairing of "
        f"features) and the correlation with that seed's own feature #{rank}. If the features "
        f"are identifiable, the match IS that seed's #{rank} with |corr| near 1. A negative sign "
        "means the feature is flipped, so its bottom images are shown."
    )


def same_rank_caption(rank: int, corr: float | None, group: Sequence[int] | None, k: int) -> str:
    """Under another run's spectral rank ``rank``: its |corr| with this run's, its sign and its
    unresolved group (``corr`` None: the run has fewer than ``rank`` features)."""
    if corr is None:
        return f"#{rank}: not in this run (it has {k} features)"
    flip = " · sign −: its bottom images and negated class means" if corr < 0 else ""
    note = f" · in its unresolved group {group_label(group)}" if group is not None else ""
    return f"#{rank}: |corr| {abs(corr):.2f} with this run's #{rank}{flip}{note}"


def unresolved_warning(group: Sequence[int], rank: int) -> str:
    """Why feature #``rank`` of a spectral basis may not come back as the same # in a seed."""
    return (
        f"{group_label(group)}: order not identifiable from the data. Feature #{rank} lies in a "
        "cluster of eigenvalues closer than their estimation noise, so another seed's "
        f"#{rank} may be any mix of that cluster's features."
    )
