"""The per-split stages of one run, declared once each: what ``analyze`` computes and caches.

Stages and their files in ``RUN/analysis/<split>/`` (see :mod:`tricl.analysis.store`):

==============  =====================  =========================================================
stage           file                   content
==============  =====================  =========================================================
features        features.npz, store/   labels, indices, S, backbone probe / k-NN accuracy; z, h
                                       of each split in its memory-mapped store (feature_store)
importance      importance.npz         S, variance and ablation scores and orders; the default
stats           stats.npz              class-mean matrix, class selectivity, histograms
top_images      top_images.npz         top-n / bottom-n dataset indices and values per feature
embedding       embedding.npz          2-D UMAP coordinates (+ parameters in the meta)
downstream      downstream.csv(.json)  few-feature curves; full linear-probe and k-NN accuracy
==============  =====================  =========================================================

:data:`ANALYSIS_STAGES` holds them (the trained basis); :data:`SPECTRAL_STAGES` derives the spectral
basis's from it: its own features (the basis's eigenvalues and split-half noise; the trained
features rotated when read) and importance (the eigenvalue order), every other stage registered
again so it runs on the rotated features, the embedding shared with the trained analysis. A stage
registered in :data:`ANALYSIS_STAGES` is thus computed in both bases, and its value reaches
:class:`tricl.analysis.pipeline.Analysis` by name (``analysis.values[name]``, ``analysis.<name>``).

Every stage's context is a :class:`SplitJob`. Only the features stage needs the dataset and the
model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from tricl.analysis.feature_store import EncoderPass, SplitStore, read_store, split_store
from tricl.analysis.features import Features, batch_size_for
from tricl.analysis.importance import Importance
from tricl.analysis.spectral import SpectralBasis, unresolved_groups
from tricl.analysis.stages import (
    Output,
    Progress,
    Stage,
    need_arrays,
    need_columns,
    register_stage,
)
from tricl.analysis.store import AnalysisError, analysis_dir, normalise_meta
from tricl.runs import Run

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


@dataclass(frozen=True)
class SplitJob:
    """The per-split stages' context: run, split, dataset, settings and progress of one call.

    In the spectral basis it also holds what the stages build on: the trained analysis (an
    :class:`~tricl.analysis.pipeline.Analysis`, whose features are rotated and whose embedding is
    shared) and the run's spectral basis.
    """

    run: Run
    split: str
    dataset: str
    dataset_override: str | None
    top_n: int
    device: str
    progress: Progress
    basis: str = "trained"
    trained: Any = None
    spectral: SpectralBasis | None = None


def _probe_params() -> dict[str, Any]:
    return {"c": ds.PROBE_C, "max_iter": ds.PROBE_MAX_ITER}


def _importance_params(job: SplitJob) -> dict[str, Any]:
    return {
        "probe": _probe_params(),
        "val_fraction": imp.ABLATION_VAL_FRACTION,
        "seed": imp.ABLATION_SEED,
    }


# --------------------------------------------------------------------------- the stages

ANALYSIS_STAGES: dict[str, Stage] = {}


def _load_features(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob) -> Features:
    need_arrays(arrays, {"labels": 1, "indices": 1, "train_labels": 1})
    if "z" in arrays:  # written before the feature store: the matrices are in the file itself
        need_arrays(arrays, {"z": 2, "h": 2, "train_z": 2})
        z, h, train_z = (arrays[n].astype(np.float32) for n in ("z", "h", "train_z"))
    else:  # the matrices are in the split stores this file names (a missing one: recompute)
        stores = {
            role: read_store(_split_dir(job, split), {**meta["key"], "split": split}, store_id)
            for role, split, store_id in (
                ("eval", job.split, meta["store"]["eval"]),
                ("train", "train", meta["store"]["train"]),
            )
        }
        if stores["eval"] is None or stores["train"] is None:
            raise ValueError("the feature store this file names is missing or damaged")
        # float32 copies of z (25 MB at 50,000 x 128) as before; h stays mapped
        z = np.asarray(stores["eval"].z, dtype=np.float32)
        train_z = np.asarray(stores["train"].z, dtype=np.float32)
        h = stores["eval"].h
    if not len(z) == len(arrays["labels"]) == len(arrays["indices"]):
        raise ValueError("z, labels and indices disagree in length")
    return Features(
        z=z,
        h=h,
        labels=arrays["labels"],
        indices=arrays["indices"],
        train_z=train_z,
        train_labels=arrays["train_labels"],
        s=arrays.get("s"),
        classes=[str(c) for c in meta["classes"]],
        dataset=meta["key"]["dataset"],
        split=meta["key"]["split"],
        images_hash=str(meta["images_hash"]),
    )


def _split_dir(job: SplitJob, split: str) -> Path:
    return analysis_dir(job.run.path, split, job.dataset_override)


def _split_store(job: SplitJob, split: str, data: Any, encoder: Any, batch: int) -> SplitStore:
    """The split's feature store (:func:`~tricl.analysis.feature_store.split_store`)."""
    x, y = data.split(split)
    key = {"weights_hash": job.run.weights_hash, "dataset": job.dataset, "split": split}
    return split_store(
        _split_dir(job, split),
        normalise_meta({**key, "image_size": job.run.config.image_size}),
        EncoderPass(encoder, x, y, data.preprocess, list(data.classes), job.device, batch),
        progress=job.progress,
        lock=split != job.split,  # the job holds its own split's lock already
    )


