"""The spectral basis of an image-text run: canonical correlation of its image and text features.

An image-image run is trained on two augmented views of one image, so its spectral basis
(:mod:`tricl.analysis.spectral`) diagonalises the cross-view covariance of augmented pairs: the
eigenfunctions of the augmentation kernel. An image-text run (clip, triclip) is trained on
image-CAPTION pairs instead, so its positive-pair kernel is the image-caption kernel and the basis
that plays the same role is canonical correlation analysis (CCA) between the image features
``f(x)`` and the text features ``g(t)`` of the training pairs:

    X, Y  the centred train features (M, k_x), (M, k_y); Cxx, Cyy their covariances,
    Wx = Cxx^(-1/2), Wy = Cyy^(-1/2)  (each with a small ridge, see :data:`RIDGE`),
    Wx^T (X^T Y / M) Wy = U diag(rho) V^T,

``image_rotation = Wx U`` and ``text_rotation = Wy V`` map each side onto its canonical variates,
ordered by canonical correlation ``rho`` (the "eigenvalues": 1 is an image direction that the
caption predicts exactly). The two modalities have different encoders, so unlike the image case the
basis has two rotations; rank r of the image side is paired with rank r of the text side. Like the
augmentation basis it depends only on the span of each side's features: an invertible linear map of
either side gives the same variates, which is why two seeds can agree in it even when their trained
axes do not.

The basis is estimated on the TRAIN split's pairs, never on the evaluation images, with a split-half
noise estimate per correlation (even rows against odd rows) so that ranks inside a cluster tighter
than the noise are flagged by :func:`tricl.analysis.spectral.unresolved_groups` (the same rule as
the image pages). It is cached in ``RUN/analysis/pair_basis.npz`` by the ``pair_basis`` stage of
:data:`PAIR_STAGES`; :func:`load_pair_basis` reads it without torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tricl.analysis.image_text import has_text, text_features
from tricl.analysis.spectral import unresolved_groups
from tricl.analysis.stages import (
    Family,
    Output,
    Stage,
    Target,
    need_arrays,
    register_stage,
)
from tricl.analysis.store import AnalysisError, normalise_meta
from tricl.bases import Rotation
from tricl.runs import Run, RunError

PAIR_BASIS_FILE = "pair_basis.npz"
# Ridge added to each side's covariance, relative to its mean eigenvalue (so it scales with the
# features): small enough that an invertible linear map of a side changes the variates by ~1e-4,
# large enough that a near-degenerate feature direction is not blown up by the whitening.
RIDGE = 1e-6
# Eigenvalues of a covariance below this fraction of its largest are directions the encoder never
# uses (e.g. a dead unit): dropped, as the augmentation basis drops them.
NULL_FRACTION = 1e-9


@dataclass(frozen=True, eq=False)
class PairBasis:
    """One image-text run's pair basis (CCA of its train image and text features).

    Attributes:
        image_mean: mean train image feature. Shape: (k_x,).
        image_rotation: whitening then the left singular vectors, rank order. Shape: (k_x, r).
        text_mean: mean train text feature. Shape: (k_y,).
        text_rotation: whitening then the right singular vectors, rank order. Shape: (k_y, r).
        correlations: canonical correlations, descending, in [0, 1]. Shape: (r,).
        split_half_diff: |difference| of each correlation between the even and the odd train pairs,
            a gauge of estimation noise (NaN where a half has fewer directions). Shape: (r,).
        pairs: number of train pairs the estimate used.
    """

    image_mean: np.ndarray
    image_rotation: np.ndarray
    text_mean: np.ndarray
    text_rotation: np.ndarray
    correlations: np.ndarray
    split_half_diff: np.ndarray
    pairs: int

    @property
    def image(self) -> Rotation:
        """The rotation of the image features onto the pair basis."""
        return Rotation(self.image_mean, self.image_rotation)

    @property
    def text(self) -> Rotation:
        """The rotation of the text features onto the pair basis."""
        return Rotation(self.text_mean, self.text_rotation)

    def project_image(self, z: np.ndarray) -> np.ndarray:
        """Image features in the pair basis, rank order. Shape: (N, k_x) -> (N, r)."""
        return self.image.project(z)

    def project_text(self, z: np.ndarray) -> np.ndarray:
        """Text features in the pair basis, rank order. Shape: (N, k_y) -> (N, r)."""
        return self.text.project(z)

    @property
    def rank(self) -> int:
        """Number of canonical pairs (r)."""
        return len(self.correlations)

    @property
    def groups(self) -> list[tuple[int, int]]:
        """0-based inclusive rank ranges whose order the data cannot define (see spectral)."""
        return unresolved_groups(self.correlations, self.split_half_diff)

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of the SHA-256 of both means and rotations (what the basis *is*)."""
        h = hashlib.sha256()
        for a in (self.image_mean, self.image_rotation, self.text_mean, self.text_rotation):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


