"""Cached readers of stored artifacts: analyses and comparisons. They never compute.

A missing artifact is reported as such (:class:`Missing`); the page then offers a job
(:mod:`jobs_ui`) that computes it outside the page's script run.

Caching: :func:`st.cache_resource` holds the loaded artifacts. They are read-only objects shared by
every session, so the cache hands out the same object instead of unpickling a copy on every rerun
(``st.cache_data`` would copy the arrays each time). Keys include the artifact files' times, so a
job that writes new artifacts is picked up on the next rerun; "not there" is never cached.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import labels
import numpy as np
import streamlit as st

from tricl.bases import get_basis
from tricl.runs import Run, default_runs_root

EVAL_SPLIT = "test"


@dataclass(frozen=True)
class Missing:
    """Why an artifact cannot be read yet.

    Attributes:
        runs: the runs concerned.
        reason: one line for the page.
    """

    runs: tuple[Run, ...]
    reason: str


@dataclass
class Analyses:
    """What :func:`analyses` found: the readable analyses, the missing ones, the broken ones."""

    found: dict[str, Any] = field(default_factory=dict)
    missing: list[Run] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class _NotCached(LookupError):
    """Raised inside a cached reader so that "not there" is not remembered by the cache."""


def _analysis_folder(path: str | Path) -> Path:
    return Path(path) / "analysis" / EVAL_SPLIT


def analysis_stamp(path: str | Path, basis: str = "trained") -> tuple[int, ...]:
    """File times of what an analysis in ``basis`` reads: the spectral one also reads the
    trained artifacts and the run's basis (``analysis/spectral.npz``)."""
    stamp = artifact_stamp(_analysis_folder(path))
    folder = get_basis(basis).folder
    if not folder:  # the split's own folder: nothing more to read
        return stamp
    return (
        *stamp,
        -1,
        *artifact_stamp(_analysis_folder(path) / folder),
        -1,
        *artifact_stamp(Path(path) / "analysis"),
    )


def artifact_stamp(folder: Path) -> tuple[int, ...]:
    """Modification times of a folder's files (empty if none): a new analysis moves them."""
    try:
        return tuple(sorted(f.stat().st_mtime_ns for f in folder.iterdir() if f.is_file()))
    except OSError:
        return ()


def _slim(analysis: Any) -> Any:
    """The analysis without what no page draws (backbone features h, train features), and z
    kept in float16 as stored: one small copy per run in the server's memory."""
    f = analysis.features
    empty = np.empty((0, 0), np.float16)
    slim = replace(f, z=f.z.astype(np.float16), h=empty, train_z=empty)
    return replace(analysis, features=slim)


@st.cache_resource(show_spinner=False, max_entries=64)
def _analysis(path: str, weights_hash: str, basis: str, stamp: tuple[int, ...]) -> Any:
    """The stored analysis of these weights (any parameters); raises :class:`_NotCached`."""
    del weights_hash, stamp  # cache keys: a retrained or re-analysed run gets a new entry
    from tricl.analysis import load_analysis

    found = load_analysis(path, split=EVAL_SPLIT, basis=basis)
    if found is None:
        raise _NotCached(path)
    return _slim(found)


def analysis_or_none(run: Run, basis: str = "trained") -> Any | None:
    """The run's stored analysis in ``basis``, or None if it has none for its current weights.

    Raises:
        AnalysisError, RunError, OSError, ValueError: the stored files are unreadable.
    """
    try:
        return _analysis(str(run.path), run.weights_hash, basis, analysis_stamp(run.path, basis))
    except _NotCached:
        return None


def analyses(runs: Sequence[Run], basis: str = "trained") -> Analyses:
    """The stored analysis of every run in ``basis``; runs without one are listed, broken ones
    explained."""
    return _collect(runs, lambda r: analysis_or_none(r, basis))


def _collect(runs: Sequence[Run], read: Any) -> Analyses:
    """``read(run)`` of every run: found, missing (None) or broken (its error explained)."""
    out = Analyses()
    for r in runs:
        try:
            got = read(r)
        except Exception as exc:  # corrupt files of one run must not break the others
            out.errors[r.name] = f"{type(exc).__name__}: {exc}"
            continue
        if got is None:
            out.missing.append(r)
        else:
            out.found[r.name] = got
    return out


# the brief reads (no feature array read): name -> (module, loader), loaded on first use
_BRIEF = {
    "summary": ("tricl.analysis.summary", "load_summary"),
    "zero_shot": ("tricl.analysis.image_text", "load_zero_shot"),
}


@st.cache_resource(show_spinner=False, max_entries=128)
def _brief(what: str, path: str, weights_hash: str, stamp: tuple[int, ...]) -> Any:
    """A brief read of the stored artifacts of these weights (:data:`_BRIEF`: the analysis'
    summary, the zero-shot metrics); raises :class:`_NotCached`."""
    del weights_hash, stamp  # cache keys, as for analyses
    module, name = _BRIEF[what]
    found = getattr(importlib.import_module(module), name)(path, split=EVAL_SPLIT)
    if found is None:
        raise _NotCached(path)
    return found


