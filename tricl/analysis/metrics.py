"""The identifiability metrics, one declaration each.

Every list of metrics (the comparison's columns, the Compare seeds page, ``tricl compare``'s table
and ``--json``, the study's tables, the tests) is derived from :data:`METRICS`. Adding a metric is
one :func:`register_metric` call here and its test.

A metric scores one pair of runs from their features on the same images, each with its columns in
its own importance order (most important first), and from their signed correlation matrix. Metrics
with ``spectral=True`` are scored a second time with both runs rotated onto their spectral bases
(:mod:`tricl.analysis.spectral`); that score's column is :attr:`Metric.spectral_name`
(``spectral_<name>``, or the metric's ``spectral_column``).
Each metric also says what it correlates and on which images (:attr:`Metric.scored_on`): the
in-sample ones score all the evaluation images; the held-out ones (:mod:`tricl.analysis.heldout`)
fit their matching or linear map on one half of them and score it on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tricl.analysis.heldout import HALVES, heldout_cca, heldout_mcc, linear_r2
from tricl.analysis.identifiability import (
    corr_matrix,
    linear_cka,
    mcc,
    ordered_correlation,
    rank_match,
)

# (a, b, corr) -> score; a: (N, k_a), b: (N, k_b), corr: (k_a, k_b) signed correlations
MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]

PEARSON_ALL = "Pearson correlation on all evaluation images, in sample"
PEARSON_HELD_OUT = f"Pearson correlation, {HALVES}"


@dataclass(frozen=True)
class Metric:
    """One identifiability metric.

    Attributes:
        name: column name in the comparison's pair table and key in ``--json``.
        label: short label for tables and charts.
        help: one sentence: what the number means and what a high value says.
        higher_is_better: whether a larger value means "more identifiable".
        fn: ``fn(a, b, corr) -> float`` (see the module docstring for the shapes).
        spectral: also scored in the spectral basis, as column :attr:`spectral_name`.
        spectral_column: that column's name when it is not ``spectral_<name>`` (kept for the
            name files, notebooks and pages already use).
        scored_on: which correlation (or similarity) it uses and on which images it is fitted
            and scored: all of them (in sample), or fitted on one half and scored on the other.
    """

    name: str
    label: str
    help: str
    higher_is_better: bool
    fn: MetricFn
    spectral: bool = False
    spectral_column: str | None = None
    scored_on: str = PEARSON_ALL

    @property
    def legend(self) -> str:
        """The help and what it is scored on, as the Compare page and ``--help`` show it."""
        return f"{self.help}; {self.scored_on}"

    @property
    def spectral_name(self) -> str:
        """Column of this metric's spectral-basis score (read it here, never spell it)."""
        return self.spectral_column or f"spectral_{self.name}"


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Adds ``metric`` to :data:`METRICS` (names are unique)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice; pick another name")
    METRICS[metric.name] = metric
    return metric


register_metric(
    Metric(
        "ordered_corr",
        "ordered corr",
        "mean |corr| of feature #i of one run with feature #i of the other, over all features",
        True,
        lambda a, b, corr: ordered_correlation(corr),
    )
)
register_metric(
    Metric(
        "ordered_corr_top8",
        "top-8 ordered corr",
        "mean |corr| of feature #i of one run with feature #i of the other, i = 1..8: the paper's"
        " claim (same features, same order, up to sign)",
        True,
        lambda a, b, corr: ordered_correlation(corr, top=8),
        spectral=True,
        spectral_column="spectral_corr_top8",  # the name the study, notebook and runs use
    )
)
register_metric(
    Metric(
        "mcc",
        "MCC",
        "mean |corr| after the best one-to-one matching: the same features in any order",
        True,
        lambda a, b, corr: mcc(corr),
        spectral=True,
    )
)
register_metric(
    Metric(
        "cka",
        "CKA",
        "linear CKA: the same information up to a rotation (does not need identifiable axes)",
        True,
        lambda a, b, corr: linear_cka(a, b),
        scored_on="linear kernels of the centred features, no correlation; all evaluation images",
    )
)
register_metric(
    Metric(
        "rank_match_top8",
        "top-8 rank match",
        "share of one run's top-8 features whose best partner is among the other's top 8",
        True,
        lambda a, b, corr: rank_match(corr, top=8),
        spectral=True,
    )
)


