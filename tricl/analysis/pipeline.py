"""``analyze(run)``: every artifact the dashboard draws, computed once per run and cached.

Stages and their files in ``RUN/analysis/<split>/`` (see :mod:`tricl.analysis.store`):

==============  =====================  =========================================================
stage           file                   content
==============  =====================  =========================================================
features        features.npz           z, h, labels, indices of the evaluation split; train z;
                                       S; backbone probe / k-NN accuracy
importance      importance.npz         S, variance and ablation scores and orders; the default
stats           stats.npz              class-mean matrix, class selectivity, histograms
top_images      top_images.npz         top-n / bottom-n dataset indices and values per feature
embedding       embedding.npz          2-D UMAP coordinates (+ parameters in the meta)
downstream      downstream.csv(.json)  few-feature curves; full linear-probe and k-NN accuracy
==============  =====================  =========================================================

In the spectral basis (``analyze(run, basis="spectral")``, :data:`BASES`) the same artifacts are
computed from the trained features rotated onto the run's spectral basis, in
``RUN/analysis/<split>/spectral/`` (:data:`SPECTRAL_STAGES`: features (the basis's eigenvalues
and split-half noise; the rotated features are projected when read), importance (the eigenvalue
order), then the stats, top_images and downstream stages of the trained basis, registered again);
the embedding is the trained analysis's. Each basis is one :class:`BasisView` in
:data:`BASIS_VIEWS`.

Each stage is one declaration in :data:`ANALYSIS_STAGES` (file, needs, version, params, compute,
load); :func:`tricl.analysis.stages.run_stages` orders them, reads the fresh ones and computes the
rest. Every file records the key it belongs to (weights hash, dataset, split), its stage's version,
the versions of the stages it needs, and its parameters. A stage whose file is missing, torn,
malformed, from other weights, another version or other parameters is recomputed, with its
dependants when its version changed; the others are read. Only the features stage needs the
dataset and the model. Adding a stage: register it below and add its field to :class:`Analysis`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis import downstream as ds
from tricl.analysis import importance as imp
from tricl.analysis.activations import (
    TopImages,
    class_means,
    class_selectivity,
    histograms,
    iter_chunks,
    top_bottom_images,
)
from tricl.analysis.embedding import UMAP_PARAMS, Embedding, umap_embedding
from tricl.analysis.features import Features, extract, images_hash, n_batches
from tricl.analysis.importance import Importance
from tricl.analysis.spectral import (
    RUN_STAGES,
    SPECTRAL_PARAMS,
    SpectralBasis,
    group_label,
    load_spectral_basis,
    spectral_basis,
    unresolved_groups,
)
from tricl.analysis.stages import (
    Output,
    Stage,
    StageResults,
    Target,
    need_arrays,
    need_columns,
    read_stages,
    register_stage,
    run_stages,
)
from tricl.analysis.store import AnalysisError, analysis_dir, normalise_meta
from tricl.runs import Run, RunError

SPLITS = ("test", "train")
SELECTIVITY_TOP = 100  # class selectivity is measured on each feature's top-100 images
HISTOGRAM_BINS = 40


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Per-feature statistics on the evaluation split (raw z).

    Attributes:
        class_means: mean activation of each feature on each class. Shape: (k, C).
        mean: mean activation. Shape: (k,).
        std: standard deviation of the activation. Shape: (k,).
        dominant_class: most frequent class among the feature's top images. Shape: (k,).
        dominant_share: that class's share of the top images. Shape: (k,).
        class_entropy: entropy (bits) of the class distribution of the top images. Shape: (k,).
        class_counts: class histogram of the top images. Shape: (k, C).
        selectivity_n: how many top images the selectivity uses.
        hist_counts: activation histogram. Shape: (k, bins).
        hist_edges: its bin edges. Shape: (k, bins + 1).
    """

    class_means: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    dominant_class: np.ndarray
    dominant_share: np.ndarray
    class_entropy: np.ndarray
    class_counts: np.ndarray
    selectivity_n: int
    hist_counts: np.ndarray
    hist_edges: np.ndarray


