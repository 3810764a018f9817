"""Per-feature activation statistics: streaming top/bottom-k images, class means, selectivity.

A feature's "activation" on an image is its projector output ``z_i`` (the same scalar the saliency
maps explain). Everything here is NumPy on arrays of shape (N, k): N images, k features.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


class StreamingTopK:
    """The n largest values of every column of a matrix that arrives in row chunks.

    Memory is O((n + chunk) * k): the running best n rows per column are merged with each new
    chunk and cut back to n with ``np.argpartition``, so the full (N, k) matrix is never held.
    Ties are broken arbitrarily (as by any partial sort).

    Args:
        n_features: number of columns k.
        n: how many values to keep per column.
        largest: keep the largest values (True) or the smallest (False).
    """

    def __init__(self, n_features: int, n: int, *, largest: bool = True) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.largest = largest
        self._values = np.empty((0, n_features), dtype=np.float32)  # (m, k), m <= n
        self._indices = np.empty((0, n_features), dtype=np.int64)  # (m, k)

    def update(self, values: np.ndarray, indices: np.ndarray) -> None:
        """Merge a chunk of rows.

        Args:
            values: activations of the chunk. Shape: (B, k).
            indices: dataset index of each row. Shape: (B,).
        """
        values = np.asarray(values, dtype=np.float32)
        if not self.largest:
            values = -values
        idx = np.broadcast_to(np.asarray(indices, dtype=np.int64)[:, None], values.shape)
        vals = np.concatenate([self._values, values])  # (m + B, k)
        inds = np.concatenate([self._indices, idx])  # (m + B, k)
        if len(vals) > self.n:
            keep = np.argpartition(-vals, self.n - 1, axis=0)[: self.n]  # (n, k)
            vals = np.take_along_axis(vals, keep, axis=0)
            inds = np.take_along_axis(inds, keep, axis=0)
        self._values, self._indices = vals, inds

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept values, best first.

        Returns:
            ``(values, indices)``, each of shape (k, min(n, rows seen)); row i holds feature i's
            values sorted from most to least extreme, and the dataset indices they came from.
        """
        order = np.argsort(-self._values, axis=0, kind="stable")  # (m, k)
        vals = np.take_along_axis(self._values, order, axis=0).T  # (k, m)
        inds = np.take_along_axis(self._indices, order, axis=0).T  # (k, m)
        return (vals if self.largest else -vals), inds


@dataclass(frozen=True, eq=False)
class TopImages:
    """The most and least activating images of every feature.

    Attributes:
        top_indices: dataset indices (into the evaluation split), highest activation first.
            Shape: (k, n).
        top_values: their activations. Shape: (k, n).
        bottom_indices: dataset indices, lowest activation first. Shape: (k, n).
        bottom_values: their activations. Shape: (k, n).
    """

    top_indices: np.ndarray
    top_values: np.ndarray
    bottom_indices: np.ndarray
    bottom_values: np.ndarray


def iter_chunks(
    z: np.ndarray, indices: np.ndarray, chunk: int = 4096
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Row chunks of an activation matrix. Shapes: (N, k), (N,) -> ((B, k), (B,)) pieces."""
    for start in range(0, len(z), chunk):
        yield z[start : start + chunk], indices[start : start + chunk]


def top_bottom_images(chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int) -> TopImages:
    """Top-n and bottom-n images of every feature, streamed over chunks.

    Args:
        chunks: ``(values (B, k), dataset indices (B,))`` pairs, e.g. from :func:`iter_chunks`.
        n: images to keep per feature and direction.

    Returns:
        The :class:`TopImages`; fewer than n per feature if fewer rows were seen.
    """
    top = bottom = None
    for values, indices in chunks:
        if top is None:
            top = StreamingTopK(values.shape[1], n, largest=True)
            bottom = StreamingTopK(values.shape[1], n, largest=False)
        top.update(values, indices)
        bottom.update(values, indices)
    if top is None or bottom is None:
        raise ValueError("top_bottom_images got no rows")
    tv, ti = top.result()
    bv, bi = bottom.result()
    return TopImages(top_indices=ti, top_values=tv, bottom_indices=bi, bottom_values=bv)


def class_means(z: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean activation of every feature over the images of every class.

    Args:
        z: activations. Shape: (N, k).
        labels: class of each image, in [0, n_classes); -1 (left out) without a label.
            Shape: (N,).
        n_classes: number of classes C (0 for a set without labels).

    Returns:
        Class-mean matrix, NaN for a class without images. Shape: (k, C).
    """
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    valid = labels >= 0  # (N,)
    sums = np.zeros((n_classes, z.shape[1]))
    np.add.at(sums, labels[valid], z[valid])  # (C, k)
    counts = np.bincount(labels[valid], minlength=n_classes).astype(np.float64)  # (C,)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return means.T.astype(np.float32)  # (k, C)


@dataclass(frozen=True, eq=False)
class Selectivity:
    """How much each feature's strongest images come from one class.

    Attributes:
        dominant_class: most frequent class among the feature's top images. Shape: (k,).
        dominant_share: its share of those images, in [1/C, 1]. Shape: (k,).
        entropy_bits: entropy of the class distribution of those images, in [0, log2 C] bits.
            Shape: (k,).
        counts: class histogram of the top images. Shape: (k, C).
    """

    dominant_class: np.ndarray
    dominant_share: np.ndarray
    entropy_bits: np.ndarray
    counts: np.ndarray


def class_selectivity(top_indices: np.ndarray, labels: np.ndarray, n_classes: int) -> Selectivity:
    """Class selectivity of every feature from its top images.

    Args:
        top_indices: dataset indices of each feature's top images. Shape: (k, n).
        labels: class of every image of the split, indexed by dataset index; -1 without a label.
            Shape: (N,).
        n_classes: number of classes C (0 for a set without labels).

    Returns:
        The :class:`Selectivity` of the k features; without labels (C = 0) the dominant class is
        -1 and its share and entropy NaN.
    """
    top_labels = labels[top_indices]  # (k, n)
    k, n = top_labels.shape
    if n_classes == 0:
        nan = np.full(k, np.nan, dtype=np.float32)
        empty = np.zeros((k, 0), dtype=np.int64)
        return Selectivity(np.full(k, -1, dtype=np.int64), nan, nan.copy(), empty)
    counts = np.zeros((k, n_classes), dtype=np.int64)
    rows = np.repeat(np.arange(k), n)  # (k * n,)
    valid = top_labels.ravel() >= 0
    np.add.at(counts, (rows[valid], top_labels.ravel()[valid]), 1)  # (k, C)
    p = counts / max(n, 1)  # (k, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)  # (k,)
    return Selectivity(
        dominant_class=counts.argmax(axis=1),
        dominant_share=p.max(axis=1).astype(np.float32),
        entropy_bits=np.abs(entropy).astype(np.float32),
        counts=counts,
    )


def histograms(z: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Activation histogram of every feature over its own range.

    Args:
        z: activations. Shape: (N, k).
        bins: number of bins per feature.

    Returns:
        ``(counts, edges)`` of shapes (k, bins) and (k, bins + 1).
    """
    k = z.shape[1]
    counts = np.zeros((k, bins), dtype=np.int64)
    edges = np.zeros((k, bins + 1), dtype=np.float32)
    for i in range(k):
        counts[i], edges[i] = np.histogram(z[:, i], bins=bins)
    return counts, edges