def procrustes_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |corr| of a's features with b's after the best rotation of b onto a.

    Both runs are centred, b is rotated onto a by orthogonal Procrustes (``R = U V^T`` from the
    SVD of ``b^T a``), and the correlations of matching columns of ``a`` and ``b R`` are averaged
    over all of a's features. Unlike ordered correlation it ignores any rotation of the features;
    unlike CKA it reads each feature. The features are centred but not standardised one by one:
    rescaling columns does not commute with a rotation, so ``b = a R`` would score below 1.

    Args:
        a: features of run a. Shape: (N, k_a).
        b: features of run b on the same images. Shape: (N, k_b).

    Returns:
        The correlation in [0, 1]: 1 when b is a rotation of a (k_b >= k_a).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    u, _, vt = np.linalg.svd(b.T @ a, full_matrices=False)  # (k_b, m), (m, k_a)
    return ordered_correlation(corr_matrix(a, b @ (u @ vt)))  # b @ R: (N, k_a)


register_metric(
    Metric(
        "procrustes_corr",
        "Procrustes corr",
        "mean |corr| of each feature with its partner after the best rotation of one run onto the"
        " other: the same features up to a rotation (high for any two good encoders)",
        True,
        lambda a, b, corr: procrustes_correlation(a, b),
        scored_on="Pearson correlation; the rotation fitted and scored on all evaluation images,"
        " in sample",
    )
)

register_metric(
    Metric(
        "heldout_mcc",
        "held-out MCC",
        "MCC out of sample, as identifiability papers report it: features matched one-to-one by"
        " |corr| on one half of the images, the matched pairs' mean |corr| on the other half",
        True,
        lambda a, b, corr: heldout_mcc(a, b),
        spectral=True,
        scored_on=PEARSON_HELD_OUT,
    )
)
register_metric(
    Metric(
        "linear_r2",
        "linear R²",
        "linear identifiability: held-out R² of the best linear map (least squares) from one"
        " run's features to the other's, averaged over features and both directions; 1 when"
        " each run is a linear function of the other, ~0 when unrelated (can be < 0)",
        True,
        lambda a, b, corr: linear_r2(a, b),
        scored_on=f"R² = 1 - SSE/SST per feature, {HALVES}",
    )
)
CCA_TOP = 8
register_metric(
    Metric(
        "cca_top8",
        "top-8 CCA",
        f"linear identifiability: mean canonical correlation of the top {CCA_TOP} canonical"
        " components of the two runs (the same subspace up to any linear map)",
        True,
        lambda a, b, corr: heldout_cca(a, b, top=CCA_TOP),
        scored_on=f"{PEARSON_HELD_OUT}, with the sign the fit gave each component",
    )
)


def metric_columns(spectral: bool = True) -> list[str]:
    """Score columns in registry order: every metric, then the spectral-basis ones."""
    cols = list(METRICS)
    if spectral:
        cols += [m.spectral_name for m in METRICS.values() if m.spectral]
    return cols


def column_info(column: str) -> tuple[Metric, bool]:
    """The metric a score column belongs to, and whether it is the spectral-basis score."""
    for m in METRICS.values():
        if column == m.name:
            return m, False
        if m.spectral and column == m.spectral_name:
            return m, True
    raise KeyError(f"no metric has the column {column!r}; known: {metric_columns()}")


def score_pair(
    a: np.ndarray, b: np.ndarray, *, only_spectral: bool = False
) -> tuple[dict[str, float], np.ndarray]:
    """Every registered metric of one pair of runs.

    Args:
        a: run a's features, columns in a's importance order. Shape: (N, k_a).
        b: run b's features on the same images, in b's order. Shape: (N, k_b).
        only_spectral: score only the metrics with ``spectral=True`` (for features already
            rotated onto the spectral bases; the caller names the columns).

    Returns:
        ``(scores by metric name, corr)``; ``corr`` is the signed correlation matrix.
        Shape: (k_a, k_b).
    """
    corr = corr_matrix(a, b)
    chosen = [m for m in METRICS.values() if m.spectral or not only_spectral]
    return {m.name: float(m.fn(a, b, corr)) for m in chosen}, corr
