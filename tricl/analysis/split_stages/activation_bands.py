"""Activation bands: sample images from across each feature's whole activation range.

Top images overstate how clean a feature is (sae_vis and Neuronpedia show samples across the range),
so this stage splits each feature's activations on the evaluation split into :data:`BANDS`
equal-width intervals from its minimum to its maximum and stores, per band: its edges, how many
images fall in it, their class counts and up to :data:`SAMPLES` of them drawn at random (seeded,
so the page shows the same images every time). It also stores the fraction of images where the
feature is near zero: ``|a| <= NEAR_ZERO * max |a|`` over the split (a feature that is zero
everywhere is thus near zero everywhere).

Band ``b`` holds ``edges[b] <= a < edges[b + 1]``; the top band also holds the maximum (a constant
feature's images are all in the bottom band). In the
spectral basis the same stage runs on the rotated features (``features`` is the projected z there).
The artifact is ``activation_bands.npz`` in the split's folder of each basis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tricl.analysis.features import Features
from tricl.analysis.image_stages import SplitJob, register_split_stage
from tricl.analysis.stages import Output, Stage, need_arrays

BANDS = 5  # equal-width intervals from the minimum to the maximum
SAMPLES = 8  # images drawn from each band
NEAR_ZERO = 0.05  # |a| at most this fraction of the feature's max |a| counts as near zero
SEED = 0


@dataclass(frozen=True, eq=False)
class ActivationBands:
    """Each feature's activation bands on the evaluation split (k features, B bands, C classes).

    Attributes:
        edges: band edges, bottom to top. Shape: (k, B + 1).
        counts: images in each band (each row sums to N). Shape: (k, B).
        class_counts: labelled images of each class in each band; C = 0 without labels.
            Shape: (k, B, C).
        samples: dataset indices of up to S images of each band, -1 where a band has fewer.
            Shape: (k, B, S).
        near_zero: fraction of images with ``|a| <= NEAR_ZERO * max |a|``. Shape: (k,).
        near_zero_threshold: that ``NEAR_ZERO * max |a|``. Shape: (k,).
    """

    edges: np.ndarray
    counts: np.ndarray
    class_counts: np.ndarray
    samples: np.ndarray
    near_zero: np.ndarray
    near_zero_threshold: np.ndarray


def band_edges(z: np.ndarray, bands: int = BANDS) -> np.ndarray:
    """Equal-width band edges from each column's minimum to its maximum. z: (N, k) -> (k, B + 1)."""
    lo, hi = z.min(axis=0), z.max(axis=0)  # (k,)
    steps = np.linspace(0.0, 1.0, bands + 1, dtype=np.float64)  # (B + 1,)
    edges = lo[:, None] + (hi - lo)[:, None].astype(np.float64) * steps[None, :]
    edges[:, -1] = hi  # exact, whatever the rounding
    return edges.astype(z.dtype)


def band_of(z: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band of every activation, by comparison with the stored edges, so a value and its band
    always agree. z: (N, k), edges: (k, B + 1) -> (N, k) int64 in [0, B)."""
    inner = edges[:, 1:-1]  # (k, B - 1)
    band = (z[:, :, None] >= inner[None, :, :]).sum(axis=2)  # (N, k)
    # a constant feature has all edges equal: its images go to the bottom band, not the top
    return np.where(edges[None, :, -1] > edges[None, :, 0], band, 0).astype(np.int64)


def sample_bands(band: np.ndarray, counts: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Up to ``samples`` rows of each band drawn without replacement, -1 padded.

    band: (N, k) band of each row; counts: (k, B) -> (k, B, S) row numbers.
    """
    n, k = band.shape
    keys = np.random.default_rng(seed).random((n, k))  # (N, k) uniform in [0, 1)
    order = np.argsort(band + keys, axis=0, kind="stable")  # (N, k): by band, then at random
    start = np.cumsum(counts, axis=1) - counts  # (k, B): first sorted position of each band
    s = np.arange(samples)
    pos = start[:, :, None] + s[None, None, :]  # (k, B, S)
    ok = s[None, None, :] < counts[:, :, None]
    rows = np.take_along_axis(order.T, np.minimum(pos, n - 1).reshape(k, -1), axis=1)
    return np.where(ok, rows.reshape(pos.shape), -1)


def activation_bands(
    z: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    bands: int = BANDS,
    samples: int = SAMPLES,
    near_zero: float = NEAR_ZERO,
    seed: int = SEED,
    indices: np.ndarray | None = None,
) -> ActivationBands:
    """The bands of every feature (see :class:`ActivationBands`).

    Args:
        z: activations. Shape: (N, k).
        labels: class of each row, -1 (or ``n_classes == 0``) when unlabelled. Shape: (N,).
        n_classes: C; 0 skips the class counts.
        bands: B, equal-width intervals from each feature's minimum to its maximum.
        samples: S, images drawn from each band.
        near_zero: the near-zero rule's fraction of ``max |a|``.
        seed: the sampling's seed.
        indices: dataset index of each row (None: the row numbers). Shape: (N,).
    """
    z = np.asarray(z, dtype=np.float32)
    n, k = z.shape
    edges = band_edges(z, bands)
    band = band_of(z, edges)  # (N, k)
    feat = np.arange(k)[None, :]  # (1, k)
    counts = np.bincount((feat * bands + band).ravel(), minlength=k * bands).reshape(k, bands)
    labels = np.asarray(labels, dtype=np.int64)
    valid = (labels >= 0) & (labels < n_classes)  # (N,)
    cells = (feat * bands + band)[valid] * n_classes + labels[valid, None]  # (N', k)
    class_counts = np.bincount(cells.ravel(), minlength=k * bands * n_classes)
    rows = sample_bands(band, counts, samples, seed)  # (k, B, S)
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    threshold = near_zero * np.abs(z).max(axis=0)  # (k,)
    return ActivationBands(
        edges=edges,
        # int32 halves the artifact (an evaluation split holds far fewer than 2**31 images)
        counts=counts.astype(np.int32),
        class_counts=class_counts.reshape(k, bands, n_classes).astype(np.int32),
        samples=np.where(rows >= 0, idx[np.maximum(rows, 0)], -1).astype(np.int32),
        near_zero=(np.abs(z) <= threshold[None, :]).mean(axis=0).astype(np.float32),
        near_zero_threshold=threshold.astype(np.float32),
    )


def _params(job: SplitJob) -> dict[str, Any]:
    return {
        "bands": BANDS,
        "samples": SAMPLES,
        "near_zero": f"|a| <= {NEAR_ZERO} * max |a|",
        "seed": SEED,
    }


def _compute(job: SplitJob, inputs: dict[str, Any]) -> Output:
    f: Features = inputs["features"]
    job.progress.add(1)
    res = activation_bands(f.z, f.labels, f.n_classes, indices=f.indices)
    job.progress.tick()
    return Output(dict(vars(res)))


_NDIM = {
    "edges": 2,
    "counts": 2,
    "class_counts": 3,
    "samples": 3,
    "near_zero": 1,
    "near_zero_threshold": 1,
}


def _load(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob) -> ActivationBands:
    need_arrays(arrays, _NDIM)
    k, b = arrays["counts"].shape
    if arrays["edges"].shape != (k, b + 1) or arrays["samples"].shape[:2] != (k, b):
        raise ValueError("the band edges, counts and samples disagree in shape")
    return ActivationBands(**{n: arrays[n] for n in _NDIM})


register_split_stage(
    Stage(
        "activation_bands",
        "activation_bands.npz",
        _compute,
        _load,
        needs=("features",),
        params=_params,
    )
)
