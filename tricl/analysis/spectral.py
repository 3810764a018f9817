"""The spectral basis of an encoder: its features rotated onto the augmentation eigenvectors.

The paper's identifiability argument says that a tri-factor model at its optimum holds the top
eigenfunctions of the augmentation graph, ordered by their eigenvalues, which S reports. Those
eigenfunctions can also be read off *any* trained encoder, post hoc, inside the span of its
features: whiten the features, then diagonalise the cross-view covariance of augmented positive
pairs,

    P = (A^T B + B^T A) / 2N,   A, B the whitened features of two views of the same N images,

whose eigenvectors U and eigenvalues (in [-1, 1], the canonical correlations between the views)
are the eigenfunctions of the augmentation kernel restricted to the feature span, and their
strengths. ``(z - mean) @ rotation`` gives features in that basis, most invariant first.

If two encoders learned the same span, their spectral bases agree feature by feature up to sign,
except inside eigenvalue clusters whose gaps are below the estimation noise
(``split_half_diff``): there the order is not identifiable from the data at all.

The basis is estimated on augmented pairs of the TRAIN split (``reps`` passes with the run's own
augmentation; an imported encoder at ImageNet scale: SimCLR's ImageNet recipe at the model's input
size, :func:`model_views`, recorded in the artifact's meta), never on the evaluation images, and
cached in ``RUN/analysis/spectral.npz`` by the ``spectral`` stage of :data:`RUN_STAGES`, run by the
:data:`SPECTRAL` family (:mod:`tricl.analysis.stages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tricl.analysis.stages import Family, Output, Stage, Target, need_arrays, register_stage
from tricl.analysis.store import AnalysisError, normalise_meta

# SpectralBasis is declared with the other bases (torch-free); it is estimated and cached here
from tricl.bases import SPECTRAL_ESTIMATE, SpectralBasis
from tricl.catalog import IMAGENET_FAMILY
from tricl.runs import Run, RunError

if TYPE_CHECKING:  # estimating a basis needs torch; reading a stored one does not
    import torch

SPECTRAL_FILE = "spectral.npz"
# The estimate every consumer shares (analysis in the spectral basis, comparisons, align): one
# cached basis per run.
SPECTRAL_PARAMS = SPECTRAL_ESTIMATE


# A single split-half difference is a noisy gauge of an eigenvalue's error: on bases estimated
# from factors of two equal strengths, a gap within 1x that difference caught the tie in 11 of 20
# draws, within 2x in 17 of 20, and neither ever grouped factors whose strengths differ by 0.3.
NOISE_MULTIPLE = 2.0

# The basis is estimated on at most this many train images (a fixed random subsample, seeded by
# the estimate's seed): 4 passes x 2 views of 50,000 CIFAR images are 400,000 forward passes, hours
# on a CPU, while the estimate's noise (split_half_diff) is already small at a few thousand images.
# Every shipped run (5,000 train images at most) uses all its images, as before; the artifact
# records the subsample and the pages say so. Changing it changes bases: bump the stage's version.
MAX_IMAGES = 5_000


def estimate_rows(n: int, seed: int, most: int | None = None) -> np.ndarray:
    """The train rows the basis is estimated on: all n, or a seeded random subsample of ``most``
    (default :data:`MAX_IMAGES`; ascending) when there are more. Shape: (min(n, most),)."""
    most = MAX_IMAGES if most is None else most
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=most, replace=False))


def unresolved_groups(eigenvalues: np.ndarray, noise: np.ndarray) -> list[tuple[int, int]]:
    """Runs of neighbouring ranks whose order the data cannot define.

    Ranks i and i + 1 belong to one group when their eigenvalue gap is within
    :data:`NOISE_MULTIPLE` times the estimation noise of either, ``eigenvalues[i] -
    eigenvalues[i + 1] <= NOISE_MULTIPLE * max(noise[i], noise[i + 1])``; a NaN noise is unknown
    and links nothing. Groups are maximal chains of such
    links, so a group of three can hold a pair whose own gap exceeds the noise.

    Args:
        eigenvalues: descending eigenvalues. Shape: (r,).
        noise: split-half difference of each eigenvalue. Shape: (r,).

    Returns:
        0-based inclusive rank ranges ``(first, last)`` of the groups with at least two features,
        in rank order.
    """
    ev, nz = np.asarray(eigenvalues, dtype=np.float64), np.asarray(noise, dtype=np.float64)
    if ev.shape != nz.shape or ev.ndim != 1:
        raise ValueError(f"eigenvalues {ev.shape} and noise {nz.shape} must be equal 1-D shapes")
    # NaN compares False, so a link with an unknown noise is never made
    linked = (ev[:-1] - ev[1:]) <= NOISE_MULTIPLE * np.maximum(nz[:-1], nz[1:])  # (r - 1,)
    groups: list[tuple[int, int]] = []
    start = None
    for i, link in enumerate(linked):
        if link and start is None:
            start = i
        elif not link and start is not None:
            groups.append((start, i))
            start = None
    if start is not None:
        groups.append((start, len(ev) - 1))
    return groups


class PairMoments:
    """Running sums of view pairs: all :func:`estimate` needs, in O(k^2) memory whatever N is.

    Sums of z1, z2 and the Gram matrices z1^T z1, z2^T z2, z1^T z2 in float64, so the features of
    a 50,000-image train split (x4 passes) are never held at once: each batch is added and dropped.
    """

    def __init__(self, k: int) -> None:
        import torch

        self.n = 0
        self.s1, self.s2 = (torch.zeros(k, dtype=torch.float64) for _ in range(2))  # (k,)
        self.g11, self.g22, self.g12 = (
            torch.zeros(k, k, dtype=torch.float64) for _ in range(3)
        )  # (k, k)

    def add(self, z1: torch.Tensor, z2: torch.Tensor) -> None:
        """Adds pairs. Shape: (B, k) each, view 1 and view 2 of the same images."""
        z1, z2 = z1.double(), z2.double()
        self.n += len(z1)
        self.s1 += z1.sum(0)
        self.s2 += z2.sum(0)
        self.g11 += z1.T @ z1
        self.g22 += z2.T @ z2
        self.g12 += z1.T @ z2

    def whitened_cross_covariance(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, whitening matrix and symmetric cross-view covariance of whitened pairs.

        Returns:
            mean (k,) of both views, whitening W (k, r) and P = (A^T B + B^T A) / 2N (r, r), A and
            B the whitened views ``(z - mean) @ W``.
        """
        import torch

        n = self.n
        mean = (self.s1 + self.s2) / (2 * n)  # (k,)
        cov = (self.g11 + self.g22) / (2 * n) - torch.outer(mean, mean)  # (k, k)
        w, v = torch.linalg.eigh(cov)
        keep = w > 1e-6 * w.max()  # drop directions the encoder never uses
        whiten = v[:, keep] / w[keep].sqrt()  # (k, r)
        # (z1 - mean)^T (z2 - mean), expanded into the running sums
        c12 = self.g12 - torch.outer(self.s1, mean) - torch.outer(mean, self.s2)
        c12 = c12 + n * torch.outer(mean, mean)  # (k, k)
        ab = whiten.T @ c12 @ whiten  # (r, r) = A^T B
        return mean, whiten, (ab + ab.T) / (2 * n)


