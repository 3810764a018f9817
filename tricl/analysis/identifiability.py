"""Identifiability metrics: do two runs learn the same features, in the same order?

All functions take two feature matrices computed on the same images, rows aligned:
``a`` of shape (N, k_a) and ``b`` of shape (N, k_b), each with its columns already sorted by its own
importance (most important first) when an order matters.

- ordered correlation: mean over i of |corr(a_i, b_i)| (triCL's claim: same features, same order,
  up to sign);
- MCC (mean correlation coefficient): the same after the best one-to-one matching (Hungarian);
- linear CKA (Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML
  2019): invariant to rotations and isotropic scaling of the whole representation.

Every registered metric of a pair, by name: :func:`tricl.analysis.metrics.score_pair` (the
registry builds on this module, never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def corr_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between every column of ``a`` and every column of ``b``.

    A constant column correlates 0 with everything.

    Args:
        a: features of run a. Shape: (N, k_a).
        b: features of run b on the same images. Shape: (N, k_b).

    Returns:
        Signed correlations. Shape: (k_a, k_b).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a has {a.shape[0]} rows and b {b.shape[0]}; both need the same images")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na = np.linalg.norm(a, axis=0)  # (k_a,)
    nb = np.linalg.norm(b, axis=0)  # (k_b,)
    na[na == 0] = np.inf
    nb[nb == 0] = np.inf
    return (a.T @ b) / na[:, None] / nb[None, :]  # (k_a, k_b)


def ordered_correlation(corr: np.ndarray, top: int | None = None) -> float:
    """Mean |corr| of feature i of run a with feature i of run b.

    Args:
        corr: correlations between the importance-ordered features of a and b. Shape: (k_a, k_b).
        top: only the first ``top`` features (e.g. 8); None for all ``min(k_a, k_b)``.

    Returns:
        The ordered correlation in [0, 1].
    """
    n = min(corr.shape)
    if top is not None:
        n = min(n, top)
    return float(np.abs(np.diagonal(corr)[:n]).mean())


@dataclass(frozen=True, eq=False)
class Matching:
    """The best one-to-one matching of run a's features to run b's (by |corr|).

    Attributes:
        rows: feature positions in a. Shape: (m,), m = min(k_a, k_b), sorted ascending.
        cols: matched feature positions in b. Shape: (m,).
        corr: signed correlation of each matched pair. Shape: (m,).
    """

    rows: np.ndarray
    cols: np.ndarray
    corr: np.ndarray

    @property
    def mcc(self) -> float:
        """Mean |corr| over the matched pairs."""
        return float(np.abs(self.corr).mean())


def hungarian_match(corr: np.ndarray) -> Matching:
    """Match features one-to-one so that the summed |corr| is largest (scipy's Hungarian solver).

    Args:
        corr: signed correlations. Shape: (k_a, k_b).

    Returns:
        The :class:`Matching`; its ``mcc`` is the MCC.
    """
    from scipy.optimize import linear_sum_assignment  # only when scoring, not when reading

    rows, cols = linear_sum_assignment(-np.abs(corr))
    return Matching(rows=rows, cols=cols, corr=corr[rows, cols])


def mcc(corr: np.ndarray) -> float:
    """Mean correlation coefficient after Hungarian matching. Shape of ``corr``: (k_a, k_b)."""
    return hungarian_match(corr).mcc


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment between two representations of the same images.

    ``CKA = ||B^T A||_F^2 / (||A^T A||_F ||B^T B||_F)`` on column-centred A, B (feature-space form,
    O(N k^2), so it also works for many images).

    Args:
        a: features of run a. Shape: (N, k_a).
        b: features of run b. Shape: (N, k_b).

    Returns:
        CKA in [0, 1]; 1 when b is a rotation (or isotropic scaling) of a.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    cross = np.linalg.norm(b.T @ a) ** 2  # (k_b, k_a) -> scalar
    denom = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / denom) if denom > 0 else 0.0


def rank_match(corr: np.ndarray, top: int = 8) -> float:
    """Share of a's top features whose best |corr| partner in b is among b's top features.

    Args:
        corr: correlations between the importance-ordered features. Shape: (k_a, k_b).
        top: how many leading features count as "top" in both runs.

    Returns:
        The share in [0, 1].
    """
    n = min(top, corr.shape[0])
    best = np.abs(corr[:n]).argmax(axis=1)  # (n,)
    return float((best < top).mean())
