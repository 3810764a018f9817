"""``compare(runs)``: identifiability between every pair of runs, cached under ``_compare/``.

Each run's features are taken from its analysis (computed if missing) in the run's default
importance order, so "feature #i" means the same thing as on the run's own pages. Runs must have
been evaluated on the same images (same dataset, split, image size and order), which the features'
image hash checks.

Files in ``<out_root>/<id>/`` where ``id`` hashes the runs' names and weights, one per stage of
:data:`COMPARE_STAGES` (run by :func:`tricl.analysis.stages.run_stages`, keyed by the runs' names,
weights hashes, split and importance orders):

- ``pairs.csv(.json)``: one row per ordered pair (a before b in the given order): ``run_a, run_b``
  and one column per identifiability metric (:data:`tricl.analysis.metrics.METRICS`), then with
  ``spectral=True`` each spectral metric's score with both runs rotated onto their spectral bases
  (column ``Metric.spectral_name``, e.g. ``spectral_corr_top8``, ``spectral_mcc``);
- ``corr.npz``: ``corr_<i>_<j>``, the signed correlation matrix between the ordered features of run
  i (rows) and run j (columns), and ``order_<i>``, each run's order (raw feature indices);
- ``matches.csv(.json)``: for each feature of the first run, its Hungarian match in every other run.

``compare(runs, basis="spectral")`` compares the runs' spectral-basis analyses instead (rank order,
so ``abs_corr(i, j)[r, r]`` is rank r against rank r; its plain scores are the spectral ones), in
its own folder; :func:`consensus` adds ``consensus.csv(.json)`` there: per spectral rank, the
agreement over all pairs of runs and a representative run's eigenvalue and top images.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis.identifiability import corr_matrix, hungarian_match
from tricl.analysis.metrics import METRICS, metric_columns, score_pair
from tricl.analysis.pipeline import (
    Analysis,
    analyze,
    feature_order,
    get_basis,
    load_analysis,
    load_run,
)
from tricl.analysis.spectral import SPECTRAL_PARAMS, spectral_basis
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
from tricl.analysis.summary import AnalysisSummary, load_summary
from tricl.bases import SPECTRAL, Basis
from tricl.runs import Run, default_runs_root

MATCH_COLUMNS = [
    "rank_a",
    "feature_a",
    "run_b",
    "rank_b",
    "feature_b",
    "corr",
    "abs_corr",
    "sign",
]


@dataclass(frozen=True, eq=False)
class Comparison:
    """Identifiability between runs.

    Attributes:
        runs: run names, in the order given.
        weights_hashes: each run's weights hash.
        split: evaluation split the features come from.
        pairs: one row per pair i < j, columns :func:`pair_columns`.
        corr: ``(i, j)`` -> signed correlations between run i's features (rows) and run j's
            (columns), both in their own importance order. Shape: (k_i, k_j).
        orders: each run's importance order (raw feature indices, most important first).
            Shape: (k_i,) each.
        matches: for every feature of the first run (``rank_a``: position in its order), the matched
            feature in each other run (``rank_b``, raw ``feature_b``), with the signed ``corr``,
            ``abs_corr`` and ``sign``; columns :data:`MATCH_COLUMNS`.
        path: folder the artifacts live in.
        recomputed: the stages this call computed (empty, so falsy: all read from the cache).
        meta: the pairs artifact's meta.
        basis: the basis the features are in; in ``spectral`` the orders are the identity, so
            ``abs_corr(i, j)[r, r]`` is the |corr| of spectral rank r between runs i and j.
    """

    runs: list[str]
    weights_hashes: list[str]
    split: str
    pairs: pd.DataFrame
    corr: dict[tuple[int, int], np.ndarray]
    orders: list[np.ndarray]
    matches: pd.DataFrame
    path: Path
    recomputed: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    basis: str = "trained"

    def abs_corr(self, i: int, j: int) -> np.ndarray:
        """|corr| between the ordered features of run i (rows) and run j. Shape: (k_i, k_j)."""
        if (i, j) in self.corr:
            return np.abs(self.corr[(i, j)])
        return np.abs(self.corr[(j, i)]).T


def pair_columns(spectral: bool = True) -> list[str]:
    """Columns of :attr:`Comparison.pairs`: the two runs, then every metric's score."""
    return ["run_a", "run_b", *metric_columns(spectral)]