def estimate(z1: torch.Tensor, z2: torch.Tensor) -> SpectralBasis:
    """The spectral basis from features of augmented pairs.

    Args:
        z1: features of view 1. Shape: (N, k).
        z2: features of view 2 of the same images. Shape: (N, k).
    """
    half = len(z1) // 2
    halves = (PairMoments(z1.shape[1]), PairMoments(z1.shape[1]))
    halves[0].add(z1[:half], z2[:half])
    halves[1].add(z1[half:], z2[half:])
    return estimate_from(*halves)


def estimate_from(first: PairMoments, second: PairMoments) -> SpectralBasis:
    """The spectral basis from the moments of the two halves of the pairs (the split-half noise
    is the difference of the halves' eigenvalues)."""
    import torch

    both = PairMoments(0)
    both.n = first.n + second.n
    for name in ("s1", "s2", "g11", "g22", "g12"):
        setattr(both, name, getattr(first, name) + getattr(second, name))
    mean, whiten, p = both.whitened_cross_covariance()
    eigenvalues, vectors = torch.linalg.eigh(p)
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)  # descending
    halves = [
        torch.linalg.eigvalsh(h.whitened_cross_covariance()[2]).flip(0) for h in (first, second)
    ]
    r = min(len(eigenvalues), len(halves[0]), len(halves[1]))
    diff = torch.full_like(eigenvalues, float("nan"))
    diff[:r] = (halves[0][:r] - halves[1][:r]).abs()
    return SpectralBasis(
        mean=mean.numpy(),
        rotation=(whiten @ vectors).numpy(),
        eigenvalues=eigenvalues.numpy(),
        split_half_diff=diff.numpy(),
        pairs=both.n,
    )


