"""A 2-D UMAP map of the evaluation images by their features (umap-learn)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tricl.analysis.downstream import l2_normalise

# Euclidean on L2-normalised z ranks neighbours as cosine similarity does; random_state makes the
# map reproducible (umap then runs single-threaded).
UMAP_PARAMS: dict[str, Any] = {
    "n_neighbors": 15,
    "min_dist": 0.1,
    "metric": "euclidean",
    "random_state": 0,
    "input": "l2-normalised z",
}


# UMAP of 50,000 points takes minutes and its page a plot too heavy to draw: beyond this many
# images the map is of a fixed random subsample (seed 0), and the page says so
MAX_POINTS = 10_000
SUBSAMPLE_SEED = 0


@dataclass(frozen=True, eq=False)
class Embedding:
    """2-D coordinates of every evaluation image.

    Attributes:
        coords: UMAP coordinates of the rows mapped. Shape: (M, 2).
        params: the UMAP parameters used.
        rows: the feature rows mapped, ascending (all N rows, or a subsample of
            :data:`MAX_POINTS` when there are more). Shape: (M,).
        n_total: rows there were (M < n_total: the map is of a subsample).
    """

    coords: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    rows: np.ndarray | None = None
    n_total: int = 0

    def __post_init__(self) -> None:
        if self.rows is None:
            object.__setattr__(self, "rows", np.arange(len(self.coords)))
        if self.n_total == 0:
            object.__setattr__(self, "n_total", len(self.coords))

    @property
    def subsampled(self) -> bool:
        """Whether the map shows a subsample of the rows."""
        return len(self.coords) < self.n_total


def subsample_rows(n: int, most: int = MAX_POINTS) -> np.ndarray:
    """The rows a map of n images shows: all, or ``most`` of them drawn with a fixed seed.

    Shape: (min(n, most),), ascending.
    """
    if n <= most:
        return np.arange(n)
    rng = np.random.default_rng(SUBSAMPLE_SEED)
    return np.sort(rng.choice(n, size=most, replace=False))


def umap_embedding(
    z: np.ndarray, params: dict[str, Any] | None = None, *, most: int = MAX_POINTS
) -> Embedding:
    """UMAP of the L2-normalised features (of a subsample of ``most`` rows when there are more).

    Args:
        z: raw features. Shape: (N, k).
        params: UMAP parameters (default :data:`UMAP_PARAMS`; ``input`` is descriptive only).
        most: the most rows mapped (:func:`subsample_rows`).

    Returns:
        The :class:`Embedding`. Shape of ``coords``: (min(N, most), 2).
    """
    import umap  # slow to import (numba): only when a map is computed

    params = dict(UMAP_PARAMS if params is None else params)
    kwargs = {k: v for k, v in params.items() if k != "input"}
    rows = subsample_rows(len(z), most)
    x = l2_normalise(z[rows] if len(rows) < len(z) else z)
    n_neighbors = min(int(kwargs.get("n_neighbors", 15)), len(x) - 1)
    if n_neighbors < 2:
        raise ValueError(f"UMAP needs at least 3 images, got {len(x)}")
    kwargs["n_neighbors"] = n_neighbors
    with warnings.catch_warnings():
        # "n_jobs overridden by random_state" and similar notices are expected
        warnings.simplefilter("ignore", UserWarning)
        coords = umap.UMAP(n_components=2, **kwargs).fit_transform(x)
    params["n_neighbors"] = n_neighbors
    coords = np.asarray(coords, dtype=np.float32)
    return Embedding(coords=coords, params=params, rows=rows, n_total=len(z))