def _whitening(z: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ridge whitening matrix of one side.

    Args:
        z: features, float64. Shape: (M, k).
        ridge: added to every kept eigenvalue, as a fraction of their mean.

    Returns:
        mean (k,) and W (k, q), q <= k the directions that are not numerically null.
    """
    mean = z.mean(axis=0)
    centred = z - mean
    cov = centred.T @ centred / len(z)  # (k, k)
    w, v = np.linalg.eigh(cov)
    keep = w > NULL_FRACTION * max(w.max(), 0.0)
    if not keep.any():
        raise AnalysisError(
            "the features are constant on the train pairs, so no pair basis exists; train longer"
        )
    w_kept = w[keep] + ridge * w[keep].mean()
    return mean, v[:, keep] / np.sqrt(w_kept)  # (k, q)


def _cca(
    x: np.ndarray, y: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Means, rotations and canonical correlations of paired features.

    Args:
        x: image features, float64. Shape: (M, k_x).
        y: text features of the same pairs. Shape: (M, k_y).
        ridge: see :func:`_whitening`.

    Returns:
        ``(mean_x (k_x,), rot_x (k_x, r), mean_y (k_y,), rot_y (k_y, r), rho (r,))``.
    """
    mx, wx = _whitening(x, ridge)
    my, wy = _whitening(y, ridge)
    a, b = (x - mx) @ wx, (y - my) @ wy  # (M, q_x), (M, q_y)
    u, rho, vt = np.linalg.svd(a.T @ b / len(x), full_matrices=False)  # (q_x, r), (r,), (r, q_y)
    return mx, wx @ u, my, wy @ vt.T, rho


def estimate_pair_basis(
    image_z: np.ndarray, text_z: np.ndarray, *, ridge: float = RIDGE
) -> PairBasis:
    """The pair basis from the image and text features of the same (train) pairs.

    Each canonical pair's sign is fixed so that the image variate's third moment on these pairs is
    non-negative (the text variate follows, so their correlation stays positive): a rule that does
    not depend on the features' coordinates, so the signed basis is deterministic and invariant to
    an invertible linear map of either side.

    Args:
        image_z: image features f(x). Shape: (M, k_x).
        text_z: text features g(t) of the same pairs, row i the caption of image i. Shape: (M, k_y).
        ridge: whitening ridge, a fraction of each side's mean eigenvalue (:data:`RIDGE`).

    Returns:
        The :class:`PairBasis`.

    Raises:
        AnalysisError: different numbers of pairs, fewer than 4 pairs, or constant features.
    """
    x = np.asarray(image_z, dtype=np.float64)
    y = np.asarray(text_z, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise AnalysisError(
            f"image features {x.shape} and text features {y.shape} must be (pairs, k) with one"
            " row per pair; pass the features of the same image-caption pairs"
        )
    if len(x) < 4:
        raise AnalysisError(f"{len(x)} pairs are too few for a pair basis; use the train split")
    mx, rx, my, ry, rho = _cca(x, y, ridge)
    skew = (((x - mx) @ rx) ** 3).mean(axis=0)  # (r,)
    sign = np.where(skew < 0, -1.0, 1.0)
    halves = [_cca(x[part], y[part], ridge)[4] for part in (slice(0, None, 2), slice(1, None, 2))]
    diff = np.full(len(rho), np.nan)
    m = min(len(rho), *(len(h) for h in halves))
    diff[:m] = np.abs(halves[0][:m] - halves[1][:m])
    return PairBasis(
        image_mean=mx,
        image_rotation=rx * sign,
        text_mean=my,
        text_rotation=ry * sign,
        correlations=rho,
        split_half_diff=diff,
        pairs=len(x),
    )


@dataclass(frozen=True)
class _PairJob:
    """The pair-basis stage's context: the run, and how to get its train features."""

    run: Run
    ridge: float
    split: str
    progress: bool


def _load_pair_basis(arrays: dict[str, np.ndarray], meta: dict, job: _PairJob) -> PairBasis:
    need_arrays(
        arrays,
        {
            "image_mean": 1,
            "image_rotation": 2,
            "text_mean": 1,
            "text_rotation": 2,
            "correlations": 1,
            "split_half_diff": 1,
            "pairs": 0,
        },
    )
    r = len(arrays["correlations"])
    if arrays["image_rotation"].shape[1] != r or arrays["text_rotation"].shape[1] != r:
        raise ValueError("the rotations and the correlations disagree in rank")
    if len(arrays["split_half_diff"]) != r:
        raise ValueError("split_half_diff and the correlations disagree in length")
    return PairBasis(
        image_mean=arrays["image_mean"],
        image_rotation=arrays["image_rotation"],
        text_mean=arrays["text_mean"],
        text_rotation=arrays["text_rotation"],
        correlations=arrays["correlations"],
        split_half_diff=arrays["split_half_diff"],
        pairs=int(arrays["pairs"]),
    )


def _compute_pair_basis(job: _PairJob, inputs: dict[str, Any]) -> Output:
    # any evaluation split's text features carry the same train pairs: reuse the caller's
    feats = text_features(job.run, job.split, progress=job.progress)
    basis = estimate_pair_basis(feats.train_image_z, feats.train_text_z, ridge=job.ridge)
    arrays = {
        "image_mean": basis.image_mean,
        "image_rotation": basis.image_rotation,
        "text_mean": basis.text_mean,
        "text_rotation": basis.text_rotation,
        "correlations": basis.correlations,
        "split_half_diff": basis.split_half_diff,
        "pairs": np.array(basis.pairs),
    }
    return Output(arrays)


# Stages of one image-text run that do not depend on the evaluation split, in ``RUN/analysis/``.
PAIR_STAGES: dict[str, Stage] = {}
register_stage(
    PAIR_STAGES,
    Stage(
        "pair_basis",
        PAIR_BASIS_FILE,
        _compute_pair_basis,
        _load_pair_basis,
        params=lambda job: {"ridge": job.ridge, "split": "train", "halves": "even/odd rows"},
    ),
)


def _job(
    run: Run | str | Path, ridge: float, split: str = "test", progress: bool = False
) -> _PairJob:
    if not isinstance(run, Run):
        try:
            run = Run.load(Path(run))
        except RunError as exc:
            raise AnalysisError(str(exc)) from None
    if not has_text(run):
        raise AnalysisError(
            f"{run.name} is not an image-text run ({run.config.method}); the pair basis needs a"
            " clip or triclip run (image-only runs have the spectral basis: tricl analyze --basis"
            " spectral)"
        )
    return _PairJob(run, ridge, split, progress)


def _target(job: _PairJob, compute: bool) -> Target:
    key = normalise_meta({"weights_hash": job.run.weights_hash, "dataset": job.run.config.dataset})
    return Target(Path(job.run.path) / "analysis", key, job)


# The family of an image-text run's pair basis, in ``RUN/analysis/``.
PAIR = Family("pair basis", PAIR_STAGES, _target)


def load_pair_basis(run: Run | str | Path, *, ridge: float = RIDGE) -> PairBasis | None:
    """The run's cached pair basis, or None (never computes, never imports torch).

    Raises:
        AnalysisError: a broken run, or a run that is not image-text.
    """
    got = PAIR.read(_job(run, ridge), ["pair_basis"])
    return None if got is None else got[1].values["pair_basis"]


def pair_basis(
    run: Run | str | Path,
    *,
    ridge: float = RIDGE,
    split: str = "test",
    force: bool = False,
    progress: bool = True,
) -> PairBasis:
    """An image-text run's pair basis, estimated on its train pairs and cached with the run.

    Args:
        run: a trained clip / triclip run or its folder.
        ridge: whitening ridge (:data:`RIDGE`).
        split: the evaluation split whose text features (computed if missing) are read for their
            train pairs; the basis is the same whichever split (it is estimated on train pairs).
        force: recompute even if a cached basis for these weights and parameters exists.
        progress: progress bars while the run's text features are computed (if missing).

    Returns:
        The :class:`PairBasis`.

    Raises:
        AnalysisError: a broken run, or a run that is not image-text.
    """
    _, res = PAIR.run(_job(run, ridge, split, progress), ["pair_basis"], force=force)
    return res.values["pair_basis"]
