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

Every file records the key it belongs to (weights hash, dataset, split, format version) and its
parameters. A stage whose file is missing, torn, from other weights or other parameters is
recomputed; the others are read. Only the features stage needs the dataset and the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from tricl.analysis.store import (
    FORMAT_VERSION,
    AnalysisError,
    analysis_dir,
    load_npz,
    load_table,
    locked,
    normalise_meta,
    save_npz,
    save_table,
)
from tricl.runs import Run, RunError

SPLITS = ("test", "train")
STAGES = ("features", "importance", "stats", "top_images", "embedding", "downstream")
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
    """What one analyze call is about: run, split, dataset, and every stage's parameters."""

    run: Run
    split: str
    dataset: str
    dataset_override: str | None
    folder: Path
    key: dict[str, Any]
    params: dict[str, dict[str, Any]]


def _job(run: Run, split: str, dataset: str | None, top_n: int) -> _Job:
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
        "format": FORMAT_VERSION,
    }
    probe = {"c": ds.PROBE_C, "max_iter": ds.PROBE_MAX_ITER}
    importance = {
        "probe": probe,
        "val_fraction": imp.ABLATION_VAL_FRACTION,
        "seed": imp.ABLATION_SEED,
    }
    params = {
        "features": {"knn_k": ds.KNN_K, "knn_temperature": ds.KNN_TEMPERATURE, "probe": probe},
        "importance": importance,
        "stats": {"selectivity_top": SELECTIVITY_TOP, "bins": HISTOGRAM_BINS},
        "top_images": {"top_n": top_n},
        "embedding": dict(UMAP_PARAMS),
        "downstream": {
            "importance": importance,
            "probe": probe,
            "knn_k": ds.KNN_K,
            "knn_temperature": ds.KNN_TEMPERATURE,
            "random_seeds": list(ds.RANDOM_SEEDS),
            "retrieval_max_queries": ds.RETRIEVAL_MAX_QUERIES,
            "retrieval_max_database": ds.RETRIEVAL_MAX_DATABASE,
            "retrieval_similarity": "-||a-b||^2 on L2-normalised z, then feature subset",
        },
    }
    folder = analysis_dir(run.path, split, override)
    return _Job(run, split, spec, override, folder, key, normalise_meta(params))


def _meta(job: _Job, stage: str, **extra: Any) -> dict[str, Any]:
    return {"key": job.key, "params": job.params[stage], "stage": stage, **extra}


def _fresh(meta: dict[str, Any], job: _Job, stage: str, check_params: bool) -> bool:
    if meta.get("key") != normalise_meta(job.key) or meta.get("stage") != stage:
        return False
    return not check_params or meta.get("params") == job.params[stage]


# --------------------------------------------------------------------------- reading


def _read_stage(job: _Job, stage: str, check_params: bool) -> Any | None:
    """The stage's artifact if it is present and fresh, else None."""
    if stage == "downstream":
        table = load_table(job.folder / "downstream.csv")
        if table is None or not _fresh(table[1], job, stage, check_params):
            return None
        return table
    loaded = load_npz(job.folder / f"{stage}.npz")
    if loaded is None or not _fresh(loaded[1], job, stage, check_params):
        return None
    return loaded


def _read_all(job: _Job, check_params: bool) -> dict[str, Any]:
    return {s: got for s in STAGES if (got := _read_stage(job, s, check_params)) is not None}


