"""``analyze(run)``: every artifact the dashboard draws, computed once per run and cached.

The stages are declared in :mod:`tricl.analysis.image_stages` (one ``register_stage`` each: file,
needs, version, params, compute, load); this module runs them as one :class:`~tricl.analysis.
stages.Family` per basis (:data:`BASIS_VIEWS`) and assembles their values into an
:class:`Analysis`. Every file records the key it belongs to (weights hash, dataset, split), its
stage's version, the versions of the stages it needs, and its parameters. A stage whose file is
missing, torn, malformed, from other weights, another version or other parameters is recomputed,
with its dependants when its version changed; the others are read.

In the spectral basis (``analyze(run, basis="spectral")``) the same artifacts are computed from the
trained features rotated onto the run's spectral basis, in ``RUN/analysis/<split>/spectral/``
(:data:`~tricl.analysis.image_stages.SPECTRAL_STAGES`); the embedding is the trained analysis's.
What differs by basis is its :class:`~tricl.bases.Basis` (folder, key, labels) and its
:class:`BasisView` here (stages, what it builds on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# the per-split stages declared one module each register themselves in both bases on import
import tricl.analysis.split_stages  # noqa: F401
from tricl.analysis.activations import TopImages
from tricl.analysis.embedding import Embedding
from tricl.analysis.features import Features
from tricl.analysis.image_stages import (
    ANALYSIS_STAGES,
    SPECTRAL_SHARED,
    SPECTRAL_STAGES,
    SPLITS,
    FeatureStats,
    SplitJob,
)
from tricl.analysis.importance import Importance
from tricl.analysis.spectral import (
    SPECTRAL,
    SPECTRAL_PARAMS,
    group_label,
    load_spectral_basis,
    spectral_basis,
)
from tricl.analysis.stages import Family, Progress, StageResults, Target, read_stages
from tricl.analysis.store import AnalysisError, analysis_dir, normalise_meta
from tricl.bases import BASES as BASIS_DESCRIPTORS
from tricl.bases import Basis
from tricl.runs import Run, RunError

# the stages analyze computes, in dependency order (those of the split_stages package included)
STAGES = tuple(ANALYSIS_STAGES)

__all__ = [
    "ANALYSIS_STAGES",
    "BASES",
    "BASIS_VIEWS",
    "SPECTRAL_STAGES",
    "STAGES",
    "Analysis",
    "BasisView",
    "FeatureStats",
    "analyze",
    "feature_order",
    "get_basis",
    "load_analysis",
    "load_run",
]


class Headline:
    """The headline numbers of a stored analysis, from its ``full`` metrics, ``importance`` and
    ``downstream`` curves: what :class:`Analysis` and its summary
    (:class:`~tricl.analysis.summary.AnalysisSummary`) both answer."""

    full: dict[str, float]
    importance: Importance
    downstream: pd.DataFrame

    @property
    def linear_acc(self) -> float:
        """Linear-probe accuracy with all k features (z)."""
        return self.full["linear_acc"]

    @property
    def knn_acc(self) -> float:
        """k-NN accuracy with all k features (z)."""
        return self.full["knn_acc"]

    def curves(self, order: str | None = None) -> pd.DataFrame:
        """Few-feature curves of one importance order (default order if None) plus random-k.

        Returns:
            Rows of ``selection`` top / bottom / random, columns ``selection, k, linear_acc,
            retrieval_map, linear_acc_std, retrieval_map_std``.
        """
        order = self.importance.default if order is None else order
        df = self.downstream
        rows = df[(df["order"] == order) | (df["selection"] == "random")]
        return rows.drop(columns="order").reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class Analysis(Headline):
    """All artifacts of one run on one evaluation split.

    Attributes:
        run_name: the run folder's name.
        run_path: the run folder.
        method: training method (``simclr``, ``tricl``, ...).
        split: evaluation split.
        dataset: dataset spec the evaluation images came from.
        weights_hash: hash of ``model.safetensors`` every artifact was computed from.
        features: z, h, labels, indices (:class:`~tricl.analysis.features.Features`).
        importance: importance scores and orders, with the default named.
        stats: per-feature statistics.
        top_images: top-n / bottom-n images of every feature (dataset indices and values).
        embedding: 2-D UMAP of the evaluation images.
        downstream: few-feature curves, columns ``order, selection, k, linear_acc,
            retrieval_map, linear_acc_std, retrieval_map_std`` (see :meth:`curves`).
        full: full-feature metrics: ``linear_acc``, ``knn_acc`` (on z), ``backbone_linear_acc``,
            ``backbone_knn_acc`` (on h).
        params: parameters of every stage.
        recomputed: stages computed by the call that returned this object (empty: all cached).
        timings: seconds each recomputed stage took.
        basis: the basis the features are in (:data:`BASES`): ``trained`` (the projector's
            outputs) or ``spectral`` (rank r = r-th most augmentation-invariant direction).
        groups: ranks whose order the data cannot define, as 0-based inclusive ranges of at
            least two features (spectral basis; empty in the trained basis).
        estimated_on: ``(images, of)`` when the basis was estimated on a seeded subsample of
            ``images`` of the ``of`` train images (spectral basis of a large set), else None.
        values: every stage's value by stage name (the fields above included), so a stage
            registered in :data:`~tricl.analysis.image_stages.ANALYSIS_STAGES` reaches pages as
            ``analysis.values[name]`` or ``analysis.<name>`` with no field to add here.
    """

    run_name: str
    run_path: Path
    method: str
    split: str
    dataset: str
    weights_hash: str
    features: Features
    importance: Importance
    stats: FeatureStats
    top_images: TopImages
    embedding: Embedding
    downstream: pd.DataFrame
    full: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    recomputed: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    basis: str = "trained"
    groups: tuple[tuple[int, int], ...] = ()
    estimated_on: tuple[int, int] | None = None
    values: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name not in values:
            raise AttributeError(f"{type(self).__name__} has no field or stage {name!r}")
        return values[name]

    @property
    def k(self) -> int:
        return self.features.k

    @property
    def classes(self) -> list[str]:
        return self.features.classes

    @property
    def has_labels(self) -> bool:
        """Whether the analysed images have class labels (else the class views say so)."""
        return self.features.has_labels

    def summary(self) -> str:
        """One line: accuracies, weights hash and, in the spectral basis, the unresolved groups."""
        line = f"linear probe {self.linear_acc:.3f}, k-NN {self.knn_acc:.3f} ({self.weights_hash})"
        if not get_basis(self.basis).basis.grouped:
            return line
        groups = ", ".join(group_label(g) for g in self.groups) or "none"
        return f"{line}; {self.basis} basis, {self.k} features, order not identifiable: {groups}"


def feature_order(analysis: Analysis, name: str | None = None) -> np.ndarray:
    """Feature indices, most important first, in the run's default order (or order ``name``).

    Feature #1 of the dashboard is ``feature_order(a)[0]``. Shape: (k,).
    """
    return analysis.importance.order(name)


def load_run(run: Run | str | Path) -> Run:
    """A :class:`~tricl.runs.Run` from a run or a path; a broken run raises AnalysisError."""
    if isinstance(run, Run):
        return run
    try:
        return Run.load(Path(run))
    except RunError as exc:
        raise AnalysisError(str(exc)) from None


@dataclass(frozen=True)
class _Request:
    """One ``analyze`` / ``load_analysis`` call's arguments."""

    run: Run
    basis: str
    split: str = "test"
    dataset: str | None = None
    top_n: int = 1
    device: str = "cpu"
    progress: bool = False


