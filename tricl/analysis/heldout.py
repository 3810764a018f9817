"""Out-of-sample identifiability scores, as the identifiability papers report them.

Each score is fitted on one half of the images and measured on the other, so that a matching or a
linear map fitted to noise does not score itself: the halves are a fixed random split of the
evaluation images (:func:`split_halves`, seed :data:`HALF_SEED`), the same for every pair of runs
scored on the same images. Correlations are Pearson's.

- held-out MCC (Hyvärinen & Morioka's MCC, out of sample as in ICE-BeeM, Khemakhem et al. 2020):
  features matched one-to-one by |corr| on the fit half (Hungarian), the matched pairs' |corr|
  averaged on the score half;
- linear R^2 (Zimmermann et al. 2021, "Contrastive learning inverts the data generating process";
  Roeder et al. 2021, "On linear identifiability of learned representations"): how much of one
  run's features the best linear map from the other's explains on the score half;
- mean canonical correlation (Roeder et al. 2021): canonical directions fitted on the fit half,
  the signed correlations of the top canonical variates on the score half.

All take features ``a`` of shape (N, k_a) and ``b`` of shape (N, k_b) on the same images, rows
aligned. Too few images give NaN (not measured), never a number fitted to nothing: the MCC needs
:data:`MIN_IMAGES`; a linear map and canonical directions need more images in the fit half than
either run has features (else they fit any two runs exactly and say nothing).
"""

from __future__ import annotations

import numpy as np

from tricl.analysis.identifiability import corr_matrix, hungarian_match

HALF_SEED = 0  # the split's seed: fixed, so a cached score can be reproduced
MIN_IMAGES = 8  # four images a half: fewer cannot fit anything
RIDGE = 1e-6  # a ridge this small (relative to the mean variance) only keeps dead features finite
HALVES = (
    f"fitted on a random half of the evaluation images (seed {HALF_SEED}), scored on the other half"
)


