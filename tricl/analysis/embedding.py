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


@dataclass(frozen=True, eq=False)
class Embedding:
    """2-D coordinates of every evaluation image.

    Attributes:
        coords: UMAP coordinates, rows aligned with the features' rows. Shape: (N, 2).
        params: the UMAP parameters used.
    """

    coords: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def umap_embedding(z: np.ndarray, params: dict[str, Any] | None = None) -> Embedding:
    """UMAP of the L2-normalised features.

    Args:
        z: raw features. Shape: (N, k).
        params: UMAP parameters (default :data:`UMAP_PARAMS`; ``input`` is descriptive only).

    Returns:
        The :class:`Embedding`. Shape of ``coords``: (N, 2).
    """
    import umap  # slow to import (numba): only when a map is computed

    params = dict(UMAP_PARAMS if params is None else params)
    kwargs = {k: v for k, v in params.items() if k != "input"}
    x = l2_normalise(z)
    n_neighbors = min(int(kwargs.get("n_neighbors", 15)), len(x) - 1)
    if n_neighbors < 2:
        raise ValueError(f"UMAP needs at least 3 images, got {len(x)}")
    kwargs["n_neighbors"] = n_neighbors
    with warnings.catch_warnings():
        # "n_jobs overridden by random_state" and similar notices are expected
        warnings.simplefilter("ignore", UserWarning)
        coords = umap.UMAP(n_components=2, **kwargs).fit_transform(x)
    params["n_neighbors"] = n_neighbors
    return Embedding(coords=np.asarray(coords, dtype=np.float32), params=params)