def group_label(group: tuple[int, int]) -> str:
    """A 0-based inclusive rank range as pages name it: ``(2, 4)`` -> ``#3-#5`` (1-based)."""
    return f"#{group[0] + 1}-#{group[1] + 1}"


@dataclass(frozen=True)
class _SpectralJob:
    """The spectral stage's context: the run and how to estimate its basis."""

    run: Run
    reps: int
    seed: int
    batch: int
    device: str


def _load_basis(arrays: dict[str, np.ndarray], meta: dict, job: _SpectralJob) -> SpectralBasis:
    need_arrays(
        arrays, {"mean": 1, "rotation": 2, "eigenvalues": 1, "split_half_diff": 1, "pairs": 0}
    )
    if arrays["rotation"].shape[1] != len(arrays["eigenvalues"]):
        raise ValueError("rotation and eigenvalues disagree in length")
    return SpectralBasis(
        mean=arrays["mean"],
        rotation=arrays["rotation"],
        eigenvalues=arrays["eigenvalues"],
        split_half_diff=arrays["split_half_diff"],
        pairs=int(arrays["pairs"]),
        images=int(arrays.get("images", 0)),
        images_total=int(arrays.get("images_total", 0)),
        augmentation=meta.get("augmentation"),
    )


# An encoder made elsewhere that reads at least this many pixels learned its invariances on
# ImageNet-scale views; the dataset's 28/32-px recipes at native size say nothing about them (the
# natural recipe itself blurs only from 64 px up).
MODEL_VIEWS_MIN_SIZE = 64


def model_views(run: Run) -> dict[str, Any] | None:
    """The augmentation of the run's spectral pairs when it is not its dataset's own family.

    Returns:
        ``{"family": "imagenet", "size": S}`` for an imported encoder whose recorded
        preprocessing reads S >= :data:`MODEL_VIEWS_MIN_SIZE` px (SimCLR's ImageNet recipe at S,
        then the model's normalisation: :func:`tricl.data.imagenet_augmentation`); None for every
        other run (its dataset's family at the dataset's size, as in training).
    """
    source = getattr(run.config, "source", None)
    if not source:
        return None
    size = int(source["preprocess"]["size"])
    return {"family": IMAGENET_FAMILY, "size": size} if size >= MODEL_VIEWS_MIN_SIZE else None


def _views(job: _SpectralJob, data: Any, encoder: Any, dev: torch.device) -> tuple[Any, Any, dict]:
    """``(augment, encode, record)``: one random view of a uint8 batch, the features of a view,
    and what the artifact records of the family."""
    from tricl.data import build_augmentation, imagenet_augmentation

    views = model_views(job.run)
    if views is None:
        record = {"family": data.family, "size": data.image_size}
        return build_augmentation(data).to(dev), encoder, record
    pre = job.run.config.source["preprocess"]
    augment = imagenet_augmentation(views["size"], pre["mean"], pre["std"], data.channels)

    def encode(view: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 3, S, S), the model's own input -> (B, k)."""
        return encoder.project(encoder.read(view))

    return augment.to(dev), encode, views


def _pair_moments(job: _SpectralJob) -> tuple[PairMoments, PairMoments, dict, int, int]:
    """Moments of ``job.reps`` augmented view pairs of every train image (of at most
    :data:`MAX_IMAGES`, :func:`estimate_rows`), the first half of the pairs (in the order drawn)
    and the second apart, the augmentation family's record, and how many images were used of how
    many."""
    import torch

    from tricl.analysis.features import batch_size_for

    # building the model and drawing augmentations use torch's global RNG: fork it, so the
    # estimate is repeatable and the caller's random stream is left as it was
    dev = torch.device(job.device)
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(job.seed)
        data = job.run.input_data(job.run.load_data())
        # channels-last convolutions run about 1.6x faster on a CPU (oneDNN); the features agree
        # with the default layout to float rounding (~1e-7)
        layout = torch.channels_last
        encoder = job.run.encoder(job.device).eval().to(memory_format=layout)
        rows = estimate_rows(len(data.train_x), job.seed)
        x = data.train_x if len(rows) == len(data.train_x) else data.train_x[torch.from_numpy(rows)]
        # at most job.batch images, fewer where the model's input is large (224 px)
        batch = batch_size_for(encoder, x[:1], data.preprocess, device=dev, most=job.batch)
        augment, encode, record = _views(job, data, encoder, dev)
        halves: list[PairMoments] = []
        half, seen = job.reps * len(x) // 2, 0
        for _ in range(job.reps):
            for i in range(0, len(x), batch):
                xb = x[i : i + batch].to(dev)
                z1, z2 = (
                    encode(augment(xb).contiguous(memory_format=layout)).float().cpu()
                    for _ in range(2)
                )  # (B, k) each
                if not halves:
                    halves = [PairMoments(z1.shape[1]), PairMoments(z1.shape[1])]
                cut = min(max(half - seen, 0), len(z1))  # rows of this batch in the first half
                halves[0].add(z1[:cut], z2[:cut])
                halves[1].add(z1[cut:], z2[cut:])
                seen += len(z1)
    return halves[0], halves[1], record, len(x), len(data.train_x)


