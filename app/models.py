"""Cached datasets and encoders, and the per-image model calls pages may make (saliency, probe).

Pages never sweep a dataset with a model: the only forward passes here are on the handful of
images a page shows (saliency maps of a feature's top images, one uploaded image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import draw
import numpy as np
import streamlit as st

from tricl.runs import Run


@st.cache_resource(show_spinner="Loading the dataset...", max_entries=4)
def _dataset(spec: str, image_size: int) -> Any:
    from tricl.data import load_dataset

    return load_dataset(spec, image_size=image_size, download=False)


def dataset_of(run: Run, analysis: Any | None = None) -> Any:
    """The run's dataset (:class:`tricl.data.ImageData`), loaded once per server; stops the page
    with a message if its files are not on this machine."""
    from tricl.data import DatasetError

    spec = analysis.dataset if analysis is not None else run.config.dataset
    try:
        return _dataset(spec, run.config.image_size)
    except (DatasetError, OSError, ValueError) as exc:
        st.error(f"cannot load the images of {run.name}: {exc}", icon=":material/hide_image:")
        st.stop()


@st.cache_resource(show_spinner=False, max_entries=16)
def split_hash(spec: str, image_size: int, split: str) -> str:
    """Hash of a dataset split's images and labels (what the analysis recorded)."""
    from tricl.analysis.features import images_hash

    x, y = _dataset(spec, image_size).split(split)
    return images_hash(x, y)


def eval_images(run: Run, analysis: Any) -> np.ndarray:
    """The evaluation split's uint8 images. Shape: (N, C, H, W)."""
    x, _ = dataset_of(run, analysis).split(analysis.split)
    return x.numpy()


@st.cache_resource(show_spinner=False, max_entries=16)
def _encoder(path: str, weights_hash: str) -> Any:
    del weights_hash
    return Run.load(path).encoder("cpu")


def encoder_of(run: Run) -> Any:
    """The run's encoder in eval mode on the CPU, loaded once per server."""
    return _encoder(str(run.path), run.weights_hash)


def _overlays(
    path: str,
    weights_hash: str,
    dataset: str,
    batch: Any,
    features: Sequence[int],
    method: str,
    smoothgrad: bool,
) -> tuple[list[np.ndarray], list[float]]:
    """Saliency overlays of features[i] on image i of a uint8 batch (B, C, H, W)."""
    import torch

    from tricl.analysis.saliency import saliency_maps

    enc = _encoder(path, weights_hash)
    data = _dataset(dataset, Run.load(path).config.image_size)
    pre = data.preprocess(batch)  # (B, C, H, W) float
    rgb = draw.to_rgb(batch.numpy())  # (B, H, W, 3)
    tiles, acts = [], []
    with torch.enable_grad():
        for i, f in enumerate(features):
            m = saliency_maps(enc, pre[i], int(f), (method,), smoothgrad=smoothgrad)
            tiles.append(draw.overlay(rgb[i], m.maps[method]))
            acts.append(m.activation)
    return tiles, acts


@st.cache_data(show_spinner=False, max_entries=256)
def saliency_grid(
    path: str,
    weights_hash: str,
    dataset: str,
    split: str,
    indices: tuple[int, ...],
    feature: int,
    method: str,
    smoothgrad: bool,
    cols: int,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Saliency overlays of one feature on some evaluation images, tiled.

    Args:
        path: run folder.
        weights_hash: the run's weights hash (cache key).
        dataset: dataset spec of the analysis.
        split: evaluation split.
        indices: dataset indices of the images.
        feature: raw feature index.
        method: a key of :data:`tricl.analysis.saliency.SALIENCY_METHODS`.
        smoothgrad: average over noisy copies.
        cols: tiles per row.

    Returns:
        ``(grid, activations)``: the tiled overlays (H', W', 3) and z_feature of each image.
    """
    x, _ = _dataset(dataset, Run.load(path).config.image_size).split(split)
    batch = x[list(indices)]  # (B, C, H, W) uint8
    tiles, acts = _overlays(
        path, weights_hash, dataset, batch, [feature] * len(indices), method, smoothgrad
    )
    side = tiles[0].shape[0]
    return draw.grid(np.stack(tiles), cols, scale=draw.upscale(side, 84)), tuple(acts)


@st.cache_data(show_spinner=False, max_entries=64)
def image_saliency(
    path: str,
    weights_hash: str,
    dataset: str,
    image: np.ndarray,
    features: tuple[int, ...],
    method: str,
) -> tuple[list[np.ndarray], list[float]]:
    """Saliency overlays of several features on one uint8 image (C, H, W), one tile each."""
    import torch

    batch = torch.from_numpy(np.repeat(image[None], len(features), axis=0))  # (F, C, H, W)
    return _overlays(path, weights_hash, dataset, batch, features, method, False)


def embed_image(run: Run, analysis: Any, image: np.ndarray) -> np.ndarray:
    """z of one uint8 image (C, H, W) under the run's encoder. Shape: (k,)."""
    import torch

    data = dataset_of(run, analysis)
    # no_grad, not inference_mode: tensors the dataset caches on first use (normalisation) must
    # stay usable by the saliency maps' autograd afterwards
    with torch.no_grad():
        return encoder_of(run)(data.preprocess(torch.tensor(image[None])))[0].float().numpy()


def saliency_methods() -> dict[str, Any]:
    """The saliency methods (name -> spec with a ``description``), imported when first needed."""
    from tricl.analysis.saliency import SALIENCY_METHODS

    return SALIENCY_METHODS
