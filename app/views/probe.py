"""Probe an image: its activations in importance order, and where its strongest features look.

For an image-text run, probe a caption too: its features in importance order, the features it
raises most, and the evaluation images it retrieves by the run's own similarity.
"""

from __future__ import annotations

from typing import Any

import draw
import jobs_ui
import labels
import models
import numpy as np
import plotly.graph_objects as go
import state
import steer_ui
import streamlit as st
import text_ui

from tricl.bases import get_basis
from tricl.methods import method_color
from tricl.report import probe as report
from tricl.report.features import class_text

STRONGEST = 4
RETRIEVED = 16  # images the caption probe retrieves


def pick_image(run, analysis) -> tuple[np.ndarray | None, str]:
    """The probed image (C, H, W) uint8 and a description, or None until one is chosen."""
    source = st.radio("Image", ["From the dataset", "Upload"], horizontal=True)
    images = models.eval_images(run, analysis)
    _, c, h, _ = images.shape
    if source == "Upload":
        up = st.file_uploader(
            f"An image ({models.IMAGE_TYPES}); it is converted to {h}×{h} "
            f"{'greyscale' if c == 1 else 'RGB'}",
            type=None,
        )
        if up is None:
            return None, ""
        try:
            image = models.decode_upload(up.getvalue(), up.name, c, h)
        except models.NotAnImage as exc:
            st.error(str(exc), icon=":material/hide_image:")
            return None, ""
        if models.dataset_info(run, analysis)["family"] == "digits":
            bright = image.mean() > 127
            if st.checkbox(
                "Invert (the training digits are light on dark)",
                value=bool(bright),
                help="Checked automatically for images with a light background.",
            ):
                image = 255 - image
        return image, up.name
    n = len(images)
    i = st.number_input(f"Evaluation image index (0 … {n - 1})", 0, n - 1, 0)
    return images[int(i)], f"{analysis.split} image {i} ({class_text(analysis, int(i))})"


def activation_figure(
    analysis, order: np.ndarray, z: np.ndarray, color: str, note: str
) -> go.Figure:
    """An image's activations against the evaluation images' mean ± std."""
    usual = (analysis.stats.mean, analysis.stats.std)
    return draw.feature_bars(
        order, z, usual, note, color,
        what="this image", usual_name="dataset mean ± std", y_title="activation z",
    )  # fmt: skip


# --------------------------------------------------------------------------- a caption


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


# --------------------------------------------------------------------------- the page

PROBE_KINDS = ("A caption", "An image")
HEADER = (
    "Upload an image or pick one from the dataset: the bars are its activations, most "
    "important feature first, against each feature's usual range; below, the features it "
    "excites most (relative to their usual range), where in the image they look, and the "
    "dataset images they usually respond to."
)
CAPTION_HEADER = (
    "This run encodes text too. Type a caption: the bars are its features, most important "
    "first, against the evaluation captions' usual range, and below are the evaluation images "
    "it retrieves. Or switch to an image to probe the image encoder."
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


def probe_image(run) -> None:
    """The image probe: activations, strongest features, their saliency on the image."""
    analysis = jobs_ui.analysis_of(run, state.current_basis())
    order_name = state.current_order(analysis)
    note = draw.basis_note(analysis, order_name)
    left, right = st.columns([1, 3])
    with left:
        image, what = pick_image(run, analysis)
        if image is not None:
            st.image(draw.grid(draw.to_rgb(image[None]), cols=1, scale=None), caption=what)
    if image is None:
        right.info("Choose an image to probe.")
        return
    z = models.embed_image(run, analysis, image)  # (k,)
    order = analysis.importance.order(order_name)
    with right:
        draw.show_figure(
            activation_figure(analysis, order, z, method_color(run.config.method), note),
            "probe_activations",
        )
    strongest_features(run, analysis, order_name, image, z)
    steer_ui.steer_section(run, analysis, order_name, z, image)


def strongest_features(run, analysis, order_name: str, image: np.ndarray, z: np.ndarray) -> None:
    """The features the image excites most, with saliency on it and their top dataset images."""
    std = np.maximum(analysis.stats.std, 1e-8)
    zscore = (z - analysis.stats.mean) / std  # (k,)
    strongest = np.argsort(-zscore)[:STRONGEST]
    rank = analysis.importance.rank(order_name)
    st.subheader("Its strongest features")
    method = st.selectbox(
        "Saliency method",
        list(models.saliency_methods()),
        format_func=lambda m: f"{m}: {models.saliency_methods()[m]}",
    )
    with st.spinner("Computing saliency maps..."):
        tiles, _ = models.image_saliency(
            str(run.path),
            run.weights_hash,
            analysis.basis,
            analysis.dataset,
            image,
            tuple(int(f) for f in strongest),
            method,
        )
    images = models.eval_images(run, analysis)
    cols = st.columns(STRONGEST)
    for col, f, tile in zip(cols, strongest, tiles):
        with col, st.container(border=True):
            name = draw.feature_name(analysis, int(rank[f]) + 1, order_name)
            st.markdown(f"**{name.capitalize()}** · z = {z[f]:.2f} ({zscore[f]:+.1f} σ)")
            st.image(draw.grid(tile[None], cols=1, scale=draw.upscale(tile.shape[0], 112)))
            top = images[analysis.top_images.top_indices[f, :8]]
            st.image(draw.grid(draw.to_rgb(top), cols=4, pad=1), width="stretch")
            st.caption("saliency on this image · the feature's top dataset images")


def main() -> None:
    idx = state.index()
    image_text = bool(idx.runs) and labels.has_text(state.current_run())
    if not image_text:
        draw.page_header("Probe an image", HEADER)
    else:
        draw.page_header("Probe a caption or an image", CAPTION_HEADER)
    jobs_ui.require_runs()
    run = state.current_run()
    if image_text:
        kind = st.radio("Probe", PROBE_KINDS, horizontal=True, key="_w_probe_kind")
        if kind == PROBE_KINDS[0]:
            probe_caption(run)
            return
    probe_image(run)


if __name__ == "__main__":
    main()