def _target(req: _Request, compute: bool) -> Target | None:
    """The folder, key and :class:`SplitJob` of a request; None when reading and an input the
    basis builds on (the trained analysis, the spectral basis) is not cached."""
    run, view = req.run, get_basis(req.basis)
    if req.split not in SPLITS:
        raise AnalysisError(f"unknown split {req.split!r}; use one of {SPLITS}")
    if req.top_n < 1:
        raise AnalysisError(f"top_n must be >= 1, got {req.top_n}; the default is 32")
    extra = view.upstream(req, compute)
    if extra is None:
        return None
    override = None if req.dataset in (None, run.config.dataset) else req.dataset
    spec = run.config.dataset if override is None else override
    key = {
        "weights_hash": run.weights_hash,
        "dataset": spec,
        "image_size": run.config.image_size,
        "split": req.split,
    }
    bar = Progress(req.progress and compute, f"analyze {run.name} ({view.basis.label})")
    job = SplitJob(run, req.split, spec, override, req.top_n, req.device, bar, req.basis, **extra)
    folder = analysis_dir(run.path, req.split, override) / view.basis.folder
    return Target(folder, normalise_meta({**key, **view.key(job)}), job, bar)


def _spectral_key(job: SplitJob) -> dict[str, Any]:
    return {
        **SPECTRAL_BASIS.key_fields(),
        "spectral": {
            "version": SPECTRAL.stages["spectral"].version,
            "params": SPECTRAL_PARAMS,
            "fingerprint": job.spectral.fingerprint,
        },
        "features_version": ANALYSIS_STAGES["features"].version,
    }