def _features_from(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Features:
    return Features(
        z=arrays["z"].astype(np.float32),
        h=arrays["h"].astype(np.float32),
        labels=arrays["labels"],
        indices=arrays["indices"],
        train_z=arrays["train_z"].astype(np.float32),
        train_labels=arrays["train_labels"],
        s=arrays.get("s"),
        classes=list(meta["classes"]),
        dataset=meta["key"]["dataset"],
        split=meta["key"]["split"],
        images_hash=meta["images_hash"],
    )


def _importance_from(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Importance:
    names = meta["orders"]
    return Importance(
        default=meta["default"],
        scores={n: arrays[f"score_{n}"] for n in names},
        orders={n: arrays[f"order_{n}"] for n in names},
        ablation_loss_increase=arrays["ablation_loss_increase"],
        ablation_base_acc=float(meta["ablation_base_acc"]),
    )


def _stats_from(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> FeatureStats:
    return FeatureStats(selectivity_n=int(meta["selectivity_n"]), **arrays)


def _assemble(
    job: _Job, got: dict[str, Any], recomputed: tuple[str, ...], timings: dict[str, float]
) -> Analysis:
    feat_arrays, feat_meta = got["features"]
    table, down_meta = got["downstream"]
    return Analysis(
        run_name=job.run.name,
        run_path=job.run.path,
        method=job.run.config.method,
        split=job.split,
        dataset=job.dataset,
        weights_hash=job.key["weights_hash"],
        features=_features_from(feat_arrays, feat_meta),
        importance=_importance_from(*got["importance"]),
        stats=_stats_from(*got["stats"]),
        top_images=TopImages(**got["top_images"][0]),
        embedding=Embedding(
            coords=got["embedding"][0]["coords"], params=got["embedding"][1]["effective"]
        ),
        downstream=table,
        full={**feat_meta["backbone"], **down_meta["full"]},
        params={s: got[s][1]["params"] for s in STAGES},
        recomputed=recomputed,
        timings=timings,
    )


def load_analysis(
    run: Run | str | Path, *, split: str = "test", dataset: str | None = None
) -> Analysis | None:
    """The cached analysis of a run, or None if any artifact is missing or from other weights.

    Never computes anything (the dashboard's read path). Artifacts computed with other parameters
    (e.g. another ``top_n``) are accepted as long as they belong to the current weights.

    Args:
        run: a run or its folder.
        split: evaluation split.
        dataset: the dataset it was analysed on, if not the run's own.
    """
    r = load_run(run)
    job = _job(r, split, dataset, top_n=1)
    got = _read_all(job, check_params=False)
    if len(got) < len(STAGES):
        return None
    return _assemble(job, got, (), {})


# --------------------------------------------------------------------------- computing


class _Progress:
    """A tqdm bar over work units, or nothing."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, desc=desc, unit="step", dynamic_ncols=True)

    def add(self, n: int) -> None:
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


def _load_images(job: _Job) -> Any:
    """The dataset, checked against the run's input format."""
    from tricl.data import DatasetError, load_dataset

    run = job.run
    try:
        data = load_dataset(job.dataset, image_size=run.config.image_size)
    except DatasetError as exc:
        raise AnalysisError(f"cannot analyze {run.name}: {exc}") from None
    want_c, want_size = run.in_channels, run.dataset_info.get("image_size")
    if data.channels != want_c or (want_size is not None and data.image_size != int(want_size)):
        raise AnalysisError(
            f"dataset {job.dataset} has {data.channels}x{data.image_size}px images but"
            f" {run.name} was trained on {want_c}x{want_size}px; pick a dataset of the same format"
        )
    return data


def _compute_features(job: _Job, device: str, progress: _Progress) -> None:
    data = _load_images(job)
    eval_x, eval_y = data.split(job.split)
    train_x, train_y = data.train_x, data.train_y
    same = job.split == "train"
    progress.add(n_batches(len(eval_x)) + (0 if same else n_batches(len(train_x))) + 2)
    encoder = job.run.encoder(device)
    z, h = extract(encoder, eval_x, data.preprocess, device=device, tick=progress.tick)
    if same:
        train_z, train_h = z, h
    else:
        train_z, train_h = extract(
            encoder, train_x, data.preprocess, device=device, tick=progress.tick
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
    meta = _meta(
        job,
        "features",
        classes=list(data.classes),
        images_hash=images_hash(eval_x, eval_y),
        backbone=backbone,
    )
    save_npz(job.folder / "features.npz", arrays, meta)
    progress.tick()


def _compute_importance(job: _Job, f: Features, progress: _Progress) -> None:
    progress.add(f.k + 1)
    res = imp.compute_importance(f.train_z, f.train_labels, f.s, tick=progress.tick)
    arrays = {"ablation_loss_increase": res.ablation_loss_increase}
    for name in res.orders:
        arrays[f"score_{name}"] = res.scores[name]
        arrays[f"order_{name}"] = res.orders[name]
    meta = _meta(
        job,
        "importance",
        default=res.default,
        orders=list(res.orders),
        ablation_base_acc=res.ablation_base_acc,
    )
    save_npz(job.folder / "importance.npz", arrays, meta)
    progress.tick()


def _compute_stats(job: _Job, f: Features, progress: _Progress) -> None:
    progress.add(1)
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
    save_npz(job.folder / "stats.npz", arrays, _meta(job, "stats", selectivity_n=n_sel))
    progress.tick()


def _compute_top_images(job: _Job, f: Features, progress: _Progress) -> None:
    progress.add(1)
    top_n = job.params["top_images"]["top_n"]
    top = top_bottom_images(iter_chunks(f.z, f.indices), min(top_n, len(f.z)))
    save_npz(job.folder / "top_images.npz", vars(top), _meta(job, "top_images"))
    progress.tick()


def _compute_embedding(job: _Job, f: Features, progress: _Progress) -> None:
    progress.add(1)
    emb = umap_embedding(f.z, job.params["embedding"])
    save_npz(
        job.folder / "embedding.npz",
        {"coords": emb.coords},
        _meta(job, "embedding", effective=emb.params),
    )
    progress.tick()


def _compute_downstream(
    job: _Job, f: Features, importance: Importance, progress: _Progress
) -> None:
    progress.add(ds.n_curve_points(f.k, len(importance.orders)) + 1)
    same = job.split == "train"
    inputs = ds.DownstreamInputs.build(f.train_z, f.train_labels, f.z, f.labels, same_split=same)
    full_acc, full_map = inputs.evaluate(np.arange(f.k))  # also the curves' k = all point
    full = {
        "linear_acc": full_acc,
        "knn_acc": ds.knn_accuracy(
            inputs.train,
            inputs.train_y,
            inputs.test,
            inputs.test_y,
            exclude=np.arange(len(inputs.test)) if same else None,
        ),
        "retrieval_map": full_map,
    }
    progress.tick()
    table = ds.few_feature_curves(inputs, importance.orders, tick=progress.tick)
    save_table(job.folder / "downstream.csv", table, _meta(job, "downstream", full=full))


# the stages' compute functions after features: (job, features, progress[, importance])
_AFTER_FEATURES: dict[str, Callable[..., None]] = {
    "importance": _compute_importance,
    "stats": _compute_stats,
    "top_images": _compute_top_images,
    "embedding": _compute_embedding,
}


def analyze(
    run: Run | str | Path,
    *,
    split: str = "test",
    dataset: str | None = None,
    top_n: int = 32,
    force: bool = False,
    device: str = "cpu",
    progress: bool = True,
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
        force: recompute every stage even if cached.
        device: where the encoder runs for feature extraction.
        progress: draw a progress bar.

    Returns:
        The :class:`Analysis`; ``recomputed`` names the stages this call computed.

    Raises:
        AnalysisError: broken run, unavailable or mismatched dataset, bad arguments.
    """
    r = load_run(run)
    job = _job(r, split, dataset, top_n)
    if not force:
        got = _read_all(job, check_params=True)
        if len(got) == len(STAGES):
            return _assemble(job, got, (), {})
    bar = _Progress(progress, f"analyze {r.name}")
    timings: dict[str, float] = {}
    try:
        with locked(job.folder):
            # another process may have finished the work while this one waited for the lock
            got = {} if force else _read_all(job, check_params=True)
            todo = [s for s in STAGES if s not in got]
            for stage in todo:
                t0 = time.perf_counter()
                bar.stage(stage)
                if stage == "features":
                    _compute_features(job, device, bar)
                else:
                    feats = _features_from(*got["features"])
                    if stage == "downstream":
                        _compute_downstream(job, feats, _importance_from(*got["importance"]), bar)
                    else:
                        _AFTER_FEATURES[stage](job, feats, bar)
                got[stage] = _read_stage(job, stage, check_params=True)
                if got[stage] is None:
                    raise AnalysisError(
                        f"{job.folder} lost its {stage} artifact right after writing it; check"
                        " that nothing else writes there and that the disk is not full"
                    )
                timings[stage] = time.perf_counter() - t0
    finally:
        bar.close()
    return _assemble(job, got, tuple(todo), timings)
