"""Probe an image: its activations in importance order, and where its strongest features look.

For an image-text run, probe a caption too: its features in importance order, the features it
raises most, and the evaluation images it retrieves by the run's own similarity.
"""

from __future__ import annotations

import io
from typing import Any

import draw
import jobs_ui
import labels
import models
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import state
import streamlit as st
import text_ui

from tricl.methods import method_color

STRONGEST = 4
IMAGE_TYPES = "PNG, JPEG, BMP, GIF, TIFF or WebP"
MAX_SIDE = 8192  # pixels; bigger uploads are refused before they are decoded
RETRIEVED = 16  # images the caption probe retrieves
MAX_CAPTION_CHARS = 1000  # longer input is refused before it reaches the worker


class NotAnImage(ValueError):
    """An uploaded file is not a readable image; the message names the file and the fix."""


def _open_image(data: bytes, name: str):
    """The decoded PIL image, refusing non-images, truncated files and oversized images."""
    from PIL import Image, UnidentifiedImageError

    too_big = (
        f"{name} is too large; upload an image at most {MAX_SIDE} pixels on a side (it is "
        "shrunk to a few dozen pixels anyway)"
    )
    unreadable = f"{name} is not an image that can be read ({{}}); upload a {IMAGE_TYPES} file"
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise NotAnImage(too_big) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NotAnImage(unreadable.format(type(exc).__name__)) from None
    if max(img.size) > MAX_SIDE or min(img.size) < 1:
        raise NotAnImage(too_big)
    try:
        img.load()
    except (OSError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise NotAnImage(unreadable.format(type(exc).__name__)) from None
    return img


def _to_8bit(img):
    """16-bit, 32-bit and float images (modes I, I;16, F) scaled into 0 … 255 (mode L)."""
    from PIL import Image

    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return img
    arr = np.asarray(img, dtype=np.float64)
    arr = np.nan_to_num(arr - arr.min(), nan=0.0, posinf=0.0)
    top = arr.max()
    return Image.fromarray((arr * (255.0 / top) if top > 0 else arr).astype(np.uint8))


def decode_upload(data: bytes, name: str, channels: int, size: int) -> np.ndarray:
    """An uploaded file as the run's input format.

    The image is converted to the run's channels (grey or RGB; transparency is dropped, 16-bit
    and float images are scaled to 8 bits), centre-cropped to a square and resized to the run's
    side length.

    Args:
        data: the file's bytes.
        name: its file name (for the message).
        channels: 1 or 3.
        size: side length H = W.

    Returns:
        uint8 image. Shape: (C, H, W).

    Raises:
        NotAnImage: the bytes are not an image PIL can read, or it is too large.
    """
    from PIL import Image, ImageOps

    img = _open_image(data, name)
    try:
        img = _to_8bit(ImageOps.exif_transpose(img))
        img = img.convert("L" if channels == 1 else "RGB")
        img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    except (OSError, ValueError) as exc:
        raise NotAnImage(
            f"{name} is a {img.mode} image that cannot be converted ({exc}); upload an 8-bit "
            f"grey or colour {IMAGE_TYPES} file"
        ) from None
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def pick_image(run, analysis) -> tuple[np.ndarray | None, str]:
    """The probed image (C, H, W) uint8 and a description, or None until one is chosen."""
    source = st.radio("Image", ["From the dataset", "Upload"], horizontal=True)
    images = models.eval_images(run, analysis)
    _, c, h, _ = images.shape
    if source == "Upload":
        up = st.file_uploader(
            f"An image ({IMAGE_TYPES}); it is converted to {h}×{h} "
            f"{'greyscale' if c == 1 else 'RGB'}",
            type=None,
        )
        if up is None:
            return None, ""
        try:
            image = decode_upload(up.getvalue(), up.name, c, h)
        except NotAnImage as exc:
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
    label = analysis.classes[int(analysis.features.labels[i])]
    return images[int(i)], f"{analysis.split} image {i} (class {label})"


def feature_bars(
    order: np.ndarray,
    z: np.ndarray,
    usual: tuple[np.ndarray, np.ndarray] | None,
    note: str,
    color,
    *,
    what: str,
    usual_name: str,
    y_title: str,
) -> go.Figure:
    """Bars of one input's features in importance order, with the dataset's usual range.

    Args:
        order: raw feature indices, most important first. Shape: (k,).
        z: the input's features, raw index order. Shape: (k,).
        usual: mean and std of the evaluation set's features (raw order), or None.
        note: which axes and order (for the axis title).
        color: the method's colour.
        what: legend name of the bars (``this image``, ``this caption``).
        usual_name: legend name of the usual range.
        y_title: the y axis title.
    """
    ranks = np.arange(1, len(order) + 1)
    fig = go.Figure(
        go.Bar(
            x=ranks,
            y=z[order],
            name=what,
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
                name=usual_name,
                marker={"color": "#444", "size": 4},
            )
        )
    return draw.tidy(fig, height=320, xaxis_title=f"feature # ({note})", yaxis_title=y_title)


def activation_figure(
    analysis, order: np.ndarray, z: np.ndarray, color: str, note: str
) -> go.Figure:
    """An image's activations against the evaluation images' mean ± std."""
    usual = (analysis.stats.mean, analysis.stats.std)
    return feature_bars(
        order, z, usual, note, color,
        what="this image", usual_name="dataset mean ± std", y_title="activation z",
    )  # fmt: skip


# --------------------------------------------------------------------------- a caption


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
    """A caption's features against the evaluation captions' mean ± std (see feature_bars)."""
    return feature_bars(
        order, z, usual, note, color,
        what="this caption", usual_name="evaluation captions' mean ± std", y_title="feature z",
    )  # fmt: skip


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
    if (problem := caption_problem(text)) is not None:
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
    table = retrieved_table(top, scores, analysis, captions)
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
    if state.current_basis() != "trained":
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
