"""``pairs.csv(.json)``: one row per pair of runs (a before b in the given order), ``run_a,
run_b`` and one column per identifiability metric (:data:`tricl.analysis.metrics.METRICS`), then
with ``spectral`` each spectral metric's score with both runs rotated onto their spectral bases
(column ``Metric.spectral_name``, e.g. ``spectral_corr_top8``). Its parameters list the metric
columns, so registering a metric recomputes the pairs (only)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tricl.analysis.compare_stages import CompareJob, register_compare_stage
from tricl.analysis.metrics import METRICS, metric_columns, score_pair
from tricl.analysis.spectral import SPECTRAL_PARAMS, spectral_basis
from tricl.analysis.stages import Output, Stage, need_columns


def pair_columns(spectral: bool = True) -> list[str]:
    """Columns of :attr:`Comparison.pairs`: the two runs, then every metric's score."""
    return ["run_a", "run_b", *metric_columns(spectral)]


def _compute_pairs(job: CompareJob, inputs: dict[str, Any]) -> Output:
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


def _load_pairs(table: pd.DataFrame, meta: dict[str, Any], job: CompareJob) -> pd.DataFrame:
    need_columns(table, pair_columns(job.spectral))
    return table


register_compare_stage(
    Stage(
        "pairs",
        "pairs.csv",
        _compute_pairs,
        _load_pairs,
        params=lambda job: {
            "columns": pair_columns(job.spectral),
            "spectral": SPECTRAL_PARAMS if job.spectral else None,
        },
    ),
    required=True,
)