def _spectral_upstream(req: _Request, compute: bool) -> dict[str, Any] | None:
    """The trained analysis and the spectral basis, computed if asked, else None if not cached."""
    if compute:
        trained = analyze(
            req.run,
            split=req.split,
            dataset=req.dataset,
            top_n=req.top_n,
            device=req.device,
            progress=req.progress,
        )
        basis = spectral_basis(req.run, device=req.device, **SPECTRAL_PARAMS)
    else:
        trained = load_analysis(req.run, split=req.split, dataset=req.dataset)
        basis = load_spectral_basis(req.run, **SPECTRAL_PARAMS)
        if trained is None or basis is None:
            return None
    return {"trained": trained, "spectral": basis}


@dataclass(frozen=True)
class BasisView:
    """How the per-split stages run in one basis.

    Attributes:
        basis: the torch-free descriptor (name, labels, folder, legacy keys).
        family: its stages over a run on a split (their values fill :class:`Analysis`).
        key: ``key(job) -> dict``, what its artifacts are keyed by beyond the run and split.
        upstream: ``upstream(request, compute) -> dict | None``, the extra context its stages
            need (computed when ``compute``, else read; None when not cached).
        shared: :class:`Analysis` fields taken from the trained analysis rather than computed.
    """

    basis: Basis
    family: Family
    key: Callable[[SplitJob], dict[str, Any]]
    upstream: Callable[[_Request, bool], dict[str, Any] | None]
    shared: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.basis.name

    @property
    def label(self) -> str:
        return self.basis.label

    @property
    def folder(self) -> str:
        return self.basis.folder

    @property
    def stages(self) -> dict:
        return self.family.stages


TRAINED_BASIS, SPECTRAL_BASIS = BASIS_DESCRIPTORS["trained"], BASIS_DESCRIPTORS["spectral"]
BASIS_VIEWS: dict[str, BasisView] = {
    view.name: view
    for view in (
        BasisView(
            TRAINED_BASIS,
            Family("analysis", ANALYSIS_STAGES, _target),
            key=lambda job: {},
            upstream=lambda req, compute: {},
        ),
        BasisView(
            SPECTRAL_BASIS,
            Family("spectral analysis", SPECTRAL_STAGES, _target),
            key=_spectral_key,
            upstream=_spectral_upstream,
            shared=SPECTRAL_SHARED,
        ),
    )
}
BASES = tuple(BASIS_VIEWS)


def get_basis(name: str) -> BasisView:
    """The :class:`BasisView` named ``name``; an unknown name raises AnalysisError."""
    if name not in BASIS_VIEWS:
        raise AnalysisError(f"unknown basis {name!r}; use one of {', '.join(BASES)}")
    return BASIS_VIEWS[name]


