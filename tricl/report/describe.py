"""A short description of every feature, read off what was measured (either basis).

The rule, written once here and shown on the Features table, the Feature detail header, the
consensus table and ``tricl analyze``'s summary:

- **classes that raise and lower it**: each class's mean activation in units of the feature's
  standard deviation over all evaluation images, ``(class mean - mean) / std``; a class at least
  :data:`CLASS_EFFECT_SD` away counts (a "medium" effect in Cohen's terms), most extreme first.
  A feature is signed (a spectral feature's sign is arbitrary), so both sides are named:
  ``high: 6 (+1.3 sd), 4, 8 · low: 1 (-2.0 sd)``;
- **selectivity**: the share of its top images in their most frequent class, named only when it
  reaches :data:`tricl.report.features.SELECTIVE_OVER_CHANCE` times chance (``top-100: 96% 1``),
  otherwise ``top-100 mixed``;
- **words** (image-text runs, where captions are shown): the words whose presence in a caption
  raises the feature most.

Where no class mean is that far from the mean the feature is called **diffuse** and nothing is
guessed; a feature that is constant on the images says so. Nothing here reads a model or a
dataset: only the stored statistics (:class:`tricl.analysis.image_stages.FeatureStats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tricl.report.features import SELECTIVE_OVER_CHANCE

CLASS_EFFECT_SD = 0.5  # a class mean this many standard deviations from the mean raises/lowers it
MAX_CLASSES = 4  # classes named per side; the rest are counted
MAX_WORDS = 3
NO_LABELS = "no class labels: no class to describe it by"
RULE = (
    "Description, read off the stored statistics: **high** / **low**: the classes whose mean "
    f"activation is at least {CLASS_EFFECT_SD:g} standard deviations (of the feature over all "
    "evaluation images) above / below its mean, most extreme first, the first with its "
    "distance; a spectral feature's sign is arbitrary, so high and low may swap between seeds. "
    "**top-N**: the share of its top-N images in their most frequent class, when it is at "
    f"least {SELECTIVE_OVER_CHANCE:g}x chance (else *mixed*). **diffuse**: no class mean is "
    f"{CLASS_EFFECT_SD:g} sd from the mean, so no class describes it."
)


@dataclass(frozen=True)
class Description:
    """What one feature's stored statistics say about it.

    Attributes:
        high: (class label, effect in sd) of the classes that raise it, most extreme first.
        low: the same for the classes that lower it (negative effects), most extreme first.
        strongest: (class label, effect) of the class furthest from the mean, named or not.
        top_class: the most frequent class among its top images.
        top_share: that class's share of them.
        top_n: how many top images the share is over.
        selective: the share reaches ``SELECTIVE_OVER_CHANCE`` times chance.
        constant: the feature does not vary on the evaluation images.
        words: the words that raise it most (image-text runs), highest first.
    """

    high: tuple[tuple[str, float], ...]
    low: tuple[tuple[str, float], ...]
    strongest: tuple[str, float]
    top_class: str
    top_share: float
    top_n: int
    selective: bool
    constant: bool = False
    words: tuple[str, ...] = ()

    @property
    def diffuse(self) -> bool:
        """No class mean is :data:`CLASS_EFFECT_SD` from the mean: no class describes it."""
        return not (self.high or self.low)

    @property
    def text(self) -> str:
        """The one-line description, e.g. ``high: 6 (+1.3 sd), 4 · low: 1 (-2.0 sd) · top-100
        mixed``."""
        if self.constant:
            return "constant on the evaluation images: nothing to describe"
        top = f"top-{self.top_n}"
        parts = [
            self._classes_text(),
            f"{top}: {self.top_share:.0%} {self.top_class}" if self.selective else f"{top} mixed",
        ]
        if self.words:
            parts.append("words: " + ", ".join(self.words))
        return " · ".join(parts)

    def _classes_text(self) -> str:
        if self.diffuse:
            name, d = self.strongest
            far = f"no class ≥ {CLASS_EFFECT_SD:g} sd from the mean"
            return f"diffuse: {far} (most: {name}, {d:+.1f} sd)"
        sides = (("high", self.high), ("low", self.low))
        return " · ".join(f"{side}: {_classes(named)}" for side, named in sides if named)


def _classes(named: tuple[tuple[str, float], ...]) -> str:
    """``6 (+1.3 sd), 4, 8`` and ``+2 more`` past :data:`MAX_CLASSES`."""
    shown = [f"{named[0][0]} ({named[0][1]:+.1f} sd)", *(c for c, _ in named[1:MAX_CLASSES])]
    more = len(named) - MAX_CLASSES
    return ", ".join(shown) + (f", +{more} more" if more > 0 else "")


def describe_feature(
    class_means: np.ndarray,
    mean: float,
    std: float,
    classes: Sequence[Any],
    top_class: int,
    top_share: float,
    top_n: int,
    words: Sequence[str] = (),
) -> Description:
    """The :class:`Description` of one feature from its statistics.

    Args:
        class_means: its mean activation on each class. Shape: (C,).
        mean: its mean activation over all evaluation images.
        std: its standard deviation over them.
        classes: class labels. Length: C.
        top_class: index of the most frequent class among its top images.
        top_share: that class's share of them.
        top_n: how many top images the share is over.
        words: the words that raise it most, highest first (image-text runs; else empty).

    Returns:
        The description; ``text`` is its one line.
    """
    means = np.asarray(class_means, dtype=float)  # (C,)
    constant = not std > 0
    effect = np.zeros_like(means) if constant else (means - mean) / std  # (C,)
    order = np.argsort(-np.abs(effect), kind="stable")
    named = [(str(classes[c]), float(effect[c])) for c in order]
    strong = [(c, d) for c, d in named if abs(d) >= CLASS_EFFECT_SD and not constant]
    return Description(
        high=tuple((c, d) for c, d in strong if d > 0),
        low=tuple((c, d) for c, d in strong if d < 0),
        strongest=named[0],
        top_class=str(classes[int(top_class)]),
        top_share=float(top_share),
        top_n=int(top_n),
        selective=float(top_share) >= SELECTIVE_OVER_CHANCE / len(means),
        constant=constant,
        words=tuple(words)[:MAX_WORDS],
    )


def describe(analysis: Any, feature: int, words: Sequence[str] = ()) -> Description:
    """The :class:`Description` of raw feature index ``feature`` of a stored analysis."""
    s = analysis.stats
    return describe_feature(
        s.class_means[feature],
        float(s.mean[feature]),
        float(s.std[feature]),
        analysis.classes,
        int(s.dominant_class[feature]),
        float(s.dominant_share[feature]),
        int(s.selectivity_n),
        words,
    )


def describe_all(
    analysis: Any,
    features: Sequence[int],
    words_of: Callable[[int], Sequence[str]] | None = None,
) -> list[str]:
    """The one-line descriptions of ``features`` (raw indices, e.g. in importance order).

    Args:
        analysis: a stored analysis (either basis).
        features: raw feature indices.
        words_of: raw feature index -> the words that raise it (image-text runs), or None.
    """
    return [
        line(analysis, int(f), words_of(int(f)) if words_of is not None else ()) for f in features
    ]


def line(analysis: Any, feature: int, words: Sequence[str] = ()) -> str:
    """The one-line description of raw feature ``feature``; an image set without class labels
    gives :data:`NO_LABELS` (and the words, if any) instead of describing noise by class."""
    if not getattr(analysis, "has_labels", True):
        return " · ".join(
            [NO_LABELS, *(["words: " + ", ".join(words[:MAX_WORDS])] if words else [])]
        )
    return describe(analysis, feature, words).text


def top_words(tokens: Any, feature: int, n: int = MAX_WORDS) -> list[str]:
    """The words that raise raw feature ``feature`` most, from a text analysis's word table
    (columns ``feature, token, lift``), only words with a positive lift."""
    rows = tokens[(tokens["feature"] == int(feature)) & (tokens["lift"] > 0)]
    return [str(w) for w in rows.sort_values("lift", ascending=False)["token"].head(n)]


def consensus_descriptions(table: Any, analyses: dict[str, Any]) -> list[str]:
    """The description of each consensus rank, from its representative run's spectral analysis
    (rank r is that basis's feature r - 1); ``""`` where the analysis is not stored."""
    out = []
    for rank, run in zip(table["rank"], table["representative"]):
        a = analyses.get(run)
        out.append(line(a, int(rank) - 1) if a is not None and rank <= a.k else "")
    return out