def summary_or_none(run: Run) -> Any | None:
    """The summary of the run's stored analysis (``AnalysisSummary``: importance, few-feature
    curves, full-feature accuracies; no feature arrays read), or None if it has none for its
    current weights.

    Raises:
        AnalysisError, RunError, OSError, ValueError: the stored files are unreadable.
    """
    try:
        return _brief("summary", str(run.path), run.weights_hash, analysis_stamp(run.path))
    except _NotCached:
        return None


def summaries(runs: Sequence[Run]) -> Analyses:
    """The summary of every run's stored analysis (the Runs page's table and spectrum)."""
    return _collect(runs, summary_or_none)


def _slim_text(text: Any) -> Any:
    """The text analysis without the train split's features (no page draws them)."""
    empty = np.empty((0, 0), np.float32)
    return replace(text, features=replace(text.features, train_image_z=empty, train_text_z=empty))


@st.cache_resource(show_spinner=False, max_entries=64)
def _text_analysis(path: str, weights_hash: str, stamp: tuple[int, ...]) -> Any:
    """The stored text analysis of these weights; raises :class:`_NotCached`."""
    del weights_hash, stamp  # cache keys, as for analyses
    from tricl.analysis.image_text import load_text_analysis

    found = load_text_analysis(path, split=EVAL_SPLIT)
    if found is None:
        raise _NotCached(path)
    return _slim_text(found)


def text_analysis_or_none(run: Run) -> Any | None:
    """The stored text analysis of an image-text run (zero-shot, retrieval, captions and tokens
    per feature, caption factors), or None if it has none for its current weights.

    Raises:
        AnalysisError, RunError, OSError, ValueError: the stored files are unreadable.
    """
    try:
        return _text_analysis(str(run.path), run.weights_hash, _text_stamp(run))
    except _NotCached:
        return None


def text_analyses(runs: Sequence[Run]) -> Analyses:
    """The stored text analysis of every image-text run among ``runs`` (others are skipped)."""
    return _collect([r for r in runs if labels.has_text(r)], text_analysis_or_none)


def zero_shots(runs: Sequence[Run]) -> Analyses:
    """The stored zero-shot accuracy and retrieval recalls (``TextAnalysis.zero_shot``) of every
    image-text run among ``runs``, read without the caption features."""

    def read(run: Run) -> Any | None:
        try:
            return _brief("zero_shot", str(run.path), run.weights_hash, _text_stamp(run))
        except _NotCached:
            return None

    return _collect([r for r in runs if labels.has_text(r)], read)


def _text_stamp(run: Run) -> tuple[int, ...]:
    return (*analysis_stamp(run.path), -1, *artifact_stamp(_analysis_folder(run.path) / "text"))


def _stored(load: Any, paths: tuple[str, ...], **kwargs: Any) -> Any:
    """``load(paths, out_root=...)`` beside the runs, else in the user runs root's ``_compare``
    (where `tricl compare` stores new comparisons of the shipped runs); raises
    :class:`_NotCached` if neither holds it."""
    for out_root in (None, default_runs_root() / "_compare"):
        got = load(list(paths), out_root=out_root, **kwargs)
        if got is not None:
            return got
    raise _NotCached(paths)


@st.cache_resource(show_spinner=False, max_entries=32)
def _comparison(paths: tuple[str, ...], basis: str, stamps: tuple[tuple[int, ...], ...]) -> Any:
    del stamps  # cache key: a re-analysed run or a new comparison gets a new entry
    from tricl.analysis import load_comparison

    return _stored(load_comparison, paths, split=EVAL_SPLIT, spectral=True, basis=basis)


def comparison(runs: Sequence[Run], basis: str = "trained") -> Any | Missing:
    """The stored comparison of the runs (in this order) in ``basis``, or what is missing.

    Raises:
        AnalysisError: the runs cannot be compared (e.g. evaluated on different images).
    """
    paths = tuple(str(r.path) for r in runs)
    stamps = tuple(analysis_stamp(p, basis) for p in paths)
    try:
        comp = _comparison(paths, basis, stamps)
    except _NotCached:
        names = ", ".join(r.name for r in runs)
        where = get_basis(basis).where()
        return Missing(tuple(runs), f"no stored comparison of {names}{where} yet")
    # no file-time check against the analyses: a stored comparison names the weights hashes
    # and importance orders it was computed from, and load_comparison refuses it if they moved
    return comp