@dataclass(frozen=True)
class _CompareJob:
    """The comparison stages' context: the runs, their analyses and whether to score spectrally."""

    runs: list[Run]
    analyses: list[Analysis]
    spectral: bool

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def ordered(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each run's default order and its evaluation features in that order: (N, k_i) each."""
        orders = [feature_order(a) for a in self.analyses]
        return orders, [a.features.z[:, o] for a, o in zip(self.analyses, orders)]

    def pairs(self) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(len(self.runs)), 2))


CorrValue = tuple[dict[tuple[int, int], np.ndarray], list[np.ndarray]]


def _compute_corr(job: _CompareJob, inputs: dict[str, Any]) -> Output:
    orders, ordered = job.ordered()
    arrays = {
        f"corr_{i}_{j}": corr_matrix(ordered[i], ordered[j]).astype(np.float32)
        for i, j in job.pairs()
    }
    arrays.update({f"order_{i}": o for i, o in enumerate(orders)})
    return Output(arrays)


def _load_corr(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _CompareJob) -> CorrValue:
    n = len(job.runs)
    need_arrays(arrays, {f"order_{i}": 1 for i in range(n)})
    orders = [arrays[f"order_{i}"] for i in range(n)]
    corr = {(i, j): arrays[f"corr_{i}_{j}"] for i, j in job.pairs()}
    for (i, j), c in corr.items():
        if c.shape != (len(orders[i]), len(orders[j])):
            raise ValueError(f"corr_{i}_{j} has shape {c.shape}, not the runs' feature counts")
    return corr, orders


def _compute_matches(job: _CompareJob, inputs: dict[str, Any]) -> Output:
    corr, orders = inputs["corr"]
    names, rows = job.names, []
    for j in range(1, len(job.runs)):
        m = hungarian_match(corr[(0, j)])
        for ra, rb, c in zip(m.rows, m.cols, m.corr):
            ra, rb, c = int(ra), int(rb), float(c)
            sign = 1 if c >= 0 else -1
            rows.append((ra, int(orders[0][ra]), names[j], rb, int(orders[j][rb]), c, abs(c), sign))
    return Output(pd.DataFrame(rows, columns=MATCH_COLUMNS))


def _load_table(columns: list[str]) -> Any:
    def load(table: pd.DataFrame, meta: dict[str, Any], job: _CompareJob) -> pd.DataFrame:
        need_columns(table, columns if columns else pair_columns(job.spectral))
        return table

    return load


def _compute_pairs(job: _CompareJob, inputs: dict[str, Any]) -> Output:
    _, ordered = job.ordered()
    rows = [{"run_a": job.names[i], "run_b": job.names[j]} for i, j in job.pairs()]
    for row, (i, j) in zip(rows, job.pairs()):
        row.update(score_pair(ordered[i], ordered[j])[0])
    if job.spectral:
        # the same scores after rotating each run onto its spectral basis
        # (tricl.analysis.spectral): the order the augmentation graph's eigenvalues give
        rotated = [
            spectral_basis(r, **SPECTRAL_PARAMS).project(a.features.z)
            for r, a in zip(job.runs, job.analyses)
        ]
        for row, (i, j) in zip(rows, job.pairs()):
            scores, _ = score_pair(rotated[i], rotated[j], only_spectral=True)
            row.update({METRICS[name].spectral_name: v for name, v in scores.items()})
    return Output(pd.DataFrame(rows, columns=pair_columns(job.spectral)))


# The comparison's stages, in ``<root>/_compare/<id>/``. The pairs' parameters list the metric
# columns, so registering a metric recomputes the pairs (only).
COMPARE_STAGES: dict[str, Stage] = {}
register_stage(COMPARE_STAGES, Stage("corr", "corr.npz", _compute_corr, _load_corr))
register_stage(
    COMPARE_STAGES,
    Stage(
        "matches",
        "matches.csv",
        _compute_matches,
        _load_table(MATCH_COLUMNS),
        needs=("corr",),
    ),
)
register_stage(
    COMPARE_STAGES,
    Stage(
        "pairs",
        "pairs.csv",
        _compute_pairs,
        _load_table([]),
        params=lambda job: {
            "columns": pair_columns(job.spectral),
            "spectral": SPECTRAL_PARAMS if job.spectral else None,
        },
    ),
)


CONSENSUS_COLUMNS = [
    "rank",
    "mean_abs_corr",
    "min_abs_corr",
    "eigenvalue",
    "representative",
    "top_indices",
    "unresolved_runs",
]