def _compute_basis(job: _SpectralJob, inputs: dict) -> Output:
    import torch

    with torch.no_grad():
        first, second, augmentation, used, total = _pair_moments(job)
        basis = estimate_from(first, second)
    arrays = {
        "mean": basis.mean,
        "rotation": basis.rotation,
        "eigenvalues": basis.eigenvalues,
        "split_half_diff": basis.split_half_diff,
        "pairs": np.array(basis.pairs),
    }
    if used < total:  # a subsample: the artifact says of how many images
        arrays |= {"images": np.array(used), "images_total": np.array(total)}
    return Output(arrays, meta={"augmentation": augmentation})


def _params(job: _SpectralJob) -> dict[str, Any]:
    """The estimate's parameters; the family only where it is not the dataset's own, so the
    caches of trained runs (the shipped ones too) keep their key."""
    views = model_views(job.run)
    return {
        "reps": job.reps,
        "seed": job.seed,
        "split": "train",
        **({"augmentation": views} if views else {}),
    }


# Stages of one run that do not depend on the evaluation split, in ``RUN/analysis/``.
RUN_STAGES: dict[str, Stage] = {}
register_stage(
    RUN_STAGES,
    Stage(
        "spectral",
        SPECTRAL_FILE,
        _compute_basis,
        _load_basis,
        params=_params,
    ),
)


def _target(job: _SpectralJob, compute: bool) -> Target:
    key = normalise_meta({"weights_hash": job.run.weights_hash, "dataset": job.run.config.dataset})
    return Target(Path(job.run.path) / "analysis", key, job)


# The family of one run's split-independent stages, in ``RUN/analysis/``.
SPECTRAL = Family("spectral basis", RUN_STAGES, _target)


def _job(
    run: Run | str | Path, reps: int, seed: int, batch: int = 500, device: str = "cpu"
) -> _SpectralJob:
    return _SpectralJob(run if isinstance(run, Run) else _load_run(run), reps, seed, batch, device)


def _load_run(path: str | Path) -> Run:
    try:
        return Run.load(Path(path))
    except RunError as exc:
        raise AnalysisError(str(exc)) from None


def load_spectral_basis(
    run: Run | str | Path,
    *,
    reps: int = SPECTRAL_PARAMS["reps"],
    seed: int = SPECTRAL_PARAMS["seed"],
) -> SpectralBasis | None:
    """The run's cached spectral basis for these parameters, or None (never computes)."""
    got = SPECTRAL.read(_job(run, reps, seed), ["spectral"])
    return None if got is None else got[1].values["spectral"]


def spectral_basis(
    run: Run | str | Path,
    *,
    reps: int = SPECTRAL_PARAMS["reps"],
    seed: int = SPECTRAL_PARAMS["seed"],
    batch: int = 500,
    force: bool = False,
    device: str = "cpu",
) -> SpectralBasis:
    """A run's spectral basis, estimated on augmented train pairs and cached with the run.

    Args:
        run: a trained run or its folder.
        reps: passes over the train split, each drawing a fresh pair of views per image.
        seed: seed of the augmentations (the estimate is repeatable).
        batch: images per forward pass.
        force: recompute even if a cached basis for these weights and parameters exists.
        device: where the encoder and the augmentations run (``cpu``, ``cuda``, ``cuda:1``), as
            in ``analyze``; the estimate is repeatable on a given device.

    Returns:
        The :class:`SpectralBasis`.
    """
    _, res = SPECTRAL.run(_job(run, reps, seed, batch, device), ["spectral"], force=force)
    return res.values["spectral"]