def _assemble(job: SplitJob, res: StageResults) -> Analysis:
    v, m = res.values, res.metas
    view = get_basis(job.basis)
    shared = {n: getattr(job.trained, n) for n in view.shared}
    values = {**v, **shared}
    # only a basis with eigenvalues stores unresolved groups (JSON lists -> tuples)
    groups = tuple((int(lo), int(hi)) for lo, hi in m["features"].get("groups", ()))
    return Analysis(
        run_name=job.run.name,
        run_path=job.run.path,
        method=job.run.config.method,
        split=job.split,
        dataset=job.dataset,
        weights_hash=m["features"]["key"]["weights_hash"],
        **{name: values[name] for name in _FIELDS},
        full={**m["features"]["backbone"], **m["downstream"]["full"]},
        params={
            **{n: job.trained.params[n] for n in view.shared},
            **{s: m[s]["params"] for s in view.stages if s in m},
        },
        recomputed=res.recomputed,
        timings=res.timings,
        basis=job.basis,
        groups=groups,
        estimated_on=tuple(m["features"]["images"]) if "images" in m["features"] else None,
        values=values,
    )


# The stages whose values have a typed field of their own in Analysis: the read path needs them
# (and what they need); any other stage is read when cached and otherwise left out of
# Analysis.values, so registering a new stage leaves every analysis without it readable.
_FIELDS = ("features", "importance", "stats", "top_images", "embedding", "downstream")


def _read(view: BasisView, req: _Request) -> Analysis | None:
    core = [n for n in _FIELDS if n in view.stages]
    got = view.family.read(req, core, check_params=False)
    if got is None:
        return None
    target, res = got
    values, metas = dict(res.values), dict(res.metas)
    for name in view.stages:
        if name not in values:  # a stage without a field of its own: optional on this path
            extra = read_stages(view.stages, [name], target, check_params=False)
            if extra is not None:
                values.update(extra.values)
                metas.update(extra.metas)
    return _assemble(target.ctx, StageResults(values, metas))


def load_analysis(
    run: Run | str | Path,
    *,
    split: str = "test",
    dataset: str | None = None,
    basis: str = "trained",
) -> Analysis | None:
    """The cached analysis of a run, or None if any artifact is missing, corrupt or stale.

    Never computes anything and never raises for a bad cache file (the dashboard's read path).
    Artifacts computed with other parameters (e.g. another ``top_n``) are accepted as long as they
    belong to the current weights and stage versions. A stage without a field of its own in
    :class:`Analysis` is optional here: missing, it is absent from ``Analysis.values``.

    Args:
        run: a run or its folder.
        split: evaluation split.
        dataset: the dataset it was analysed on, if not the run's own.
        basis: ``trained`` or ``spectral`` (:data:`BASES`); the spectral analysis also needs the
            trained one and the run's spectral basis cached.

    Raises:
        AnalysisError: a broken run, an unknown split or an unknown basis.
    """
    return _read(get_basis(basis), _Request(load_run(run), basis, split, dataset))


def analyze(
    run: Run | str | Path,
    *,
    split: str = "test",
    dataset: str | None = None,
    top_n: int = 32,
    force: bool = False,
    device: str = "cpu",
    progress: bool = True,
    basis: str = "trained",
) -> Analysis:
    """Compute (or read from the cache) every artifact of a run.

    Args:
        run: a run or its folder.
        split: evaluation split whose images the features describe (``test`` or ``train``). The
            probe and retrieval database always come from the train split; with ``train`` the
            accuracies are training-set figures (k-NN and retrieval skip each image itself).
        dataset: evaluate on another dataset of the same image format (stored separately, in
            ``analysis/<split>@<dataset>/``); None for the run's own.
        top_n: top / bottom images kept per feature.
        force: recompute every stage of this basis even if cached (in the spectral basis, the
            trained analysis and the spectral basis it builds on are reused when fresh).
        device: where the encoder runs for feature extraction.
        progress: draw a progress bar.
        basis: ``trained`` (the projector's outputs in their importance order) or ``spectral``
            (the run's spectral basis, most augmentation-invariant first; computes the trained
            analysis and the basis first if they are not cached).

    Returns:
        The :class:`Analysis`; ``recomputed`` names the stages this call computed.

    Raises:
        AnalysisError: broken run, unavailable or mismatched dataset, bad arguments.
    """
    view = get_basis(basis)
    req = _Request(load_run(run), basis, split, dataset, top_n, device, progress)
    target, res = view.family.run(req, force=force)
    return _assemble(target.ctx, res)