def _rank_agreement(corr: dict[tuple[int, int], np.ndarray], n: int, ranks: int) -> np.ndarray:
    """|corr| of rank r of run i with rank r of run j, symmetric, 0 on the diagonal.

    Shape: (n, n, ranks).
    """
    agree = np.zeros((n, n, ranks))
    for (i, j), c in corr.items():
        agree[i, j] = agree[j, i] = np.abs(np.diagonal(c)[:ranks])
    return agree


def _compute_consensus(job: _CompareJob, inputs: dict[str, Any]) -> Output:
    corr, _ = inputs["corr"]
    n = len(job.runs)
    ranks = min(a.k for a in job.analyses)
    agree = _rank_agreement(corr, n, ranks)  # (n, n, ranks)
    pairs = np.stack([agree[i, j] for i, j in job.pairs()])  # (n_pairs, ranks)
    # the representative of rank r agrees best, on average, with every other run's rank r
    rep = (agree.sum(axis=1) / (n - 1)).argmax(axis=0)  # (ranks,)
    rows = []
    for r in range(ranks):
        a = job.analyses[rep[r]]
        unresolved = sum(any(lo <= r <= hi for lo, hi in b.groups) for b in job.analyses)
        rows.append(
            (
                r + 1,
                float(pairs[:, r].mean()),
                float(pairs[:, r].min()),
                float(a.importance.scores["eigenvalue"][r]),
                a.run_name,
                " ".join(str(int(i)) for i in a.top_images.top_indices[r]),
                unresolved,
            )
        )
    return Output(pd.DataFrame(rows, columns=CONSENSUS_COLUMNS))


def _load_consensus(table: pd.DataFrame, meta: dict[str, Any], job: _CompareJob) -> pd.DataFrame:
    need_columns(table, CONSENSUS_COLUMNS)
    if list(table["rank"]) != list(range(1, len(table) + 1)):
        raise ValueError("the consensus ranks are not 1..r")
    table = table.copy()
    # stored as space-separated text so the CSV stays flat; read back as lists of dataset indices
    table["top_indices"] = [[int(i) for i in str(t).split()] for t in table["top_indices"]]
    return table


register_stage(
    COMPARE_STAGES,
    Stage(
        "consensus",
        "consensus.csv",
        _compute_consensus,
        _load_consensus,
        needs=("corr",),
        params=lambda job: {"representative": "highest mean |corr| of rank r with the others"},
    ),
)


def _check_same_images(analyses: list[Analysis]) -> None:
    first = analyses[0]
    for other in analyses[1:]:
        fa, fb = first.features, other.features
        if fa.images_hash != fb.images_hash or len(fa.labels) != len(fb.labels):
            raise AnalysisError(
                f"{first.run_name} and {other.run_name} were evaluated on different images"
                f" ({fa.dataset}/{fa.split}, {len(fa.labels)} images vs {fb.dataset}/{fb.split},"
                f" {len(fb.labels)} images); compare runs of the same dataset and image size"
            )


def _default_out_root(runs: list[Run]) -> Path:
    """``<parent>/_compare`` when all runs share a parent folder, else ``<runs root>/_compare``."""
    parents = {r.path.resolve().parent for r in runs}
    return (parents.pop() if len(parents) == 1 else default_runs_root()) / "_compare"


def _compare_id(names: list[str], hashes: list[str], split: str, basis: Basis) -> str:
    spec = {"runs": names, "hashes": hashes, "split": split}
    # the trained basis keeps the id it had before bases existed (shipped comparisons)
    text = to_json({**spec, **basis.key_fields()})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _load_runs(runs: Sequence[Run | str | Path]) -> list[Run]:
    loaded = [load_run(r) for r in runs]
    if len(loaded) < 2:
        raise AnalysisError("compare needs at least two runs, e.g. the same config with two seeds")
    names = [r.name for r in loaded]
    if len({r.path.resolve() for r in loaded}) < len(loaded):
        raise AnalysisError(f"a run is given twice ({', '.join(names)}); pass each run once")
    if len(set(names)) < len(names):
        raise AnalysisError(
            f"two runs share a folder name ({', '.join(names)}); rename one so results can be told"
            " apart"
        )
    return loaded


@dataclass(frozen=True)
class _Request:
    """What a comparison-like call asks for: runs, split, basis and where to store it."""

    runs: Sequence[Run | str | Path]
    split: str = "test"
    basis: str = "trained"
    spectral: bool = True
    out_root: Path | None = None
    progress: bool = False
    summaries: Sequence[AnalysisSummary] | None = None  # the runs' summaries, if read


