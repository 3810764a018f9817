"""What the pages draw for image-text runs (clip, triclip): the caption side of a run.

Zero-shot and retrieval columns for the Runs page, top captions and tokens per feature and the
caption factor table for the Features pages, the caption probe, and the identifiability of both
modalities on the Compare seeds page. Like the pages, it reads stored artifacts
(:mod:`readers`) and asks the model worker (:mod:`models`) only for the one caption typed into
the probe; image-only runs never reach it.

Captions and tokens are per feature of the trained axes: the spectral basis is estimated from
image augmentations, which captions do not have, so in that basis the pages point back to the
trained axes instead of mixing the two.
"""

from __future__ import annotations

from typing import Any

import draw
import models
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tricl import serve
from tricl.methods import method_color
from tricl.runs import Run

RETRIEVED = 16  # images the caption probe retrieves
MAX_CAPTION_CHARS = 1000  # longer input is refused before it reaches the worker
TRAINED_ONLY = (
    "Captions and tokens belong to the trained axes (the spectral basis comes from image "
    "augmentations, which captions do not have): switch the sidebar's basis to trained to see "
    "them."
)


# --------------------------------------------------------------------------- Runs page

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


def runs_columns(runs: list[Run], texts: dict[str, Any]) -> dict[str, list[float]]:
    """The Runs table's zero-shot and retrieval columns (NaN, drawn blank, where a run has none).

    Args:
        runs: the table's runs, in its row order.
        texts: stored text analyses by run name.

    Returns:
        Column label -> one value per run; empty when no run is an image-text run, so a folder
        of image-only runs keeps its table as it was.
    """
    if not any(r.image_text for r in runs):
        return {}
    out: dict[str, list[float]] = {}
    for key, (label, _) in ZERO_SHOT_COLUMNS.items():
        values = [texts[r.name].zero_shot.get(key) if r.name in texts else None for r in runs]
        out[label] = [np.nan if v is None else float(v) for v in values]
    return out


def runs_column_config() -> dict[str, Any]:
    """Percent columns with their help, for :func:`runs_columns`."""
    return {
        label: st.column_config.NumberColumn(format="percent", help=help_)
        for label, help_ in ZERO_SHOT_COLUMNS.values()
    }


# --------------------------------------------------------------------------- caption probe


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


def caption_figure(
    order: np.ndarray, z: np.ndarray, usual: tuple[np.ndarray, np.ndarray] | None, note: str, color
) -> go.Figure:
    """Bars of a caption's features in importance order, with the captions' usual range.

    Args:
        order: raw feature indices, most important first. Shape: (k,).
        z: the caption's features, raw index order. Shape: (k,).
        usual: mean and std of the evaluation captions' features (raw order), or None.
        note: which axes and order (for the axis title).
        color: the method's colour.
    """
    ranks = np.arange(1, len(order) + 1)
    fig = go.Figure(
        go.Bar(
            x=ranks,
            y=z[order],
            name="this caption",
            marker_color=color,
            customdata=order,
            hovertemplate="#%{x} (z[%{customdata}]): %{y:.3f}<extra></extra>",
        )
    )
    if usual is not None:
        mean, std = usual
        fig.add_trace(
            go.Scatter(
                x=ranks,
                y=mean[order],
                error_y={"type": "data", "array": std[order], "thickness": 1},
                mode="markers",
                name="evaluation captions' mean ± std",
                marker={"color": "#444", "size": 4},
            )
        )
    return draw.tidy(fig, height=320, xaxis_title=f"feature # ({note})", yaxis_title="feature z")


def retrieved_table(
    top: np.ndarray, scores: np.ndarray, analysis: Any, captions: tuple[str, ...] | None
) -> pd.DataFrame:
    """One row per retrieved image: rank, similarity, class and (if stored) its own caption."""
    table = {
        "#": np.arange(1, len(top) + 1),
        "image": top,
        "similarity": scores[top],
        "class": [analysis.classes[int(analysis.features.labels[i])] for i in top],
    }
    if captions is not None:
        table["its caption"] = [captions[int(i)] for i in top]
    return pd.DataFrame(table)


def _caption_input(run: Run, examples: tuple[str, ...]) -> str:
    key = f"_w_caption_{run.name}"
    if key not in st.session_state:
        st.session_state[key] = examples[0] if examples else ""
    return st.text_input(
        "Caption",
        key=key,
        help="Any text: it is lower-cased and split into the tokens the run's tokenizer learned "
        "from the training captions; unknown characters become [UNK]. Press Enter to probe.",
    )


def caption_probe(run: Run, analysis: Any, order_name: str, text_analysis: Any | None) -> None:
    """Type a caption: its features in importance order and the evaluation images it retrieves.

    Args:
        run: an image-text run.
        analysis: its stored trained-axes image analysis (features, importance, classes).
        order_name: the importance order the page uses.
        text_analysis: its stored text analysis, or None (then no captions' range and no
            captions beside the retrieved images).
    """
    captions = text_analysis.features.captions if text_analysis is not None else None
    text = _caption_input(run, captions or ())
    if (problem := caption_problem(text)) is not None:
        (st.info if not text.strip() else st.error)(problem, icon=":material/edit_note:")
        return
    try:
        got = models.encode_text(run, text)
    except ValueError as exc:  # e.g. a tokenizer.json that does not match the weights
        st.error(f"cannot encode the caption with {run.name}: {exc}", icon=":material/error:")
        return
    z = np.asarray(got["z"], dtype=np.float64)  # (k,)
    st.caption("Tokens read: " + " · ".join(f"`{t}`" for t in got["tokens"]))
    if got["truncated"]:
        st.warning(
            f"The caption is longer than the model's context of {got['context_length']} tokens: "
            "it read only the tokens above (as in training, longer captions are cut).",
            icon=":material/content_cut:",
        )
    order = analysis.importance.order(order_name)
    usual = None
    if text_analysis is not None:
        tz = text_analysis.features.text_z.astype(np.float64)  # (N, k)
        usual = (tz.mean(axis=0), tz.std(axis=0))
    note = f"trained axes, {order_name} order"
    color = method_color(run.config.method)
    draw.show_figure(caption_figure(order, z, usual, note, color), "caption_features")
    retrieved(run, analysis, z, captions)


def retrieved(run: Run, analysis: Any, z: np.ndarray, captions: tuple[str, ...] | None) -> None:
    """The evaluation images closest to a caption by the method's own similarity."""
    image_z = analysis.features.z.astype(np.float64)  # (N, k), raw feature order
    scores = serve.text_image_similarity(image_z, z, analysis.features.s, run.config.s_placement)
    top = np.argsort(-scores, kind="stable")[:RETRIEVED]  # (n,) best first
    how = "f·Sg through the learned S" if analysis.features.s is not None else "cosine"
    st.subheader(f"The {len(top)} evaluation images it retrieves")
    images = models.eval_images(run, analysis)
    st.image(draw.grid(draw.to_rgb(images[top]), cols=8), width="content")
    st.caption(
        f"Ranked by the similarity the run was trained with ({how}, both sides L2-normalised), "
        "best first, left to right."
    )
    table = retrieved_table(top, scores, analysis, captions)
    draw.show_table(
        table,
        f"retrieved_{run.name}",
        column_config={"similarity": st.column_config.NumberColumn(format="%.3f")},
    )
