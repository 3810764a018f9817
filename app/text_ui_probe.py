"""The caption probe of an image-text run (the Probe page's "A caption", registered by
:mod:`text_ui_sections`): type a caption, see its features in importance order, the features it
raises most and the evaluation images it retrieves by the run's own similarity."""

from __future__ import annotations

from typing import Any

import draw
import jobs_ui
import models
import numpy as np
import plotly.graph_objects as go
import state
import streamlit as st
import text_ui

from tricl.bases import get_basis
from tricl.methods import method_color
from tricl.report import probe as report

RETRIEVED = 16  # images the caption probe retrieves


def caption_figure(
    order: np.ndarray, z: np.ndarray, usual: tuple[np.ndarray, np.ndarray] | None, note: str, color
) -> go.Figure:
    """A caption's features against the evaluation captions' mean ± std (see feature_bars)."""
    return draw.feature_bars(
        order, z, usual, note, color,
        what="this caption", usual_name="evaluation captions' mean ± std", y_title="feature z",
    )  # fmt: skip


def _caption_input(run, examples: tuple[str, ...]) -> str:
    key = f"_w_caption_{run.name}"
    if key not in st.session_state:
        st.session_state[key] = examples[0] if examples else ""
    return st.text_input(
        "Caption",
        key=key,
        help="Any text: it is lower-cased and split into the tokens the run's tokenizer learned "
        "from the training captions; unknown characters become [UNK]. Press Enter to probe.",
    )


def caption_probe(run, analysis: Any, order_name: str, text_analysis: Any | None) -> None:
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
    if (problem := report.caption_problem(text)) is not None:
        (st.info if not text.strip() else st.error)(problem, icon=":material/edit_note:")
        return
    try:
        got = models.encode_text(run, text)
    except ValueError as exc:  # e.g. a tokenizer.json that does not match the weights
        st.error(f"cannot encode the caption with {run.name}: {exc}", icon=":material/error:")
        return
    z = np.asarray(got["z"], dtype=np.float64)  # (k,)
    shown = (t.replace("`", "'") for t in got["tokens"])  # a backtick would end the code span
    st.caption("Tokens read: " + " · ".join(f"`{t}`" for t in shown))
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
    if text_analysis is not None:
        strongest_caption_features(text_analysis, z, usual, order)
    retrieved(run, analysis, z, captions)


def strongest_caption_features(
    text: Any, z: np.ndarray, usual: tuple[np.ndarray, np.ndarray], order: np.ndarray
) -> None:
    """The features a caption raises most above the evaluation captions' usual range, as cards
    with the words and captions that usually drive them.

    Args:
        text: the run's text analysis.
        z: the caption's features, raw index order. Shape: (k,).
        usual: mean and std of the evaluation captions' features. Shape: (k,) each.
        order: raw feature indices, most important first. Shape: (k,).
    """
    mean, std = usual
    zscore = (z - mean) / np.maximum(std, 1e-8)  # (k,)
    strongest = np.argsort(-zscore, kind="stable")[: text_ui.IN_WORDS]
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(1, len(order) + 1)  # raw index -> 1-based rank
    st.subheader("The features it raises most")
    for col, f in zip(st.columns(text_ui.IN_WORDS), strongest):
        with col:
            title = f"Feature #{rank[f]}: {z[f]:.2f} ({zscore[f]:+.1f} σ)"
            text_ui.feature_card(text, int(f), title)


def retrieved(run, analysis: Any, z: np.ndarray, captions: tuple[str, ...] | None) -> None:
    """The evaluation images closest to a caption by the method's own similarity."""
    image_z = analysis.features.z.astype(np.float64)  # (N, k), raw feature order
    scores = text_ui.caption_scores(image_z, z, analysis.features.s, run.config.s_placement)
    top = np.argsort(-scores, kind="stable")[:RETRIEVED]  # (n,) best first
    how = "f·Sg through the learned S" if analysis.features.s is not None else "cosine"
    st.subheader(f"The {len(top)} evaluation images it retrieves")
    images = models.eval_images(run, analysis)
    st.image(draw.grid(draw.to_rgb(images[top]), cols=8), width="content")
    st.caption(
        f"Ranked by the similarity the run was trained with ({how}, both sides L2-normalised), "
        "best first, left to right."
    )
    table = report.retrieved_table(top, scores, analysis, captions)
    draw.show_table(
        table,
        f"retrieved_{run.name}",
        column_config={"similarity": st.column_config.NumberColumn(format="%.3f")},
    )


def probe_caption(run) -> None:
    """The caption probe of an image-text run, always in the trained axes."""
    if not get_basis(state.current_basis()).captions:
        st.info(
            "The caption probe reads the trained axes, the space in which the run matches "
            "captions to images (the spectral basis comes from image augmentations).",
            icon=":material/info:",
        )
    analysis = jobs_ui.analysis_of(run, "trained")
    order_name = state.current_order(analysis)
    caption_probe(run, analysis, order_name, jobs_ui.text_analysis(run))
