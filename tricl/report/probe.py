"""The Probe page's view-models: whether a typed caption can be probed, and the table of the
evaluation images a caption retrieves. Shaped from the worker's answer and a stored analysis."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MAX_CAPTION_CHARS = 1000  # longer input is refused before it reaches the worker


def caption_problem(text: str) -> str | None:
    """Why a typed caption cannot be probed (one line), or None if it can."""
    if not text.strip():
        return "Type a caption to probe, e.g. “a thick handwritten 3”."
    if len(text) > MAX_CAPTION_CHARS:
        return (
            f"The caption is {len(text):,} characters long; type at most {MAX_CAPTION_CHARS:,} "
            "(the model reads only its first few dozen tokens anyway)."
        )
    return None


def retrieved_table(
    top: np.ndarray, scores: np.ndarray, analysis: Any, captions: tuple[str, ...] | None
) -> pd.DataFrame:
    """One row per retrieved image: rank, similarity, class (with labels) and (if stored) its own
    caption.

    Args:
        top: indices of the retrieved evaluation images, best first. Shape: (n,).
        scores: the caption's similarity to every evaluation image. Shape: (N,).
        analysis: the run's stored analysis (classes and labels of the evaluation images).
        captions: each evaluation image's caption, or None.
    """
    table = {
        "#": np.arange(1, len(top) + 1),
        "image": top,
        "similarity": scores[top],
    }
    if analysis.has_labels:
        table["class"] = [analysis.classes[int(analysis.features.labels[i])] for i in top]
    if captions is not None:
        table["its caption"] = [captions[int(i)] for i in top]
    return pd.DataFrame(table)