def _prepare(req: _Request, compute: bool) -> Target | None:
    """The comparison's target; None when an analysis is missing and ``compute`` is False."""
    get_basis(req.basis)  # an unknown basis fails before any run is read
    loaded = _load_runs(req.runs)
    # an existing analysis is used as it is (whatever its top_n); only missing ones are computed
    analyses = []
    for r in loaded:
        a = load_analysis(r, split=req.split, basis=req.basis)
        if a is None:
            if not compute:
                return None
            a = analyze(r, split=req.split, basis=req.basis, progress=req.progress)
        analyses.append(a)
    _check_same_images(analyses)
    return _target(req, loaded, [AnalysisSummary.of(a) for a in analyses], analyses)


def _target(
    req: _Request, loaded: list[Run], summaries: list[AnalysisSummary], analyses: list[Analysis]
) -> Target:
    """The comparison's folder and key (the runs' weights and default orders) and its context."""
    basis = get_basis(req.basis).basis
    names, hashes = [r.name for r in loaded], [s.weights_hash for s in summaries]
    key = {
        "runs": names,
        "weights_hashes": hashes,
        "split": req.split,
        "orders": [s.importance.default for s in summaries],
    }
    key |= basis.key_fields()  # trained keys stay as they were before bases existed
    root = Path(req.out_root) if req.out_root is not None else _default_out_root(loaded)
    folder = root / _compare_id(names, hashes, req.split, basis)
    # in the spectral basis the plain scores already are the spectral ones
    spectral = req.spectral and not basis.rotated
    return Target(folder, normalise_meta(key), _CompareJob(loaded, analyses, spectral))


def _prepare_pairs(req: _Request, compute: bool) -> Target | None:
    """The comparison's target built on the runs' analysis summaries (read only)."""
    del compute  # the pairs are only read this way
    get_basis(req.basis)
    loaded = _load_runs(req.runs)
    summaries = req.summaries or [load_summary(r, split=req.split, basis=req.basis) for r in loaded]
    if any(s is None for s in summaries):
        return None
    for s in summaries[1:]:
        if (s.images_hash, s.dataset) != (summaries[0].images_hash, summaries[0].dataset):
            raise AnalysisError(
                f"{summaries[0].run_name} and {s.run_name} were evaluated on different images"
                f" ({summaries[0].dataset} vs {s.dataset}); compare runs of the same dataset"
                " and image size"
            )
    return _target(req, loaded, summaries, [])


def load_pairs(
    runs: Sequence[Run | str | Path],
    *,
    split: str = "test",
    out_root: Path | None = None,
    spectral: bool = True,
    basis: str = "trained",
    summaries: Sequence[AnalysisSummary] | None = None,
) -> pd.DataFrame | None:
    """The stored pairs table of a comparison (:attr:`Comparison.pairs`), or None where
    :func:`load_comparison` would give None; the same freshness is checked, but from the runs'
    analysis summaries (:func:`~tricl.analysis.summary.load_summary`; pass ``summaries`` when
    already read, in the order of ``runs`` and in ``basis``), so no feature array and no
    correlation matrix is read. Other arguments and errors as in :func:`load_comparison`.
    """
    req = _Request(runs, split, basis, spectral, out_root, summaries=summaries)
    got = Family("comparison pairs", COMPARE_STAGES, _prepare_pairs).read(req, ["pairs"])
    return None if got is None else got[1].values["pairs"]


# The comparison family: a set of runs, in ``<root>/_compare/<id>/``.
COMPARE = Family("comparison", COMPARE_STAGES, _prepare)
# the stages a comparison reads (the consensus is asked for on its own)
COMPARISON = ("corr", "matches", "pairs")


def _comparison(target: Target, res: StageResults) -> Comparison:
    corr, orders = res.values["corr"]
    return Comparison(
        runs=list(target.key["runs"]),
        weights_hashes=list(target.key["weights_hashes"]),
        split=target.key["split"],
        pairs=res.values["pairs"],
        corr=corr,
        orders=orders,
        matches=res.values["matches"],
        path=target.folder,
        recomputed=res.recomputed,
        meta=res.metas["pairs"],
        basis=target.key.get("basis", "trained"),
    )


def load_comparison(
    runs: Sequence[Run | str | Path],
    *,
    split: str = "test",
    out_root: Path | None = None,
    spectral: bool = True,
    basis: str = "trained",
) -> Comparison | None:
    """The cached comparison of ``runs``, or None if it (or a run's analysis) is not cached.

    Never computes anything and never raises for a corrupt cache file (the dashboard's read
    path); arguments as in :func:`compare`.

    Raises:
        AnalysisError: fewer than two runs, a broken run, runs evaluated on different images, or
            an unknown basis.
    """
    got = COMPARE.read(_Request(runs, split, basis, spectral, out_root), COMPARISON)
    return None if got is None else _comparison(*got)


