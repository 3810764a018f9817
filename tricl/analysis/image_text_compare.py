"""Identifiability of image-text runs across seeds, on the image AND the text side, in either basis.

:func:`compare_image_text` scores every pair of image-text runs (clip, triclip) with every
registered metric (:data:`tricl.analysis.metrics.METRICS`, via ``score_pair``), once per side:

- ``image``: the runs' image features f(x) of the evaluation images;
- ``text``: their text features g(t) of the same images' captions (caption i belongs to image i,
  so both runs see the same rows, as identifiability needs).

The features come from each run's text analysis (:func:`tricl.analysis.image_text.text_features`,
computed if missing) and are read in one of two bases:

- ``trained``: the k outputs of each run's projectors in the run's importance order
  (``TextFeatures.order``: S for triclip, variance for clip, the order the image pages use). Both
  sides use the same order, since the trained similarity pairs image feature i with text feature i;
- ``spectral``: each side rotated onto the run's pair basis (:mod:`tricl.analysis.pair_basis`, the
  CCA of its train image and text features: the image-caption kernel's counterpart of the
  augmentation basis), rank order.

Runs must have been evaluated on the same images (``TextFeatures.images_hash``). Artifacts live in
``<out_root>/<id>/`` beside the image comparisons (:mod:`tricl.analysis.comparison`; ``id`` hashes
the runs, their weights, the split, the basis and the kind ``image_text``), one file per stage of
:data:`IMAGE_TEXT_STAGES`:

- ``image_text_corr.npz``: ``corr_<side>_<i>_<j>``, the signed correlation matrix between run i's
  ordered features (rows) and run j's on that side, and ``order_<i>``, run i's feature order (raw
  indices; the identity in the spectral basis);
- ``image_text_pairs.csv(.json)``: one row per pair i < j and side: ``run_a, run_b, side`` and one
  column per metric (:data:`PAIR_COLUMNS`).

:func:`summarize` turns comparisons into the "triclip vs clip" table: per method, side and basis,
the mean and standard deviation of every metric over the pairs of seeds of one configuration.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis.comparison import _default_out_root, _load_runs
from tricl.analysis.identifiability import corr_matrix
from tricl.analysis.image_text import (
    TEXT_STAGES,
    TextFeatures,
    has_text,
    load_text_features,
    text_features,
)
from tricl.analysis.metrics import METRICS, metric_columns, score_pair
from tricl.analysis.pair_basis import RIDGE, PairBasis, load_pair_basis, pair_basis
from tricl.analysis.stages import (
    Family,
    Output,
    Stage,
    StageResults,
    Target,
    need_arrays,
    need_columns,
    register_stage,
)
from tricl.analysis.store import AnalysisError, normalise_meta, to_json
from tricl.bases import BASIS_NAMES, get_basis
from tricl.runs import Run

SIDES = ("image", "text")
IMAGE_TEXT_BASES = BASIS_NAMES  # spectral: each run's pair basis
PAIR_COLUMNS = ["run_a", "run_b", "side", *metric_columns(spectral=False)]


@dataclass(frozen=True, eq=False)
class ImageTextComparison:
    """Identifiability between image-text runs, on both sides, in one basis.

    Attributes:
        runs: run names, in the order given.
        weights_hashes: each run's weights hash.
        methods: each run's method (``clip``, ``triclip``).
        configs: each run's configuration without seed (JSON text, :func:`config_group`): runs
            with equal configs differ only by seed, and :func:`summarize` averages over their
            pairs.
        split: evaluation split the features come from.
        basis: ``trained`` or ``spectral`` (see the module docstring).
        pairs: one row per pair i < j and side, columns :data:`PAIR_COLUMNS`.
        corr: ``(side, i, j)`` -> signed correlations between run i's ordered features on that side
            (rows) and run j's (columns). Shape: (k_i, k_j).
        orders: each run's feature order (raw indices, most important first; the identity in the
            spectral basis). Shape: (k_i,) each.
        unresolved: in the spectral basis, each run's unresolved rank groups (0-based inclusive
            ranges whose canonical correlations are within the estimation noise, so their order
            is not identifiable: :attr:`PairBasis.groups`); empty lists in the trained basis.
        path: folder the artifacts live in.
        recomputed: the stages this call computed (empty, so falsy: all read from the cache).
        meta: the pairs artifact's meta.
    """

    runs: list[str]
    weights_hashes: list[str]
    methods: list[str]
    configs: list[str]
    split: str
    basis: str
    pairs: pd.DataFrame
    corr: dict[tuple[str, int, int], np.ndarray]
    orders: list[np.ndarray]
    unresolved: list[list[tuple[int, int]]]
    path: Path
    recomputed: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def abs_corr(self, side: str, i: int, j: int) -> np.ndarray:
        """|corr| between run i's ordered features (rows) and run j's on ``side``.

        Shape: (k_i, k_j).
        """
        if (side, i, j) in self.corr:
            return np.abs(self.corr[(side, i, j)])
        return np.abs(self.corr[(side, j, i)]).T


@dataclass(frozen=True)
class _Job:
    """The stages' context: the runs, their text features and (spectral basis) pair bases."""

    runs: list[Run]
    features: list[TextFeatures]
    bases: list[PairBasis] | None

    def pairs(self) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(len(self.runs)), 2))

    def orders(self) -> list[np.ndarray]:
        """Each run's feature order: its importance order, or rank order in the pair basis."""
        if self.bases is None:
            return [np.asarray(f.order, dtype=np.int64) for f in self.features]
        return [np.arange(b.rank, dtype=np.int64) for b in self.bases]

    def ordered(self, side: str) -> list[np.ndarray]:
        """Each run's evaluation features on ``side`` in its order. Shape: (N, k_i) each."""
        if self.bases is None:
            raw = [f.image_z if side == "image" else f.text_z for f in self.features]
            return [z[:, o] for z, o in zip(raw, self.orders())]
        return [
            b.project_image(f.image_z) if side == "image" else b.project_text(f.text_z)
            for f, b in zip(self.features, self.bases)
        ]


