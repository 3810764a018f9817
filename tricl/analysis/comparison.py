"""``compare(runs)``: identifiability between every pair of runs, cached under ``_compare/``.

Each run's features are taken from its analysis (computed if missing) in the run's default
importance order, so "feature #i" means the same thing as on the run's own pages. Runs must have
been evaluated on the same images (same dataset, split, image size and order), which the features'
image hash checks.

Files in ``<out_root>/<id>/`` where ``id`` hashes the runs' names and weights, one per stage of
:data:`~tricl.analysis.compare_stages.COMPARE_STAGES`, one module each in
:mod:`tricl.analysis.compare_stages` (run by :func:`tricl.analysis.stages.run_stages`, keyed by the
runs' names, weights hashes, split and importance orders): ``corr.npz`` (the signed correlations
between the runs' ordered features), ``pairs.csv(.json)`` (one row per pair, one column per
identifiability metric, then with ``spectral=True`` each spectral metric's score in the runs'
spectral bases), ``matches.csv(.json)`` (each feature of the first run, matched in every other
run), and whatever stage a module of that package registers (``Comparison.values[name]``).

``compare(runs, basis="spectral")`` compares the runs' spectral-basis analyses instead (rank order,
so ``abs_corr(i, j)[r, r]`` is rank r against rank r; its plain scores are the spectral ones), in
its own folder; :func:`consensus` adds ``consensus.csv(.json)`` there: per spectral rank, the
agreement over all pairs of runs and a representative run's eigenvalue and top images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis.compare_stages import (
    COMPARE_STAGES,
    CompareJob,
    compared_stages,
    optional_stages,
    required_stages,
)
from tricl.analysis.compare_stages.consensus import CONSENSUS_COLUMNS as CONSENSUS_COLUMNS
from tricl.analysis.compare_stages.matches import MATCH_COLUMNS as MATCH_COLUMNS
from tricl.analysis.compare_stages.pairs import pair_columns as pair_columns
from tricl.analysis.pipeline import Analysis, analyze, get_basis, load_analysis, load_run
from tricl.analysis.spectral import SPECTRAL_PARAMS as SPECTRAL_PARAMS
from tricl.analysis.stages import Family, StageResults, Target, read_stage
from tricl.analysis.store import AnalysisError, normalise_meta, to_json
from tricl.analysis.summary import AnalysisSummary, load_summary
from tricl.bases import SPECTRAL, Basis
from tricl.runs import Run, default_runs_root


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
        values: every stage's value by name (:mod:`tricl.analysis.compare_stages`), those above
            included; a stage without a field is there when stored and fresh.
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
    values: dict[str, Any] = field(default_factory=dict, repr=False)

    def abs_corr(self, i: int, j: int) -> np.ndarray:
        """|corr| between the ordered features of run i (rows) and run j. Shape: (k_i, k_j)."""
        if (i, j) in self.corr:
            return np.abs(self.corr[(i, j)])
        return np.abs(self.corr[(j, i)]).T


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
    return Target(folder, normalise_meta(key), CompareJob(loaded, analyses, spectral))


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
    summaries: Sequence[AnalysisSummary] | None = None,
    **where: Any,
) -> pd.DataFrame | None:
    """The stored pairs table of a comparison (:attr:`Comparison.pairs`), or None where
    :func:`load_comparison` would give None; the same freshness is checked, but from the runs'
    analysis summaries (:func:`~tricl.analysis.summary.load_summary`; pass ``summaries`` when
    already read, in the order of ``runs`` and in ``basis``), so no feature array and no
    correlation matrix is read. ``where`` (``split``, ``out_root``, ``spectral``, ``basis``) and
    errors as in :func:`load_comparison`.
    """
    unknown = set(where) - {"split", "out_root", "spectral", "basis"}
    if unknown:
        raise TypeError(f"load_pairs() got unexpected keyword arguments {sorted(unknown)}")
    req = _Request(runs, summaries=summaries, **where)
    got = Family("comparison pairs", COMPARE_STAGES, _prepare_pairs).read(req, ["pairs"])
    return None if got is None else got[1].values["pairs"]


# The comparison family: a set of runs, in ``<root>/_compare/<id>/``.
COMPARE = Family("comparison", COMPARE_STAGES, _prepare)


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
        values=dict(res.values),
    )


def _with_optional(target: Target, res: StageResults) -> StageResults:
    """The read results and every optional stage that is stored and fresh (a stage registered
    since the comparison was stored leaves it readable)."""
    values, metas = dict(res.values), dict(res.metas)
    for name in optional_stages():
        if (got := read_stage(COMPARE_STAGES, name, target)) is not None:
            values[name], metas[name] = got
    return StageResults(values, metas, res.recomputed, res.timings)


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
    got = COMPARE.read(_Request(runs, split, basis, spectral, out_root), required_stages())
    if got is None:
        return None
    target, res = got
    return _comparison(target, _with_optional(target, res))


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
    return _comparison(*COMPARE.run(req, compared_stages(), force=force))


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


CONSENSUS = ("consensus",)  # (and the corr it needs)


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