def compare(
    runs: Sequence[Run | str | Path],
    *,
    split: str = "test",
    out_root: Path | None = None,
    force: bool = False,
    progress: bool = True,
    spectral: bool = True,
    basis: str = "trained",
) -> Comparison:
    """Identifiability between every pair of runs, one score per registered metric.

    Args:
        runs: two or more runs (or their folders), e.g. one config trained with several seeds.
        split: evaluation split.
        out_root: where comparisons are stored; default ``_compare`` beside the runs (the runs'
            common parent, e.g. ``checkpoints/_compare``), else ``<runs root>/_compare``.
        force: recompute even if cached (the runs' analyses are reused if fresh).
        progress: progress bars for analyses that still need computing.
        spectral: in the trained basis, also score the runs in their spectral bases (post hoc,
            see :mod:`tricl.analysis.spectral`; about 20 s per run on a CPU the first time, then
            cached with the run). Ignored in the spectral basis, whose plain scores are those.
        basis: ``trained`` (each run's features in its default importance order) or
            ``spectral`` (each run's spectral basis, rank order; analyses computed if missing).

    Returns:
        The :class:`Comparison`.

    Raises:
        AnalysisError: fewer than two runs, a broken run, runs evaluated on different images, or
            an unknown basis.
    """
    req = _Request(runs, split, basis, spectral, out_root, progress)
    return _comparison(*COMPARE.run(req, COMPARISON, force=force))


@dataclass(frozen=True, eq=False)
class Consensus:
    """Which spectral ranks a set of runs agree on, feature by feature.

    Attributes:
        runs: run names, in the order given.
        split: evaluation split the features come from.
        table: one row per spectral rank r (1-based ``rank``) of the run with the fewest
            features: ``mean_abs_corr`` and ``min_abs_corr`` of rank r with rank r over every
            pair of runs, the ``eigenvalue`` and ``top_indices`` (its top images' dataset indices,
            a list) of the ``representative`` run (whose rank r agrees best on average with the
            others), and ``unresolved_runs``, in how many runs rank r lies in an unresolved group
            (its order is not identifiable there). Columns :data:`CONSENSUS_COLUMNS`.
        path: folder the artifact lives in (the spectral comparison's).
        recomputed: the stages this call computed (empty: all read from the cache).
    """

    runs: list[str]
    split: str
    table: pd.DataFrame
    path: Path
    recomputed: tuple[str, ...] = ()


CONSENSUS = ("corr", "consensus")


def _consensus(target: Target, res: StageResults) -> Consensus:
    return Consensus(
        runs=list(target.key["runs"]),
        split=target.key["split"],
        table=res.values["consensus"],
        path=target.folder,
        recomputed=res.recomputed,
    )


def load_consensus(
    runs: Sequence[Run | str | Path], *, split: str = "test", out_root: Path | None = None
) -> Consensus | None:
    """The cached consensus of ``runs``, or None if it (or an analysis) is not cached.

    Never computes anything (the dashboard's read path); arguments as in :func:`consensus`.

    Raises:
        AnalysisError: fewer than two runs, a broken run, or runs evaluated on different images.
    """
    got = COMPARE.read(_Request(runs, split, SPECTRAL.name, False, out_root), CONSENSUS)
    return None if got is None else _consensus(*got)


def consensus(
    runs: Sequence[Run | str | Path],
    *,
    split: str = "test",
    out_root: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Consensus:
    """The consensus features of runs of one dataset (all seeds, all methods): rank by rank.

    Every run is analysed in its spectral basis (computed if missing); rank r of every pair of
    runs is correlated on the evaluation images. Stored with the spectral comparison of the same
    runs, under ``_compare/``.

    Args:
        runs: two or more runs (or their folders) evaluated on the same images.
        split: evaluation split.
        out_root: where comparisons are stored (as in :func:`compare`).
        force: recompute even if cached (the analyses are reused if fresh).
        progress: progress bars for analyses that still need computing.

    Returns:
        The :class:`Consensus`.

    Raises:
        AnalysisError: fewer than two runs, a broken run, or runs evaluated on different images.
    """
    req = _Request(runs, split, SPECTRAL.name, False, out_root, progress)
    return _consensus(*COMPARE.run(req, CONSENSUS, force=force))
