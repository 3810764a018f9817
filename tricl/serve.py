"""The dashboard's model worker: every call that needs torch, run outside the web server.

``import torch`` alone costs about 700 MiB of resident memory, so the Streamlit server never
imports it: it submits these functions to one long-lived worker process (``app/models.py`` holds
a ``ProcessPoolExecutor(max_workers=1)`` started with ``spawn``). They take and return plain
values (paths, strings, NumPy arrays), and keep what they load (datasets, encoders) in this
process's :data:`_CACHE`, so the second call of a page is fast.

Nothing here sweeps a dataset with a model: the forward passes are on the handful of images a
page shows (saliency maps of a feature's top images, one uploaded image) or the one caption typed
into the probe (:func:`encode_text`; the images it retrieves are ranked against the stored
image features of the analysis, which needs no model).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from tricl.bases import get_basis

F = TypeVar("F", bound=Callable[..., Any])

# (kind, *key) -> loaded object; one worker serves every session, so keep a few of each kind
_CACHE: dict[tuple, Any] = {}
_MAX_PER_KIND = 8


def plain_errors(fn: F) -> F:
    """Re-raise the function's non-builtin exceptions as ``ValueError`` with the same message.

    An exception crosses back to the server pickled, and unpickling a ``tricl.data.DatasetError``
    there would import ``tricl.data`` (and torch) into the server.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if type(exc).__module__ == builtins.__name__:
                raise
            raise ValueError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _cached(key: tuple, make: Any) -> Any:
    if key not in _CACHE:
        same_kind = [k for k in _CACHE if k[0] == key[0]]
        for old in same_kind[: max(0, len(same_kind) - _MAX_PER_KIND + 1)]:
            del _CACHE[old]
        _CACHE[key] = make()
    return _CACHE[key]


def _dataset(spec: str, image_size: int) -> Any:
    from tricl.data import load_dataset

    return _cached(
        ("dataset", spec, image_size),
        lambda: load_dataset(spec, image_size=image_size, download=False),
    )


@plain_errors
def dataset_info(spec: str, image_size: int) -> dict[str, Any]:
    """What the server needs to know of a dataset: ``family`` and ``classes``.

    Raises:
        DatasetError, OSError, ValueError: the dataset's files are not on this machine.
    """
    data = _dataset(spec, image_size)
    return {"family": data.family, "classes": list(getattr(data, "classes", []))}


@plain_errors
def split_images(spec: str, image_size: int, split: str) -> np.ndarray:
    """A split's uint8 images. Shape: (N, C, H, W)."""
    x, _ = _dataset(spec, image_size).split(split)
    return x.numpy()


@plain_errors
def split_shape(spec: str, image_size: int, split: str) -> tuple[int, ...]:
    """The shape of a split's uint8 images: (N, C, H, W)."""
    return tuple(_dataset(spec, image_size).split(split)[0].shape)


@plain_errors
def images_at(spec: str, image_size: int, split: str, indices: Sequence[int]) -> np.ndarray:
    """The uint8 images of a split at ``indices`` (what a page draws). Shape: (B, C, H, W)."""
    x, _ = _dataset(spec, image_size).split(split)
    return x[list(indices)].numpy()


@plain_errors
def split_hash(spec: str, image_size: int, split: str) -> str:
    """Hash of a split's images and labels (what an analysis records as ``images_hash``)."""
    from tricl.analysis.features import images_hash

    x, y = _dataset(spec, image_size).split(split)
    return images_hash(x, y)


@plain_errors
def saliency_descriptions() -> dict[str, str]:
    """Saliency method name -> one line describing it (:data:`SALIENCY_METHODS`)."""
    from tricl.analysis.saliency import SALIENCY_METHODS

    return {name: m.description for name, m in SALIENCY_METHODS.items()}


def _rotated_encoder(encoder: Any, run: Any) -> Any:
    """The encoder followed by the run's rotation onto its spectral basis: output r = rank r."""
    from tricl.analysis.saliency import in_basis
    from tricl.analysis.spectral import load_spectral_basis

    basis = load_spectral_basis(run)
    if basis is None:
        raise ValueError(
            f"{run.name} has no cached spectral basis; analyse it with "
            f"`tricl analyze --basis spectral {run.path}`"
        )
    return in_basis(encoder, basis.as_linear()).eval()  # (B, k) -> (B, r)


def _encoder(path: str, weights_hash: str, basis: str) -> Any:
    """The run's encoder on the CPU in eval mode, its outputs in ``basis``."""
    from tricl.runs import Run

    def make() -> Any:
        run = Run.load(path)
        enc = run.encoder("cpu").eval()
        return _rotated_encoder(enc, run) if get_basis(basis).rotated else enc

    return _cached(("encoder", path, weights_hash, basis), make)