CorrValue = tuple[dict[tuple[str, int, int], np.ndarray], list[np.ndarray]]


def _compute_corr(job: _Job, inputs: dict[str, Any]) -> Output:
    arrays: dict[str, np.ndarray] = {f"order_{i}": o for i, o in enumerate(job.orders())}
    for side in SIDES:
        ordered = job.ordered(side)
        for i, j in job.pairs():
            c = corr_matrix(ordered[i], ordered[j])  # (k_i, k_j)
            arrays[f"corr_{side}_{i}_{j}"] = c.astype(np.float32)
    return Output(arrays)


def _load_corr(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _Job) -> CorrValue:
    n = len(job.runs)
    need_arrays(arrays, {f"order_{i}": 1 for i in range(n)})
    orders = [arrays[f"order_{i}"] for i in range(n)]
    corr = {}
    for side, (i, j) in itertools.product(SIDES, job.pairs()):
        c = arrays[f"corr_{side}_{i}_{j}"]
        if c.shape != (len(orders[i]), len(orders[j])):
            raise ValueError(f"corr_{side}_{i}_{j} has shape {c.shape}, not the feature counts")
        corr[(side, i, j)] = c
    return corr, orders


def _compute_pairs(job: _Job, inputs: dict[str, Any]) -> Output:
    names = [r.name for r in job.runs]
    rows = []
    for side in SIDES:
        ordered = job.ordered(side)
        for i, j in job.pairs():
            scores, _ = score_pair(ordered[i], ordered[j])
            rows.append({"run_a": names[i], "run_b": names[j], "side": side, **scores})
    return Output(pd.DataFrame(rows, columns=PAIR_COLUMNS))


def _load_pairs(table: pd.DataFrame, meta: dict[str, Any], job: _Job) -> pd.DataFrame:
    need_columns(table, PAIR_COLUMNS)
    if set(table["side"]) - set(SIDES) or len(table) != len(SIDES) * len(job.pairs()):
        raise ValueError("the pairs table does not have one row per pair of runs and side")
    return table


# The image-text comparison's stages, in ``<root>/_compare/<id>/``. The pairs' parameters list the
# metric columns, so registering a metric recomputes the pairs (only).
IMAGE_TEXT_STAGES: dict[str, Stage] = {}
register_stage(
    IMAGE_TEXT_STAGES, Stage("it_corr", "image_text_corr.npz", _compute_corr, _load_corr)
)
register_stage(
    IMAGE_TEXT_STAGES,
    Stage(
        "it_pairs",
        "image_text_pairs.csv",
        _compute_pairs,
        _load_pairs,
        params=lambda job: {"columns": PAIR_COLUMNS},
    ),
)


