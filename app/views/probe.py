"""Probe an image: its activations in importance order, and where its strongest features look."""

from __future__ import annotations

import io

import draw
import jobs_ui
import labels
import models
import numpy as np
import plotly.graph_objects as go
import state
import streamlit as st
import text_ui

from tricl.methods import method_color

STRONGEST = 4
IMAGE_TYPES = "PNG, JPEG, BMP, GIF, TIFF or WebP"
MAX_SIDE = 8192  # pixels; bigger uploads are refused before they are decoded


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


def activation_figure(
    analysis, order: np.ndarray, z: np.ndarray, color: str, note: str
) -> go.Figure:
    ranks = np.arange(1, len(order) + 1)
    fig = go.Figure(
        go.Bar(
            x=ranks,
            y=z[order],
            name="this image",
            marker_color=color,
            customdata=order,
            hovertemplate="#%{x} (z[%{customdata}]): %{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ranks,
            y=analysis.stats.mean[order],
            error_y={"type": "data", "array": analysis.stats.std[order], "thickness": 1},
            mode="markers",
            name="dataset mean ± std",
            marker={"color": "#444", "size": 4},
        )
    )
    return draw.tidy(fig, height=320, xaxis_title=f"feature # ({note})", yaxis_title="activation z")


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
    text_ui.caption_probe(run, analysis, order_name, jobs_ui.text_analysis(run))


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