@plain_errors
def saliency(
    path: str,
    weights_hash: str,
    basis: str,
    spec: str,
    images: np.ndarray,
    features: Sequence[int],
    method: str,
    smoothgrad: bool,
) -> tuple[list[np.ndarray], list[float]]:
    """Saliency maps of ``features[i]`` on image i, with the features in ``basis``.

    In the spectral basis the attributed scalar is the rotated feature ``(z @ W.T + b)[i]``, so
    the maps explain the run's spectral rank i through the encoder.

    Args:
        path: run folder.
        weights_hash: the run's weights hash (cache key of the encoder).
        basis: ``trained`` (raw feature index) or ``spectral`` (spectral rank, 0-based).
        spec: dataset spec (its preprocessing).
        images: uint8 images. Shape: (B, C, H, W).
        features: one feature per image.
        method: a key of :data:`tricl.analysis.saliency.SALIENCY_METHODS`.
        smoothgrad: average over noisy copies.

    Returns:
        ``(maps, activations)``: a heat map in [0, 1] per image (H, W) and its feature's value.
    """
    import torch

    from tricl.analysis.saliency import saliency_maps
    from tricl.runs import Run

    enc = _encoder(path, weights_hash, basis)
    run = Run.load(path)
    data = run.input_data(_dataset(spec, run.config.image_size))
    pre = data.preprocess(torch.from_numpy(np.ascontiguousarray(images)))  # (B, C, H, W) float
    maps, acts = [], []
    with torch.enable_grad():
        for i, f in enumerate(features):
            m = saliency_maps(enc, pre[i], int(f), (method,), smoothgrad=smoothgrad)
            maps.append(m.maps[method])
            acts.append(m.activation)
    return maps, acts


@plain_errors
def embed(path: str, weights_hash: str, basis: str, spec: str, image: np.ndarray) -> np.ndarray:
    """Features of one uint8 image (C, H, W) in ``basis``. Shape: (k,) or (r,)."""
    import torch

    from tricl.runs import Run

    run = Run.load(path)
    data = run.input_data(_dataset(spec, run.config.image_size))
    enc = _encoder(path, weights_hash, basis)
    # no_grad, not inference_mode: tensors the dataset caches on first use (normalisation) must
    # stay usable by the saliency maps' autograd afterwards
    with torch.no_grad():
        return enc(data.preprocess(torch.from_numpy(image[None].copy())))[0].float().numpy()


def _text_model(path: str, weights_hash: str) -> tuple[Any, Any]:
    """The run's tokenizer and text encoder (CPU, eval mode), checked against each other."""
    from tricl.runs import Run

    def make() -> tuple[Any, Any]:
        run = Run.load(path)
        return run.tokenizer(), run.text_encoder("cpu").eval()

    return _cached(("text", path, weights_hash), make)


@plain_errors
def encode_text(path: str, weights_hash: str, text: str) -> dict[str, Any]:
    """The trained-axes features of one caption, as the run's text encoder sees it.

    Args:
        path: run folder of an image-text run (clip, triclip, an open_clip import).
        weights_hash: the run's weights hash (cache key of the encoder).
        text: the caption; the tokenizer lower-cases it, and a caption longer than the context
            length is cut to it (``truncated``), as in training.

    Returns:
        ``z``: the features, raw feature index order, float32 (Shape: (k,)); ``tokens``: the
        tokens the encoder read, without [SOS]/[EOS]/[PAD] and the end-of-word mark (``[UNK]``
        for characters the tokenizer never saw); ``truncated``: whether the caption was cut;
        ``context_length``: L.

    Raises:
        ValueError: an empty caption, or a run without a text encoder (one line naming the fix).
    """
    import torch

    from tricl.text.tokenizer import trim_padding

    tokenizer, encoder = _text_model(path, weights_hash)
    encoded = tokenizer.encode([text])  # ids (1, L); raises on an empty caption
    with torch.no_grad():
        z = encoder(trim_padding(encoded.ids))[0].float().numpy()  # (1, L') -> (k,)
    return {
        "z": z,
        "tokens": tokenizer.pieces(text),  # what the ids spell, truncated to L
        "truncated": bool(encoded.truncated),
        "context_length": tokenizer.context_length,
    }


@plain_errors
def steer(
    z: np.ndarray,
    feature: int,
    amounts_sd: Sequence[float],
    probe: dict[str, np.ndarray],
    captions: dict[str, Any] | None = None,
) -> dict[str, np.ndarray | None]:
    """One image with ``feature`` moved by each amount (train standard deviations), read by the
    run's stored linear probe (the ``interventions`` stage's ``probe_*`` arrays and ``std``,
    exactly as that stage steers the split) and, for an image-text run, by its captions.

    Args:
        z: the image's features in the basis. Shape: (k,).
        feature: the feature moved (raw index).
        amounts_sd: the moves, in the feature's train standard deviations.
        probe: the probe's arrays.
        captions: image-text runs (else None): ``z`` the image's trained-axes features (d,),
            ``direction`` the move of those for a unit move of the feature (d,) and ``std`` its
            train sd (the text ``interventions`` stage's), ``keys`` the captions' features
            (U, d), ``weights`` S's image-anchor diagonal (d,) or None, ``top`` how many.

    Returns:
        ``probabilities`` (len(amounts_sd), C); ``captions``: each move's top caption indices
        into ``keys``, best first (len(amounts_sd), top), or None.
    """
    from types import SimpleNamespace

    from tricl.analysis.split_stages.interventions import steer as steer_split
    from tricl.analysis.text_interventions import steer_captions

    k = len(z)
    if not 0 <= feature < k:
        raise ValueError(f"feature {feature} is out of range: this basis has features 0..{k - 1}")
    out: dict[str, np.ndarray | None] = {
        "probabilities": steer_split(z, feature, list(amounts_sd), SimpleNamespace(**probe)),
        "captions": None,
    }
    if captions is not None:
        c = captions
        amounts = np.asarray(amounts_sd, dtype=np.float64) * float(c["std"])
        out["captions"] = steer_captions(
            c["z"], np.asarray(c["direction"]), amounts, c["keys"], c["weights"], int(c["top"])
        )
    return out