def config_group(run: Run) -> str:
    """The run's configuration without seed, name, device and extras, as JSON text."""
    cfg = run.config.to_dict()
    for k in ("seed", "name", "device", "extra"):
        cfg.pop(k, None)
    return json.dumps(cfg, sort_keys=True, default=str)


def _check_runs(loaded: list[Run]) -> None:
    image_only = [r.name for r in loaded if not has_text(r)]
    if image_only:
        raise AnalysisError(
            f"no text encoder in {', '.join(image_only)} (image-only or aligned), so the text"
            " features cannot be compared; pass only clip / triclip runs"
        )


def _check_same_images(runs: list[Run], feats: list[TextFeatures]) -> None:
    for run, f in zip(runs[1:], feats[1:]):
        if f.images_hash != feats[0].images_hash or len(f.image_z) != len(feats[0].image_z):
            raise AnalysisError(
                f"{runs[0].name} and {run.name} were evaluated on different images"
                f" ({len(feats[0].image_z)} vs {len(f.image_z)} images); compare runs of the same"
                " dataset and image size"
            )


@dataclass(frozen=True)
class _Request:
    runs: Sequence[Run | str | Path]
    split: str
    basis: str
    out_root: Path | None
    progress: bool = False


def _features(
    runs: list[Run], req: _Request, compute: bool
) -> tuple[list[TextFeatures], list[PairBasis] | None] | None:
    """Each run's text features (and pair basis); None where one is missing and not computed."""
    rotated = get_basis(req.basis).rotated
    feats, bases = [], []
    for r in runs:
        f = load_text_features(r, req.split)
        if f is None:
            if not compute:
                return None
            f = text_features(r, req.split, progress=req.progress)
        feats.append(f)
        if rotated:
            b = load_pair_basis(r)
            if b is None:
                if not compute:
                    return None
                b = pair_basis(r, split=req.split, progress=req.progress)
            bases.append(b)
    return feats, (bases if rotated else None)


def _prepare(req: _Request, compute: bool) -> Target | None:
    """The comparison's target; None when an input is missing and ``compute`` is False."""
    if req.basis not in IMAGE_TEXT_BASES:
        raise AnalysisError(
            f"unknown basis {req.basis!r} for image-text runs; choose one of {IMAGE_TEXT_BASES}"
        )
    loaded = _load_runs(req.runs)
    _check_runs(loaded)
    got = _features(loaded, req, compute)
    if got is None:
        return None
    feats, bases = got
    _check_same_images(loaded, feats)
    job = _Job(loaded, feats, bases)
    names, hashes = [r.name for r in loaded], [r.weights_hash for r in loaded]
    key: dict[str, Any] = {"runs": names, "weights_hashes": hashes, "split": req.split}
    # a new version of the text features (their normalisation, say) recomputes the comparison
    key |= {"basis": req.basis, "text_features": TEXT_STAGES["text_features"].version}
    if bases is None:
        key["orders"] = [o.tolist() for o in job.orders()]
    else:  # a re-estimated pair basis (other ridge, other weights) recomputes the comparison
        key["pair_bases"] = [b.fingerprint for b in bases]
        key["ridge"] = RIDGE
    root = Path(req.out_root) if req.out_root is not None else _default_out_root(loaded)
    spec = {"kind": "image_text", "runs": names, "hashes": hashes, "split": req.split}
    folder_id = hashlib.sha256(to_json({**spec, "basis": req.basis}).encode()).hexdigest()[:12]
    return Target(root / folder_id, normalise_meta(key), job)


# The image-text comparison family: a set of image-text runs, in ``<root>/_compare/<id>/``.
IMAGE_TEXT = Family("image-text comparison", IMAGE_TEXT_STAGES, _prepare)


