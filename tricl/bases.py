"""The feature bases, one declaration each, without torch.

A feature is read in a basis: the **trained** axes (the projector's k outputs, ordered by
importance) or the **spectral** basis (the run's features whitened and rotated onto the
eigenvectors of the cross-view covariance of augmented train pairs; for an image-text run, the
pair basis of its image and caption features). Every place that differs by basis asks the
:class:`Basis` instead of testing its name: the analysis stages (which folder, which keys), the CLI
(``--basis``), the job commands and the dashboard (labels, captions, what may be chosen).

The rotation onto an estimated basis is written once, here (:class:`Rotation`): the analysis
projects stored features with it, ``tricl align`` bakes it into a checkpoint as an affine layer,
and the model worker wraps an encoder with that layer (``tricl.analysis.saliency.in_basis``).

This module is light on purpose: the dashboard's server reads it without importing torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


class BasisError(ValueError):
    """An unknown basis name; the one-line message names the choices."""


@dataclass(frozen=True)
class Basis:
    """One feature basis.

    Attributes:
        name: the key (``--basis`` value, ``?basis=`` in the dashboard, artifact metadata).
        label: how a page names the basis (``"spectral basis"``).
        choice_label: the basis as a choice in a picker (what its order means).
        pair_label: how image-text pages name the basis of a run's image and caption features.
        folder: the sub-folder of ``analysis/<split>/`` its run artifacts live in ("" for the
            split's own folder).
        legacy_keys: True for the basis whose artifacts, comparison ids and job commands keep the
            form they had before bases existed (the shipped runs' caches are keyed that way).
        rotated: True when its features are the run's own features rotated onto a basis
            estimated from data (:class:`Rotation`; an image run's augmentation basis, an
            image-text run's pair basis), False for the projector's outputs as they are.
        fixed_order: True when the basis itself orders its features (eigenvalue), so no other
            importance order can be chosen.
        grouped: True when neighbouring ranks can form unresolved groups (equal eigenvalues
            within the estimation noise).
        describe: what a "feature #i" in this basis is, for captions (``{order}`` is filled in).
        whitened: True when the basis gives every feature unit variance, so whole-representation
            scores (CKA) weigh the noisy tail like the top features.
        captions: True when an image-text run's captions and words can be shown per feature in
            this basis (a basis estimated from image augmentations has no caption side).
    """

    name: str
    label: str
    choice_label: str
    pair_label: str
    folder: str
    legacy_keys: bool
    rotated: bool
    fixed_order: bool
    grouped: bool
    describe: str
    whitened: bool = False
    captions: bool = True

    def cli_args(self) -> list[str]:
        """The ``--basis`` flag a command needs for this basis (none for the legacy one)."""
        return [] if self.legacy_keys else ["--basis", self.name]

    def key_fields(self) -> dict[str, str]:
        """What a cache key adds for this basis (nothing for the legacy one)."""
        return {} if self.legacy_keys else {"basis": self.name}

    def where(self) -> str:
        """A phrase that places a sentence in this basis (empty for the trained axes)."""
        return "" if self.legacy_keys else f" in the {self.name} basis"

    def feature_ref(self, order: str) -> str:
        """Which axes a feature number refers to, e.g. ``trained axes, S order``."""
        return self.describe.format(order=order)


TRAINED = Basis(
    name="trained",
    label="trained basis",
    choice_label="trained axes (importance order)",
    pair_label="trained axes",
    folder="",
    legacy_keys=True,
    rotated=False,
    fixed_order=False,
    grouped=False,
    describe="trained axes, {order} order",
)
SPECTRAL = Basis(
    name="spectral",
    label="spectral basis",
    choice_label="spectral basis (most augmentation-invariant first)",
    pair_label="pair (spectral) basis",
    folder="spectral",
    legacy_keys=False,
    rotated=True,
    fixed_order=True,
    grouped=True,
    describe="spectral basis",
    whitened=True,
    captions=False,
)
BASES: dict[str, Basis] = {b.name: b for b in (TRAINED, SPECTRAL)}
# How every consumer estimates a run's spectral basis (its analysis, comparisons, ``tricl align``):
# passes over the train split and the augmentations' seed. One cached basis per run.
SPECTRAL_ESTIMATE: dict[str, int] = {"reps": 4, "seed": 0}
BASIS_NAMES: tuple[str, ...] = tuple(BASES)


def get_basis(name: str | Basis) -> Basis:
    """The :class:`Basis` named ``name`` (a :class:`Basis` is returned as it is).

    Raises:
        BasisError: an unknown name; the message lists the bases.
    """
    if isinstance(name, Basis):
        return name
    if name not in BASES:
        raise BasisError(f"unknown basis {name!r}; use one of {', '.join(BASIS_NAMES)}")
    return BASES[name]


@dataclass(frozen=True, eq=False)
class Rotation:
    """An affine map of a run's features onto a basis: ``(z - mean) @ rotation``.

    Attributes:
        mean: the features' mean. Shape: (k,).
        rotation: whitening followed by the basis's directions, rank order. Shape: (k, r),
            r <= k the number of non-degenerate directions.
    """

    mean: np.ndarray
    rotation: np.ndarray

    def project(self, z: np.ndarray) -> np.ndarray:
        """Features in the basis, in float64. Shape: (N, k) -> (N, r)."""
        return (np.asarray(z, dtype=np.float64) - self.mean) @ self.rotation

    def as_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """The projection as an affine layer: ``z @ weight.T + bias == project(z)``.

        Returns:
            ``(weight, bias)`` in float64, centring folded into the bias. Shapes: (r, k), (r,).
        """
        weight = np.ascontiguousarray(self.rotation.T, dtype=np.float64)  # (r, k)
        return weight, -(np.asarray(self.mean, dtype=np.float64) @ self.rotation)

    @property
    def rank(self) -> int:
        """Number of features in the basis (r)."""
        return int(self.rotation.shape[1])

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of the SHA-256 of the mean and rotation (what the map *is*)."""
        h = hashlib.sha256()
        for a in (self.mean, self.rotation):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class SpectralBasis(Rotation):
    """One run's spectral basis: the :class:`Rotation` onto it, and its strengths.

    Estimated and cached by :mod:`tricl.analysis.spectral`; declared here so that ``tricl align``
    and the model worker read it without the analysis.

    Attributes:
        mean: mean feature over the augmented views. Shape: (k,).
        rotation: whitening followed by the eigenvectors of P, most invariant first. Shape: (k, r),
            r <= k the number of non-degenerate directions.
        eigenvalues: eigenvalues of P, descending (1: a direction no augmentation changes).
            Shape: (r,).
        split_half_diff: |difference| of each eigenvalue between two halves of the pairs, a
            gauge of estimation noise; gaps smaller than it cannot be ordered. Shape: (r,).
        pairs: number of augmented pairs the estimate used.
        images: train images the pairs were drawn from, when a seeded subsample of the
            ``images_total`` (0: every train image).
        images_total: train images there were (0: not recorded, every one used).
        augmentation: the record of the augmentation family the pairs were drawn with
            (``{"family": ..., "size": ...}``: the dataset's own, or SimCLR's ImageNet recipe at
            an imported model's input size); None where the artifact predates the record.
    """

    eigenvalues: np.ndarray
    split_half_diff: np.ndarray
    pairs: int
    images: int = 0
    images_total: int = 0
    augmentation: dict[str, Any] | None = None

    @property
    def subsampled(self) -> bool:
        """Whether the estimate used a subsample of the train images (pages say so)."""
        return 0 < self.images < self.images_total
