"""Probe an image: its activations in importance order, and where its strongest features look.

A kind of run may offer other things to probe (``probe.kinds`` sections, :mod:`sections`; an
image-text run: a caption, :mod:`text_ui_probe`).
"""

from __future__ import annotations

import draw
import jobs_ui
import models
import numpy as np
import plotly.graph_objects as go
import sections
import state
import steer_ui
import streamlit as st

from tricl.methods import method_color
from tricl.report.features import class_text

STRONGEST = 4


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


# --------------------------------------------------------------------------- the page

HEADER = (
    "Upload an image or pick one from the dataset: the bars are its activations, most "
    "important feature first, against each feature's usual range; below, the features it "
    "excites most (relative to their usual range), where in the image they look, and the "
    "dataset images they usually respond to."
)


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
    # other things than an image that this kind of run can probe (e.g. a caption)
    ctx = sections.Context(run=state.current_run() if idx.runs else None)
    kinds = sections.applicable("probe.kinds", ctx) if idx.runs else []
    names = [k.label for k in kinds] + ["an image"]
    draw.page_header(f"Probe {' or '.join(names)}", " ".join(k.doc for k in kinds) or HEADER)
    jobs_ui.require_runs()
    run = ctx.run
    if kinds:
        choices = [n[0].upper() + n[1:] for n in names]
        kind = st.radio("Probe", choices, horizontal=True, key="_w_probe_kind")
        if kind != choices[-1]:
            kinds[choices.index(kind)].draw(ctx)
            return
    probe_image(run)


if __name__ == "__main__":
    main()