def _comparison(target: Target, res: StageResults) -> ImageTextComparison:
    corr, orders = res.values["it_corr"]
    job: _Job = target.ctx
    return ImageTextComparison(
        runs=list(target.key["runs"]),
        weights_hashes=list(target.key["weights_hashes"]),
        methods=[r.config.method for r in job.runs],
        configs=[config_group(r) for r in job.runs],
        split=target.key["split"],
        basis=target.key["basis"],
        pairs=res.values["it_pairs"],
        corr=corr,
        orders=orders,
        unresolved=[b.groups for b in job.bases] if job.bases else [[] for _ in job.runs],
        path=target.folder,
        recomputed=res.recomputed,
        meta=res.metas["it_pairs"],
    )


def load_image_text_comparison(
    runs: Sequence[Run | str | Path],
    split: str = "test",
    *,
    basis: str = "trained",
    out_root: Path | None = None,
) -> ImageTextComparison | None:
    """The cached image-text comparison of ``runs``, or None if it or an input is not cached.

    Never computes, never imports torch and never raises for a corrupt cache file (the
    dashboard's read path); arguments as in :func:`compare_image_text`.

    Raises:
        AnalysisError: fewer than two runs, a broken or image-only run, runs evaluated on
            different images, or an unknown basis.
    """
    got = IMAGE_TEXT.read(_Request(runs, split, basis, out_root))
    return None if got is None else _comparison(*got)


def compare_image_text(
    runs: Sequence[Run | str | Path],
    split: str = "test",
    *,
    basis: str = "trained",
    out_root: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> ImageTextComparison:
    """Identifiability between every pair of image-text runs, on image and text features.

    Args:
        runs: two or more clip / triclip runs (or their folders) evaluated on the same images,
            e.g. both methods with three seeds each.
        split: evaluation split.
        basis: ``trained`` (each run's importance order) or ``spectral`` (each run's pair basis,
            rank order; the basis is estimated once per run on its train pairs, then cached).
        out_root: where comparisons are stored; default ``_compare`` beside the runs, as
            :func:`tricl.analysis.comparison.compare` stores them.
        force: recompute the comparison even if cached (the runs' features and bases are reused).
        progress: progress bars for text features that still need computing.

    Returns:
        The :class:`ImageTextComparison`.

    Raises:
        AnalysisError: fewer than two runs, a broken or image-only run, runs evaluated on
            different images, or an unknown basis.
    """
    return _comparison(
        *IMAGE_TEXT.run(_Request(runs, split, basis, out_root, progress), force=force)
    )


SUMMARY_KEYS = ["method", "side", "basis", "runs", "n_pairs"]


def summary_columns() -> list[str]:
    """Columns of :func:`summarize`: the keys, then ``<metric>_mean`` and ``<metric>_std``."""
    return SUMMARY_KEYS + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]


def summarize(comparisons: Iterable[ImageTextComparison]) -> pd.DataFrame:
    """Mean and standard deviation of every metric over the seed pairs of each configuration.

    Only pairs of runs with the same configuration apart from the seed (equal
    :attr:`ImageTextComparison.configs`) count: a clip run against a triclip run is no seed pair.
    The standard deviation is the population one (``ddof=0``), as in the reproduction study.

    Args:
        comparisons: e.g. the trained and the spectral comparison of the same runs.

    Returns:
        One row per (configuration, side, basis) with at least one pair, in the order met:
        ``method``, ``side``, ``basis``, ``runs`` (the group's run names, comma-separated),
        ``n_pairs``, then per metric ``<name>_mean`` and ``<name>_std`` (:func:`summary_columns`).
    """
    rows = []
    for comp in comparisons:
        members: dict[str, list[str]] = {}
        for name, config in zip(comp.runs, comp.configs):
            members.setdefault(config, []).append(name)
        for names in members.values():
            if len(names) < 2:
                continue
            method = comp.methods[comp.runs.index(names[0])]
            within = comp.pairs["run_a"].isin(names) & comp.pairs["run_b"].isin(names)
            for side in SIDES:
                sel = comp.pairs[within & (comp.pairs["side"] == side)]
                row = {"method": method, "side": side, "basis": comp.basis}
                row.update({"runs": ", ".join(names), "n_pairs": len(sel)})
                for m in METRICS:
                    row[f"{m}_mean"] = float(sel[m].mean())
                    row[f"{m}_std"] = float(sel[m].std(ddof=0))
                rows.append(row)
    return pd.DataFrame(rows, columns=summary_columns())
