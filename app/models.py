"""Images and model calls for the pages, run in one worker process (:mod:`tricl.serve`).

The server process never imports torch (about 700 MiB of resident memory by itself): datasets,
encoders, saliency maps and probes live in a single long-lived worker started with ``spawn``,
held by ``st.cache_resource`` and shared by every session. Pages never sweep a dataset with a
model: the only forward passes are on the handful of images a page shows.

A crashed worker is an error message on the page, not a dead server: the pool is dropped and the
next call starts a new worker.
"""

from __future__ import annotations

import io
import multiprocessing
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib.machinery import ModuleSpec
from typing import Any

import draw
import numpy as np
import streamlit as st

from tricl import serve
from tricl.runs import Run


class WorkerFailed(RuntimeError):
    """The model worker died (out of memory, killed); the message says what to do."""


@st.cache_resource(show_spinner=False)
def _pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def _main_not_rerun() -> None:
    """Keep a starting worker from running ``app/main.py`` again.

    Streamlit runs the script as a ``__main__`` module with a file but no spec, and a spawned
    process re-imports such a main from its path: Streamlit and the app, which the worker does
    not need, or an ImportError where ``app/`` is not on the path. For a main whose spec is
    named ``__main__``, multiprocessing re-imports nothing (``spawn._fixup_main_from_name``).
    """
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None:
        main.__spec__ = ModuleSpec("__main__", None)


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the model worker; its exceptions are raised here.

    Raises:
        WorkerFailed: the worker process died; the next call starts a new one.
    """
    _main_not_rerun()  # the worker starts inside submit()
    try:
        return _pool().submit(fn, *args).result()
    except BrokenProcessPool:
        _pool.clear()
        raise WorkerFailed(
            "the model worker stopped (out of memory or killed); reload the page to start a new one"
        ) from None


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` here; a dead worker (:class:`WorkerFailed`) stops the page with a message."""
    try:
        return fn(*args)
    except WorkerFailed as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()


@st.cache_resource(show_spinner="Loading the dataset...", max_entries=8)
def _dataset_info(spec: str, image_size: int) -> dict[str, Any]:
    return call(serve.dataset_info, spec, image_size)


def dataset_info(run: Run, analysis: Any | None = None) -> dict[str, Any]:
    """The run's dataset's ``family`` and ``classes``; stops the page with a message if its
    files are not on this machine."""
    spec = analysis.dataset if analysis is not None else run.config.dataset
    try:
        return _dataset_info(spec, run.config.image_size)
    except WorkerFailed as exc:
        st.error(str(exc), icon=":material/error:")
    except (OSError, ValueError) as exc:  # the worker's DatasetError arrives as ValueError
        st.error(f"cannot load the images of {run.name}: {exc}", icon=":material/hide_image:")
    st.stop()


@st.cache_resource(show_spinner=False, max_entries=16)
def _split_hash(spec: str, image_size: int, split: str) -> str:
    return call(serve.split_hash, spec, image_size, split)


def split_hash(run: Run, analysis: Any) -> str:
    """Hash of the analysed split's images and labels as the dataset holds them now."""
    dataset_info(run, analysis)  # a missing dataset stops the page with its message
    return _guarded(_split_hash, analysis.dataset, run.config.image_size, analysis.split)


# images a split keeps in the server's cache, in bytes (50,000 CIFAR images are 150 MB, 50,000
# at 224 px 7.5 GB: only the ones pages draw come over, and the oldest make room)
IMAGE_CACHE_BYTES = 64 << 20


class SplitImages:
    """A split's uint8 images, fetched from the model worker by index when a page draws them.

    Indexing (``images[i]``, ``images[indices]``) works as on the (N, C, H, W) array it stands
    for; only the images asked for cross to the server, one worker call per request, and the most
    recent ``IMAGE_CACHE_BYTES`` of them stay (shared by every session).
    """

    def __init__(self, spec: str, image_size: int, split: str) -> None:
        self.key = (spec, image_size, split)
        self.shape = _split_shape(*self.key)  # (N, C, H, W)
        self.dtype, self.ndim = np.dtype(np.uint8), len(self.shape)
        self._cache, self._lock = _image_cache(*self.key)
        self._room = max(1, IMAGE_CACHE_BYTES // int(np.prod(self.shape[1:])))

    def __len__(self) -> int:
        return int(self.shape[0])

    def prefetch(self, indices: Any) -> None:
        """Fetch these images in one worker call (a page about to draw many strips): the first
        ones that fit in the cache, in order of first appearance."""
        ids = np.asarray(indices, dtype=np.int64).ravel()
        _, first = np.unique(ids, return_index=True)
        self[ids[np.sort(first)][: self._room]]

    def __getitem__(self, index: Any) -> np.ndarray:
        ids = np.asarray(index, dtype=np.int64)  # an int, a list or an array of indices
        flat = np.where(ids < 0, ids + len(self), ids).ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} images")
        with self._lock:
            missing = sorted({int(i) for i in flat} - self._cache.keys())
            if missing:
                got = call(serve.images_at, *self.key, missing)  # (M, C, H, W)
                for i, image in zip(missing, got, strict=True):
                    image.flags.writeable = False  # shared by every session
                    self._cache[i] = image
            for i in flat:  # most recently used last
                self._cache.move_to_end(int(i))
            out = np.stack([self._cache[int(i)] for i in flat]) if flat.size else None
            while len(self._cache) > max(self._room, flat.size):
                self._cache.popitem(last=False)
        if out is None:
            return np.empty((0, *self.shape[1:]), dtype=np.uint8)
        return out.reshape(*ids.shape, *self.shape[1:])