def split_halves(n: int, seed: int = HALF_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of ``n`` images into a fit half and a score half.

    Args:
        n: number of images.
        seed: the split's seed.

    Returns:
        ``(fit, score)``: sorted image positions, ``n // 2`` and ``n - n // 2`` of them.
    """
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def _halves(a: np.ndarray, b: np.ndarray):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a has {a.shape[0]} rows and b {b.shape[0]}; both need the same images")
    fit, score = split_halves(a.shape[0])
    return a[fit], b[fit], a[score], b[score]


def _standardise(fit: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both halves centred and scaled by the fit half's mean and std (a constant column: by 1)."""
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    std[std == 0] = 1.0
    return (fit - mean) / std, (score - mean) / std


def paired_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of column i of ``x`` with column i of ``y`` (a constant column: 0).

    Args:
        x: Shape: (N, m).
        y: Shape: (N, m).

    Returns:
        Signed correlations. Shape: (m,).
    """
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    norm = np.linalg.norm(x, axis=0) * np.linalg.norm(y, axis=0)  # (m,)
    out = np.zeros(x.shape[1])
    ok = norm > 0
    out[ok] = (x[:, ok] * y[:, ok]).sum(axis=0) / norm[ok]
    return out


def heldout_mcc(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |corr| of the features matched on the fit half, measured on the score half.

    Args:
        a: features of run a. Shape: (N, k_a).
        b: features of run b on the same images. Shape: (N, k_b).

    Returns:
        The MCC in [0, 1] over ``min(k_a, k_b)`` matched pairs; NaN below :data:`MIN_IMAGES`.
    """
    if len(a) < MIN_IMAGES:
        return float("nan")
    a_fit, b_fit, a_score, b_score = _halves(a, b)
    m = hungarian_match(corr_matrix(a_fit, b_fit))
    return float(np.abs(paired_corr(a_score[:, m.rows], b_score[:, m.cols])).mean())


def _too_few(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the fit half cannot determine a linear map between the runs."""
    return len(a) < MIN_IMAGES or len(a) // 2 <= max(a.shape[1], b.shape[1])


def _ridge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares weights of ``y`` on ``x`` (both centred), tiny ridge. Shape: (k_x, k_y)."""
    gram = x.T @ x  # (k_x, k_x)
    alpha = RIDGE * max(np.trace(gram) / len(gram), 1e-12)
    return np.linalg.solve(gram + alpha * np.eye(len(gram)), x.T @ y)


def _r2(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray) -> float:
    """Held-out R^2 of y from x, the mean over y's non-constant features (as sklearn's)."""
    xf, xs = _standardise(x_fit, x_score)
    yf, ys = _standardise(y_fit, y_score)
    resid = ys - xs @ _ridge(xf, yf)  # (N_score, k_y)
    total = ((ys - ys.mean(axis=0)) ** 2).sum(axis=0)  # (k_y,)
    ok = total > 1e-12 * max(total.max(), 1e-300)
    if not ok.any():
        return float("nan")
    return float((1 - (resid[:, ok] ** 2).sum(axis=0) / total[ok]).mean())


def linear_r2(a: np.ndarray, b: np.ndarray) -> float:
    """Held-out R^2 of the best linear map between two runs, the mean of both directions.

    A map (least squares, intercept, a ridge of :data:`RIDGE`) from a's features to b's is fitted
    on the fit half; on the score half, R^2 = 1 - SSE / SST of each of b's features (its own
    mean as the baseline) is averaged over b's features; the same from b to a; the two averaged.

    Args:
        a: features of run a. Shape: (N, k_a).
        b: features of run b on the same images. Shape: (N, k_b).

    Returns:
        R^2 <= 1: 1 when each run is a linear function of the other, about 0 when unrelated,
        below 0 when the map fitted on one half does worse than the mean on the other (few
        images for the features); NaN when the fit half has no more images than a run has
        features.
    """
    if _too_few(a, b):
        return float("nan")
    a_fit, b_fit, a_score, b_score = _halves(a, b)
    return (_r2(a_fit, b_fit, a_score, b_score) + _r2(b_fit, a_fit, b_score, a_score)) / 2


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    """``cov^(-1/2)`` of a covariance with a tiny ridge. Shape: (k, k)."""
    alpha = RIDGE * max(np.trace(cov) / len(cov), 1e-12)
    vals, vecs = np.linalg.eigh(cov + alpha * np.eye(len(cov)))
    return (vecs / np.sqrt(vals)) @ vecs.T


def heldout_cca(a: np.ndarray, b: np.ndarray, top: int | None = None) -> float:
    """Mean held-out correlation of the top canonical variates of two runs.

    The canonical directions (whitened cross-covariance, SVD) are fitted on the fit half; each
    pair of canonical variates is correlated on the score half, with the sign the fit gave it.

    Args:
        a: features of run a. Shape: (N, k_a).
        b: features of run b on the same images. Shape: (N, k_b).
        top: how many canonical components (the most correlated first); None for all
            ``min(k_a, k_b)``.

    Returns:
        The mean canonical correlation, 1 when one run is a linear function of the other and
        about 0 when unrelated; NaN when the fit half has no more images than a run has features.
    """
    if _too_few(a, b):
        return float("nan")
    a_fit, b_fit, a_score, b_score = _halves(a, b)
    af, as_ = _standardise(a_fit, a_score)
    bf, bs = _standardise(b_fit, b_score)
    n = len(af)
    wa, wb = _inverse_sqrt(af.T @ af / n), _inverse_sqrt(bf.T @ bf / n)  # (k_a, k_a), (k_b, k_b)
    u, _, vt = np.linalg.svd(wa @ (af.T @ bf / n) @ wb)  # (k_a, k_a), (k_b, k_b)
    m = min(a.shape[1], b.shape[1]) if top is None else min(top, a.shape[1], b.shape[1])
    # the score half's canonical variates: (N_score, m) each
    return float(paired_corr(as_ @ wa @ u[:, :m], bs @ wb @ vt[:m].T).mean())