@dataclass(frozen=True, eq=False)
class Analysis:
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

    @property
    def linear_acc(self) -> float:
        """Linear-probe accuracy with all k features (z)."""
        return self.full["linear_acc"]

    @property
    def knn_acc(self) -> float:
        """k-NN accuracy with all k features (z)."""
        return self.full["knn_acc"]

    @property
    def k(self) -> int:
        return self.features.k

    @property
    def classes(self) -> list[str]:
        return self.features.classes

    def summary(self) -> str:
        """One line: accuracies, weights hash and, in the spectral basis, the unresolved groups."""
        line = f"linear probe {self.linear_acc:.3f}, k-NN {self.knn_acc:.3f} ({self.weights_hash})"
        if self.basis == "trained":
            return line
        groups = ", ".join(group_label(g) for g in self.groups) or "none"
        return f"{line}; {self.basis} basis, {self.k} features, order not identifiable: {groups}"

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


def feature_order(analysis: Analysis, name: str | None = None) -> np.ndarray:
    """Feature indices, most important first, in the run's default order (or order ``name``).

    Feature #1 of the dashboard is ``feature_order(a)[0]``. Shape: (k,).
    """
    return analysis.importance.order(name)


class _Progress:
    """A tqdm bar over work units, drawn from the first unit of work on; or nothing."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc, self.bar = enabled, desc, None

    def add(self, n: int) -> None:
        if self.enabled and self.bar is None:  # a cached analysis never draws a bar
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, desc=self.desc, unit="step", dynamic_ncols=True)
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def stage(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- run handling


def load_run(run: Run | str | Path) -> Run:
    """A :class:`~tricl.runs.Run` from a run or a path; a broken run raises AnalysisError."""
    if isinstance(run, Run):
        return run
    try:
        return Run.load(Path(run))
    except RunError as exc:
        raise AnalysisError(str(exc)) from None


@dataclass(frozen=True)
class _Job:
    """The stages' context: run, split, dataset, settings and progress of one analyze call.

    In the spectral basis it also holds what the stages build on: the trained analysis (whose
    features are projected and whose embedding is shared) and the run's spectral basis.
    """

    run: Run
    split: str
    dataset: str
    dataset_override: str | None
    top_n: int
    device: str
    progress: _Progress
    basis: str = "trained"
    trained: Analysis | None = None
    spectral: SpectralBasis | None = None


def _target(run: Run, split: str, dataset: str | None, top_n: int, **ctx: Any) -> Target:
    if split not in SPLITS:
        raise AnalysisError(f"unknown split {split!r}; use one of {SPLITS}")
    if top_n < 1:
        raise AnalysisError(f"top_n must be >= 1, got {top_n}; the default is 32")
    override = None if dataset in (None, run.config.dataset) else dataset
    spec = run.config.dataset if override is None else override
    key = {
        "weights_hash": run.weights_hash,
        "dataset": spec,
        "image_size": run.config.image_size,
        "split": split,
    }
    job = _Job(run, split, spec, override, top_n, **ctx)
    view = get_basis(job.basis)
    folder = analysis_dir(run.path, split, override) / view.folder
    return Target(folder, normalise_meta({**key, **view.key(job)}), job)


def _probe_params() -> dict[str, Any]:
    return {"c": ds.PROBE_C, "max_iter": ds.PROBE_MAX_ITER}


def _importance_params(job: _Job) -> dict[str, Any]:
    return {
        "probe": _probe_params(),
        "val_fraction": imp.ABLATION_VAL_FRACTION,
        "seed": imp.ABLATION_SEED,
    }


# --------------------------------------------------------------------------- the stages

ANALYSIS_STAGES: dict[str, Stage] = {}


def _load_features(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job) -> Features:
    need_arrays(
        arrays, {"z": 2, "h": 2, "labels": 1, "indices": 1, "train_z": 2, "train_labels": 1}
    )
    if not len(arrays["z"]) == len(arrays["labels"]) == len(arrays["indices"]):
        raise ValueError("z, labels and indices disagree in length")
    return Features(
        z=arrays["z"].astype(np.float32),
        h=arrays["h"].astype(np.float32),
        labels=arrays["labels"],
        indices=arrays["indices"],
        train_z=arrays["train_z"].astype(np.float32),
        train_labels=arrays["train_labels"],
        s=arrays.get("s"),
        classes=[str(c) for c in meta["classes"]],
        dataset=meta["key"]["dataset"],
        split=meta["key"]["split"],
        images_hash=str(meta["images_hash"]),
    )


def _compute_features(job: _Job, inputs: dict[str, Any]) -> Output:
    data, progress = _load_images(job), job.progress
    eval_x, eval_y = data.split(job.split)
    train_x, train_y = data.train_x, data.train_y
    same = job.split == "train"
    progress.add(n_batches(len(eval_x)) + (0 if same else n_batches(len(train_x))) + 2)
    encoder = job.run.encoder(job.device)
    z, h = extract(encoder, eval_x, data.preprocess, device=job.device, tick=progress.tick)
    if same:
        train_z, train_h = z, h
    else:
        train_z, train_h = extract(
            encoder, train_x, data.preprocess, device=job.device, tick=progress.tick
        )
    s = encoder.importance()
    eval_y_np, train_y_np = eval_y.numpy().astype(np.int64), train_y.numpy().astype(np.int64)
    backbone = {
        "backbone_linear_acc": ds.linear_probe(train_h, train_y_np, h, eval_y_np).accuracy,
        "backbone_knn_acc": ds.knn_accuracy(
            train_h, train_y_np, h, eval_y_np, exclude=np.arange(len(h)) if same else None
        ),
    }
    progress.tick()
    # feature matrices are stored in half precision (about 3 significant digits, plenty for
    # correlations, probes and top images): it halves the artifact, so shipped runs stay small
    arrays = {
        "z": z.astype(np.float16),
        "h": h.astype(np.float16),
        "labels": eval_y_np,
        "indices": np.arange(len(z), dtype=np.int64),
        "train_z": train_z.astype(np.float16),
        "train_labels": train_y_np,
    }
    if s is not None:
        arrays["s"] = s.detach().float().cpu().numpy()
    progress.tick()
    meta = {
        "classes": list(data.classes),
        "images_hash": images_hash(eval_x, eval_y),
        "backbone": backbone,
    }
    return Output(arrays, meta)


register_stage(
    ANALYSIS_STAGES,
    Stage(
        "features",
        "features.npz",
        _compute_features,
        _load_features,
        params=lambda job: {
            "knn_k": ds.KNN_K,
            "knn_temperature": ds.KNN_TEMPERATURE,
            "probe": _probe_params(),
        },
    ),
)


def _load_importance(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job) -> Importance:
    names = [str(n) for n in meta["orders"]]
    need_arrays(arrays, {f"order_{n}": 1 for n in names} | {"ablation_loss_increase": 1})
    if meta["default"] not in names:
        raise ValueError(f"default order {meta['default']!r} is not among {names}")
    return Importance(
        default=meta["default"],
        scores={n: arrays[f"score_{n}"] for n in names},
        orders={n: arrays[f"order_{n}"] for n in names},
        ablation_loss_increase=arrays["ablation_loss_increase"],
        ablation_base_acc=float(meta["ablation_base_acc"]),
    )


def _compute_importance(job: _Job, inputs: dict[str, Any]) -> Output:
    f: Features = inputs["features"]
    job.progress.add(f.k + 1)
    res = imp.compute_importance(
        f.train_z, f.train_labels, f.s, method=job.run.config.method, tick=job.progress.tick
    )
    arrays = {"ablation_loss_increase": res.ablation_loss_increase}
    for name in res.orders:
        arrays[f"score_{name}"] = res.scores[name]
        arrays[f"order_{name}"] = res.orders[name]
    job.progress.tick()
    meta = {
        "default": res.default,
        "orders": list(res.orders),
        "ablation_base_acc": res.ablation_base_acc,
    }
    return Output(arrays, meta)


register_stage(
    ANALYSIS_STAGES,
    Stage(
        "importance",
        "importance.npz",
        _compute_importance,
        _load_importance,
        needs=("features",),
        params=_importance_params,
    ),
)

_STATS_NDIM = {
    "class_means": 2,
    "mean": 1,
    "std": 1,
    "dominant_class": 1,
    "dominant_share": 1,
    "class_entropy": 1,
    "class_counts": 2,
    "hist_counts": 2,
    "hist_edges": 2,
}


def _load_stats(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job) -> FeatureStats:
    need_arrays(arrays, _STATS_NDIM)
    return FeatureStats(
        selectivity_n=int(meta["selectivity_n"]), **{n: arrays[n] for n in _STATS_NDIM}
    )


def _compute_stats(job: _Job, inputs: dict[str, Any]) -> Output:
    f: Features = inputs["features"]
    job.progress.add(1)
    n_sel = min(SELECTIVITY_TOP, len(f.z))
    top = top_bottom_images(iter_chunks(f.z, f.indices), n_sel)
    # top_indices are dataset indices; labels are indexed by row, so map through the rows
    labels_by_index = np.empty(int(f.indices.max()) + 1, dtype=np.int64)
    labels_by_index[f.indices] = f.labels
    sel = class_selectivity(top.top_indices, labels_by_index, f.n_classes)
    counts, edges = histograms(f.z, HISTOGRAM_BINS)
    arrays = {
        "class_means": class_means(f.z, f.labels, f.n_classes),
        "mean": f.z.mean(axis=0),
        "std": f.z.std(axis=0),
        "dominant_class": sel.dominant_class,
        "dominant_share": sel.dominant_share,
        "class_entropy": sel.entropy_bits,
        "class_counts": sel.counts,
        "hist_counts": counts,
        "hist_edges": edges,
    }
    job.progress.tick()
    return Output(arrays, {"selectivity_n": n_sel})


register_stage(
    ANALYSIS_STAGES,
    Stage(
        "stats",
        "stats.npz",
        _compute_stats,
        _load_stats,
        needs=("features",),
        params=lambda job: {"selectivity_top": SELECTIVITY_TOP, "bins": HISTOGRAM_BINS},
    ),
)


def _load_top_images(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job) -> TopImages:
    fields = ("top_indices", "top_values", "bottom_indices", "bottom_values")
    need_arrays(arrays, dict.fromkeys(fields, 2))
    return TopImages(**{n: arrays[n] for n in fields})


def _compute_top_images(job: _Job, inputs: dict[str, Any]) -> Output:
    f: Features = inputs["features"]
    job.progress.add(1)
    top = top_bottom_images(iter_chunks(f.z, f.indices), min(job.top_n, len(f.z)))
    job.progress.tick()
    return Output(dict(vars(top)))


register_stage(
    ANALYSIS_STAGES,
    Stage(
        "top_images",
        "top_images.npz",
        _compute_top_images,
        _load_top_images,
        needs=("features",),
        params=lambda job: {"top_n": job.top_n},
    ),
)


def _load_embedding(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job) -> Embedding:
    need_arrays(arrays, {"coords": 2})
    if arrays["coords"].shape[1] != 2 or not isinstance(meta["effective"], dict):
        raise ValueError("the embedding is not a 2-D map with its parameters")
    return Embedding(coords=arrays["coords"], params=meta["effective"])


def _compute_embedding(job: _Job, inputs: dict[str, Any]) -> Output:
    job.progress.add(1)
    emb = umap_embedding(inputs["features"].z, dict(UMAP_PARAMS))
    job.progress.tick()
    return Output({"coords": emb.coords}, {"effective": emb.params})


register_stage(
    ANALYSIS_STAGES,
    Stage(
        "embedding",
        "embedding.npz",
        _compute_embedding,
        _load_embedding,
        needs=("features",),
        params=lambda job: dict(UMAP_PARAMS),
    ),
)


def _load_downstream(table: pd.DataFrame, meta: dict[str, Any], job: _Job) -> pd.DataFrame:
    need_columns(table, ds.CURVE_COLUMNS)
    if not {"linear_acc", "knn_acc"} <= set(meta["full"]):
        raise ValueError("the downstream meta lacks the full-feature accuracies")
    return table


def _compute_downstream(job: _Job, inputs: dict[str, Any]) -> Output:
    f: Features = inputs["features"]
    importance: Importance = inputs["importance"]
    job.progress.add(ds.n_curve_points(f.k, len(importance.orders)) + 1)
    same = job.split == "train"
    data = ds.DownstreamInputs.build(f.train_z, f.train_labels, f.z, f.labels, same_split=same)
    full_acc, full_map = data.evaluate(np.arange(f.k))  # also the curves' k = all point
    full = {
        "linear_acc": full_acc,
        "knn_acc": ds.knn_accuracy(
            data.train,
            data.train_y,
            data.test,
            data.test_y,
            exclude=np.arange(len(data.test)) if same else None,
        ),
        "retrieval_map": full_map,
    }
    job.progress.tick()
    table = ds.few_feature_curves(data, importance.orders, tick=job.progress.tick)
    return Output(table, {"full": full})


register_stage(
    ANALYSIS_STAGES,
    Stage(
        "downstream",
        "downstream.csv",
        _compute_downstream,
        _load_downstream,
        needs=("features", "importance"),
        params=lambda job: {
            "importance": _importance_params(job),
            "probe": _probe_params(),
            "knn_k": ds.KNN_K,
            "knn_temperature": ds.KNN_TEMPERATURE,
            "random_seeds": list(ds.RANDOM_SEEDS),
            "retrieval_max_queries": ds.RETRIEVAL_MAX_QUERIES,
            "retrieval_max_database": ds.RETRIEVAL_MAX_DATABASE,
            "retrieval_similarity": "-||a-b||^2 on L2-normalised z, then feature subset",
        },
    ),
)

# the stages analyze computes, in dependency order (derived: register a stage above to add one)
STAGES = tuple(ANALYSIS_STAGES)


# --------------------------------------------------------------------------- the spectral basis
# The same artifacts with the features rotated onto the run's spectral basis
# (:mod:`tricl.analysis.spectral`), in ``RUN/analysis/<split>/spectral/``. The rotated features are
# projected when read (a (N, k) @ (k, r) product), not stored: the trained features already are.
# Their key names the basis's stage version, parameters and fingerprint and the trained features'
# stage version, so a new basis or new trained features recompute all of these stages; stats, top
# images and few-feature curves are the trained-basis stages, registered again.

BACKBONE_KEYS = ("backbone_linear_acc", "backbone_knn_acc")


def _projected(job: _Job) -> Features:
    """The trained features in the spectral basis: z (N, r), train_z (M, r), no S."""
    f, basis = job.trained.features, job.spectral
    return replace(
        f,
        z=basis.project(f.z).astype(np.float32),
        train_z=basis.project(f.train_z).astype(np.float32),
        s=None,
    )


def _compute_spectral_features(job: _Job, inputs: dict[str, Any]) -> Output:
    basis = job.spectral
    arrays = {"eigenvalues": basis.eigenvalues, "split_half_diff": basis.split_half_diff}
    backbone = {k: job.trained.full[k] for k in BACKBONE_KEYS}
    groups = unresolved_groups(basis.eigenvalues, basis.split_half_diff)
    return Output(arrays, {"backbone": backbone, "pairs": basis.pairs, "groups": groups})


def _load_spectral_features(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job) -> Any:
    need_arrays(arrays, {"eigenvalues": 1, "split_half_diff": 1})
    if not np.array_equal(arrays["eigenvalues"], job.spectral.eigenvalues):
        raise ValueError("the stored eigenvalues are not those of the run's spectral basis")
    if not set(BACKBONE_KEYS) <= set(meta["backbone"]):
        raise ValueError("the meta lacks the backbone accuracies")
    return _projected(job)


def _compute_eigen_importance(job: _Job, inputs: dict[str, Any]) -> Output:
    eigenvalues = job.spectral.eigenvalues
    arrays = {
        "score_eigenvalue": eigenvalues.astype(np.float32),
        "order_eigenvalue": np.arange(len(eigenvalues), dtype=np.int64),
        # no ablation in this basis: the eigenvalues order it; NaN says "not measured"
        "ablation_loss_increase": np.full(len(eigenvalues), np.nan, dtype=np.float32),
    }
    meta = {"default": "eigenvalue", "orders": ["eigenvalue"], "ablation_base_acc": None}
    return Output(arrays, meta)


def _load_eigen_importance(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job
) -> Importance:
    if not np.array_equal(arrays["order_eigenvalue"], np.arange(job.spectral.rank)):
        raise ValueError("the eigenvalue order is not the identity of the basis's ranks")
    return _load_importance(arrays, {**meta, "ablation_base_acc": np.nan}, job)


# Derived from the trained registry: its features and importance replaced, the embedding shared (not
# recomputed), every other stage (a new one too) registered again, so it runs on the rotated z.
SPECTRAL_SHARED = ("embedding",)
_SPECTRAL_OWN = {
    # version 2: unresolved groups use spectral.NOISE_MULTIPLE
    "features": Stage(
        "features",
        "features.npz",
        _compute_spectral_features,
        _load_spectral_features,
        version=2,
    ),
    "importance": Stage(
        "importance",
        "importance.npz",
        _compute_eigen_importance,
        _load_eigen_importance,
        needs=("features",),
    ),
}
SPECTRAL_STAGES: dict[str, Stage] = {}
for _name, _stage in ANALYSIS_STAGES.items():
    if _name not in SPECTRAL_SHARED:
        register_stage(SPECTRAL_STAGES, _SPECTRAL_OWN.get(_name, _stage))


def _spectral_key(job: _Job) -> dict[str, Any]:
    return {
        "basis": "spectral",
        "spectral": {
            "version": RUN_STAGES["spectral"].version,
            "params": SPECTRAL_PARAMS,
            "fingerprint": job.spectral.fingerprint,
        },
        "features_version": ANALYSIS_STAGES["features"].version,
    }


def _spectral_upstream(run: Run, args: dict[str, Any], compute: bool) -> dict[str, Any] | None:
    """The trained analysis and the spectral basis, computed if asked, else None if not cached."""
    if compute:
        trained = analyze(run, **args)
        basis = spectral_basis(run, device=args["device"], **SPECTRAL_PARAMS)
    else:
        trained = load_analysis(run, split=args["split"], dataset=args["dataset"])
        basis = load_spectral_basis(run, **SPECTRAL_PARAMS)
        if trained is None or basis is None:
            return None
    return {"trained": trained, "spectral": basis}


@dataclass(frozen=True)
class BasisView:
    """A basis the features can be analysed in.

    Attributes:
        name: registry key (``--basis`` value, ``?basis=`` in the dashboard).
        label: how pages name it.
        stages: the per-split stages computed in it (their values fill :class:`Analysis`).
        folder: sub-folder of ``analysis/<split>/`` its artifacts live in ("" for the split's own).
        key: ``key(job) -> dict``, what its artifacts are keyed by beyond the run and split.
        upstream: ``upstream(run, args, compute) -> dict | None``, the extra context its stages
            need (computed when ``compute``, else read; None when not cached).
        shared: :class:`Analysis` fields taken from the trained analysis rather than computed.
    """

    name: str
    label: str
    stages: dict[str, Stage]
    folder: str
    key: Callable[[_Job], dict[str, Any]]
    upstream: Callable[[Run, dict[str, Any], bool], dict[str, Any] | None]
    shared: tuple[str, ...] = ()


BASIS_VIEWS: dict[str, BasisView] = {
    view.name: view
    for view in (
        BasisView(
            "trained",
            "trained basis",
            ANALYSIS_STAGES,
            "",
            key=lambda job: {},
            upstream=lambda run, args, compute: {},
        ),
        BasisView(
            "spectral",
            "spectral basis",
            SPECTRAL_STAGES,
            "spectral",
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


# --------------------------------------------------------------------------- reading


def _assemble(job: _Job, res: StageResults) -> Analysis:
    v, m = res.values, res.metas
    view = get_basis(job.basis)
    names = tuple(view.stages)
    shared = {n: getattr(job.trained, n) for n in view.shared}
    # only a basis with eigenvalues stores unresolved groups (JSON lists -> tuples)
    groups = tuple((int(lo), int(hi)) for lo, hi in m["features"].get("groups", ()))
    return Analysis(
        run_name=job.run.name,
        run_path=job.run.path,
        method=job.run.config.method,
        split=job.split,
        dataset=job.dataset,
        weights_hash=m["features"]["key"]["weights_hash"],
        **{name: v[name] for name in names},
        **shared,
        full={**m["features"]["backbone"], **m["downstream"]["full"]},
        params={
            **{n: job.trained.params[n] for n in view.shared},
            **{s: m[s]["params"] for s in names},
        },
        recomputed=res.recomputed,
        timings=res.timings,
        basis=job.basis,
        groups=groups,
    )


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
    belong to the current weights and stage versions.

    Args:
        run: a run or its folder.
        split: evaluation split.
        dataset: the dataset it was analysed on, if not the run's own.
        basis: ``trained`` or ``spectral`` (:data:`BASES`); the spectral analysis also needs the
            trained one and the run's spectral basis cached.

    Raises:
        AnalysisError: a broken run, an unknown split or an unknown basis.
    """
    view = get_basis(basis)
    r = load_run(run)
    args = {"split": split, "dataset": dataset}
    extra = view.upstream(r, args, False)
    if extra is None:
        return None
    target = _target(
        r, split, dataset, 1, device="cpu", progress=_Progress(False, ""), basis=basis, **extra
    )
    res = read_stages(view.stages, view.stages, target, check_params=False)
    return None if res is None else _assemble(target.ctx, res)


# --------------------------------------------------------------------------- computing


def _load_images(job: _Job) -> Any:
    """The dataset, checked against the run's input format."""
    from tricl.data import DatasetError, load_dataset

    run = job.run
    try:
        # progress=False silences the loading bar too; None keeps the process default
        quiet = None if job.progress.enabled else False
        data = load_dataset(job.dataset, image_size=run.config.image_size, progress=quiet)
    except DatasetError as exc:
        raise AnalysisError(f"cannot analyze {run.name}: {exc}") from None
    want_c, want_size = run.in_channels, run.dataset_info.get("image_size")
    if data.channels != want_c or (want_size is not None and data.image_size != int(want_size)):
        raise AnalysisError(
            f"dataset {job.dataset} has {data.channels}x{data.image_size}px images but"
            f" {run.name} was trained on {want_c}x{want_size}px; pick a dataset of the same format"
        )
    return data


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
    r = load_run(run)
    args = {"split": split, "dataset": dataset, "top_n": top_n, "device": device}
    extra = view.upstream(r, {**args, "progress": progress}, True)
    bar = _Progress(progress, f"analyze {r.name} ({view.label})")
    target = _target(r, split, dataset, top_n, device=device, progress=bar, basis=basis, **extra)
    try:
        res = run_stages(view.stages, view.stages, target, force=force, on_stage=bar.stage)
    finally:
        bar.close()
    return _assemble(target.ctx, res)