@st.cache_resource(show_spinner="Loading the images...", max_entries=8)
def _split_shape(spec: str, image_size: int, split: str) -> tuple[int, ...]:
    return tuple(call(serve.split_shape, spec, image_size, split))


@st.cache_resource(show_spinner=False, max_entries=8)
def _image_cache(spec: str, image_size: int, split: str) -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


def eval_images(run: Run, analysis: Any) -> SplitImages:
    """The evaluation split's uint8 images, fetched by index. Shape: (N, C, H, W)."""
    dataset_info(run, analysis)  # a missing dataset stops the page with its message
    return _guarded(SplitImages, analysis.dataset, run.config.image_size, analysis.split)


def split_images(run: Run, dataset: str, split: str) -> SplitImages:
    """A split's uint8 images of ``dataset`` at the run's image size, fetched by index."""
    try:
        return SplitImages(dataset, run.config.image_size, split)
    except WorkerFailed as exc:
        st.error(str(exc), icon=":material/error:")
    except (OSError, ValueError) as exc:
        st.error(f"cannot load the images of {dataset}: {exc}", icon=":material/hide_image:")
    st.stop()


@st.cache_resource(show_spinner=False)
def saliency_methods() -> dict[str, str]:
    """The saliency methods: name -> one line describing it."""
    return call(serve.saliency_descriptions)


def _overlays(
    path: str, weights_hash: str, basis: str, dataset: str, batch: np.ndarray, *args: Any
) -> tuple[list[np.ndarray], list[float]]:
    """Saliency overlays of features[i] on image i of a uint8 batch (B, C, H, W)."""
    maps, acts = _guarded(call, serve.saliency, path, weights_hash, basis, dataset, batch, *args)
    rgb = draw.to_rgb(batch)  # (B, H, W, 3)
    return [draw.overlay(rgb[i], m) for i, m in enumerate(maps)], acts


@st.cache_data(show_spinner=False, max_entries=256)
def saliency_grid(
    path: str,
    weights_hash: str,
    basis: str,
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
        basis: ``trained`` or ``spectral``: what ``feature`` indexes.
        dataset: dataset spec of the analysis.
        split: evaluation split.
        indices: dataset indices of the images.
        feature: raw feature index (trained) or spectral rank, 0-based (spectral).
        method: a saliency method name (:func:`saliency_methods`).
        smoothgrad: average over noisy copies.
        cols: tiles per row.

    Returns:
        ``(grid, activations)``: the tiled overlays (H', W', 3) and the feature of each image.
    """
    size = Run.load(path).config.image_size
    batch = SplitImages(dataset, size, split)[list(indices)]  # (B, C, H, W) uint8
    features = [feature] * len(indices)
    tiles, acts = _overlays(path, weights_hash, basis, dataset, batch, features, method, smoothgrad)
    side = tiles[0].shape[0]
    return draw.grid(np.stack(tiles), cols, scale=draw.upscale(side, 84)), tuple(acts)


@st.cache_data(show_spinner=False, max_entries=64)
def image_saliency(
    path: str,
    weights_hash: str,
    basis: str,
    dataset: str,
    image: np.ndarray,
    features: tuple[int, ...],
    method: str,
) -> tuple[list[np.ndarray], list[float]]:
    """Saliency overlays of several features (in ``basis``) on one uint8 image (C, H, W)."""
    batch = np.repeat(image[None], len(features), axis=0)  # (F, C, H, W)
    return _overlays(path, weights_hash, basis, dataset, batch, list(features), method, False)


@st.cache_data(show_spinner=False, max_entries=256)
def _embed(path: str, weights_hash: str, basis: str, dataset: str, image: np.ndarray) -> np.ndarray:
    return call(serve.embed, path, weights_hash, basis, dataset, image)


def embed_image(run: Run, analysis: Any, image: np.ndarray, basis: str | None = None) -> np.ndarray:
    """Features of one uint8 image (C, H, W) in the analysis's basis (or ``basis``), kept per
    image (a page redrawn with the same image does not run the encoder again). Shape: (k,)."""
    return _guarded(
        _embed,
        str(run.path),
        run.weights_hash,
        analysis.basis if basis is None else basis,
        analysis.dataset,
        np.ascontiguousarray(image),
    )


@st.cache_data(show_spinner=False, max_entries=256)
def _encode_text(path: str, weights_hash: str, text: str) -> dict[str, Any]:
    return call(serve.encode_text, path, weights_hash, text)


def encode_text(run: Run, text: str) -> dict[str, Any]:
    """Trained-axes features of one caption and the tokens the run's text encoder read.

    Returns:
        What :func:`tricl.serve.encode_text` returns (``z`` Shape: (k,)).

    Raises:
        ValueError: the caption is empty, or the run's text encoder cannot be loaded.
    """
    return _guarded(_encode_text, str(run.path), run.weights_hash, text)


# --------------------------------------------------------------------------- uploads

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


def steer(
    analysis: Any,
    z: np.ndarray,
    feature: int,
    amounts_sd: tuple[float, ...],
    captions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One image's features ``z`` (k,) with ``feature`` moved by each amount (train sd), in the
    model worker: what :func:`tricl.serve.steer` returns (``probabilities``
    (len(amounts_sd), C); for an image-text run, given ``captions``, each move's top captions).
    """
    res = analysis.values["interventions"]
    probe = {n: getattr(res, n) for n in ("probe_mu", "probe_sd", "probe_coef", "probe_intercept")}
    probe["std"] = res.std
    args = (np.asarray(z), int(feature), tuple(amounts_sd), probe, captions)
    return _guarded(call, serve.steer, *args)