@st.cache_resource(show_spinner=False, max_entries=32)
def _image_text_comparison(
    paths: tuple[str, ...], basis: str, stamps: tuple[tuple[int, ...], ...]
) -> Any:
    del stamps  # cache key, as for comparisons
    from tricl.analysis.image_text_compare import load_image_text_comparison

    return _stored(load_image_text_comparison, paths, split=EVAL_SPLIT, basis=basis)


@st.cache_resource(show_spinner=False, max_entries=32)
def _pairs(
    paths: tuple[str, ...], stamps: tuple[tuple[int, ...], ...], _summaries: Sequence[Any]
) -> Any:
    del stamps  # cache key, as for comparisons (the summaries were read with these stamps)
    from tricl.analysis.comparison import load_pairs

    return _stored(load_pairs, paths, split=EVAL_SPLIT, spectral=True, summaries=_summaries)


def comparison_pairs(runs: Sequence[Run], summaries: Sequence[Any]) -> Any | None:
    """The pairs table of the runs' stored comparison in the trained basis (the Runs page's
    seed-group line; no feature array read), or None if none is stored for their weights.

    Args:
        runs: the runs, in this order.
        summaries: their analysis summaries (:func:`summaries`), which the comparison's
            freshness is checked against.

    Raises:
        AnalysisError: the runs cannot be compared (e.g. evaluated on different images).
    """
    paths = tuple(str(r.path) for r in runs)
    try:
        return _pairs(paths, tuple(analysis_stamp(p) for p in paths), tuple(summaries))
    except _NotCached:
        return None


def image_text_comparison(runs: Sequence[Run], basis: str = "trained") -> Any | Missing:
    """The stored comparison of image-text runs' image and text features in ``basis``
    (``ImageTextComparison``), or what is missing.

    Raises:
        AnalysisError: the runs cannot be compared (image-only runs, other images).
    """
    paths = tuple(str(r.path) for r in runs)
    stamps = tuple(
        (*artifact_stamp(_analysis_folder(p) / "text"), -1, *artifact_stamp(Path(p) / "analysis"))
        for p in paths
    )
    try:
        return _image_text_comparison(paths, basis, stamps)
    except _NotCached:
        where = get_basis(basis).pair_label
        return Missing(
            tuple(runs),
            f"no stored comparison of these {len(runs)} runs' image and text "
            f"features in the {where} yet",
        )


@st.cache_resource(show_spinner=False, max_entries=16)
def _consensus(paths: tuple[str, ...], stamps: tuple[tuple[int, ...], ...]) -> Any:
    """The stored consensus, or None: a miss is kept too (finding that there is none reads every
    run's spectral analysis, about 1 s for the shipped runs), until a consensus file appears."""
    del stamps  # cache key, as for comparisons, plus the consensus files that exist
    from tricl.analysis import load_consensus

    try:
        return _stored(load_consensus, paths, split=EVAL_SPLIT)
    except _NotCached:
        return None


def _consensus_files(paths: tuple[str, ...]) -> tuple[int, ...]:
    """Modification times of every stored consensus where :func:`_stored` looks (beside the runs
    and in the user runs root): a new consensus changes them."""
    roots = {Path(p).parent / "_compare" for p in paths} | {default_runs_root() / "_compare"}
    return tuple(sorted(f.stat().st_mtime_ns for r in roots for f in r.glob("*/consensus.csv*")))


def consensus(runs: Sequence[Run]) -> Any | Missing:
    """The stored consensus of the runs' spectral ranks (:class:`Consensus`), or what is missing.

    Raises:
        AnalysisError: the runs cannot be compared (e.g. evaluated on different images).
    """
    paths = tuple(str(r.path) for r in runs)
    stamps = (*(analysis_stamp(p, "spectral") for p in paths), _consensus_files(paths))
    got = _consensus(paths, stamps)
    if got is None:
        return Missing(tuple(runs), f"no stored consensus of these {len(runs)} runs yet")
    return got


def metric_column(frame: Any, metric: Any, spectral: bool = False) -> str | None:
    """The column of ``metric`` in a comparison table, or None if it has none.

    Spectral-basis scores are ``metric.spectral_name``; comparisons stored before the columns
    were named after the registry call the top-8 one ``spectral_corr_top8``.
    """
    if not spectral:
        return metric.name if metric.name in frame else None
    for name in (metric.spectral_name, metric.spectral_name.replace("ordered_", "")):
        if name in frame:
            return name
    return None


def top8_accuracy(analysis: Any, order: str | None = None) -> float:
    """Linear-probe accuracy with the 8 most important features (fewer if k < 8)."""
    curves = analysis.curves(order)
    top = curves[curves["selection"] == "top"]
    k = min(8, analysis.k)
    row = top[top["k"] == k]
    if row.empty:  # k = 8 is always a curve point when k >= 8; otherwise take the largest k <= 8
        row = top[top["k"] <= k].sort_values("k").tail(1)
    return float(row["linear_acc"].iloc[0]) if not row.empty else float("nan")