def _compute_features(job: SplitJob, inputs: dict[str, Any]) -> Output:
    data, progress = job.run.input_data(_load_images(job)), job.progress
    eval_x = data.split(job.split)[0]
    encoder = job.run.encoder(job.device)
    # the batch follows the model's input size: 256 CIFAR images, a few dozen at 224 px
    batch = batch_size_for(encoder, eval_x[:1], data.preprocess, device=job.device)
    progress.add(2)
    train = _split_store(job, "train", data, encoder, batch)
    same = job.split == "train"
    evaluated = train if same else _split_store(job, job.split, data, encoder, batch)
    s = encoder.importance()
    eval_y_np, train_y_np = np.asarray(evaluated.y), np.asarray(train.y)
    backbone = {
        "backbone_linear_acc": ds.linear_probe(
            train.h, train_y_np, evaluated.h, eval_y_np
        ).accuracy,
        "backbone_knn_acc": ds.knn_accuracy(
            train.h,
            train_y_np,
            evaluated.h,
            eval_y_np,
            exclude=np.arange(len(eval_y_np)) if same else None,
        ),
    }
    progress.tick()
    # the feature matrices are in the split stores (z in half precision, about 3 significant
    # digits, plenty for correlations, probes and top images); this file names them
    arrays = {
        "labels": eval_y_np,
        "indices": np.arange(len(eval_y_np), dtype=np.int64),
        "train_labels": train_y_np,
    }
    if s is not None:
        arrays["s"] = s.detach().float().cpu().numpy()
    progress.tick()
    meta = {
        "classes": list(data.classes),
        "images_hash": evaluated.images_hash,
        "backbone": backbone,
        "store": {"eval": evaluated.id, "train": train.id},
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


def _load_importance(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob
) -> Importance:
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


def _compute_importance(job: SplitJob, inputs: dict[str, Any]) -> Output:
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


def _load_stats(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob) -> FeatureStats:
    need_arrays(arrays, _STATS_NDIM)
    return FeatureStats(
        selectivity_n=int(meta["selectivity_n"]), **{n: arrays[n] for n in _STATS_NDIM}
    )


def _compute_stats(job: SplitJob, inputs: dict[str, Any]) -> Output:
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


def _load_top_images(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob
) -> TopImages:
    fields = ("top_indices", "top_values", "bottom_indices", "bottom_values")
    need_arrays(arrays, dict.fromkeys(fields, 2))
    return TopImages(**{n: arrays[n] for n in fields})


def _compute_top_images(job: SplitJob, inputs: dict[str, Any]) -> Output:
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


def _load_embedding(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob
) -> Embedding:
    need_arrays(arrays, {"coords": 2})
    if arrays["coords"].shape[1] != 2 or not isinstance(meta["effective"], dict):
        raise ValueError("the embedding is not a 2-D map with its parameters")
    rows = arrays.get("rows")  # absent: every row (a map of at most embedding.MAX_POINTS images)
    if rows is not None and rows.shape != (len(arrays["coords"]),):
        raise ValueError("the embedding's rows and coordinates disagree in length")
    n_total = int(meta.get("n_total", len(arrays["coords"])))
    return Embedding(arrays["coords"], meta["effective"], rows, n_total)


def _compute_embedding(job: SplitJob, inputs: dict[str, Any]) -> Output:
    job.progress.add(1)
    emb = umap_embedding(inputs["features"].z, dict(UMAP_PARAMS))
    job.progress.tick()
    if not emb.subsampled:  # the layout of every map of up to MAX_POINTS images, as before
        return Output({"coords": emb.coords}, {"effective": emb.params})
    arrays = {"coords": emb.coords, "rows": emb.rows}
    return Output(arrays, {"effective": emb.params, "n_total": emb.n_total})


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


def _load_downstream(table: pd.DataFrame, meta: dict[str, Any], job: SplitJob) -> pd.DataFrame:
    need_columns(table, ds.CURVE_COLUMNS)
    if not {"linear_acc", "knn_acc"} <= set(meta["full"]):
        raise ValueError("the downstream meta lacks the full-feature accuracies")
    return table


def _compute_downstream(job: SplitJob, inputs: dict[str, Any]) -> Output:
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


def _projected(job: SplitJob) -> Features:
    """The trained features in the spectral basis: z (N, r), train_z (M, r), no S."""
    f, basis = job.trained.features, job.spectral
    return replace(
        f,
        z=basis.project(f.z).astype(np.float32),
        train_z=basis.project(f.train_z).astype(np.float32),
        s=None,
    )


def _compute_spectral_features(job: SplitJob, inputs: dict[str, Any]) -> Output:
    basis = job.spectral
    arrays = {"eigenvalues": basis.eigenvalues, "split_half_diff": basis.split_half_diff}
    backbone = {k: job.trained.full[k] for k in BACKBONE_KEYS}
    groups = unresolved_groups(basis.eigenvalues, basis.split_half_diff)
    meta = {"backbone": backbone, "pairs": basis.pairs, "groups": groups}
    if basis.subsampled:  # estimated on a seeded subsample of the train images: pages say so
        meta["images"] = [basis.images, basis.images_total]
    return Output(arrays, meta)


def _load_spectral_features(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob
) -> Any:
    need_arrays(arrays, {"eigenvalues": 1, "split_half_diff": 1})
    if not np.array_equal(arrays["eigenvalues"], job.spectral.eigenvalues):
        raise ValueError("the stored eigenvalues are not those of the run's spectral basis")
    if not set(BACKBONE_KEYS) <= set(meta["backbone"]):
        raise ValueError("the meta lacks the backbone accuracies")
    return _projected(job)


def _compute_eigen_importance(job: SplitJob, inputs: dict[str, Any]) -> Output:
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
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob
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


def register_split_stage(stage: Stage) -> Stage:
    """Registers a per-split stage declared in its own module in both bases.

    The modules of :mod:`tricl.analysis.split_stages` call this at import (that package imports
    them all; :mod:`tricl.analysis.pipeline` imports the package), so a new stage is its module and
    its test: it runs on the trained features and, registered again, on the rotated ones.
    """
    register_stage(ANALYSIS_STAGES, stage)
    return register_stage(SPECTRAL_STAGES, stage)


def _load_images(job: SplitJob) -> Any:
    """The dataset, checked against the run's input format."""
    from tricl.data import DatasetError, load_dataset

    run = job.run
    try:
        # progress=False silences the loading bar too; None keeps the process default
        quiet = None if job.progress.enabled else False
        data = load_dataset(job.dataset, image_size=run.config.image_size, progress=quiet)
    except DatasetError as exc:
        raise AnalysisError(f"cannot analyze {run.name}: {exc}") from None
    if run.own_preprocessing:  # its encoder converts and resizes any image itself
        return data
    want_c, want_size = run.in_channels, run.dataset_info.get("image_size")
    # 0: not recorded (a solo-learn / triCL checkpoint imported without its images' size)
    if data.channels != want_c or (want_size and data.image_size != int(want_size)):
        raise AnalysisError(
            f"dataset {job.dataset} has {data.channels}x{data.image_size}px images but"
            f" {run.name} was trained on {want_c}x{want_size}px; pick a dataset of the same format"
        )
    return data
