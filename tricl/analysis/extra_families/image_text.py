"""Image-text runs (clip, triclip, an open_clip import on captions) as extra stage families:
their caption side (``image_text.TEXT``), pair basis (``pair_basis.PAIR``) and comparison of image
AND text features across seeds (``image_text_compare.IMAGE_TEXT``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tricl.analysis.extra_families import ExtraFamily, register_extra_family
from tricl.analysis.image_text import TEXT, analyze_text, has_text
from tricl.analysis.image_text_compare import (
    IMAGE_TEXT,
    compare_image_text,
    load_image_text_comparison,
    summarize,
)
from tricl.analysis.metrics import METRICS
from tricl.analysis.pair_basis import PAIR
from tricl.runs import Run


def _words(text: Any, basis: Any) -> Any:
    """The caption words per feature; captions are read in the trained axes only."""
    return text.tokens if basis.captions else None


def report(comp: Any) -> str:
    """The image-text pairs and, where seeds of one configuration meet, their mean +- std."""
    out = [f"\nimage and text features, {comp.basis} basis:"]
    out.append(comp.pairs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = summarize([comp])
    if summary.empty:
        return "\n".join(out)
    shown = summary[["method", "side", "basis", "n_pairs"]].copy()
    for m in METRICS:
        means, stds = summary[f"{m}_mean"], summary[f"{m}_std"]
        shown[m] = [f"{a:.3f} ± {b:.3f}" for a, b in zip(means, stds)]
    out += ["\nseed pairs of one configuration, mean ± std:", shown.to_string(index=False)]
    return "\n".join(out)


def _all_have_text(runs: Sequence[Run]) -> bool:
    return bool(runs) and all(has_text(r) for r in runs)


IMAGE_TEXT_FAMILIES = register_extra_family(
    ExtraFamily(
        name="image-text",
        families=(TEXT, PAIR, IMAGE_TEXT),
        applies=_all_have_text,
        analyze=analyze_text,
        words=_words,
        compare=compare_image_text,
        load=load_image_text_comparison,
        rows=lambda comp: comp.pairs,
        report=report,
        not_compared="text features not compared ({names} without a text encoder); pass only"
        " clip / triclip runs to compare them",
    )
)
