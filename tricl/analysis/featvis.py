"""A run's feature visualisations on disk: the recipe's settings, the cache's keys, reading.

One file per run, basis, feature and settings: ``RUN/analysis/featvis/<basis>-<feature>-<8 hex
digits of the settings>.npz`` (:func:`vis_path`), made on request by
:func:`tricl.analysis.optvis.visualize` (``tricl visualize RUN --feature N``). Its meta holds
what it was made from, as every analysis artifact's does: the weights hash, dataset and image
size, the basis (and the fingerprint of its rotation, so a new spectral estimate makes it again),
the feature, the settings and :data:`VERSION`. A file whose meta differs, or that cannot be read,
or whose arrays have the wrong type or shape, reads as missing (:func:`read_fresh`) and is made
again. Files are written atomically (:func:`tricl.analysis.store.save_npz`) by a writer holding
the folder's lock.

Torch-free: the dashboard reads the cache with :func:`load_visualization`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tricl.analysis.pipeline import load_run
from tricl.analysis.spectral import load_spectral_basis
from tricl.analysis.store import AnalysisError, load_npz, normalise_meta, save_npz, to_json
from tricl.bases import Basis, BasisError, Rotation, get_basis
from tricl.runs import Run

FOLDER = "featvis"
VERSION = 1  # bump when the recipe changes what an image is: every cached one is made again


@dataclass(frozen=True)
class VisSettings:
    """How a visualisation is optimised (:mod:`tricl.analysis.optvis`; stored with each image).

    Attributes:
        steps: Adam steps (256: the recipe's usual count; fewer leave the image grey-noisy).
        lr: Adam's learning rate on the spectrum (0.05, lucid's).
        seed: seed of the initial spectrum and of every random transform.
        batch: transformed copies scored per step (2; 1 makes the image fragile to shifts).
        jitter: largest shift, as a fraction of the image side (0.08: 2 px at 28 px).
        scale: largest zoom in or out, as a fraction (0.1: 0.9x to 1.1x).
        rotate: largest rotation in degrees (10).
        decay: exponent of the spectrum's ``1/f`` scaling (1; 0 is a plain pixel-noise basis).
    """

    steps: int = 256
    lr: float = 0.05
    seed: int = 0
    batch: int = 2
    jitter: float = 0.08
    scale: float = 0.1
    rotate: float = 10.0
    decay: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"steps and batch must be >= 1 (got {self.steps}, {self.batch})")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}; the recipe's is 0.05")
        if not (0 <= self.jitter < 0.5 and 0 <= self.scale < 0.5 and 0 <= self.rotate <= 45):
            raise ValueError(
                "jitter and scale must be in [0, 0.5) and rotate in [0, 45] degrees; the recipe's"
                " are 0.08, 0.1 and 10"
            )

    def as_meta(self) -> dict[str, Any]:
        """The settings as they are stored (and compared) in a file's meta."""
        return normalise_meta(asdict(self))


@dataclass(frozen=True, eq=False)
class FeatureVis:
    """One stored feature visualisation.

    Attributes:
        feature: the feature's index in the basis's outputs (trained: index of z; spectral:
            rank - 1).
        basis: the basis's name.
        image: the optimised image, uint8. Shape: (C, H, W).
        activation: the feature's value on ``image`` itself (as stored, untransformed).
        trace: the objective at each optimisation step (mean over jittered copies). Shape: (steps,).
        settings: the settings it was made with (:meth:`VisSettings.as_meta`).
        path: the cached file.
    """

    feature: int
    basis: str
    image: np.ndarray
    activation: float
    trace: np.ndarray
    settings: dict[str, Any]
    path: Path


def as_basis(name: str | Basis) -> Basis:
    """The basis named ``name``; an unknown name raises AnalysisError (a user error)."""
    try:
        return get_basis(name)
    except BasisError as exc:
        raise AnalysisError(str(exc)) from None


def vis_path(run_path: str | Path, basis: str | Basis, feature: int, settings: VisSettings) -> Path:
    """The cache file of one feature in one basis made with ``settings``."""
    digest = hashlib.sha256(to_json(settings.as_meta()).encode()).hexdigest()[:8]
    return Path(run_path) / "analysis" / FOLDER / f"{get_basis(basis).name}-{feature}-{digest}.npz"


def cache_meta(
    run: Run, basis: Basis, rotation: Rotation | None, feature: int, settings: VisSettings
) -> dict[str, Any]:
    """What a fresh file of this run, basis (with its ``rotation`` if rotated), feature and
    settings holds in its meta (the feature's activation aside)."""
    key = {
        "weights_hash": run.weights_hash,
        "dataset": run.config.dataset,
        "image_size": run.config.image_size,
        "basis": basis.name,
    }
    if rotation is not None:
        key["rotation"] = rotation.fingerprint
    meta = {"key": key, "version": VERSION, "feature": feature, "settings": settings.as_meta()}
    return normalise_meta(meta)


def read_fresh(path: Path, meta: dict[str, Any]) -> FeatureVis | None:
    """The file at ``path`` if its meta is ``meta`` (fresh) and its arrays have their types;
    None otherwise (missing, stale, torn or garbage)."""
    got = load_npz(path)
    if got is None:
        return None
    arrays, stored = got
    image, trace, activation = arrays.get("image"), arrays.get("trace"), stored.get("activation")
    if {k: v for k, v in stored.items() if k != "activation"} != meta:
        return None
    if image is None or image.ndim != 3 or image.dtype != np.uint8:
        return None
    if trace is None or trace.ndim != 1 or not isinstance(activation, int | float):
        return None
    basis = meta["key"]["basis"]
    return FeatureVis(
        meta["feature"], basis, image, float(activation), trace, meta["settings"], path
    )


def save_visualization(
    path: Path, meta: dict[str, Any], image: np.ndarray, trace: np.ndarray, activation: float
) -> FeatureVis:
    """Writes one visualisation atomically (the caller holds the folder's lock)."""
    save_npz(path, {"image": image, "trace": trace}, {**meta, "activation": float(activation)})
    basis = meta["key"]["basis"]
    return FeatureVis(
        meta["feature"], basis, image, float(activation), trace, meta["settings"], path
    )


def load_visualization(
    run: Run | str | Path,
    feature: int,
    basis: str | Basis = "trained",
    settings: VisSettings | None = None,
) -> FeatureVis | None:
    """The stored visualisation of ``feature`` in ``basis``, or None if none is fresh (never
    computes).

    Args:
        run: a run or its folder.
        feature: index in the basis's outputs (0-based).
        basis: a basis name or :class:`~tricl.bases.Basis`.
        settings: the recipe's settings (default: ``VisSettings()``).
    """
    run, basis = load_run(run), as_basis(basis)
    settings = settings if settings is not None else VisSettings()
    rotation = load_spectral_basis(run) if basis.rotated else None
    if basis.rotated and rotation is None:
        return None
    meta = cache_meta(run, basis, rotation, int(feature), settings)
    return read_fresh(vis_path(run.path, basis, int(feature), settings), meta)


def check_feature(feature: int, k: int, basis: Basis) -> None:
    """Raises AnalysisError (one line, with the range) unless ``0 <= feature < k``."""
    if not 0 <= feature < k:
        raise AnalysisError(
            f"feature {feature} is out of range: the run has {k} features in the {basis.label};"
            f" use --feature 0 … {k - 1}"
        )
